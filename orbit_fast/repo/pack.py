"""Pack files: immutable containers of compressed chunks with their own index at the end.

Layout (little-endian), docs/backup.md:
    header   "ORBPACK1", uint32 flags (0: plain; bits reserved for encryption), uint32 0,
             16 random bytes (every pack's name is unique)
    blobs    back to back; each is self-describing (compression.HEADER + stored bytes)
    index    one 44-byte entry per chunk: id (32), offset, stored length, raw length (uint32)
    trailer  uint64 index offset, uint32 entry count, uint32 CRC-32 of the index, "ORBPIDX1"
A pack is named by the BLAKE3-256 of its whole content, so `verify` can check it without the
repository key, and a pack is never changed once written: prune writes new ones.
"""

from __future__ import annotations

import secrets
import struct
import zlib
from typing import TYPE_CHECKING, Any

import blake3

from orbit_fast.errors import RepositoryError

if TYPE_CHECKING:
    import numpy as np

MAGIC = b"ORBPACK1"
# magic, flags, reserved, 16 random bytes: two packs never share a name, even with the same
# chunks (prune rewriting what a killed prune already wrote must not name a pack it deletes).
HEADER = struct.Struct("<8sII16s")
TRAILER = struct.Struct("<QII8s")
IDX_MAGIC = b"ORBPIDX1"
ENTRY_BYTES = 44  # id (32 bytes), offset, stored length, raw length (uint32 each)


def __getattr__(name: str) -> Any:
    if name == "ENTRY":  # the numpy dtype of an index entry (numpy loaded on first use)
        import numpy as np

        return np.dtype([("id", "V32"), ("offset", "<u4"), ("stored", "<u4"), ("raw", "<u4")])
    raise AttributeError(name)


MAX_PACK_BYTES = (1 << 32) - 1  # offsets are uint32


class PackBuilder:
    """Collects blobs into one pack in a buffer of its own; `finish()` returns (name, bytes,
    entries). Each blob is copied once, straight from where it is (a ring slot) into the
    buffer; a buffer can be handed to the next builder once its pack is written."""

    def __init__(self, buf: bytearray | None = None) -> None:
        self.buf = buf if buf is not None else bytearray(1 << 20)
        HEADER.pack_into(self.buf, 0, MAGIC, 0, 0, secrets.token_bytes(16))
        self._size = HEADER.size
        self._entries: list[tuple[bytes, int, int, int]] = []

    @property
    def ids(self) -> list[bytes]:
        return [e[0] for e in self._entries]

    def __len__(self) -> int:
        return self._size

    @property
    def count(self) -> int:
        return len(self._entries)

    def _put(self, data: bytes | memoryview) -> None:
        end = self._size + len(data)
        if end > len(self.buf):
            self.buf.extend(bytes(max(end - len(self.buf), len(self.buf) // 2)))
        self.buf[self._size : end] = data
        self._size = end

    def add(self, chunk_id: bytes, blob: bytes | memoryview, raw_len: int) -> None:
        self._entries.append((chunk_id, self._size, len(blob), raw_len))
        self._put(blob)

    def finish(self) -> tuple[bytes, memoryview, np.ndarray]:
        import numpy as np

        entries = np.array(self._entries, dtype=__getattr__("ENTRY"))
        index = entries.tobytes()
        at = self._size
        self._put(index)
        self._put(TRAILER.pack(at, len(entries), zlib.crc32(index), IDX_MAGIC))
        data = memoryview(self.buf)[: self._size]
        return blake3.blake3(data).digest(), data, entries


def parse_trailer(name: str, tail: bytes, size: int) -> tuple[int, int, int]:
    """(index offset, count, crc) from the last TRAILER.size bytes of a pack of `size` bytes."""
    if len(tail) != TRAILER.size:
        raise RepositoryError(f"pack {name} is truncated ({size} bytes)")
    at, count, crc, magic = TRAILER.unpack(tail)
    if magic != IDX_MAGIC or at + count * ENTRY_BYTES + TRAILER.size != size:
        raise RepositoryError(f"pack {name} has a damaged trailer; run `orbit-fast verify`")
    return at, count, crc


def parse_index(name: str, index: bytes, crc: int) -> np.ndarray:
    if zlib.crc32(index) != crc:
        raise RepositoryError(f"pack {name} has a damaged index; run `orbit-fast verify`")
    import numpy as np

    return np.frombuffer(index, __getattr__("ENTRY"))


def read_index_from(name: str, data: bytes | memoryview) -> np.ndarray:
    """The index of a pack held whole in memory."""
    at, count, crc = parse_trailer(name, bytes(data[-TRAILER.size :]), len(data))
    if bytes(data[: len(MAGIC)]) != MAGIC:
        raise RepositoryError(f"pack {name} does not start with a pack header")
    return parse_index(name, bytes(data[at : at + count * ENTRY_BYTES]), crc)
