"""Snapshots: what one backup saw, as a list of nodes with their chunk ids.

File: "ORBSNAP1", uint32 flags (0: plain; reserved for encryption), uint32 length of the
header; the header (msgpack `Snapshot` without its nodes: time, host, source, counts), then a
zstd frame of the msgpack list of nodes. Listing snapshots and choosing a backup's parent read
headers only. Named by the BLAKE3-256 of the file; written last in a backup, whole, by one
atomic store write: a crash leaves the old set of snapshots or the new.

Anyone who can write to the repository can add a snapshot (names are unkeyed hashes), so
decoding trusts nothing: the nodes are decompressed with an output limit and every node path
must be "/"-joined single components, unique, below a directory node earlier in the list
(`check_nodes`); anything else is an IntegrityError naming the snapshot and the path, before
any command (restore, ls, diff, verify) sees the nodes.
"""

from __future__ import annotations

import re
import struct
from typing import Annotated, NoReturn

import blake3
import msgspec
import zstandard

from orbit_fast.compression import OutputLimit, decompress_zstd
from orbit_fast.confine import Escape, check_rel
from orbit_fast.errors import IntegrityError, RepositoryError
from orbit_fast.names import shown

MAGIC = b"ORBSNAP1"
HEADER = struct.Struct("<8sII")
FILE, DIR, LINK = "f", "d", "l"
# Output limits of the node list (msgpack in one zstd frame): at most NODES_RATIO times its
# compressed size (never less than NODES_MIN_BYTES is allowed), and at most NODES_PER_BYTE
# nodes per compressed byte (NODES_MIN_COUNT at least), which bounds the Python objects made
# from it. Real lists compress 3-8x; the most regular trees tried, 1121x (100k empty files
# under a 4 KB path) and 0.71 nodes per byte (1M empty files with sequential names and equal
# times). A zstd bomb reaches 32000x: a 6.4 KB frame of 200 MiB.
NODES_RATIO = 4096
NODES_MIN_BYTES = 4 << 20
NODES_PER_BYTE = 16
NODES_MIN_COUNT = 1 << 16
HEADER_MAX_BYTES = 16 << 20  # time, host, source, tags: a few hundred bytes in practice
_KINDS = frozenset((FILE, DIR, LINK))
# Range checks made by the decoder (in C); constructing a Node checks nothing.
_Mode = Annotated[int, msgspec.Meta(ge=0, le=0o7777)]  # permission bits only
_Id = Annotated[int, msgspec.Meta(ge=0, le=(1 << 32) - 2)]  # (1 << 32) - 1 is "no change"
_Ns = Annotated[int, msgspec.Meta(ge=-(1 << 63), le=(1 << 63) - 1)]  # what utimensat takes
_Size = Annotated[int, msgspec.Meta(ge=0)]
# A "." or ".." component, in paths joined by NUL and framed by NUL (so a match is one of
# these, never a dotfile).
_DOT_COMPONENT = re.compile(rb"[/\0]\.\.?(?=[/\0])")


class Node(msgspec.Struct, array_like=True, frozen=True):
    path: bytes  # relative to the backup root, "/"-joined; b"" is the root itself
    kind: str  # FILE | DIR | LINK
    mode: _Mode
    uid: _Id
    gid: _Id
    mtime_ns: _Ns
    atime_ns: _Ns
    ctime_ns: int  # with size/mtime/ino: "unchanged since the parent snapshot"
    ino: int
    size: _Size
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
    if header_bytes > HEADER_MAX_BYTES:
        raise RepositoryError(f"snapshot {name[:8]} has a damaged header: it claims "
                              f"{header_bytes} bytes, more than {HEADER_MAX_BYTES}")  # fmt: skip
    return HEADER.size + header_bytes


def decode_info(name: str, head: bytes) -> Snapshot:
    """The snapshot without its nodes, from the file's first header_length() bytes."""
    end = header_length(name, head)
    try:
        info = msgspec.msgpack.decode(head[HEADER.size : end], type=Snapshot)
        # The nodes are the body's; a header that lists some of its own is not trusted.
        return msgspec.structs.replace(info, nodes=[]) if info.nodes else info
    except msgspec.DecodeError as exc:
        raise RepositoryError(f"snapshot {name[:8]} has a damaged header: {exc}") from exc


