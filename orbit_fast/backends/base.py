"""The Store protocol: what a repository needs from the place it lives.

Names are "/"-separated relative paths ("packs/ab/ab12..."). The contract, errors included:
- `write(name, data)` stores the object whole or not at all (a reader never sees part of it);
  with `exclusive=True` it raises FileExistsError if the name exists (repository locks).
- `read(name)` / `read_range(name, offset, length)` raise FileNotFoundError if it is absent.
- `list(prefix)` yields (name, size) of every object whose name starts with prefix + "/".
- `delete(name)` is idempotent.
Other OSErrors pass through with their errno (ENOSPC, EACCES, ...). S3 and SMB stores
(#5) implement the same methods.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol


class Store(Protocol):
    url: str

    def write(self, name: str, data: bytes | bytearray | memoryview,
              exclusive: bool = False) -> None: ...  # fmt: skip

    def read(self, name: str) -> bytes: ...

    def read_range(self, name: str, offset: int, length: int) -> bytes: ...

    def size(self, name: str) -> int: ...

    def exists(self, name: str) -> bool: ...

    def list(self, prefix: str) -> Iterator[tuple[str, int]]: ...

    def delete(self, name: str) -> None: ...

    def close(self) -> None: ...
