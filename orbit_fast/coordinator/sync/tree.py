"""Two local trees: the merge-walk lister, the destination's metadata operations, and block copies
through ring slots.

The lister walks source and destination together (scan.merge_walk, with the Cython fast path
that folds unchanged files into a count). Both trees are opened once (`Trees`) and every path
below them is reached through those fds without following a symlink (confine.py): the
coordinator's metadata operations and the workers' reads and writes alike. Small metadata
operations (mkdir, symlink, unlink, chmod, temp-file creation) happen in the coordinator; every
data byte is read and written by a worker through a ring slot, a block at a time (BlockCopies).
Resume: the blocks of a large file are checkpointed as they land in its temp file, so a rerun
verifies them instead of copying.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from orbit_fast import messages as m
from orbit_fast.config import FsyncPolicy, SyncOptions
from orbit_fast.confine import Tree
from orbit_fast.coordinator.dispatch import InFlight, TaskBoard
from orbit_fast.coordinator.scan import DIR, Entry, Stat, merge_walk
from orbit_fast.coordinator.sync.outcome import (
    Changed,
    Differs,
    Done,
    Dropped,
    Fatal,
    Moved,
    Outcome,
    Same,
    Warn,
)
from orbit_fast.coordinator.sync.paths import dest_error
from orbit_fast.coordinator.transfer import (
    COPY,
    DIGEST_DST,
    DIGEST_SRC,
    FINALIZE,
    VERIFY,
    Batch,
    Transfer,
)
from orbit_fast.filters import FilterRules
from orbit_fast.fsinfo import is_temp_name, temp_name
from orbit_fast.index.jobs_db import Job, JobsDB, UploadRecord
from orbit_fast.roots import Reached, open_end

if TYPE_CHECKING:
    from orbit_fast.workers.pool import WorkerPool

# Tasks out per worker, all running at once on the worker's threads. 4: 20k small files to an
# ext4 disk took 17 s with 1 task per worker and 10 s with 4 (file creation is ~0.5 ms of
# latency there, not CPU); tmpfs gains nothing from more (docs/performance.md).
TASK_DEPTH = 4
SCAN_BUDGET = 256  # entries planned per loop turn, so results are serviced while scanning
# Whole files of one block go to a worker up to BATCH_FILES at a time (one CopyFiles task, one
# slot, one result) while they add up to at most BATCH_BYTES: a round trip per file cost more
# than the copy of a 0-4 KiB file (#16). The byte cap keeps larger files spread over the
# workers' threads as before; a file of BATCH_BYTES or more goes alone. 64: 50k files of
# 0-4 KiB into tmpfs took 2.27-2.42 s with 64, 2.45-2.78 s with 16 (more CPU) and 3.12-3.30 s
# with 256 (less CPU, but fewer tasks to overlap), 3 runs each.
BATCH_FILES = 64
MADE, SAME = "made", "same"  # TreeOps.make_special
BATCH_BYTES = 1 << 20


class Skipped:
    """A source directory the walk could not list: skipped whole, nothing below deleted."""

    __slots__ = ("rel", "message")

    def __init__(self, rel: str, message: str) -> None:
        self.rel, self.message = rel, message


class Folded:
    """Unchanged files the scan kernel only counted."""

    __slots__ = ("n",)

    def __init__(self, n: int) -> None:
        self.n = n


class Trees:
    """The run's two local trees, each root opened once: the source, and the destination
    (None in a dry run whose destination does not exist yet)."""

    def __init__(self, opts: SyncOptions, src: Reached | None = None,
                 dst: Reached | None = None) -> None:  # fmt: skip
        self.src = open_end("source", opts.source, src)
        self.dst: Tree | None = None
        try:
            self.dst = open_end("destination", opts.destination, dst,
                                create=not opts.dry_run)  # fmt: skip
        except FileNotFoundError:
            if not opts.dry_run:
                self.src.close()
                raise
        except BaseException:
            self.src.close()
            raise

    def refs(self) -> list[m.TreeRef]:
        """The roots as workers check them (messages.SRC, DST)."""
        return [m.TreeRef(os.fsencode(t.path), t.dev, t.ino)
                for t in (self.src, self.dst) if t is not None]  # fmt: skip

    def close(self) -> None:
        self.src.close()
        if self.dst is not None:
            self.dst.close()


class TreeLister:
    """The merge-walk as a stream of Entry, Skipped and Folded items, taken a few at a time."""

    budget = SCAN_BUDGET
    poll_s = 0.25  # the walk runs in the loop: results are awaited up to the progress tick

    def __init__(self, opts: SyncOptions, trees: Trees, rules: FilterRules, token: str,
                 resumable: set[str]) -> None:  # fmt: skip
        self.opts = opts
        self.dst = trees.dst
        self._ended = False
        self._held: Entry | None = None
        self._resumable = resumable  # temp files (relative paths) a resume needs
        self._pruned: set[str] = set()
        self._queued: deque[Skipped | Folded] = deque()
        self._walk = merge_walk(
            trees.src, trees.dst, rules,
            on_unreadable=lambda rel, exc: self._queued.append(Skipped(rel, str(
                exc.strerror or exc))),
            is_temp=lambda name: is_temp_name(name, token),
            on_temp=self._on_temp, prune=self._pruned,
            # --checksum must see files that look unchanged; everyone else lets the kernel
            # count them without building Python objects.
            fold_unchanged=not opts.checksum,
            on_folded=lambda n: self._queued.append(Folded(n)),
            delete_excluded=opts.mirror and opts.delete_excluded,
            owners=bool(opts.keep & (m.KEEP_OWNER | m.KEEP_GROUP)),
            hard_links=not opts.no_hard_links,
            xmeta=bool(opts.keep & (m.KEEP_XATTRS | m.KEEP_ACLS)),
        )  # fmt: skip

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def wait(self, timeout_s: float) -> None:
        """Nothing to wait for: the walk runs in the caller's thread."""

    @property
    def done(self) -> bool:
        return self._ended and not self._queued and self._held is None

    def next(self) -> Entry | Skipped | Folded | None:
        if self._queued:
            return self._queued.popleft()
        if self._held is not None:
            entry, self._held = self._held, None
            return entry
        if self._ended:
            return None
        try:
            entry = next(self._walk)
        except StopIteration:
            self._ended = True
            return self._queued.popleft() if self._queued else None
        if self._queued:  # reported while the walk reached this entry: they come first
            self._held = entry
            return self._queued.popleft()
        return entry

    def prune(self, rel: str) -> None:
        """Do not descend into the directory `rel` (just returned)."""
        self._pruned.add(rel)

    def _on_temp(self, rel: str) -> None:
        """A temp file of ours left by an interrupted run: keep it only if a resume needs it."""
        if self.opts.dry_run or rel in self._resumable:
            return
        assert self.dst is not None
        try:
            self.dst.unlink(rel)
        except FileNotFoundError:
            pass


