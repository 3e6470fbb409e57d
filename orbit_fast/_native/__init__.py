"""Compiled kernels (built from ext/) and the choice between them and their pure-Python twins.

`kernels()` returns an object with every kernel function: the compiled ones, or those of
`reference` when ORBIT_KERNEL=reference. A compiled module whose ABI differs from the twin's is
stale: that is an error with the rebuild command, never a silent fallback.
"""

from __future__ import annotations

import functools
import importlib
import os
from types import ModuleType, SimpleNamespace

from orbit_fast._native import reference
from orbit_fast.errors import NativeUnavailable

COMPILED = ("blocks", "cdc", "scan", "table")  # ext/<name>.pyx -> orbit_fast._native.<name>


def kernels() -> ModuleType | SimpleNamespace:
    """The kernels ORBIT_KERNEL selects (cached: workers ask once per task)."""
    return _kernels(os.environ.get("ORBIT_KERNEL", "native"))


@functools.cache
def _kernels(choice: str) -> ModuleType | SimpleNamespace:
    if choice == "reference":
        return reference
    if choice != "native":
        raise NativeUnavailable(f"ORBIT_KERNEL={choice!r} (expected 'native' or 'reference')")
    funcs: dict[str, object] = {}
    for name in COMPILED:
        try:
            mod = importlib.import_module(f"orbit_fast._native.{name}")
        except ImportError as exc:
            raise NativeUnavailable(f"cannot import orbit_fast._native.{name} ({exc})") from exc
        if mod.ABI != reference.ABI:
            raise NativeUnavailable(
                f"native extensions are stale ({name} ABI {mod.ABI}, expected {reference.ABI})"
            )
        funcs.update({k: v for k, v in vars(mod).items() if callable(v) and not k.startswith("_")})
    return SimpleNamespace(**funcs)
