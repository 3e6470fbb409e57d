"""Snapshots: what one backup saw, as a small object naming its root directory's tree.

File: "ORBSNAP3", uint32 flags (1: sealed), uint32 length of the header; the header (msgpack
`Snapshot`: time, host, source, tags, parent, counts and the root directory's entry, whose
`subtree` is the root tree's id). The file list itself is the tree of trees below that id
(repo/tree.py), stored in packs: a snapshot of an unchanged source is a few hundred bytes.
Written last in a backup, whole, by one atomic store write: a crash leaves the old set of
snapshots or the new.

Its name: in an encrypted repository, the keyed BLAKE3-256 (the chunk-id key) of the header,
which is sealed with that name as associated data, so a snapshot copied or replayed under
another name fails authentication; in an unencrypted one, the BLAKE3-256 of the file.

Snapshots of earlier formats ("ORBSNAP1" to "ORBSNAP3") are refused with a message: no
repository of those formats was deployed, so none is read.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

import blake3
import msgspec

from orbit_fast import crypto
from orbit_fast.errors import IntegrityError, RepositoryError
from orbit_fast.repo.tree import DIR, Entry, check_entry

if TYPE_CHECKING:
    from orbit_fast.crypto import Sealer

MAGIC = b"ORBSNAP4"
OLD_MAGICS = (b"ORBSNAP1", b"ORBSNAP2", b"ORBSNAP3")
FLAG_SEALED = 1
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


def encode(snap: Snapshot, sealer: Sealer | None, id_key: bytes) -> tuple[str, bytes]:
    header = msgspec.msgpack.encode(snap)
    if sealer is None:
        data = HEADER.pack(MAGIC, 0, len(header)) + header
        return blake3.blake3(data).hexdigest(), data
    name = blake3.blake3(header, key=id_key).hexdigest()
    body = sealer.seal(crypto.SNAPSHOT, name.encode(), header)
    return name, HEADER.pack(MAGIC, FLAG_SEALED, len(body)) + body


def header_length(name: str, head: bytes) -> int:
    """Bytes from the start of the file to the end of the header (from its first 16 bytes)."""
    if head[:8] in OLD_MAGICS:
        raise RepositoryError(
            f"snapshot {name[:8]} is of an earlier repository format, which this orbit-fast "
            "does not read; back up into a new repository"
        )
    if len(head) < HEADER.size or head[:8] != MAGIC:
        raise RepositoryError(f"snapshot {name[:8]} is not a snapshot file")
    header_bytes: int = HEADER.unpack_from(head)[2]
    if header_bytes > HEADER_MAX_BYTES:
        raise RepositoryError(f"snapshot {name[:8]} has a damaged header: it claims "
                              f"{header_bytes} bytes, more than {HEADER_MAX_BYTES}")  # fmt: skip
    return HEADER.size + header_bytes


def decode(name: str, data: bytes, sealer: Sealer | None) -> Snapshot:
    """The snapshot; RepositoryError if it is damaged, AuthenticationFailed if it is sealed
    and does not open under its name, IntegrityError if its root is unsafe."""
    end = header_length(name, data)
    flags = HEADER.unpack_from(data)[1]
    if sealer is None:
        if blake3.blake3(data).hexdigest() != name or flags & FLAG_SEALED:
            raise RepositoryError(
                f"snapshot {name[:8]} is damaged (its content does not match its name); "
                "`orbit-fast forget` it and back up again"
            )
        header = data[HEADER.size : end]
    else:
        if len(data) != end or not flags & FLAG_SEALED:
            raise RepositoryError(f"snapshot {name[:8]} is damaged (not a sealed snapshot of "
                                  "its length); `orbit-fast forget` it")  # fmt: skip
        header = sealer.open(crypto.SNAPSHOT, name.encode(), data[HEADER.size : end],
                             f"snapshot {name[:8]}")  # fmt: skip
    try:
        snap = _decoder.decode(header)
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
