"""Snapshots: what one backup saw, as a list of nodes with their chunk ids.

File: "ORBSNAP1", uint32 flags (0: plain; reserved for encryption), uint32 0, then a zstd
frame of the msgpack `Snapshot`. Named by the BLAKE3-256 of the file; written last in a
backup, whole, by one atomic store write: a crash leaves the old set of snapshots or the new.
"""

from __future__ import annotations

import struct

import blake3
import msgspec
import zstandard

from orbit_fast.errors import RepositoryError

MAGIC = b"ORBSNAP1"
HEADER = struct.Struct("<8sII")
FILE, DIR, LINK = "f", "d", "l"


class Node(msgspec.Struct, array_like=True, frozen=True):
    path: bytes  # relative to the backup root, "/"-joined; b"" is the root itself
    kind: str  # FILE | DIR | LINK
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    atime_ns: int
    ctime_ns: int  # with size/mtime/ino: "unchanged since the parent snapshot"
    ino: int
    size: int
    target: bytes = b""  # for links
    chunks: bytes = b""  # concatenated 32-byte chunk ids, in file order

    def chunk_ids(self) -> list[bytes]:
        c = self.chunks
        return [c[i : i + 32] for i in range(0, len(c), 32)]


class Snapshot(msgspec.Struct, kw_only=True, frozen=True):
    time_ns: int
    hostname: str
    source: str
    tags: list[str] = []
    parent: str | None = None
    nodes: list[Node] = []
    files_new: int = 0
    files_changed: int = 0
    files_unchanged: int = 0
    bytes_total: int = 0
    bytes_added: int = 0  # stored (compressed) bytes of the chunks this backup added


def encode(snap: Snapshot) -> tuple[str, bytes]:
    body = zstandard.ZstdCompressor(level=3).compress(msgspec.msgpack.encode(snap))
    data = HEADER.pack(MAGIC, 0, 0) + body
    return blake3.blake3(data).hexdigest(), data


def decode(name: str, data: bytes) -> Snapshot:
    if len(data) < HEADER.size or data[:8] != MAGIC:
        raise RepositoryError(f"snapshot {name[:8]} is not a snapshot file")
    if blake3.blake3(data).hexdigest() != name:
        raise RepositoryError(
            f"snapshot {name[:8]} is damaged (its content does not match its name); "
            "`orbit-fast forget` it and back up again"
        )
    try:
        raw = zstandard.ZstdDecompressor().decompress(data[HEADER.size :])
        return msgspec.msgpack.decode(raw, type=Snapshot)
    except (zstandard.ZstdError, msgspec.DecodeError) as exc:
        raise RepositoryError(f"snapshot {name[:8]} cannot be decoded: {exc}") from exc
