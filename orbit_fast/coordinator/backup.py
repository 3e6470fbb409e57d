"""A backup run: walk the source, chunk what changed in the workers, store new chunks in packs,
write the snapshot last.

The coordinator owns the repository lock, the universe index and the jobs DB. Files whose
size, mtime, ctime and inode equal the parent snapshot's are not read again: their chunk list
is copied. Changed files go through the worker pool (chunk_pipeline.chunk_files: chunk, keyed
id, compress on ring slots); a chunk the universe already knows for this repository, or that
is in the pack being filled, is not stored again. A pack is written whole and only then
indexed, so the index never points at a pack that is not complete. The snapshot comes last: a
crash at any instant leaves the old set of snapshots, plus packs the rerun dedups against.
"""

from __future__ import annotations

import os
import socket
import stat as st
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import msgspec

from orbit_fast import messages as m
from orbit_fast import progress as p
from orbit_fast._native import kernels
from orbit_fast._native.reference import DIR, LINK, OTHER
from orbit_fast.backends.base import TEMP_NAME, OnSkip
from orbit_fast.cancel import CancelToken
from orbit_fast.config import BackupOptions, is_remote
from orbit_fast.confine import Tree
from orbit_fast.coordinator.run import RunLedger
from orbit_fast.errors import ExitCode, IntegrityError, SourceError
from orbit_fast.filters import FilterRules
from orbit_fast.index.universe import Universe
from orbit_fast.repo import snapshot as snapfmt
from orbit_fast.repo.pack_writer import PackWriter
from orbit_fast.repo.repository import Repository
from orbit_fast.repo.snapshot import Node
from orbit_fast.roots import check_run, open_end

if TYPE_CHECKING:
    from orbit_fast.index.state_file import StateClaims
    from orbit_fast.workers.pool import WorkerPool

PROGRESS_EVERY_S = 0.25


_KINDS = (snapfmt.FILE, snapfmt.DIR, snapfmt.LINK, "")  # by the scan kernel's kind codes


def node_of(rel: bytes, s: tuple[int, ...], target: bytes = b"") -> Node:
    """A node from a scan_dir stat tuple (kind, size, mtime, atime, mode, ctime, ino, uid,
    gid)."""
    kind = _KINDS[s[0]]
    return Node(path=rel, kind=kind, mode=st.S_IMODE(s[4]), uid=s[7], gid=s[8], mtime_ns=s[2],
                atime_ns=s[3], ctime_ns=s[5], ino=s[6], size=s[1] if kind == snapfmt.FILE
                else 0, target=target)  # fmt: skip


def walk(
    root: Tree, rules: FilterRules, on_unreadable: Callable[[str, OSError], None]
) -> Iterator[tuple[bytes, tuple[int, ...]]]:
    """(relative path, stat tuple) of the root and everything below it, directories before
    their contents, names sorted; filtered; symlinks reported, never followed: each directory
    is opened below the root without following a link in any component (confine.py), so one
    swapped for a link after it was listed is skipped as unreadable. Sockets, fifos and
    devices are left out (docs/backup.md)."""
    scan_dir = kernels().scan_dir
    r = root.lstat("")
    yield b"", (1, 0, r.st_mtime_ns, r.st_atime_ns, r.st_mode, r.st_ctime_ns, r.st_ino,
                r.st_uid, r.st_gid, r.st_dev)  # fmt: skip
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
            continue
        subdirs = []
        for name, s in entries:
            if s[0] == OTHER:
                continue
            rel = rel_dir + b"/" + name if rel_dir else name
            if rules and not rules.included(os.fsdecode(rel), s[0] == DIR):
                continue
            yield rel, s
            if s[0] == DIR:
                subdirs.append(rel)
        stack.extend(reversed(subdirs))


