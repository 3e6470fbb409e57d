"""Pack files: immutable containers of compressed chunks with their own index at the end.

Layout (little-endian), docs/backup.md:
    header   "ORBPACK3", uint32 flags (1: sealed), uint32 0, 16 random bytes (the pack's token:
             every pack's name is unique)
    blobs    back to back; each is self-describing (compression.HEADER + stored bytes), and in
             an encrypted repository sealed (crypto: 32 bytes more, bound to the blob's id)
    index    one 44-byte entry per chunk: id (32), offset, stored length, raw length (uint32);
             sealed as one object in an encrypted repository (bound to the pack's token)
    trailer  uint64 index offset, uint32 entry count, uint32 CRC-32 of the index as stored,
             the 16-byte token again, "ORBPIDX3"
A pack is named by the BLAKE3-256 of its whole content, so `verify` can check it without the
repository key, and a pack is never changed once written: prune writes new ones.
"""

from __future__ import annotations

import secrets
import struct
import zlib
from typing import TYPE_CHECKING, Any, NamedTuple

import blake3

from orbit_fast import crypto
from orbit_fast.errors import RepositoryError

if TYPE_CHECKING:
    import numpy as np

    from orbit_fast.crypto import Sealer

MAGIC = b"ORBPACK3"
FLAG_SEALED = 1
# magic, flags, reserved, 16 random bytes: two packs never share a name, even with the same
# chunks (prune rewriting what a killed prune already wrote must not name a pack it deletes).
HEADER = struct.Struct("<8sII16s")
TRAILER = struct.Struct("<QII16s8s")
IDX_MAGIC = b"ORBPIDX3"
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

    def __init__(self, buf: bytearray | None = None, sealer: Sealer | None = None) -> None:
        self.buf = buf if buf is not None else bytearray(1 << 20)
        self.token = secrets.token_bytes(16)
        self.sealer = sealer
        HEADER.pack_into(self.buf, 0, MAGIC, FLAG_SEALED if sealer else 0, 0, self.token)
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
        """A blob as stored (sealed already, in an encrypted repository)."""
        self._entries.append((chunk_id, self._size, len(blob), raw_len))
        self._put(blob)

    def finish(self) -> tuple[bytes, memoryview, np.ndarray]:
        import numpy as np

        entries = np.array(self._entries, dtype=__getattr__("ENTRY"))
        index = entries.tobytes()
        if self.sealer is not None:
            index = self.sealer.seal(crypto.PACK_INDEX, self.token, index)
        at = self._size
        self._put(index)
        self._put(TRAILER.pack(at, len(entries), zlib.crc32(index), self.token, IDX_MAGIC))
        data = memoryview(self.buf)[: self._size]
        return blake3.blake3(data).digest(), data, entries


class Trailer(NamedTuple):
    at: int  # where the index starts
    entries: int
    crc: int
    token: bytes
    index_bytes: int  # as stored


def parse_trailer(name: str, tail: bytes, size: int, sealed: bool) -> Trailer:
    """The last TRAILER.size bytes of a pack of `size` bytes, checked against that size."""
    if len(tail) != TRAILER.size:
        raise RepositoryError(f"pack {name} is truncated ({size} bytes)")
    at, count, crc, token, magic = TRAILER.unpack(tail)
    stored = count * ENTRY_BYTES + (crypto.OVERHEAD if sealed else 0)
    if magic != IDX_MAGIC or at + stored + TRAILER.size != size:
        raise RepositoryError(f"pack {name} has a damaged trailer; run `orbit-fast verify`")
    return Trailer(at, count, crc, token, stored)


def parse_index(name: str, index: bytes, t: Trailer, sealer: Sealer | None) -> np.ndarray:
    if zlib.crc32(index) != t.crc:
        raise RepositoryError(f"pack {name} has a damaged index; run `orbit-fast verify`")
    if sealer is not None:
        index = sealer.open(crypto.PACK_INDEX, t.token, index, f"the index of pack {name}")
    import numpy as np

    entries = np.frombuffer(index, __getattr__("ENTRY"))
    if len(entries) != t.entries:
        raise RepositoryError(f"pack {name} has a damaged index; run `orbit-fast verify`")
    return entries


def read_index_from(name: str, data: bytes | memoryview, sealer: Sealer | None) -> np.ndarray:
    """The index of a pack held whole in memory."""
    t = parse_trailer(name, bytes(data[-TRAILER.size :]), len(data), sealer is not None)
    magic, flags, _, token = HEADER.unpack_from(bytes(data[: HEADER.size]))
    if magic != MAGIC or token != t.token or bool(flags & FLAG_SEALED) != (sealer is not None):
        raise RepositoryError(f"pack {name} does not start with its pack header")
    return parse_index(name, bytes(data[t.at : t.at + t.index_bytes]), t, sealer)
