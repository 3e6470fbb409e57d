"""Compiled kernels (built from ext/) and the choice between them and their pure-Python twins.

`kernels()` returns an object with every kernel function: the compiled ones, or those of
`reference` when ORBIT_KERNEL=reference. A compiled module whose ABI differs from the twin's is
stale: that is an error with the rebuild command, never a silent fallback. `Kernels` is the
contract both sides meet; mypy holds the twin and each compiled module's .pyi stub to it.
"""

from __future__ import annotations

import functools
import importlib
import os
from types import SimpleNamespace
from typing import TYPE_CHECKING, Protocol, cast

from orbit_fast._native import reference
from orbit_fast.errors import NativeUnavailable

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

    from orbit_fast._native.reference import Full, Side

COMPILED = ("blocks", "cdc", "scan", "table")  # ext/<name>.pyx -> orbit_fast._native.<name>


class StreamChunker(Protocol):
    """One stream's content-defined chunker (ext/cdc.pyx's docstring has the contract)."""

    @property
    def offset(self) -> int: ...
    @property
    def chunk_start(self) -> int: ...
    def feed(self, data: ReadableBuffer, out: memoryview) -> tuple[int, int]: ...


# One protocol per compiled module, so that each module's stub can be checked on its own below.
class BlocksKernels(Protocol):
    def is_zero(self, buf: ReadableBuffer) -> bool: ...


class CdcKernels(Protocol):
    def Chunker(self, gear: bytes, min_size: int, avg_size: int, max_size: int,
                mask_s: int, mask_l: int) -> StreamChunker: ...  # fmt: skip


class ScanKernels(Protocol):
    def scan_pair(
        self, src_fd: int, dst_fd: int, fold_unchanged: int
    ) -> tuple[list[tuple[bytes, Side | None, Side | None]], int]: ...
    def scan_dir(self, dir_fd: int) -> list[tuple[bytes, Full]]: ...
    def open_beneath(self, dirfd: int, rel: bytes, flags: int, mode: int,
                     use_openat2: bool) -> int: ...  # fmt: skip


class TableKernels(Protocol):
    def table_lookup(self, table: ReadableBuffer, keys: ReadableBuffer,
                     out: WriteableBuffer) -> int: ...  # fmt: skip
    def table_lookup_fd(self, fd: int, at: int, cap: int, keys: ReadableBuffer,
                        out: WriteableBuffer) -> int: ...  # fmt: skip
    def table_insert(self, table: WriteableBuffer, records: ReadableBuffer) -> int: ...
    def table_rehash(self, src: ReadableBuffer, dst: WriteableBuffer,
                     dead: ReadableBuffer) -> int: ...  # fmt: skip


class Kernels(BlocksKernels, CdcKernels, ScanKernels, TableKernels, Protocol):
    """Every kernel function, compiled or twin."""


if TYPE_CHECKING:  # a stub that drifts from the contract fails mypy here
    from orbit_fast._native import blocks, cdc, scan, table

    _STUBS: tuple[BlocksKernels, CdcKernels, ScanKernels, TableKernels] = (
        blocks, cdc, scan, table)  # fmt: skip


def kernels() -> Kernels:
    """The kernels ORBIT_KERNEL selects (cached: workers ask once per task)."""
    return _kernels(os.environ.get("ORBIT_KERNEL", "native"))


@functools.cache
def _kernels(choice: str) -> Kernels:
    if choice == "reference":
        return reference  # mypy checks the twin against Kernels here
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
    # the union of the modules checked against their protocols above
    return cast(Kernels, SimpleNamespace(**funcs))
