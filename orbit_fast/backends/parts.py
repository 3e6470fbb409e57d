"""Uploads in parts to file stores (local directories, SMB shares): a temp file written at
offsets, renamed into place when complete.

Several processes may write parts of the same upload at once (each opens the temp file by
name), so a large file moves as parallel part transfers, as an S3 multipart upload does. The
temp name is the upload's `state`: a rerun after a crash reopens it, re-reads the parts its
jobs DB recorded and keeps those whose xxh3-128 still matches, then writes the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import xxhash

from orbit_fast.backends.base import FileMeta, ObjectInfo, upload_temp_name


class FileOps(Protocol):
    """What a file store provides to FileUpload."""

    def create_sized(self, tmp: str, size: int) -> None: ...

    def pwrite(self, tmp: str, offset: int, data: bytes) -> None: ...

    def read_range(self, name: str, offset: int, length: int) -> bytes: ...

    def size(self, name: str) -> int: ...

    def commit(self, tmp: str, name: str, mtime_ns: int,
               meta: FileMeta | None = None) -> ObjectInfo: ...  # fmt: skip

    def discard(self, tmp: str) -> None: ...


def part_token(data: bytes | memoryview) -> str:
    return xxhash.xxh3_128_hexdigest(data)


class FileUpload:
    def __init__(self, ops: FileOps, name: str, tmp: str, part_bytes: int, mtime_ns: int):
        self._ops = ops
        self.name = name
        self.state = tmp
        self.part_bytes = part_bytes
        self.mtime_ns = mtime_ns

    def write_part(self, number: int, offset: int, data: bytes) -> str:
        self._ops.pwrite(self.state, offset, data)
        return part_token(data)

    def confirmed(self, recorded: dict[int, str], lengths: dict[int, int]) -> set[int]:
        self._ops.size(self.state)  # FileNotFoundError: the temp file is gone, start over
        ok = set()
        for number, token in recorded.items():
            length = lengths.get(number)
            if length is None:
                continue
            try:
                data = self._ops.read_range(self.state, (number - 1) * self.part_bytes, length)
            except OSError:
                continue
            if part_token(data) == token:
                ok.add(number)
        return ok

    def complete(self, tokens: dict[int, str], size: int,
                 meta: FileMeta | None = None) -> ObjectInfo:  # fmt: skip
        got = self._ops.size(self.state)
        if got != size:
            raise OSError(f"{self.state}: {got} bytes assembled, {size} expected")
        return self._ops.commit(self.state, self.name, self.mtime_ns, meta)

    def abort(self) -> None:
        self._ops.discard(self.state)


class FileUploads:
    """PartUploads (base.py) and FileStore.delete_many for file stores (local, SMB), built on
    their FileOps and delete()."""

    def create_sized(self, tmp: str, size: int) -> None:
        raise NotImplementedError

    def delete(self, name: str) -> None:
        raise NotImplementedError

    def begin_upload(self, name: str, size: int, part_bytes: int, mtime_ns: int,
                     token: str = "", md5: str = "",
                     meta: FileMeta | None = None) -> FileUpload:  # fmt: skip
        # `md5`: a file keeps none (no whole_md5); `meta` is given at complete, by the rename.
        tmp = upload_temp_name(name, token)
        self.create_sized(tmp, size)
        return FileUpload(self, name, tmp, part_bytes, mtime_ns)  # type: ignore[arg-type]

    def resume_upload(self, name: str, state: str, size: int, part_bytes: int,
                      mtime_ns: int) -> FileUpload:  # fmt: skip
        return FileUpload(self, name, state, part_bytes, mtime_ns)  # type: ignore[arg-type]

    def delete_many(self, names: Sequence[str]) -> None:
        for name in names:
            self.delete(name)