class TreeOps:
    """What the coordinator itself changes in a local destination tree: each call relative to
    the trees' roots, acting on the entry itself (a symlink is never followed, in the last
    component or any other)."""

    def __init__(self, trees: Trees, job: Job, keep: int = 0) -> None:
        self.src = trees.src
        self._dst = trees.dst
        self.job = job
        self.keep = keep  # messages.KEEP_*: owners, xattrs, ACLs (SyncOptions.keep)
        self.owners = bool(keep & (m.KEEP_OWNER | m.KEEP_GROUP))
        self.xmeta = bool(keep & (m.KEEP_XATTRS | m.KEEP_ACLS))
        # (rel, mode, atime, mtime, source ctime; 0: made by this run)
        self.dirs: list[tuple[str, int, int, int, int]] = []

    @property
    def dst(self) -> Tree:
        assert self._dst is not None, "no destination tree in a dry run"
        return self._dst

    def dst_path(self, rel: str) -> str:
        """For messages."""
        return self._dst.show(rel) if self._dst is not None else rel

    def read_link(self, rel: str) -> str:
        return self.src.readlink(rel)

    def dst_link(self, rel: str) -> str:
        return self.dst.readlink(rel)

    def mkdir(self, rel: str) -> None:
        self.dst.mkdir(rel, 0o700)  # its mode is set once its contents are in

    def note_dir(self, rel: str, st: Stat, made: bool = False) -> None:
        self.dirs.append((rel, st.st_mode, st.st_atime_ns, st.st_mtime_ns,
                          0 if made else st.st_ctime_ns))  # fmt: skip

    def chmod(self, rel: str, mode: int) -> None:
        self.dst.chmod(rel, stat.S_IMODE(mode))

    def fix_meta(self, rel: str, src: Stat, dst: Stat) -> int:
        """An unchanged file's owner, xattrs, ACLs and permission bits made the source's
        (rsync's attributes-only update): the owner first, as chown clears setuid bits, the
        mode last, as setting an ACL sets the group bits. Both files are opened (no link
        followed) and changed through their fds; the KEEP_* bits the destination refused.
        The chmod always happens, so the destination's ctime passes the source's and the
        next run folds the file again."""
        if not self.keep:
            self.dst.chmod(rel, stat.S_IMODE(src.st_mode))
            return 0
        from orbit_fast.fsmeta import sync_meta

        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        sfd = self.src.open_file(rel, flags)
        try:
            if not stat.S_ISREG(os.fstat(sfd).st_mode):
                return 0  # replaced meanwhile: the next run sees it
            dfd = self.dst.open_file(rel, flags)
            try:
                if not stat.S_ISREG(os.fstat(dfd).st_mode):
                    return 0
                lost = sync_meta(sfd, dfd, self.keep)
                os.fchmod(dfd, stat.S_IMODE(src.st_mode))
                return lost
            finally:
                os.close(dfd)
        finally:
            os.close(sfd)

    def _fresh_temp(self, rel: str) -> str:
        """The temp name beside `rel` that an entry is made under before its rename into
        place, with whatever an interrupted run left there removed (never followed)."""
        d, name = os.path.split(rel)
        tmp = os.path.join(d, temp_name(name, self.job.token))
        try:
            self.dst.unlink(tmp)
        except FileNotFoundError:
            pass
        return tmp

    def make_link(self, rel: str, target: str, st: Stat) -> None:
        tmp = self._fresh_temp(rel)
        self.dst.symlink(target, tmp)
        if self.keep & (m.KEEP_OWNER | m.KEEP_GROUP):  # a link has an owner of its own
            src = self.src.lstat(rel)
            try:
                self.dst.chown(tmp, src.st_uid if self.keep & m.KEEP_OWNER else -1,
                               src.st_gid if self.keep & m.KEEP_GROUP else -1)  # fmt: skip
            except PermissionError:
                pass
        self.dst.utime(tmp, (st.st_atime_ns, st.st_mtime_ns))
        self.dst.rename(tmp, rel)

    def hard_link(self, first: str, rel: str) -> str:
        """Make the destination's `rel` a link to its `first` (the name of the set copied):
        MADE, SAME (already one inode), or why not (the first is not there: its copy failed)."""
        try:
            target = self.dst.lstat(first)
        except (FileNotFoundError, NotADirectoryError):
            return f"not linked to {first}: that name is not in the destination"
        if not stat.S_ISREG(target.st_mode):
            return f"not linked to {first}: it is not a regular file there"
        try:
            have = self.dst.lstat(rel)
            if (have.st_dev, have.st_ino) == (target.st_dev, target.st_ino):
                return SAME
        except (FileNotFoundError, NotADirectoryError):
            pass
        tmp = self._fresh_temp(rel)
        with self.dst.parent(first) as (sfd, sname), self.dst.parent(tmp) as (dfd, dname):
            os.link(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False)
        self.dst.rename(tmp, rel)  # replaces a separate copy of an earlier run
        return MADE

    def make_special(self, rel: str, dst_kind: str | None) -> str:
        """A fifo or a device node like the source's (devices as root), made under a temp name
        and renamed into place: MADE, SAME (already there alike), else why it was not (a
        socket, as rsync skips them; no right to make a device)."""
        st = self.src.lstat(rel)
        fmt = stat.S_IFMT(st.st_mode)
        if fmt == stat.S_IFSOCK:
            return "a socket: skipped, as rsync does (a program makes it when it listens)"
        if fmt not in (stat.S_IFIFO, stat.S_IFCHR, stat.S_IFBLK):
            return "not a regular file, directory, link, fifo or device: skipped"
        if dst_kind is not None:
            try:
                have = self.dst.lstat(rel)
            except FileNotFoundError:
                have = None
            if (have is not None and stat.S_IFMT(have.st_mode) == fmt
                    and have.st_rdev == st.st_rdev and have.st_mode == st.st_mode
                    and (not self.keep & m.KEEP_OWNER or have.st_uid == st.st_uid)):  # fmt: skip
                return SAME
        tmp = self._fresh_temp(rel)
        try:
            with self.dst.parent(tmp) as (fd, base):
                os.mknod(base, st.st_mode, st.st_rdev, dir_fd=fd)
        except PermissionError:
            return "a device node: only root may make one; skipped"
        if self.keep & (m.KEEP_OWNER | m.KEEP_GROUP):
            try:
                self.dst.chown(tmp, st.st_uid if self.keep & m.KEEP_OWNER else -1,
                               st.st_gid if self.keep & m.KEEP_GROUP else -1)  # fmt: skip
            except PermissionError:
                pass
        self.dst.chmod(tmp, stat.S_IMODE(st.st_mode))
        self.dst.utime(tmp, (st.st_atime_ns, st.st_mtime_ns))
        self.dst.rename(tmp, rel)
        return MADE

    def delete(self, rel: str, kind: str | None) -> None:
        if kind == DIR:
            self.dst.rmtree(rel)  # fd-based: a link inside is removed, never entered
        else:
            self.dst.unlink(rel)

    def count_below(self, rel: str) -> int:
        """Entries below the destination directory `rel` (what deleting it deletes), walked
        through fds without following a link."""
        try:
            fd = self.dst.open_dir(rel)
        except OSError:
            return 0
        try:
            return sum(len(dirs) + len(files)
                       for _, dirs, files, _ in os.fwalk(".", dir_fd=fd))  # fmt: skip
        finally:
            os.close(fd)

    def finish_dirs(self) -> int:
        """Directory owners, xattrs and ACLs (the default ACL too), modes and mtimes, deepest
        first, after their contents stopped changing; the messages.KEEP_* bits the destination
        refused."""
        root = self.src.lstat("")
        self.dirs.insert(0, ("", root.st_mode, root.st_atime_ns, root.st_mtime_ns,
                             root.st_ctime_ns))  # fmt: skip
        dst = self.dst
        lost = 0
        for rel, mode, atime_ns, mtime_ns, src_ctime in reversed(self.dirs):
            # Read before writing: an unchanged tree costs one stat per directory, not two
            # metadata writes that the next syncfs would have to flush.
            try:
                st = dst.lstat(rel)
            except (FileNotFoundError, NotADirectoryError):
                continue  # removed meanwhile (by someone else): nothing to finish
            if not stat.S_ISDIR(st.st_mode):
                continue  # replaced meanwhile (a link, say): never act through it
            # Owner, xattrs and ACLs are compared only where the source directory changed
            # (its ctime) after the destination's did, or the directory is new: a no-change
            # run opens no directory again.
            if self.keep and (src_ctime == 0 or src_ctime >= st.st_ctime_ns):
                lost |= self._dir_meta(rel)
            if stat.S_IMODE(st.st_mode) != stat.S_IMODE(mode):
                dst.chmod(rel, stat.S_IMODE(mode))
            if st.st_mtime_ns != mtime_ns:
                dst.utime(rel, (atime_ns, mtime_ns))
        self.dirs.clear()
        return lost

    def _dir_meta(self, rel: str) -> int:
        from orbit_fast.fsmeta import sync_meta

        try:
            sfd = self.src.open_dir(rel)
        except OSError:
            return 0  # gone from the source meanwhile: the next run sees it
        try:
            dfd = self.dst.open_dir(rel)
            try:
                return sync_meta(sfd, dfd, self.keep)
            finally:
                os.close(dfd)
        finally:
            os.close(sfd)


