"""Snapshots: what one backup saw, as a small object naming its root directory's tree.

File: "ORBSNAP2", uint32 flags (0: plain; reserved for encryption), uint32 length of the
header; the header (msgpack `Snapshot`: time, host, source, tags, parent, counts and the root
directory's entry, whose `subtree` is the root tree's id). The file list itself is the tree of
trees below that id (repo/tree.py), stored in packs: a snapshot of an unchanged source is a
few hundred bytes. Named by the BLAKE3-256 of the file; written last in a backup, whole, by one
atomic store write: a crash leaves the old set of snapshots or the new.

Format 1 snapshots ("ORBSNAP1", one list of every node) are refused with a message: no
repository of that format was deployed, so none is read.
"""

from __future__ import annotations

import struct

import blake3
import msgspec

from orbit_fast.errors import IntegrityError, RepositoryError
from orbit_fast.repo.tree import DIR, Entry, check_entry

MAGIC = b"ORBSNAP2"
OLD_MAGIC = b"ORBSNAP1"
HEADER = struct.Struct("<8sII")
HEADER_MAX_BYTES = 16 << 20  # time, host, source, tags: a few hundred bytes in practice


class Snapshot(msgspec.Struct, kw_only=True, frozen=True):
    time_ns: int
    hostname: str
    source: str
    root: Entry  # the backup root's own metadata; root.subtree is its tree
    tags: list[str] = []
    parent: str | None = None
    files_new: int = 0
    files_changed: int = 0
    files_unchanged: int = 0
    files_total: int = 0
    dirs_total: int = 0
    bytes_total: int = 0
    bytes_added: int = 0  # stored (compressed) bytes of the blobs this backup added
    trees_added: int = 0  # of which trees (directories whose entries changed)

    @property
    def tree(self) -> bytes:
        return self.root.subtree


_decoder = msgspec.msgpack.Decoder(Snapshot)


def encode(snap: Snapshot) -> tuple[str, bytes]:
    header = msgspec.msgpack.encode(snap)
    data = HEADER.pack(MAGIC, 0, len(header)) + header
    return blake3.blake3(data).hexdigest(), data


def header_length(name: str, head: bytes) -> int:
    """Bytes from the start of the file to the end of the header (from its first 16 bytes)."""
    if head[:8] == OLD_MAGIC:
        raise RepositoryError(
            f"snapshot {name[:8]} is of repository format 1, which this orbit-fast does not "
            "read (format 2 stores directories as trees); back up into a new repository"
        )
    if len(head) < HEADER.size or head[:8] != MAGIC:
        raise RepositoryError(f"snapshot {name[:8]} is not a snapshot file")
    header_bytes: int = HEADER.unpack_from(head)[2]
    if header_bytes > HEADER_MAX_BYTES:
        raise RepositoryError(f"snapshot {name[:8]} has a damaged header: it claims "
                              f"{header_bytes} bytes, more than {HEADER_MAX_BYTES}")  # fmt: skip
    return HEADER.size + header_bytes


def decode(name: str, data: bytes) -> Snapshot:
    """The snapshot; RepositoryError if it is damaged, IntegrityError if its root is unsafe."""
    if blake3.blake3(data).hexdigest() != name:
        raise RepositoryError(
            f"snapshot {name[:8]} is damaged (its content does not match its name); "
            "`orbit-fast forget` it and back up again"
        )
    end = header_length(name, data)
    try:
        snap = _decoder.decode(data[HEADER.size : end])
    except msgspec.ValidationError as exc:
        raise IntegrityError(f"snapshot {name[:8]} is damaged or hostile: {exc}; "
                             "`orbit-fast forget` it") from exc  # fmt: skip
    except msgspec.DecodeError as exc:
        raise RepositoryError(f"snapshot {name[:8]} has a damaged header: {exc}") from exc
    why = "is not a directory" if snap.root.kind != DIR else check_entry(snap.root)
    if why or snap.root.name:
        raise IntegrityError(f"snapshot {name[:8]} is damaged or hostile: its root "
                             f"{why or 'has a name'}; `orbit-fast forget` it")  # fmt: skip
    return snap
