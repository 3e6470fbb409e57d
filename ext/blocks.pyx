# cython: language_level=3
"""Per-byte loops over data blocks (ring slots) used by the copy workers.

GIL: released around every loop. Buffers are borrowed for the duration of the call only and
never written. Bounds: any length >= 0; the word loop reads 8 bytes at a time via memcpy (no
unaligned loads), the tail byte by byte.
"""

from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memcpy

# Bumped whenever a signature or a result changes; orbit_fast._native checks it.
ABI = 7


def is_zero(const uint8_t[::1] buf):
    """True when every byte of ``buf`` is 0 (an empty buffer is all zeros).

    The copy worker punches a hole instead of writing such a block, as ``cp --sparse=auto``
    and ``rsync -S`` do.
    """
    cdef Py_ssize_t n = buf.shape[0]
    cdef Py_ssize_t i = 0
    cdef int j
    cdef uint64_t acc = 0
    cdef uint64_t word
    cdef const uint8_t* p
    if n == 0:
        return True
    p = &buf[0]
    with nogil:
        # Check 256-byte groups with one branch each: the OR-reduction vectorises at -O3.
        while i + 256 <= n:
            for j in range(32):
                memcpy(&word, p + i + j * 8, 8)
                acc |= word
            if acc != 0:
                break
            i += 256
        if acc == 0:
            while i + 8 <= n:
                memcpy(&word, p + i, 8)
                acc |= word
                i += 8
            while i < n:
                acc |= p[i]
                i += 1
    return acc == 0
