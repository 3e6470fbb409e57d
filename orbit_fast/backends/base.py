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

from collections.abc import Iterator
from typing import NamedTuple, Protocol

from orbit_fast.errors import RemoteError

TMP_PREFIX = ".tmp-"  # writers' temp objects; listings skip them, sweep_temp removes them


class TransientError(Exception):
    """A failure worth retrying (the backend classified it)."""


class Capabilities(NamedTuple):
    ranged_reads: bool
    atomic_rename: bool
    server_side_copy: bool
    exclusive_create: bool  # write(exclusive=True) is atomic, not check-then-write
    min_part_bytes: int  # multipart uploads: smallest part but the last (0: no multipart)
    max_part_bytes: int


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
