"""Pure-Python twins of the compiled kernels in orbit_fast._native: same names, same results.

They are the test oracle and the readable specification; ORBIT_KERNEL=reference selects them.
"""

from __future__ import annotations

ABI = 1


def is_zero(buf: bytes | bytearray | memoryview) -> bool:
    """True when every byte of ``buf`` is 0 (an empty buffer is all zeros)."""
    mv = memoryview(buf).cast("B")
    return mv.nbytes == 0 or not any(mv)
