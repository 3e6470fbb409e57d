"""Compiled kernels (built from ext/) and the choice between them and their pure-Python twins.

`kernels()` returns the module to use: the compiled one, or `reference` when
ORBIT_KERNEL=reference. A compiled module whose ABI differs from the twin's is stale: that is an
error with the rebuild command, never a silent fallback.
"""

from __future__ import annotations

import os
from types import ModuleType

from orbit_fast._native import reference
from orbit_fast.errors import NativeUnavailable


def kernels() -> ModuleType:
    choice = os.environ.get("ORBIT_KERNEL", "native")
    if choice == "reference":
        return reference
    if choice != "native":
        raise NativeUnavailable(f"ORBIT_KERNEL={choice!r} (expected 'native' or 'reference')")
    try:
        from orbit_fast._native import blocks
    except ImportError as exc:
        raise NativeUnavailable(f"cannot import the compiled module ({exc})") from exc
    if blocks.ABI != reference.ABI:
        raise NativeUnavailable(
            f"native extensions are stale (ABI {blocks.ABI}, expected {reference.ABI})"
        )
    return blocks
