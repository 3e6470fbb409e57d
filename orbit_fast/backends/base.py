"""The Store protocol: what a repository (and, with #5's sync, a transfer) needs from the place
it lives, and what each backend declares about itself.

Names are "/"-separated relative paths ("packs/ab/ab12..."). The contract, errors included:
- `write(name, data)` stores the object whole or not at all (a reader never sees part of it);
  with `exclusive=True` it raises FileExistsError if the name exists (repository locks).
- `read(name)` / `read_range(name, offset, length)` / `size(name)` raise FileNotFoundError if
  it is absent.
- `list(prefix)` yields (name, size) of every object whose name starts with prefix + "/",
  never a temp object of a writer; a name that could escape a local directory ("..", absolute,
  backslash, NUL) raises RemoteError instead of being yielded.
- `delete(name)` is idempotent.
- TransientError: the same call may succeed if retried (connection reset, throttling, 5xx);
  RetryingStore (wrappers.py) retries those. RemoteError: it will not (credentials, missing
  bucket or share, permission denied). Local OSErrors pass through with their errno.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator
from typing import NamedTuple, Protocol

from orbit_fast.errors import RemoteError

TMP_PREFIX = ".tmp-"  # writers' temp objects; listings skip them, sweep_temp removes them
# Exactly the names writers make: ".tmp-" + 12 hex (whole writes) or ".tmp-up-" + 16 hex
# (uploads in parts), so that a user's ".tmp-notes.txt" is still synced.
_TEMP_RE = re.compile(r"\.tmp-(?:[0-9a-f]{12}|up-[0-9a-f]{16})\Z")


def is_temp(basename: str) -> bool:
    return basename.startswith(TMP_PREFIX) and _TEMP_RE.match(basename) is not None


def upload_temp_name(name: str) -> str:
    """A fresh temp name beside `name` for an upload in parts."""
    head, _, _ = name.rpartition("/")
    return (f"{head}/" if head else "") + f"{TMP_PREFIX}up-{secrets.token_hex(8)}"


Descend = Callable[[str], bool]  # list_info: whether to read a directory
OnSkip = Callable[[str, str], None]  # list_info: (name, why) of an entry that is not a file


class TransientError(Exception):
    """A failure worth retrying (the backend classified it)."""


class Capabilities(NamedTuple):
    ranged_reads: bool
    atomic_rename: bool
    server_side_copy: bool
    exclusive_create: bool  # write(exclusive=True) is atomic, not check-then-write
    min_part_bytes: int  # multipart uploads: smallest part but the last (0: no multipart)
    max_part_bytes: int
    mtime_ns_precision: int = 1  # what the store keeps of a file's mtime (SMB listings: 1 us)
    max_copy_bytes: int = 0  # server-side copies: the largest object (0: no limit)


class ObjectInfo(NamedTuple):
    name: str
    size: int
    mtime_ns: int | None  # the file's mtime; None: not in this listing (S3: ask stat_info)
    etag: str = ""  # S3: the ETag without quotes (MD5, or MD5 of part MD5s + "-N")
    part_bytes: int = 0  # S3 objects orbit-fast uploaded in parts: the part size (metadata)

    @property
    def sig(self) -> str:
        """What changes when the object changes: the ETag on S3, else size and mtime."""
        return self.etag or f"{self.size}:{self.mtime_ns}"


class Upload(Protocol):
    """A large object arriving in parts; nothing is visible under its name until complete()."""

    state: str  # S3: the upload id; files: the temp name. Recorded to resume after a crash.
    part_bytes: int

    def write_part(self, number: int, offset: int, data: bytes) -> str:
        """Store part `number` (1-based) at `offset`; returns its token (S3 ETag, else xxh3)."""
        ...

    def confirmed(self, recorded: dict[int, str], lengths: dict[int, int]) -> set[int]:
        """Of the parts an earlier run recorded, those the server still has, same content."""
        ...

    def complete(self, tokens: dict[int, str], size: int) -> ObjectInfo:
        """Assemble the object, check its size (and ETag on S3), return its info."""
        ...

    def abort(self) -> None: ...


class Store(Protocol):
    url: str
    capabilities: Capabilities

    def write(self, name: str, data: bytes | bytearray | memoryview,
              exclusive: bool = False) -> None: ...  # fmt: skip

    def read(self, name: str) -> bytes: ...

    def read_range(self, name: str, offset: int, length: int) -> bytes: ...

    def size(self, name: str) -> int: ...

    def exists(self, name: str) -> bool: ...

    def list(self, prefix: str) -> Iterator[tuple[str, int]]: ...

    def delete(self, name: str) -> None: ...

    def sweep_temp(self, prefix: str) -> int: ...

    def close(self) -> None: ...

    def list_info(self, prefix: str, descend: Descend | None = None,
                  on_skip: OnSkip | None = None) -> Iterator[ObjectInfo]: ...  # fmt: skip

    def stat_info(self, name: str) -> ObjectInfo: ...

    def read_info(self, name: str,
                  expect: ObjectInfo | None = None) -> tuple[bytes, ObjectInfo]: ...  # fmt: skip

    def put_file(self, name: str, data: bytes, mtime_ns: int,
                 durable: bool = True) -> ObjectInfo: ...  # fmt: skip

    def begin_upload(self, name: str, size: int, part_bytes: int, mtime_ns: int) -> Upload: ...

    def resume_upload(self, name: str, state: str, size: int, part_bytes: int,
                      mtime_ns: int) -> Upload: ...  # fmt: skip

    def delete_many(self, names: list[str]) -> None: ...


class ExistsBySize:
    """`exists()` for remote stores: a stat that raises FileNotFoundError means absent."""

    def size(self, name: str) -> int:
        raise NotImplementedError

    def exists(self, name: str) -> bool:
        try:
            self.size(name)
            return True
        except FileNotFoundError:
            return False


def upload_part_bytes(size: int, wanted: int, caps: Capabilities) -> int:
    """The part size for an object of `size`: `wanted` (chunk_size_mb), raised to the store's
    minimum and, for S3's 10,000-part limit, to what the object needs."""
    part = max(wanted, caps.min_part_bytes, -(-size // 10_000))
    return min(part, caps.max_part_bytes) if caps.max_part_bytes else part


def check_name(name: str, where: str) -> str:
    """`name` if it is a safe relative object name; RemoteError if it could escape a local
    directory when mirrored there."""
    parts = name.split("/")
    if (not name or name.startswith("/") or "\\" in name or "\0" in name
            or any(p in ("", ".", "..") for p in parts)):  # fmt: skip
        raise RemoteError(
            f"refusing the object name {name!r} in {where}: it could escape the target "
            "directory (absolute, '..', backslash or NUL); rename or remove it on the server"
        )
    return name
