"""Reading and writing the trees of snapshots (repo/tree.py) through the universe and packs.

`TreeReader` loads one tree at a time, by id: located through the universe, read with one
ranged read, decompressed under MAX_TREE_BYTES, checked against its keyed id (so a tree that
was altered, or moved under another id, is refused) and then decoded and checked. A paged
directory is read one page at a time. Nothing is cached: every caller walks depth first and
holds at most the directories on its path.

`TreeWriter` stores the trees a backup makes through its PackWriter, deduplicated like data
chunks: a tree the repository already holds (an unchanged directory) is not written again.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator

from orbit_fast.compression import CorruptBlob, decompress, parse_codec
from orbit_fast.compression import compress as compress_blob
from orbit_fast.errors import IntegrityError
from orbit_fast.hashing import chunk_id
from orbit_fast.index.universe import Universe
from orbit_fast.names import shown
from orbit_fast.repo import tree as treefmt
from orbit_fast.repo.pack_writer import PackWriter
from orbit_fast.repo.repository import Repository
from orbit_fast.repo.tree import Entry, TreeBlob, join

# Trees are metadata: zstd whatever the repository's codec for data (they shrink 3-8x).
TREE_CODEC = "zstd:3"


def label(tid: bytes, where: bytes) -> str:
    return f"tree {tid.hex()[:8]} of '{shown(where) or '.'}'"


class TreeReader:
    def __init__(self, repo: Repository, universe: Universe) -> None:
        self.repo, self.universe = repo, universe
        self.key = repo.config.key_bytes
        self.trees_read = 0
        self.bytes_read = 0
        self._metas: dict[bytes, treefmt.MetaSet] = {}

    def load(self, tid: bytes, where: bytes = b"") -> TreeBlob:
        """The tree `tid` (of the directory `where`, for messages), checked. IntegrityError if
        it is missing, damaged or unsafe."""
        what = label(tid, where)
        raw = self._read_checked(tid, what, treefmt.MAX_TREE_BYTES)
        self.trees_read += 1
        tree = treefmt.decode(what, raw)
        ids = [b"", *tree.metas]  # an entry's index into its tree's sets: the id from here on
        for e in tree.entries:
            if isinstance(e.meta, int):
                e.meta = ids[e.meta]
        return tree

    def _read_checked(self, bid: bytes, what: str, max_bytes: int) -> bytes:
        """The raw bytes of metadata blob `bid` (a tree or an xattr set): located through the
        universe, decompressed under `max_bytes` and checked against its keyed id;
        IntegrityError naming `what` if it is missing or damaged."""
        loc = self.universe.locate(self.repo.id, [bid])[0]
        if loc is None:
            raise IntegrityError(f"{what} is missing from the repository; run `orbit-fast "
                                 "verify` to see which snapshots need it")  # fmt: skip
        blob = self.repo.read_blob(bid, loc, what)
        self.bytes_read += len(blob)
        try:
            raw = decompress(blob, max_bytes=max_bytes)
        except CorruptBlob as exc:
            raise IntegrityError(f"{what} is damaged ({exc}); run `orbit-fast verify`") from exc
        if chunk_id(self.key, raw) != bid:
            raise IntegrityError(f"{what} is damaged (its content does not match its id); run "
                                 "`orbit-fast verify`")  # fmt: skip
        return raw

    def meta(self, mid: bytes) -> treefmt.MetaSet:
        """The xattr set `mid`, checked (and kept: a repository holds few distinct sets)."""
        ms = self._metas.get(mid)
        if ms is not None:
            return ms
        what = f"xattr set {mid.hex()[:8]}"
        raw = self._read_checked(mid, what, treefmt.MAX_META_BYTES)
        ms = treefmt.decode_meta(what, raw)
        if len(self._metas) < 4096:
            self._metas[mid] = ms
        return ms

    def entries(self, tid: bytes, where: bytes = b"") -> Iterator[Entry]:
        """The entries of the directory whose tree is `tid`, in name order (a paged
        directory one page at a time)."""
        blob = self.load(tid, where)
        if not blob.pages:
            yield from blob.entries
            return
        for page in self._pages(blob.pages, where):
            yield from page

    def _page(self, pg: treefmt.Page, where: bytes, after: bytes | None) -> list[Entry]:
        page = self.load(pg.tree, where)
        what = label(pg.tree, where)
        if page.pages or not page.entries or page.entries[0].name != pg.first \
                or len(page.entries) != pg.count:  # fmt: skip
            raise treefmt.hostile(what, "it is not the page its directory lists")
        treefmt.check_entries(what, page.entries, after)
        return page.entries

    def walk(self, tid: bytes, seen: set[bytes],
             on_error: Callable[[IntegrityError], None] | None = None
             ) -> Iterator[tuple[bytes, list[Entry]]]:  # fmt: skip
        """(directory path, entries) for every tree at and below `tid` that is not in `seen`,
        a page at a time, each tree's id (and its pages') added to `seen`: a tree shared by
        several directories or snapshots is read once. A tree that cannot be read raises, or
        with `on_error` is reported there and what is below it skipped."""
        stack = [(tid, b"")]
        while stack:
            t, where = stack.pop()
            if t in seen:
                continue
            seen.add(t)
            try:
                blob = self.load(t, where)
                runs: Iterator[list[Entry]] = iter((blob.entries,))
                if blob.pages:
                    runs = self._pages(blob.pages, where, seen)
                for run in runs:
                    yield where, run
                    stack.extend((e.subtree, join(where, e.name)) for e in reversed(run)
                                 if e.kind == treefmt.DIR)  # fmt: skip
            except IntegrityError as exc:
                if on_error is None:
                    raise
                on_error(exc)

    def _pages(self, pages: list[treefmt.Page], where: bytes, seen: set[bytes] | None = None
               ) -> Iterator[list[Entry]]:  # fmt: skip
        """The entries of a paged directory, a page at a time, each checked to follow the
        one before; the pages' ids added to `seen` (walk)."""
        last: bytes | None = None
        for pg in pages:
            if seen is not None:
                seen.add(pg.tree)
            page = self._page(pg, where, last)
            yield page
            last = page[-1].name

    def lookup(self, tid: bytes, name: bytes, where: bytes = b"") -> Entry | None:
        """The entry `name` of the directory whose tree is `tid`: reads that tree and, if it
        is paged, the one page that may hold the name."""
        return next(self.lookup_many(tid, [name], where))

    def lookup_many(self, tid: bytes, names: list[bytes], where: bytes = b""
                    ) -> Iterator[Entry | None]:  # fmt: skip
        """lookup() of each of `names` (in increasing order) in one directory: its tree is
        read once, and each page that may hold one of them once."""
        blob = self.load(tid, where)
        at, entries = -1, blob.entries
        for name in names:
            if blob.pages:  # the last page whose first name is <= name
                i = bisect.bisect_right(blob.pages, name, key=lambda pg: pg.first) - 1
                if i < 0:
                    yield None
                    continue
                if i != at:
                    at, entries = i, self._page(blob.pages[i], where, None)
            j = bisect.bisect_left(entries, name, key=lambda e: e.name)
            yield entries[j] if j < len(entries) and entries[j].name == name else None

    def find(self, root: Entry, path: list[bytes]) -> Entry | None:
        """The entry at `path` (components) below the directory entry `root`: reads only the
        trees on that path. None if it is not there."""
        e, where = root, b""
        for name in path:
            if e.kind != treefmt.DIR:
                return None
            found = self.lookup(e.subtree, name, where)
            if found is None:
                return None
            e, where = found, treefmt.join(where, name)
        return e


