"""A backup run: walk the source depth first, chunk what changed in the workers, store new
chunks in packs and each directory's tree once its last entry is done, write the snapshot last.

The coordinator owns the repository lock, the universe index and the jobs DB. The walk lists one
directory at a time and compares it with the parent snapshot's tree of the same directory,
loaded then (repo/trees.py): files whose size, mtime, ctime and inode equal the parent's are
not read again, their chunk list is copied. Changed files go through the worker pool
(chunk_pipeline.chunk_files: chunk, keyed id, compress on ring slots), fed by the walk as it
goes; a chunk the universe already knows for this repository, or that is in the pack being
filled, is not stored again. A directory's tree is stored when its last file has its chunks
and its last subdirectory its tree; an unchanged directory's tree has the id it had, so it is
not stored again and an unchanged source adds only the snapshot object.

Memory: the directories waiting for their tree (the ones on the walk's path, plus those whose
files are still in the workers: at most chunk_files' read-ahead), each with its entries and
its parent-snapshot tree; not the file count (docs/backup.md, "Memory").

A pack is written whole and only then indexed, so the index never points at a pack that is not
complete. The snapshot comes last: a crash at any instant leaves the old set of snapshots,
plus packs (chunks and trees) the rerun dedups against.
"""

from __future__ import annotations

import functools
import itertools
import os
import socket
import stat as st
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from orbit_fast import messages as m
from orbit_fast import progress as p
from orbit_fast._native import kernels
from orbit_fast._native.reference import DIR, LINK, OTHER
from orbit_fast.backends.base import TEMP_NAME, OnSkip
from orbit_fast.cancel import CancelToken
from orbit_fast.config import BackupOptions, is_remote
from orbit_fast.confine import Tree
from orbit_fast.coordinator.run import RunLedger
from orbit_fast.errors import (
    ExitCode,
    IntegrityError,
    OrbitError,
    RepositoryError,
    SourceError,
    WorkerFailed,
)
from orbit_fast.filters import FilterRules
from orbit_fast.fsmeta import xattrs_beneath
from orbit_fast.index.universe import Universe
from orbit_fast.messages import KEEP_ACLS, KEEP_XATTRS
from orbit_fast.repo import snapshot as snapfmt
from orbit_fast.repo import tree as treefmt
from orbit_fast.repo.pack_writer import PackWriter
from orbit_fast.repo.repository import Repository
from orbit_fast.repo.tree import Entry
from orbit_fast.repo.trees import TreeReader, TreeWriter
from orbit_fast.roots import check_run, open_end

if TYPE_CHECKING:
    from orbit_fast.index.state_file import StateClaims
    from orbit_fast.workers.pool import WorkerPool

PROGRESS_EVERY_S = 0.25

# A listing: (directory path, [(name, stat tuple)] sorted by name), or None for a directory
# that could not be read. The stat tuple is scan_dir's (kind, size, mtime, atime, mode, ctime,
# ino, uid, gid, dev, nlink, rdev).
Listing = tuple[bytes, "list[tuple[bytes, tuple[int, ...]]] | None"]

_KINDS = (treefmt.FILE, treefmt.DIR, treefmt.LINK, "")  # by the scan kernel's kind codes
_SPECIAL = {st.S_IFIFO: treefmt.FIFO, st.S_IFCHR: treefmt.CHR, st.S_IFBLK: treefmt.BLK}


class Owners:
    """User and group names by id, looked up once each (a name that does not resolve: "")."""

    def __init__(self) -> None:
        import grp
        import pwd

        self.user = functools.cache(lambda uid: _name(pwd.getpwuid, uid, "pw_name"))
        self.group = functools.cache(lambda gid: _name(grp.getgrgid, gid, "gr_name"))


def _name(lookup: Callable[[int], Any], ident: int, field: str) -> str:
    try:
        return str(getattr(lookup(ident), field))
    except KeyError:
        return ""


