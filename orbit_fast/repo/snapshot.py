"""Snapshots: what one backup saw, as a list of nodes with their chunk ids.

File: "ORBSNAP1", uint32 flags (0: plain; reserved for encryption), uint32 length of the
header; the header (msgpack `Snapshot` without its nodes: time, host, source, counts), then a
zstd frame of the msgpack list of nodes. Listing snapshots and choosing a backup's parent read
headers only. Named by the BLAKE3-256 of the file; written last in a backup, whole, by one
atomic store write: a crash leaves the old set of snapshots or the new.
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
    files_total: int = 0
    bytes_total: int = 0
    bytes_added: int = 0  # stored (compressed) bytes of the chunks this backup added


_nodes_decoder = msgspec.msgpack.Decoder(list[Node])


def encode(snap: Snapshot) -> tuple[str, bytes]:
    header = msgspec.msgpack.encode(msgspec.structs.replace(snap, nodes=[]))
    body = zstandard.ZstdCompressor(level=3).compress(msgspec.msgpack.encode(snap.nodes))
    data = HEADER.pack(MAGIC, 0, len(header)) + header + body
    return blake3.blake3(data).hexdigest(), data


def header_length(name: str, head: bytes) -> int:
    """Bytes from the start of the file to the end of the header (from its first 16 bytes)."""
    if len(head) < HEADER.size or head[:8] != MAGIC:
        raise RepositoryError(f"snapshot {name[:8]} is not a snapshot file")
    header_bytes: int = HEADER.unpack_from(head)[2]
    return HEADER.size + header_bytes


def decode_info(name: str, head: bytes) -> Snapshot:
    """The snapshot without its nodes, from the file's first header_length() bytes."""
    end = header_length(name, head)
    try:
        return msgspec.msgpack.decode(head[HEADER.size : end], type=Snapshot)
    except msgspec.DecodeError as exc:
        raise RepositoryError(f"snapshot {name[:8]} has a damaged header: {exc}") from exc


def decode(name: str, data: bytes) -> Snapshot:
    if blake3.blake3(data).hexdigest() != name:
        raise RepositoryError(
            f"snapshot {name[:8]} is damaged (its content does not match its name); "
            "`orbit-fast forget` it and back up again"
        )
    info = decode_info(name, data)
    try:
        raw = zstandard.ZstdDecompressor().decompress(data[header_length(name, data) :])
        return msgspec.structs.replace(info, nodes=_nodes_decoder.decode(raw))
    except (zstandard.ZstdError, msgspec.DecodeError) as exc:
        raise RepositoryError(f"snapshot {name[:8]} cannot be decoded: {exc}") from exc