def walk_store(store: Any, rules: FilterRules, on_skip: OnSkip
               ) -> Iterator[tuple[bytes, tuple[int, ...]]]:  # fmt: skip
    """walk() for a remote source (s3://, smb://): the same (path, stat tuple) stream, in the
    same order. Object stores list files only, so each directory is made up from the files
    below it (mode 0755, the newest mtime among them). A file's `ino` is a hash of its
    signature (the ETag on S3, size and mtime on SMB): what tells a changed object from an
    unchanged one. S3 listings carry no mtime (0 here: Backup asks for it only for the
    objects it reads)."""
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
        files[info.name] = (0, info.size, mtime, mtime, 0o100644, 0, ino, uid, gid)
        parent, _, _ = info.name.rpartition("/")
        child = info.name
        while True:
            newest[parent] = max(newest.get(parent, 0), mtime)
            known = parent in children
            children.setdefault(parent, []).append(child)
            if known or not parent:
                break
            child, parent = parent, parent.rpartition("/")[0]
    stack = [""]
    while stack:
        d = stack.pop()
        m = newest.get(d, 0)
        if not d:
            yield b"", (1, 0, m, m, 0o40755, 0, 0, uid, gid)
        subdirs = []
        for c in sorted(children.get(d, [])):
            if c in files:
                yield os.fsencode(c), files[c]
            else:
                mc = newest.get(c, 0)
                yield os.fsencode(c), (1, 0, mc, mc, 0o40755, 0, 0, uid, gid)
                subdirs.append(c)
        stack.extend(reversed(subdirs))