class BlockCopies:
    """Copies of local files through ring slots: a queue of block tasks per file."""

    def __init__(self, opts: SyncOptions, trees: Trees, db: JobsDB | None, job: Job,
                 shared: WorkerPool | None,
                 throttles: list[str] | None = None) -> None:  # fmt: skip
        self.opts, self.db, self.job = opts, db, job
        self.src, self._dst = trees.src, trees.dst
        # One slot per task out: TASK_DEPTH per worker, all in use at once. On a shared pool
        # of another size the run still keeps `workers` x TASK_DEPTH tasks out (what
        # latency-bound storage needs), spread over the pool's workers.
        self.board: TaskBoard[Transfer | Batch] = TaskBoard(
            workers=opts.workers, threads=TASK_DEPTH, spread=TASK_DEPTH * opts.workers,
            slot_bytes=opts.block_bytes, slots=TASK_DEPTH * opts.workers, shared=shared,
            trees=trees.refs(), throttles=throttles,
        )  # fmt: skip
        self.active: deque[Transfer] = deque()
        # Copies in blocks an interrupted run left, by name: their temp file and blocks.
        self.resume: dict[str, UploadRecord] = db.uploads(job.id) if db is not None else {}
        # Files planned ahead: enough for every slot's task and the next round of batches.
        self._limit = 2 * BATCH_FILES * TASK_DEPTH * opts.workers
        self._fsync_each = opts.fsync == FsyncPolicy.FILE
        self._keep = opts.keep
        self.lost_reported = 0  # KEEP_* bits the destination refused, said once per run

    def resumable_temps(self) -> set[str]:
        """Relative temp paths of the partial files the jobs DB can resume."""
        return {self._temp_rel(rel) for rel in self.resume}

    def _temp_rel(self, rel: str) -> str:
        d, _, name = rel.rpartition("/")  # rel is "/"-joined, never with a trailing "/"
        tmp = temp_name(name, self.job.token)
        return f"{d}/{tmp}" if d else tmp

    # ---- the engine's questions -------------------------------------------------------------

    def full(self) -> bool:
        return len(self.active) >= self._limit

    def busy(self) -> bool:
        return bool(self.active)

    def describe(self) -> str:
        return ", ".join(t.rel for t in self.active)

    @property
    def dst(self) -> Tree:
        assert self._dst is not None, "no destination tree in a dry run"
        return self._dst

    def transfer(self, rel: str, st: Stat | os.stat_result, action: str,
                 attempts: int = 0) -> Transfer:  # fmt: skip
        """The copy of `rel`: its paths are relative to the trees (what the tasks carry)."""
        return Transfer(rel, self._temp_rel(rel), st, action, self.opts.block_bytes, attempts)

    def again(self, tr: Transfer) -> Transfer | None:
        """A fresh copy of a file that changed while copied; None if it vanished or is no
        longer a regular file (a link swapped in: never followed)."""
        try:
            st = self.src.lstat(tr.rel)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return self.transfer(tr.rel, st, tr.action, tr.attempts + 1)

    # ---- starting -----------------------------------------------------------------------------

    def compare(self, tr: Transfer) -> list[Outcome]:
        """--checksum with equal size and mtime: digest both sides first."""
        tr.ops.extend([(DIGEST_SRC, 0), (DIGEST_DST, 0)])
        self.active.append(tr)
        return []

    def begin(self, tr: Transfer) -> list[Outcome]:
        """Queue the tasks of a copy: resume a checkpointed temp file, or start one."""
        if not tr.single:
            rec = self.resume.pop(tr.rel, None)
            sig = f"{tr.size}:{tr.mtime_ns}"
            if (rec is not None and rec.src_sig == sig and rec.part_bytes == tr.block_bytes
                    and self.dst.exists(tr.tmp)):  # fmt: skip
                tr.plan_resume({n - 1: bytes.fromhex(t) for n, t in rec.parts.items()})
            else:
                os.close(self.dst.create_fresh(tr.tmp))
                assert self.db is not None
                # Recorded like an upload in parts: block i is part i + 1, its token the hex
                # xxh3-128 the worker computed while writing it.
                self.db.queue_upload(self.job.id, tr.rel, sig, tr.block_bytes,
                                     os.path.basename(tr.tmp))  # fmt: skip
                tr.had_partial = True
                tr.plan_fresh()
        else:
            tr.plan_fresh()
        self.active.append(tr)
        return []

    # ---- dispatch -----------------------------------------------------------------------------

    def fill(self, stopping: Callable[[], bool]) -> list[Outcome]:
        """Send what fits on the board (block tasks never wait on the network: `stopping` is
        checked by the engine before each turn)."""
        board = self.board
        batch: list[Transfer] = []
        nbytes = 0
        for tr in self.active:
            if tr.whole_pending():
                if batch and (len(batch) == BATCH_FILES or nbytes + tr.size > BATCH_BYTES):
                    if not self._send_batch(batch):
                        return []
                    batch, nbytes = [], 0
                batch.append(tr)
                nbytes += tr.size
                continue
            while tr.ops and not tr.failed:
                kind, idx = tr.ops[0]
                if not board.room():
                    return []
                slot = None
                if kind != FINALIZE:
                    slot = board.acquire_slot()
                    if slot is None:
                        return []
                tr.ops.popleft()
                tr.outstanding += 1
                board.send(tr, kind, idx, slot, self._task_msg(tr, kind, idx, slot))
        if batch:
            self._send_batch(batch)
        return []

    def _send_batch(self, batch: list[Transfer]) -> bool:
        """One CopyFiles task for `batch` (whole files), if there is room and a slot."""
        board = self.board
        if not board.room():
            return False
        slot = board.acquire_slot()
        if slot is None:
            return False
        for tr in batch:
            tr.ops.popleft()
            tr.outstanding += 1
        msg = m.CopyFiles(task_id=0, slot=slot, files=[self._finalize_msg(tr) for tr in batch],
                          sparse=self.opts.sparse)  # fmt: skip
        board.send(Batch(batch), COPY, 0, slot, msg)
        return True

    def _finalize_msg(self, tr: Transfer) -> m.Finalize:
        return m.Finalize(tmp=tr.tmpb, dst=tr.relb, size=tr.size, mtime_ns=tr.mtime_ns,
                          atime_ns=tr.atime_ns, mode=tr.mode, src=tr.relb, src_id=tr.ident,
                          fsync=self._fsync_each, keep=self._keep)  # fmt: skip

    def lost_meta(self, lost: int, rel: str) -> list[Outcome]:
        """A warning the first time the destination refuses each kind of metadata (one per
        kind per run, exit code 1); the data is in place."""
        new = lost & ~self.lost_reported
        if not new:
            return []
        self.lost_reported |= new
        what = [name for bit, name in ((m.KEEP_OWNER | m.KEEP_GROUP, "owners"),
                                       (m.KEEP_XATTRS, "extended attributes"),
                                       (m.KEEP_ACLS, "POSIX ACLs")) if new & bit]  # fmt: skip
        return [Warn("metadata", rel, f"the destination does not keep {' and '.join(what)} "
                     f"(first at this file; its filesystem lacks them, or this user may not "
                     "set them): the files are copied without them; --no-xattrs / --no-acls "
                     "/ --no-owner stop asking", skipped=False, partial=True)]  # fmt: skip

    def _task_msg(self, tr: Transfer, kind: str, idx: int, slot: int | None) -> m.Task:
        if kind == FINALIZE:
            return m.FinalizeFile(task_id=0, finalize=self._finalize_msg(tr))
        assert slot is not None
        if kind == COPY:
            off, length = tr.block_range(idx)
            return m.CopyBlock(task_id=0, slot=slot, src=tr.relb, src_id=tr.ident,
                               tmp=tr.tmpb, offset=off, length=length,
                               sparse=self.opts.sparse)  # fmt: skip
        if kind == VERIFY:
            off, length = tr.block_range(idx)
            return m.VerifyBlock(task_id=0, slot=slot, path=tr.tmpb, offset=off, length=length)
        return m.DigestFile(task_id=0, slot=slot, tree=m.SRC if kind == DIGEST_SRC else m.DST,
                            path=tr.relb)  # fmt: skip

    # ---- results ------------------------------------------------------------------------------

    def on_result(self, rec: InFlight[Transfer | Batch], res: m.Result) -> list[Outcome]:
        if isinstance(rec.owner, Batch):
            return self._batch_done(rec.owner.transfers, res)
        tr = rec.owner
        tr.outstanding -= 1
        out: list[Outcome] = []
        if isinstance(res, m.BlockCopied):
            out.append(self._block_done(tr, rec.idx, res.digest, res.length, copied=True))
        elif isinstance(res, m.BlockVerified):
            if res.length == tr.block_range(rec.idx)[1] and res.digest == tr.recorded.get(rec.idx):
                out.append(self._block_done(tr, rec.idx, res.digest, res.length, copied=False))
            else:
                tr.ops.append((COPY, rec.idx))
        elif isinstance(res, m.FileDigested):
            return self._digested(tr, rec.kind, res)
        elif isinstance(res, m.FileFinalized):
            return self.lost_meta(res.lost, tr.rel) + self._file_done(tr)
        elif isinstance(res, m.SourceChanged):
            tr.failed = tr.failed or "changed"
        elif isinstance(res, m.TaskFailed):
            out += self._failed(tr, res.side, res.errno, res.message)
        if not tr.failed and not tr.single and tr.all_blocks_done() and not tr.finalizing:
            tr.finalizing = True
            tr.ops.append((FINALIZE, -1))
        if tr.failed and tr.outstanding == 0:
            out += self._abandon(tr)
        return out

    def _failed(self, tr: Transfer, side: str, err: int, message: str) -> list[Outcome]:
        """A task of `tr` failed with an OSError on `side`."""
        if side == "source":
            out: list[Outcome] = []
            if tr.failed is None:
                vanished = err == errno.ENOENT
                out.append(Warn("vanished" if vanished else "unreadable", tr.rel,
                                "vanished from the source before it was copied" if vanished
                                else f"cannot read: {message}",
                                skipped=not vanished))  # fmt: skip
            tr.failed = "source"
            return out
        tr.failed = "destination"
        return [Fatal(dest_error(OSError(err, message), self.dst.show(tr.rel)))]

    def _batch_done(self, batch: list[Transfer], res: m.Result) -> list[Outcome]:
        """The end of a CopyFiles task: each file is in place, or failed as its own task
        would have."""
        failed: dict[int, tuple[str, int, str]] = {}
        if isinstance(res, m.FilesCopied):
            failed = {f.index: (f.side, f.errno, f.message) for f in res.failed}
        elif isinstance(res, m.TaskFailed):  # before any file (its slot, say): all of them
            failed = dict.fromkeys(range(len(batch)), (res.side, res.errno, res.message))
        else:
            raise AssertionError(f"unexpected result of a CopyFiles task: {res!r}")
        out: list[Outcome] = []
        if isinstance(res, m.FilesCopied) and res.lost:
            out += self.lost_meta(res.lost, batch[0].rel)
        for i, tr in enumerate(batch):
            tr.outstanding -= 1
            why = failed.get(i)
            if why is None:
                tr.blocks_done = 1
                out.append(Moved(copied=tr.size))
                out += self._file_done(tr)
                continue
            side, err, message = why
            if side == "changed":
                tr.failed = tr.failed or "changed"
            else:
                out += self._failed(tr, side, err, message)
            out += self._abandon(tr)
        return out

    def abort_stale_uploads(self) -> list[Outcome]:
        """Partial files recorded for names this run did not copy (gone from the source,
        excluded now, or already equal): their temp files go, and their records."""
        out: list[Outcome] = []
        if self.db is None:
            return out
        for rel in self.resume:
            try:
                self.dst.unlink(self._temp_rel(rel))
            except (FileNotFoundError, NotADirectoryError, ValueError):
                pass  # its directory went too (or became a file): nothing is left
            except OSError as exc:  # kept with its record: the next run tries again
                out.append(Warn("upload", rel, "could not remove the temp file of an "
                                f"interrupted copy: {exc.strerror or exc}"))  # fmt: skip
                continue
            self.db.queue_drop_upload(self.job.id, rel)
        self.resume.clear()
        return out

    def lost(self, rec: InFlight[Transfer | Batch]) -> list[Outcome]:
        """A task given up after it killed workers: the run is failing; keep what is there."""
        for tr in rec.owner.transfers if isinstance(rec.owner, Batch) else [rec.owner]:
            tr.outstanding -= 1
            tr.failed = "destination"
        return []

    def _block_done(self, tr: Transfer, idx: int, digest: bytes, n: int, copied: bool) -> Moved:
        tr.digests[idx] = digest
        tr.blocks_done += 1
        recorded = not tr.single and copied and self.db is not None
        if recorded:
            assert self.db is not None
            self.db.queue_part(self.job.id, tr.rel, idx + 1, digest.hex())
        return Moved(copied=n, recorded=recorded) if copied else Moved(resumed=n)

    def _digested(self, tr: Transfer, kind: str, res: m.FileDigested) -> list[Outcome]:
        if kind == DIGEST_SRC:
            tr.src_digest = res.digest
        else:
            tr.dst_digest = res.digest
        if tr.outstanding or tr.failed:
            return self._abandon(tr) if tr.failed and tr.outstanding == 0 else []
        self.active.remove(tr)
        if tr.src_digest == tr.dst_digest:
            return [Same(tr.rel)]
        tr.action = "update"
        return [Differs(tr)]

    def _file_done(self, tr: Transfer) -> list[Outcome]:
        self.active.remove(tr)
        if tr.had_partial and self.db is not None:
            self.db.queue_drop_upload(self.job.id, tr.rel)
        return [Done(tr.rel, "resume" if tr.recorded else tr.action, tr.size)]

    def _abandon(self, tr: Transfer) -> list[Outcome]:
        """Drop a failed transfer once none of its tasks is out."""
        self.active.remove(tr)
        if tr.failed == "destination":
            return []  # the run is failing; keep the temp file and checkpoint for the rerun
        try:
            self.dst.unlink(tr.tmp)
        except OSError:
            pass
        if tr.had_partial and self.db is not None:
            self.db.queue_drop_upload(self.job.id, tr.rel)
        if not tr.started:
            return []
        done = sum(tr.block_range(i)[1] for i, d in enumerate(tr.digests) if d is not None)
        out: list[Outcome] = [Dropped(tr.size, done)]
        if tr.failed == "changed":
            out.append(Changed(tr))
        return out