def entry_of(name: bytes, s: tuple[int, ...], target: bytes = b"",
             owners: Owners | None = None) -> Entry:  # fmt: skip
    """An entry from a scan_dir stat tuple (a fifo or device: its kind from the mode)."""
    kind = _KINDS[s[0]] or _SPECIAL[st.S_IFMT(s[4])]
    return Entry(name=name, kind=kind, mode=st.S_IMODE(s[4]), uid=s[7], gid=s[8],
                 mtime_ns=s[2], atime_ns=s[3], ctime_ns=s[5], ino=s[6],
                 size=s[1] if kind == treefmt.FILE else 0, target=target, dev=s[9],
                 links=s[10], rdev=s[11] if kind in (treefmt.CHR, treefmt.BLK) else 0,
                 user=owners.user(s[7]) if owners else "",
                 group=owners.group(s[8]) if owners else "")  # fmt: skip


def root_stat(root: Tree) -> tuple[int, ...]:
    r = root.lstat("")
    return (1, 0, r.st_mtime_ns, r.st_atime_ns, r.st_mode, r.st_ctime_ns, r.st_ino, r.st_uid,
            r.st_gid, r.st_dev, r.st_nlink, 0)  # fmt: skip


def walk(root: Tree, rules: FilterRules, on_unreadable: Callable[[str, OSError], None]
         ) -> Iterator[Listing]:  # fmt: skip
    """The listing of every directory (the root's first), depth first, each directory before
    its subdirectories, names sorted; filtered; symlinks reported, never followed: each
    directory is opened below the root without following a link in any component
    (confine.py), so one swapped for a link after it was listed is unreadable. Fifos and
    devices are kept (as entries), sockets left out (docs/backup.md). Holds the directories
    still to visit: the depth times the widest directory, not the file count."""
    scan_dir = kernels().scan_dir
    stack = [b""]
    while stack:
        rel_dir = stack.pop()
        try:
            fd = root.open_dir(rel_dir)
            try:
                entries = scan_dir(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            on_unreadable(os.fsdecode(rel_dir), exc)
            yield rel_dir, None
            continue
        kept: list[tuple[bytes, tuple[int, ...]]] = []
        subdirs = []
        for name, s in entries:
            if s[0] == OTHER and st.S_IFMT(s[4]) not in _SPECIAL:
                continue  # a socket: its program makes it again when it listens
            if rules:
                rel = rel_dir + b"/" + name if rel_dir else name
                if not rules.included(os.fsdecode(rel), s[0] == DIR):
                    continue
            kept.append((name, s))
            if s[0] == DIR:
                subdirs.append(rel_dir + b"/" + name if rel_dir else name)
        del entries
        yield rel_dir, kept
        stack.extend(reversed(subdirs))


def walk_store(store: Any, rules: FilterRules, on_skip: OnSkip
               ) -> tuple[tuple[int, ...], Iterator[Listing]]:  # fmt: skip
    """walk() for a remote source (s3://, smb://): the root's stat tuple and the same listings
    in the same order. Object stores list files only, so each directory is made up from the
    files below it (mode 0755, the newest mtime among them). A file's `ino` is a hash of its
    signature (the ETag on S3, size and mtime on SMB): what tells a changed object from an
    unchanged one. S3 listings carry no mtime (0 here: Backup asks for it only for the
    objects it reads). The store's listing is flat, so it is held whole (TODO(#16): stream
    it per prefix)."""
    import xxhash

    uid, gid = os.getuid(), os.getgid()
    children: dict[str, list[str]] = {"": []}
    files: dict[str, tuple[int, ...]] = {}
    newest: dict[str, int] = {"": 0}

    dir_ok: dict[str, bool] = {}

    def descend(d: str) -> bool:
        ok = dir_ok.get(d)
        if ok is None:
            ok = dir_ok[d] = rules.included(d, True)
        return ok

    for info in store.list_info("", descend if rules else None, on_skip):
        if not rules.included_name(info.name, dir_ok):
            continue
        mtime = info.mtime_ns or 0
        ino = xxhash.xxh64_intdigest(info.sig.encode()) >> 1
        files[info.name] = (0, info.size, mtime, mtime, 0o100644, 0, ino, uid, gid, 0, 1, 0)
        parent, _, _ = info.name.rpartition("/")
        child = info.name
        while True:
            newest[parent] = max(newest.get(parent, 0), mtime)
            known = parent in children
            children.setdefault(parent, []).append(child)
            if known or not parent:
                break
            child, parent = parent, parent.rpartition("/")[0]

    def listings() -> Iterator[Listing]:
        stack = [""]
        while stack:
            d = stack.pop()
            kept = []
            subdirs = []
            for c in sorted(children.get(d, []), key=os.fsencode):
                name = os.fsencode(c.rpartition("/")[2])
                if c in files:
                    kept.append((name, files[c]))
                else:
                    mc = newest.get(c, 0)
                    kept.append((name, (1, 0, mc, mc, 0o40755, 0, 0, uid, gid, 0, 1, 0)))
                    subdirs.append(c)
            yield os.fsencode(d), kept
            stack.extend(reversed(subdirs))

    m0 = newest.get("", 0)
    return (1, 0, m0, m0, 0o40755, 0, 0, uid, gid, 0, 1, 0), listings()


def _unchanged(old: Entry | None, s: tuple[int, ...], remote: bool = False) -> bool:
    # Remote sources: size and the signature hash in `ino` (S3 listings have no mtime).
    return (old is not None and old.kind == treefmt.FILE and old.size == s[1]
            and (remote or (old.mtime_ns == s[2] and old.ctime_ns == s[5]))
            and old.ino == s[6])  # fmt: skip


def _same_inode(old: Entry | None, new: Entry) -> bool:
    """A directory or link not changed since the parent snapshot: its atime is the parent's
    (listing a directory, or our own reads, move atimes; a tree must not change for that)."""
    return (old is not None and old.kind == new.kind and old.mtime_ns == new.mtime_ns
            and old.ctime_ns == new.ctime_ns and old.ino == new.ino
            and old.target == new.target)  # fmt: skip


class _Dir:
    """A directory whose tree is not stored yet: its entries (None for a file that failed),
    and how many of them still wait (files in the workers, subdirectories without a tree)."""

    __slots__ = ("rel", "parent", "slot", "entries", "pending", "old")

    def __init__(self, rel: bytes, parent: _Dir | None, slot: int, old: bytes) -> None:
        self.rel, self.parent, self.slot = rel, parent, slot
        self.old = old  # the parent snapshot's tree of this directory (b"": none)
        self.entries: list[Entry | None] = []
        self.pending = 0


class _File:
    """A file in the workers: where its entry is, and its chunks so far."""

    __slots__ = ("dir", "slot", "size", "done", "chunks", "new")

    def __init__(self, d: _Dir, slot: int, size: int, new: bool) -> None:
        self.dir, self.slot, self.size, self.new = d, slot, size, new
        self.done = 0
        self.chunks: list[bytes] = []


class Backup:
    def __init__(self, opts: BackupOptions, on_event: Callable[[p.Event], None],
                 cancel: CancelToken, workers: WorkerPool | None = None,
                 claims: StateClaims | None = None) -> None:  # fmt: skip
        self.opts = opts
        self.claims = claims  # the hub's: the jobs DB and universe are borrowed from it
        self.emit = on_event
        self.cancel = cancel
        self.shared_pool = workers  # the hub's pool, leased for this run; else one of our own
        self.warnings: list[str] = []
        self.ledger = RunLedger(kind="backup", source=opts.source, options=opts,
                                db_path=opts.db_path, emit=on_event, claims=claims)
        self.counters = p.Counters()
        self.writer: PackWriter | None = None

    def _warn(self, path: str, msgid: str, message: str) -> None:
        self.warnings.append(path)
        self.ledger.skipped(path, msgid, message)
        self.emit(p.Warning(msgid=msgid, path=p.display_path(path), message=message))

    def _on_unlisted(self, rel: str, why: str) -> None:
        """An entry of a remote source's listing that is not a file of the tree."""
        if why.startswith(TEMP_NAME):  # a writer's file in the middle of its write: said, and
            # not counted as skipped (its file is backed up once its writer renamed it)
            self.emit(p.Warning(msgid="temp_name", path=p.display_path(rel),
                                message=f"{why}: not backed up"))  # fmt: skip
            return
        self._warn(rel, "special", why)

    def run(self) -> p.BackupSummary:
        return self.ledger.run(self._body, self._partial_summary)

    def _body(self) -> p.BackupSummary:
        opts = self.opts
        reached = check_run((("source", opts.source), ("repository", opts.repository)),
                            opts.allowed_roots, opts.protected_paths)  # fmt: skip
        self.src: Any = None
        self.tree: Tree | None = None
        if is_remote(opts.source):
            from orbit_fast.backends.registry import open_store

            self.src = open_store(opts.source, s3_endpoint=opts.s3_endpoint)
        else:
            try:
                # Every file below is read through this fd, no symlink followed (confine.py).
                self.tree = open_end("source", opts.source, reached.get("source"))
            except OSError as exc:
                raise SourceError(f"the backup source {opts.source} is not a directory (or is "
                                  f"missing: {exc.strerror}); check the path") from exc
        try:
            repo = Repository.open_or_init(
                opts.repository, opts.codec or "zstd:3", opts.s3_endpoint,
                password=opts.password, encrypt=not opts.insecure_no_encryption,
                warn=lambda message: self.emit(p.Warning(msgid="password", path="",
                                                         message=message)),
            )  # fmt: skip
            with repo:
                repo.lock("backup")
                self.ledger.open(f"backup:{opts.source}->{repo.store.url}", repo.store.url)
                with Universe.open(opts.universe_path, claims=self.claims) as universe:
                    return self._run(repo, universe)
        finally:
            if self.src is not None:
                self.src.close()
            if self.tree is not None:
                self.tree.close()

    def _partial_summary(self, code: int) -> p.BackupSummary:
        """What a run that failed or was stopped got done (the jobs DB keeps it)."""
        c, w = self.counters, self.writer
        return p.BackupSummary(
            job_id=self.ledger.job.id, run_id=self.ledger.run_id, exit_code=int(code),
            snapshot="", parent=None, files_new=0, files_changed=0, files_unchanged=0,
            files_total=c.files_total, bytes_total=c.bytes_total, bytes_read=c.bytes_done,
            chunks_added=w.chunks_written if w else 0, bytes_added=w.bytes_written if w else 0,
            packs_added=w.packs_written if w else 0, warnings=len(self.warnings),
            skipped=self.warnings[:1000], elapsed_s=round(time.monotonic() - c.t0, 3),
        )  # fmt: skip

    def _run(self, repo: Repository, universe: Universe) -> p.BackupSummary:
        opts = self.opts
        job_id, run_id = self.ledger.job.id, self.ledger.run_id
        repo.sync_index(universe)
        host = socket.gethostname()
        parent_name: str | None = None
        parent: snapfmt.Snapshot | None = None
        bad: list[tuple[str, OrbitError]] = []
        snaps = repo.snapshots(bad)
        for _name, exc in bad:
            # A snapshot someone with write access crafted (or damage) must not stop every
            # later backup of this source: an older parent, or none, will do.
            self._warn("", "bad_parent", f"{exc}; not used as the parent: run "
                       "`orbit-fast verify`")  # fmt: skip
        for name, info in reversed(snaps):
            if info.source == opts.source and info.hostname == host:
                parent_name, parent = name, info
                break
        self.ledger.started(workers=opts.workers, block_bytes=repo.config.avg_size)
        self.reader = TreeReader(repo, universe)
        writer = self.writer = PackWriter(repo, universe)
        self.trees = TreeWriter(writer, repo.config.key_bytes,
                                repo.seal_blob if repo.encrypted else None)  # fmt: skip
        self.remote = self.src is not None
        rules = FilterRules(opts.filters)
        if self.remote:
            root_s, listings = walk_store(self.src, rules, self._on_unlisted)
        else:
            assert self.tree is not None
            root_s = root_stat(self.tree)
            listings = walk(self.tree, rules,
                            lambda r, e: self._warn(r, "unreadable_dir", e.strerror or str(e)))
        self.owners = None if self.remote else Owners()
        self.linked: dict[tuple[int, int], Entry] = {}  # files with several links, read
        self.metas: dict[bytes, bytes] = {}  # encoded xattr set -> its id
        root = entry_of(b"", root_s, owners=self.owners)
        if parent is not None and _same_inode(parent.root, root):
            root.atime_ns, root.meta = parent.root.atime_ns, parent.root.meta
        else:
            root.meta = self._meta_id(b"")
        self.root = root
        # Directories listed by their parent and not yet by the walk: (parent, slot, the
        # parent snapshot's tree of it).
        self.waiting: dict[bytes, tuple[_Dir | None, int, bytes]] = {
            b"": (None, 0, parent.tree if parent is not None else b"")}
        self.inflight: dict[str, _File] = {}
        self.idents: dict[str, m.Ident] = {}  # local files: the file the scan saw, to read only it
        self.object_sizes: dict[str, int] = {}  # remote sources: name -> size
        self.root_tree: bytes | None = None
        self.files_new = self.files_changed = self.files_unchanged = 0
        self.files_total = self.dirs_total = self.bytes_total = 0
        self.last_progress = 0.0
        counters = self.counters
        try:
            to_read = self._files_to_read(listings)
            first = next(to_read, None)  # no-change runs start no workers
            if first is not None:
                from orbit_fast.coordinator.chunk_pipeline import chunk_files

                for path, rec, blob in chunk_files(
                    itertools.chain((first,), to_read), repo.config.params,
                    opts.codec or repo.config.codec, repo.config.key_bytes, opts.workers,
                    on_error=self._file_failed, cancelled=lambda: self.cancel.cancelled,
                    src_url=opts.source if self.remote else "",
                    sizes=self.object_sizes if self.remote else None,
                    shared=self.shared_pool, s3_endpoint=opts.s3_endpoint,
                    tree=self.tree, idents=self.idents, seal=repo.seal_keys(),
                ):  # fmt: skip
                    f = self.inflight[path]
                    f.chunks.append(rec.chunk_id)
                    f.done += rec.length
                    counters.bytes_done += rec.length
                    if not writer.has(rec.chunk_id):
                        writer.add(rec.chunk_id, blob, rec.length)
                    if f.done == f.size:
                        self._file_done(path, f)
                    self._progress()
        finally:
            writer.close()  # what was stored is kept even when the run stops here
        if self.cancel.cancelled:
            raise self.ledger.interrupted(self.cancel, "backup interrupted; the chunks stored so "
                                          "far are kept and the rerun does not store them again")
        if self.root_tree is None or self.inflight:
            raise WorkerFailed(f"the workers ended with {len(self.inflight)} files unread and "
                               "no tree for the backup root (an engine error); rerun the "
                               "backup: what was stored is kept")  # fmt: skip
        root.subtree = self.root_tree
        trees = self.trees
        snap = snapfmt.Snapshot(
            time_ns=time.time_ns(), hostname=host, source=opts.source, tags=list(opts.tags),
            parent=parent_name, root=root, files_new=self.files_new,
            files_changed=self.files_changed, files_unchanged=self.files_unchanged,
            files_total=self.files_total, dirs_total=self.dirs_total,
            bytes_total=self.bytes_total, bytes_added=writer.bytes_written,
            trees_added=trees.trees_added,
        )  # fmt: skip
        name = repo.write_snapshot(snap)
        return p.BackupSummary(
            job_id=job_id, run_id=run_id, exit_code=int(ExitCode.PARTIAL if self.warnings
                                                        else ExitCode.OK),
            snapshot=name, parent=parent_name, files_new=snap.files_new,
            files_changed=snap.files_changed, files_unchanged=snap.files_unchanged,
            files_total=snap.files_total,
            bytes_total=snap.bytes_total, bytes_read=counters.bytes_done,
            chunks_added=writer.chunks_written - trees.trees_added,
            bytes_added=writer.bytes_written, packs_added=writer.packs_written,
            warnings=len(self.warnings), skipped=self.warnings[:1000],
            elapsed_s=round(time.monotonic() - counters.t0, 3), trees_added=trees.trees_added,
        )  # fmt: skip

    def _progress(self) -> None:
        now = time.monotonic()
        if now - self.last_progress >= PROGRESS_EVERY_S:
            self.last_progress = now
            self.emit(self.counters.progress(0))

    def _old_entries(self, d: _Dir) -> Iterator[Entry]:
        """The parent snapshot's entries of directory `d` (its tree `d.old`), in name order, a
        page at a time; no more (so the rest of its files are read again, with a warning) from
        a tree that cannot be read, and then `d.old` is forgotten (not known to be stored)."""
        if not d.old:
            return
        try:
            yield from self.reader.entries(d.old, d.rel)
        except (IntegrityError, RepositoryError) as exc:
            d.old = b""
            self._warn(os.fsdecode(d.rel), "bad_parent", f"{exc}; its files are read again")

    def _files_to_read(self, listings: Iterator[Listing]) -> Iterator[str]:
        """Take in the walk's listings one directory at a time; yield the files whose content
        must be read (for chunk_files, which pulls them as it has room)."""
        counters = self.counters
        remote = self.remote
        for rel_dir, listing in listings:
            if self.cancel.cancelled:
                return
            parent, slot, old_tid = self.waiting.pop(rel_dir)
            d = _Dir(rel_dir, parent, slot, old_tid)
            # The listing itself counts as pending until it is all taken in: the files yielded
            # below may be read, and be done, while this loop waits at its `yield`.
            d.pending = 1
            # The listing and the parent's tree are both in name order: merged as they go,
            # so the parent's side holds one entry (a page of a paged tree), not a directory.
            if not listing:  # unreadable: stored empty, and not as its old tree
                d.old = b""
            old = self._old_entries(d)
            cur = next(old, None)
            last = None
            for name, s in listing or ():
                rel = rel_dir + b"/" + name if rel_dir else name
                if name == last:  # an object store may hold a key "a" and keys below "a/"
                    self._warn(os.fsdecode(rel), "special", "a file and a directory share this "
                               "name in the source; only the first is backed up")  # fmt: skip
                    continue
                last = name
                target = b""
                if s[0] == LINK:
                    try:
                        assert self.tree is not None
                        target = os.fsencode(self.tree.readlink(rel))
                    except OSError as exc:
                        self._warn(os.fsdecode(rel), "unreadable", exc.strerror or str(exc))
                        continue
                e = entry_of(name, s, target, self.owners)
                while cur is not None and cur.name < name:
                    cur = next(old, None)
                prev = cur if cur is not None and cur.name == name else None
                at = len(d.entries)
                d.entries.append(e)
                if e.kind != treefmt.FILE:
                    if _same_inode(prev, e):
                        assert prev is not None
                        e.atime_ns, e.meta = prev.atime_ns, prev.meta
                    elif e.kind != treefmt.LINK:  # (a symlink's xattrs are not kept)
                        e.meta = self._meta_id(rel)
                    if e.kind == treefmt.DIR:
                        self.waiting[rel] = (d, at, prev.subtree if prev is not None
                                             and prev.kind == treefmt.DIR else b"")  # fmt: skip
                        d.pending += 1
                    continue
                counters.files_scanned += 1
                if _unchanged(prev, s, remote):
                    assert prev is not None
                    e.chunks, e.mtime_ns, e.atime_ns = prev.chunks, prev.mtime_ns, prev.atime_ns
                    e.meta = prev.meta
                    self._count_file(e, prev is None, unchanged=True)
                    continue
                e.meta = self._meta_id(rel)
                if e.links > 1:  # another name of a file this run has read: not read again
                    first = self.linked.get((e.dev, e.ino))
                    if first is not None and first.size == e.size:
                        e.chunks = first.chunks
                        self._count_file(e, prev is None)
                        continue
                path = os.fsdecode(rel)
                if remote and not e.mtime_ns:  # S3: the file's mtime is in the metadata
                    e.mtime_ns = e.atime_ns = self.src.stat_info(path).mtime_ns or 0
                if not s[1]:
                    self._count_file(e, prev is None)
                    continue
                if remote:
                    self.object_sizes[path] = s[1]
                else:
                    self.idents[path] = m.Ident(s[9], s[6], s[1], s[2])
                counters.bytes_total += s[1]
                counters.files_total += 1
                d.pending += 1
                self.inflight[path] = _File(d, at, s[1], prev is None)
                yield path
            self._settle(d)
            self._progress()
        counters.scan_done = True

    def _meta_id(self, rel: bytes) -> bytes:
        """The id of the xattr set (ACLs among its xattrs) of the local entry `rel`, stored
        once; b"" for none (a remote source has none)."""
        tree = self.tree
        if tree is None:
            return b""
        try:
            xattrs = xattrs_beneath(lambda flags: tree.open_file(rel, flags), KEEP_XATTRS
                                    | KEEP_ACLS)  # fmt: skip
        except OSError:  # gone, or no longer what was listed: the next backup sees it
            return b""
        if not xattrs:
            return b""
        raw = treefmt.encode_meta([(os.fsencode(n), v) for n, v in xattrs])
        mid = self.metas.get(raw)
        if mid is None:
            mid = self.trees.put_meta_raw(raw)
            if len(self.metas) < 65536:
                self.metas[raw] = mid
        return mid

    def _count_file(self, e: Entry, new: bool, unchanged: bool = False) -> None:
        self.files_total += 1
        self.bytes_total += e.size
        if unchanged:
            self.files_unchanged += 1
        elif new:
            self.files_new += 1
        else:
            self.files_changed += 1

    def _file_done(self, path: str, f: _File) -> None:
        del self.inflight[path]
        self.idents.pop(path, None)
        self.object_sizes.pop(path, None)
        e = f.dir.entries[f.slot]
        assert e is not None
        e.chunks = b"".join(f.chunks)
        if e.links > 1:
            self.linked[(e.dev, e.ino)] = e
        self._count_file(e, f.new)
        self.counters.files_done += 1
        self._settle(f.dir)

    def _file_failed(self, path: str, message: str) -> None:
        self._warn(path, "unreadable", message)
        f = self.inflight.pop(path, None)
        if f is None:
            return
        self.idents.pop(path, None)
        self.object_sizes.pop(path, None)
        f.dir.entries[f.slot] = None
        self._settle(f.dir)

    def _settle(self, d: _Dir) -> None:
        """One of d's entries is done: store its tree if it was the last."""
        d.pending -= 1
        if not d.pending:
            self._dir_done(d)

    def _dir_done(self, d: _Dir | None) -> None:
        """Store the tree of `d`, whose entries are all done; then its parent's, if that was
        the last it waited for, and so on up."""
        while d is not None:
            tid = self.trees.put([e for e in d.entries if e is not None], d.old)
            self.dirs_total += 1
            up = d.parent
            if up is None:
                self.root_tree = tid
                return
            e = up.entries[d.slot]
            assert e is not None
            e.subtree = tid
            up.pending -= 1
            d = up if not up.pending else None