def _unchanged(old: Node | None, s: tuple[int, ...], remote: bool = False) -> bool:
    # Remote sources: size and the signature hash in `ino` (S3 listings have no mtime).
    return (old is not None and old.kind == snapfmt.FILE and old.size == s[1]
            and (remote or (old.mtime_ns == s[2] and old.ctime_ns == s[5]))
            and old.ino == s[6])  # fmt: skip


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
            repo = Repository.open_or_init(opts.repository, opts.codec or "zstd:3",
                                           opts.s3_endpoint)  # fmt: skip
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
        parent_name, parent = None, None
        for name, info in reversed(repo.snapshots()):
            if info.source == opts.source and info.hostname == host:
                try:
                    parent_name, parent = name, repo.load_snapshot(name)
                except IntegrityError as exc:
                    # A snapshot someone with write access crafted (or damage) must not stop
                    # every later backup of this source: an older parent, or none, will do.
                    self._warn("", "bad_parent", f"{exc}; not used as the parent (its "
                               "files are read again): run `orbit-fast verify`")  # fmt: skip
                    continue
                break
        old = {n.path: n for n in parent.nodes} if parent else {}
        self.ledger.started(workers=opts.workers, block_bytes=repo.config.avg_size)

        nodes: list[Node] = []
        # path (relative to the source tree, or an object name) -> index in nodes
        todo: dict[str, int] = {}
        idents: dict[str, m.Ident] = {}  # local files: the file the scan saw, to read only it
        counters = self.counters
        files_unchanged = 0
        new_files: set[str] = set()
        rules = FilterRules(opts.filters)
        remote = self.src is not None
        if remote:
            entries = walk_store(self.src, rules, self._on_unlisted)
        else:
            assert self.tree is not None
            tree = self.tree
            entries = walk(tree, rules,
                           lambda r, e: self._warn(r, "unreadable_dir", e.strerror or str(e)))
        object_sizes: dict[str, int] = {}  # remote sources: name -> size
        for rel, s in entries:
            if self.cancel.cancelled:
                break
            target = b""
            if s[0] == LINK:
                try:
                    target = os.fsencode(tree.readlink(rel))
                except OSError as exc:
                    self._warn(os.fsdecode(rel), "unreadable", exc.strerror or str(exc))
                    continue
            node = node_of(rel, s, target)
            if node.kind == snapfmt.FILE:
                prev = old.get(rel)
                if _unchanged(prev, s, remote):
                    assert prev is not None
                    node = msgspec.structs.replace(node, chunks=prev.chunks,
                                                   mtime_ns=prev.mtime_ns,
                                                   atime_ns=prev.atime_ns)  # fmt: skip
                    files_unchanged += 1
                else:
                    path = os.fsdecode(rel)
                    if not remote:
                        idents[path] = m.Ident(s[9], s[6], s[1], s[2])
                    else:
                        object_sizes[path] = s[1]
                        if not node.mtime_ns:  # S3: the file's mtime is in the metadata
                            mtime = self.src.stat_info(path).mtime_ns or 0
                            node = msgspec.structs.replace(node, mtime_ns=mtime,
                                                           atime_ns=mtime)  # fmt: skip
                    if prev is None:
                        new_files.add(path)
                    if s[1]:
                        todo[path] = len(nodes)
                        counters.bytes_total += s[1]
            nodes.append(node)
        counters.files_total = len(todo)
        counters.scan_done = True

        chunks: dict[str, list[bytes]] = {path: [] for path in todo}
        sizes: dict[str, int] = dict.fromkeys(todo, 0)
        failed: set[str] = set()
        writer = self.writer = PackWriter(repo, universe)
        done_files = 0

        def on_error(path: str, message: str) -> None:
            failed.add(path)
            self._warn(path, "unreadable", message)

        last = 0.0
        try:
            if todo:
                from orbit_fast.coordinator.chunk_pipeline import chunk_files

                for path, rec, blob in chunk_files(
                    todo, repo.config.params, opts.codec or repo.config.codec,
                    repo.config.key_bytes, opts.workers, on_error=on_error,
                    cancelled=lambda: self.cancel.cancelled,
                    src_url=opts.source if remote else "", sizes=object_sizes if remote else None,
                    shared=self.shared_pool, s3_endpoint=opts.s3_endpoint,
                    tree=self.tree, idents=idents,
                ):  # fmt: skip
                    chunks[path].append(rec.chunk_id)
                    sizes[path] += rec.length
                    counters.bytes_done += rec.length
                    if sizes[path] == nodes[todo[path]].size:
                        done_files += 1
                    if not writer.has(rec.chunk_id):
                        writer.add(rec.chunk_id, blob, rec.length)
                    now = time.monotonic()
                    if now - last >= PROGRESS_EVERY_S:
                        last = now
                        counters.files_done = done_files
                        self.emit(counters.progress(0))
        finally:
            writer.close()  # what was stored is kept even when the run stops here
        if self.cancel.cancelled:
            raise self.ledger.interrupted(self.cancel, "backup interrupted; the chunks stored so "
                                          "far are kept and the rerun does not store them again")

        for path, i in todo.items():
            if path in failed:
                nodes[i] = msgspec.structs.replace(nodes[i], kind="")
                continue
            nodes[i] = msgspec.structs.replace(nodes[i], chunks=b"".join(chunks[path]),
                                               size=sizes[path])  # fmt: skip
        kept = [n for n in nodes if n.kind]
        files_new = len(new_files - failed)
        files_changed = sum(1 for n in kept if n.kind == snapfmt.FILE) - files_new \
            - files_unchanged  # fmt: skip
        snap = snapfmt.Snapshot(
            time_ns=time.time_ns(), hostname=host, source=opts.source, tags=list(opts.tags),
            parent=parent_name, nodes=kept, files_new=files_new,
            files_changed=files_changed, files_unchanged=files_unchanged,
            files_total=sum(1 for n in kept if n.kind == snapfmt.FILE),
            bytes_total=sum(n.size for n in kept), bytes_added=writer.bytes_written,
        )  # fmt: skip
        name = repo.write_snapshot(snap)
        return p.BackupSummary(
            job_id=job_id, run_id=run_id, exit_code=int(ExitCode.PARTIAL if self.warnings
                                                        else ExitCode.OK),
            snapshot=name, parent=parent_name, files_new=snap.files_new,
            files_changed=files_changed, files_unchanged=files_unchanged,
            files_total=snap.files_total,
            bytes_total=snap.bytes_total, bytes_read=counters.bytes_done,
            chunks_added=writer.chunks_written, bytes_added=writer.bytes_written,
            packs_added=writer.packs_written, warnings=len(self.warnings),
            skipped=self.warnings[:1000], elapsed_s=round(time.monotonic() - counters.t0, 3),
        )  # fmt: skip
