"""Tree objects: one per directory of a snapshot, its entries sorted by name (docs/backup.md).

A tree is the msgpack of `TreeBlob`, stored as a blob in a pack like a data chunk and named by
the repository's keyed BLAKE3 of its bytes, so equal directories share one tree and an
unchanged directory costs a new snapshot nothing. A directory entry names its subdirectory's
tree (`subtree`); the snapshot names the root's. The encoding is deterministic (msgspec,
array-like structs, fixed field order): the same entries always give the same id
(tests/unit/test_tree.py holds golden vectors).

A directory whose encoding would exceed DIRECT_BYTES is split into pages: trees holding a run
of its entries, cut where a name's hash says so (content-defined, so adding one name rewrites
one page, not every page after it), and an index tree listing each page's first name and id.
Every tree, and so the memory any reader needs for one, stays bounded whatever the directory.

Anyone who can write to the repository can add trees (until it is encrypted), so decoding
trusts nothing: output and entry-count limits first, then `check_tree`: each name one clean
path component, strictly increasing, each entry's fields consistent with its kind. A path
built from checked names cannot leave a restore target, and an id that matches its content
(checked by the loader) rules out cycles.
"""

from __future__ import annotations

import os
from typing import Annotated

import msgspec
import xxhash

from orbit_fast.errors import IntegrityError
from orbit_fast.names import shown

FILE, DIR, LINK = "f", "d", "l"
FIFO, CHR, BLK = "p", "c", "b"  # special files, as ls -l shows them
SPECIALS = frozenset((FIFO, CHR, BLK))
KINDS = frozenset((FILE, DIR, LINK)) | SPECIALS
ID_BYTES = 32
# A directory is stored in one tree up to this encoded size; larger ones are paged. 1 MiB is
# about 8,000 entries of small files: a page read costs one ranged GET.
DIRECT_BYTES = 1 << 20
# Pages: cut after a name whose hash is 0 modulo PAGE_CUT once the page holds PAGE_MIN_BYTES,
# always at DIRECT_BYTES. About 2,000-4,000 entries a page.
PAGE_MIN_BYTES = 128 << 10
PAGE_CUT = 1024
# Decoding limits. A tree backup writes is at most DIRECT_BYTES plus one entry; one entry can
# be large only through its chunk list (32 bytes per chunk: a 2 TiB file at 1 MiB average
# chunks is 64 MiB). The smallest entry encodes to 14 bytes, so what a tree may expand to
# bounds its entries; MAX_ENTRIES bounds the Python objects made from one tree (a hostile tree
# of tiny entries), and every tree backup writes stays under it.
MAX_TREE_BYTES = 64 << 20
MAX_ENTRIES = 1 << 17
MAX_PAGES = 1 << 20  # index entries: ~4 billion names in one directory

_Mode = Annotated[int, msgspec.Meta(ge=0, le=0o7777)]  # permission bits only
_Id = Annotated[int, msgspec.Meta(ge=0, le=(1 << 32) - 2)]  # (1 << 32) - 1 is "no change"
_Ns = Annotated[int, msgspec.Meta(ge=-(1 << 63), le=(1 << 63) - 1)]  # what utimensat takes
_Size = Annotated[int, msgspec.Meta(ge=0)]
_Count = Annotated[int, msgspec.Meta(ge=0, le=(1 << 32) - 1)]
_Owner = Annotated[str, msgspec.Meta(max_length=256)]
# An entry's xattr and ACL set: in a tree, the 1-based index of the set's id in the tree's
# `metas` (0: none); once TreeReader.load has resolved it, and in a snapshot's root entry,
# the id itself (b"": none).
_MetaRef = Annotated[int, msgspec.Meta(ge=0, le=MAX_ENTRIES)] | bytes


class Entry(msgspec.Struct, array_like=True):
    """One name in a directory: a file (with its chunk ids), a directory (with its tree's id),
    a symlink (with its target) or a fifo or device (with its device number). The snapshot's
    root has name b"". Not frozen: backup fills a file's chunks in place once its workers
    are done with it.

    `dev`, `ino` and `links` say which files are one inode (hard links: restored as links);
    `user` and `group` are the owner's names when the backup could resolve them (a restore
    by name uses them); `meta` names the entry's xattrs and POSIX ACLs (a MetaSet blob, stored
    once however many entries share it)."""

    name: bytes
    kind: str  # FILE | DIR | LINK
    mode: _Mode
    uid: _Id
    gid: _Id
    mtime_ns: _Ns
    atime_ns: _Ns
    ctime_ns: int  # with size/mtime/ino: "unchanged since the parent snapshot"
    ino: int
    size: _Size
    target: bytes = b""  # links
    chunks: bytes = b""  # files: concatenated 32-byte chunk ids, in file order
    subtree: bytes = b""  # directories: the id of the directory's tree
    rdev: int = 0  # devices
    dev: int = 0
    links: _Count = 1
    user: _Owner = ""
    group: _Owner = ""
    meta: _MetaRef = b""

    def chunk_ids(self) -> list[bytes]:
        c = self.chunks
        return [c[i : i + ID_BYTES] for i in range(0, len(c), ID_BYTES)]

    @property
    def chunk_count(self) -> int:
        return len(self.chunks) // ID_BYTES