def decode(name: str, data: bytes) -> Snapshot:
    """The whole snapshot, nodes checked (check_nodes). RepositoryError if it is damaged,
    IntegrityError if its nodes are unsafe or expand beyond the output limit."""
    if blake3.blake3(data).hexdigest() != name:
        raise RepositoryError(
            f"snapshot {name[:8]} is damaged (its content does not match its name); "
            "`orbit-fast forget` it and back up again"
        )
    info = decode_info(name, data)
    body = memoryview(data)[header_length(name, data) :]
    limit = max(NODES_MIN_BYTES, NODES_RATIO * len(body))
    try:
        raw = decompress_zstd(body, limit)
        count, max_count = _count(raw), max(NODES_MIN_COUNT, NODES_PER_BYTE * len(body))
        if count > max_count:
            raise OutputLimit(f"{count} nodes in {len(body)} bytes, more than {max_count}")
        nodes = _nodes_decoder.decode(raw)
    except OutputLimit as exc:
        raise IntegrityError(
            f"snapshot {name[:8]} is damaged or hostile: its file list expands beyond the "
            f"limit ({exc}); `orbit-fast forget` it"
        ) from exc
    except msgspec.ValidationError as exc:  # a mode, owner, size or time out of range
        raise IntegrityError(
            f"snapshot {name[:8]} is damaged or hostile: a node's {exc}; `orbit-fast forget` it"
        ) from exc
    except (zstandard.ZstdError, msgspec.DecodeError) as exc:
        raise RepositoryError(f"snapshot {name[:8]} cannot be decoded: {exc}") from exc
    check_nodes(name, nodes)
    return msgspec.structs.replace(info, nodes=nodes)


def _count(raw: bytes) -> int:
    """The length of the msgpack array `raw` starts with (from its header; 0 if it is not an
    array: the decoder then says what is wrong)."""
    if raw and 0x90 <= raw[0] <= 0x9F:
        return raw[0] & 0x0F
    if raw[:1] == b"\xdc" and len(raw) >= 3:
        return int.from_bytes(raw[1:3], "big")
    if raw[:1] == b"\xdd" and len(raw) >= 5:
        return int.from_bytes(raw[1:5], "big")
    return 0


def check_nodes(name: str, nodes: list[Node]) -> None:
    """IntegrityError unless every node can be restored below a target and nowhere else:
    its path is b"" (the root, a directory) or "/"-joined single components (no "", ".",
    "..", NUL, leading "/"); no path twice; each node's parent is a directory node listed
    before it (or the root); its kind, chunk list and link target make sense. (Modes,
    owners, sizes and times are checked by the decoder: see Node.) What backup writes always
    passes: it lists directories before their contents.

    Every backup runs this over its parent snapshot, so the paths are scanned all at once
    (substring searches over them joined by NUL) and the loop does dictionary work only;
    the node to name is looked for only when something is wrong."""
    paths = [n.path for n in nodes]
    framed = b"\0" + b"\0".join(paths) + b"\0"
    if (framed.count(b"\0") != len(paths) + 1  # a NUL inside a path
            or b"//" in framed or b"\0/" in framed or b"/\0" in framed  # "", leading, trailing
            or _DOT_COMPONENT.search(framed)):  # fmt: skip
        _name_the_bad_node(name, nodes)
    rest = iter(nodes)
    if paths and not paths[0]:  # the root node
        if next(rest).kind != DIR:
            _name_the_bad_node(name, nodes)
    # (A snapshot without a root node restores into the target as its root.)
    kinds: dict[bytes, str] = {b"": DIR}
    for n in rest:
        p, kind = n.path, n.kind
        if (p in kinds or kind not in _KINDS or kinds.get(p.rpartition(b"/")[0]) != DIR
                or len(n.chunks) & 31
                or kind == LINK and (not n.target or b"\0" in n.target)):  # fmt: skip
            _name_the_bad_node(name, nodes)
        kinds[p] = kind


def _name_the_bad_node(name: str, nodes: list[Node]) -> NoReturn:
    """IntegrityError naming the first node check_nodes refuses, and why."""
    kinds: dict[bytes, str] = {}
    for n in nodes:
        why = _unsafe(n, kinds)
        if why:
            raise IntegrityError(
                f"snapshot {name[:8]} is damaged or hostile: node '{shown(n.path)}' {why}; "
                "`orbit-fast forget` it"
            )
        kinds[n.path] = n.kind
    raise IntegrityError(f"snapshot {name[:8]} is damaged or hostile: its nodes are not a tree; "
                         "`orbit-fast forget` it")  # fmt: skip


def _unsafe(n: Node, kinds: dict[bytes, str]) -> str:
    """Why `n` cannot be restored after the nodes in `kinds` ("" if it can)."""
    if n.kind not in _KINDS:
        return f"has unknown kind {n.kind!r}"
    if n.path in kinds:
        return "is listed twice"
    if not n.path:
        if kinds:
            return "(the root) is not listed first"
        return "" if n.kind == DIR else "(the root) is not a directory"
    try:
        check_rel(n.path)
    except Escape as exc:
        return f"is an {exc.strerror}"
    parent = n.path.rpartition(b"/")[0]
    if parent:
        pk = kinds.get(parent)
        if pk is None:
            return "has no directory above it (its parent is not listed before it)"
        if pk != DIR:
            return f"is below '{shown(parent)}', which is not a directory"
    elif kinds.get(b"", DIR) != DIR:
        return "is below a root that is not a directory"
    if len(n.chunks) % 32:
        return "has a damaged chunk list"
    if n.kind == LINK and (not n.target or b"\0" in n.target):
        return "is a link with an empty target or one holding NUL"
    return ""