class TreeWriter:
    def __init__(self, writer: PackWriter, key: bytes,
                 seal: Callable[[bytes, bytes], bytes] | None = None) -> None:  # fmt: skip
        """`seal(tree id, blob)`: an encrypted repository's (Repository.seal_blob)."""
        self.writer, self.key, self.seal = writer, key, seal
        self.codec = parse_codec(TREE_CODEC)
        self.trees_added = 0
        self.bytes_added = 0

    def put(self, entries: list[Entry], old: bytes = b"") -> bytes:
        """Store the tree of a directory holding `entries` (sorted by name); its id. `old`
        is the id of the directory's tree in the parent snapshot, which the repository holds:
        an unchanged directory is not looked up in the universe (whose table pages a lookup
        would bring in: a no-change backup of 1M files touched ~10k of them)."""
        split = treefmt.split(entries)
        if split is None:
            return self._store(treefmt.encode_entries(entries), old)
        pages, raws = split
        index = [treefmt.Page(p[0].name, self._store(raw), len(p))
                 for p, raw in zip(pages, raws, strict=True)]  # fmt: skip
        return self._store(treefmt.encode(TreeBlob(pages=index)), old)

    def put_meta_raw(self, raw: bytes) -> bytes:
        """Store an entry's xattrs (ACLs among them), a MetaSet as encode_meta gives it,
        once; its id."""
        return self._store(raw)

    def _store(self, raw: bytes, old: bytes = b"") -> bytes:
        tid = chunk_id(self.key, raw)
        if tid != old and not self.writer.has(tid):
            blob = compress_blob(self.codec, raw)
            if self.seal is not None:
                blob = self.seal(tid, blob)
            self.writer.add(tid, blob, len(raw))
            self.trees_added += 1
            self.bytes_added += len(blob)
        return tid