class Page(msgspec.Struct, array_like=True, frozen=True):
    first: bytes  # the page's first name: a lookup reads only the page that may hold a name
    tree: bytes  # the page's id
    count: int


class TreeBlob(msgspec.Struct, array_like=True):
    """A directory's entries, or (a large directory) the index of its pages; never both.
    `metas`: the ids of the MetaSets its entries name, each once (an entry's `meta` is an
    index into it), so a tree of files sharing one ACL holds its id once."""

    entries: list[Entry] = []
    pages: list[Page] = []
    metas: list[bytes] = []


class MetaSet(msgspec.Struct, array_like=True, frozen=True):
    """An entry's extended attributes, its POSIX ACLs among them (the system.posix_acl_access
    and system.posix_acl_default xattrs, in the kernel's binary form), sorted by name. Stored
    as a blob named by its keyed hash, like a tree: ten million files with one ACL share one."""

    xattrs: list[tuple[bytes, bytes]]


ACL_NAMES = (b"system.posix_acl_access", b"system.posix_acl_default")
MAX_META_BYTES = 4 << 20  # Linux: 64 KiB per value, and what listxattr can return
_meta_decoder = msgspec.msgpack.Decoder(MetaSet)


def encode_meta(xattrs: list[tuple[bytes, bytes]]) -> bytes:
    return _encoder.encode(MetaSet(sorted(xattrs)))


def decode_meta(label: str, raw: bytes) -> MetaSet:
    """A MetaSet from its bytes, checked: names sorted, each once, none empty or holding NUL."""
    try:
        ms = _meta_decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise IntegrityError(f"{label} cannot be decoded ({exc}); run `orbit-fast verify`"
                             ) from exc  # fmt: skip
    prev = None
    for name, _ in ms.xattrs:
        if not name or b"\0" in name or (prev is not None and name <= prev):
            raise hostile(label, f"xattr '{shown(name)}' is empty, out of order or twice")
        prev = name
    return ms


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(TreeBlob)


def encode(blob: TreeBlob) -> bytes:
    return _encoder.encode(blob)


def encode_entries(entries: list[Entry]) -> bytes:
    """The stored tree of `entries`, whose `meta` are set ids (b"": none): each distinct id
    once in `metas`, in order of first use, and each entry's `meta` its 1-based index there.
    The entries are given back as they came (their ids), after the encoding."""
    ids: dict[bytes, int] = {}
    held: list[tuple[Entry, bytes]] = []
    for e in entries:
        mid = e.meta
        if isinstance(mid, bytes):
            held.append((e, mid))
            e.meta = ids.setdefault(mid, len(ids) + 1) if mid else 0
    try:
        return encode(TreeBlob(entries=entries, metas=list(ids)))
    finally:
        for e, mid in held:
            e.meta = mid


def split(entries: list[Entry]) -> tuple[list[list[Entry]], list[bytes]] | None:
    """None if `entries` fit one tree, else the runs of entries to store as pages and their
    encodings (deterministic: the same entries give the same pages)."""
    direct = 0
    sizes = []
    for e in entries:
        n = len(e.name) + len(e.chunks) + len(e.target) + len(e.subtree) + len(e.user) + len(
            e.group) + 96  # fmt: skip
        sizes.append(n)
        direct += n
    if direct <= DIRECT_BYTES // 2:  # an over-estimate of the encoding: surely one tree
        return None
    if len(encode_entries(entries)) <= DIRECT_BYTES and len(entries) <= MAX_ENTRIES:
        return None
    pages: list[list[Entry]] = []
    start = held = 0
    for i, e in enumerate(entries):
        held += sizes[i]
        count = i + 1 - start
        if ((held >= PAGE_MIN_BYTES and xxhash.xxh3_64_intdigest(e.name) % PAGE_CUT == 0)
                or held >= DIRECT_BYTES - 4096 or count >= MAX_ENTRIES // 2):  # fmt: skip
            pages.append(entries[start : i + 1])
            start, held = i + 1, 0
    if start < len(entries):
        pages.append(entries[start:])
    return pages, [encode_entries(p) for p in pages]


def _count(raw: bytes) -> int:
    """The length of the msgpack array that starts at raw[1:] (a TreeBlob is an array whose
    first element is the entries array); 0 if it cannot be read from the header."""
    if len(raw) < 2:
        return 0
    b = raw[1]
    if 0x90 <= b <= 0x9F:
        return b & 0x0F
    if b == 0xDC and len(raw) >= 4:
        return int.from_bytes(raw[2:4], "big")
    if b == 0xDD and len(raw) >= 6:
        return int.from_bytes(raw[2:6], "big")
    return 0


def decode(label: str, raw: bytes) -> TreeBlob:
    """A tree from its bytes, checked (check_tree); IntegrityError naming `label` (where the
    tree is: "tree 1a2b3c4d at 'home/ann'") if it is damaged or unsafe."""
    count = _count(raw)
    if count > MAX_ENTRIES:
        raise hostile(label, f"it claims {count} entries, more than {MAX_ENTRIES}")
    try:
        blob = _decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise hostile(label, f"an entry's {exc}") from exc
    except msgspec.DecodeError as exc:
        raise IntegrityError(f"{label} cannot be decoded ({exc}); run `orbit-fast verify`"
                             ) from exc  # fmt: skip
    check_tree(label, blob)
    return blob


def hostile(label: str, why: str) -> IntegrityError:
    return IntegrityError(f"{label} is damaged or hostile: {why}; `orbit-fast forget` the "
                          "snapshots using it")  # fmt: skip


def unsafe_name(name: bytes) -> str:
    """Why `name` cannot be one component of a path below a restore target ("" if it can)."""
    if not name:
        return "is empty"
    if name in (b".", b".."):
        return f"is {name.decode()!r}"
    if b"/" in name:
        return "holds '/'"
    if b"\0" in name:
        return "holds NUL"
    return ""


def check_entry(e: Entry, metas: int = -1) -> str:
    """Why entry `e` cannot be restored (its name aside): "" if it can. `metas`: how many
    MetaSet ids its tree lists (-1: a snapshot's root entry, which names its set's id)."""
    if e.kind not in KINDS:
        return f"has unknown kind {e.kind!r}"
    if metas >= 0 and not (e.meta == b"" or (isinstance(e.meta, int) and e.meta <= metas)):
        return "names an xattr set its tree does not list"
    if metas < 0 and not (isinstance(e.meta, bytes) and len(e.meta) in (0, ID_BYTES)):
        return "names a damaged xattr set id"
    if e.rdev and e.kind not in (CHR, BLK):
        return "is not a device but has a device number"
    if e.kind in SPECIALS and e.size:
        return "is a special file with a size"
    if e.kind == DIR:
        if len(e.subtree) != ID_BYTES or e.chunks or e.target:
            return "is a directory without a tree id"
    elif e.subtree:
        return "is not a directory but names a tree"
    if len(e.chunks) % ID_BYTES or (e.chunks and e.kind != FILE):
        return "has a damaged chunk list"
    if e.kind == LINK and (not e.target or b"\0" in e.target):
        return "is a link with an empty target or one holding NUL"
    if e.kind != LINK and e.target:
        return "is not a link but has a target"
    return ""


def check_tree(label: str, blob: TreeBlob) -> None:
    """IntegrityError unless every entry is restorable below its directory and nowhere else:
    one clean component each, names strictly increasing (so none twice), kinds consistent;
    an index lists pages in increasing order of first name and holds no entries itself."""
    if blob.pages:
        if blob.entries or blob.metas:
            raise hostile(label, "it holds both entries and pages")
        if len(blob.pages) > MAX_PAGES:
            raise hostile(label, f"it lists {len(blob.pages)} pages")
        prev = None
        for pg in blob.pages:
            why = unsafe_name(pg.first) or (
                "is a page with a damaged id" if len(pg.tree) != ID_BYTES else
                "is not after the page before it" if prev is not None and pg.first <= prev
                else "")  # fmt: skip
            if why:
                raise hostile(label, f"page '{shown(pg.first)}' {why}")
            prev = pg.first
        return
    if blob.metas and (len(blob.metas) > MAX_ENTRIES
                       or any(len(i) != ID_BYTES for i in blob.metas)):  # fmt: skip
        raise hostile(label, "its list of xattr sets is damaged")
    check_entries(label, blob.entries, None, len(blob.metas))


def check_entries(label: str, entries: list[Entry], after: bytes | None,
                  metas: int | None = None) -> None:  # fmt: skip
    """check_tree for a run of entries that must all come after the name `after`; `metas`:
    the length of their tree's `metas` (None: entries resolved already, as TreeReader gives
    them)."""
    prev = after
    for e in entries:
        name = e.name
        why = unsafe_name(name) or check_entry(e, metas if metas is not None else -1)
        if not why and prev is not None and name <= prev:
            why = "is listed twice" if name == prev else "is out of order"
        if why:
            raise hostile(label, f"entry '{shown(name)}' {why}")
        prev = name


def join(parent: bytes, name: bytes) -> bytes:
    return parent + b"/" + name if parent else name


def components(path: str | bytes) -> list[bytes]:
    """A user's path ("a/b", "/a/b/", "") as its components, empty ones dropped; "." and ".."
    are kept, for the caller to refuse by not finding them (no tree holds such a name)."""
    raw = os.fsencode(path).strip(b"/")
    return [c for c in raw.split(b"/") if c] if raw else []
