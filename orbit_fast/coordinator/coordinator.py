"""The coordinator: one run of a sync, from scan to summary.

It walks source and destination together (scan.merge_walk), decides per entry (skip, copy,
delete, mkdir, link), lends ring slots to the worker pool for block copies, applies the results
and checkpoints them in batches to the jobs DB, which it alone opens. Small metadata operations
(mkdir, symlink, unlink, chmod, temp-file creation) happen here; every data byte is read and
written by a worker through a ring slot. Cancellation and the first fatal error stop new work,
let in-flight tasks finish, checkpoint, and end the run.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec

from orbit_fast import messages as m
from orbit_fast import progress as p
from orbit_fast.cancel import CancelToken
from orbit_fast.config import FsyncPolicy, SyncOptions
from orbit_fast.coordinator.scan import DIR, FILE, LINK, OTHER, Entry, Stat, merge_walk
from orbit_fast.coordinator.transfer import (
    COPY,
    DIGEST_DST,
    DIGEST_SRC,
    FINALIZE,
    VERIFY,
    Transfer,
    is_temp_name,
    temp_name,
)
from orbit_fast.errors import (
    DestinationError,
    DiskFull,
    ExitCode,
    Interrupted,
    OrbitError,
    SourceError,
    WorkerFailed,
)
from orbit_fast.filters import FilterRules
from orbit_fast.fsinfo import syncfs
from orbit_fast.index.jobs_db import Job, JobsDB
from orbit_fast.workers.ring import SharedRing, reap_stale_segments

if TYPE_CHECKING:  # imported when the first copy needs workers: a no-change run never does
    from orbit_fast.index.state_file import StateClaims
    from orbit_fast.workers.pool import Death, Lease, WorkerPool

# Tasks out per worker, all running at once on the worker's threads. 4: 20k small files to an
# ext4 disk took 17 s with 1 task per worker and 10 s with 4 (file creation is ~0.5 ms of
# latency there, not CPU); tmpfs gains nothing from more (docs/performance.md).
TASK_DEPTH = 4
# 0.2 s: a crash loses at most this much finished work (plus blocks in flight); a commit of a
# few hundred rows in WAL mode without fsync costs well under a millisecond.
CHECKPOINT_INTERVAL_S = 0.2
CHECKPOINT_MAX_OPS = 5000
# Blocks of large files written since the last checkpoint before the next one: with the blocks
# in flight (TASK_DEPTH per worker) this bounds what a crash makes a rerun copy again.
CHECKPOINT_BLOCKS = 16
PROGRESS_INTERVAL_S = 0.25
MAX_SOURCE_CHANGES = 3  # copies of a file that keeps changing before it is skipped
MAX_TASK_DEATHS = 3  # worker deaths on one task before the run fails
SCAN_BUDGET = 256  # entries planned per loop turn, so results are serviced while scanning


class _Task:
    """A task out with a worker: what to requeue if that worker dies."""

    __slots__ = ("tr", "kind", "idx", "slot", "msg", "deaths")

    def __init__(self, tr: Transfer, kind: str, idx: int, slot: int | None, msg: m.Task):
        self.tr, self.kind, self.idx, self.slot, self.msg = tr, kind, idx, slot, msg
        self.deaths = 0


def job_name(opts: SyncOptions) -> str:
    return f"sync:{opts.source} -> {opts.destination}"


class Coordinator:
    def __init__(
        self,
        opts: SyncOptions,
        emit: Callable[[p.Event], None],
        cancel: CancelToken,
        workers: WorkerPool | None = None,
        claims: StateClaims | None = None,  # the hub's: its jobs DB is borrowed, not claimed
    ) -> None:
        self.opts = opts
        self.claims = claims
        self.emit = emit
        self.cancel = cancel
        self.shared_pool = workers  # the hub's pool, leased for this run; else a pool of our own
        self.rules = FilterRules(opts.filters)
        self.c = p.Counters()
        self.db: JobsDB | None = None
        self.job = Job(0, "", "dryrun0")
        self.run_id = 0
        self.ring: SharedRing | None = None
        self.pool: Lease | None = None
        self.depth = TASK_DEPTH  # tasks out per worker
        self.active: deque[Transfer] = deque()
        self.tasks: dict[int, _Task] = {}
        self.next_task = 1
        self.dirs: list[tuple[str, int, int, int]] = []
        self.prune: set[str] = set()
        self.partials: set[bytes] = set()
        self.fatal: OrbitError | None = None
        self.scan_done = False
        self._last_ckpt = time.monotonic()
        self._last_progress = 0.0
        self._blocks_since_ckpt = 0
        self._temps: set[str] | None = None

    # ---- the run ------------------------------------------------------------------------

    def run(self) -> p.Summary:
        opts = self.opts
        self._check_paths()
        reap_stale_segments()  # rings of coordinators that died with SIGKILL
        if not opts.dry_run:
            self.db = JobsDB.open(opts.db_path, claims=self.claims)
        try:
            if self.db is not None:
                self.job = self.db.get_or_create_job(
                    job_name(opts),
                    "sync",
                    opts.source,
                    opts.destination,
                    msgspec.json.encode(opts).decode(),
                )
                self.run_id = self.db.start_run(self.job.id)
                self.partials = self.db.partial_paths(self.job.id)
            self.emit(
                p.Started(
                    job_id=self.job.id,
                    run_id=self.run_id,
                    source=opts.source,
                    destination=opts.destination,
                    dry_run=opts.dry_run,
                    workers=opts.workers,
                    chunk_size_bytes=opts.chunk_size_bytes,
                )
            )
            try:
                self._loop()
                if self.fatal is None and not self.cancel.cancelled:
                    self._finish_dirs()
                    if self._changed_destination() and opts.fsync != FsyncPolicy.NONE:
                        syncfs(opts.destination)
            except OSError as exc:
                self._fail(self._dest_error(exc, opts.destination))
            finally:
                self._stop_pool()
            if self.fatal is not None:
                raise self.fatal
            if self.cancel.cancelled:
                code = self.cancel.exit_code or ExitCode.INTERRUPTED
                raise Interrupted(
                    f"stopped by signal; progress is checkpointed in {opts.db_path}: "
                    "run the same command again to resume",
                    code,
                )
            code = ExitCode.PARTIAL if self.c.skipped else ExitCode.OK
            summary = self._summary(code)
            self._close_db("done" if code == ExitCode.OK else "partial", code, summary, None)
            self.emit(summary)
            return summary
        except OrbitError as err:
            summary = self._summary(err.exit_code)
            state = "interrupted" if isinstance(err, Interrupted) else "failed"
            self._close_db(state, err.exit_code, summary, str(err))
            self.emit(p.Error(msgid=err.msgid, message=str(err), exit_code=int(err.exit_code)))
            self.emit(summary)
            raise
        finally:
            if self.db is not None:
                self.db.close()

    def _close_db(self, state: str, code: int, summary: p.Summary, error: str | None) -> None:
        if self.db is None:
            return
        try:
            self.db.checkpoint()
            self.db.finish_run(
                self.job.id,
                self.run_id,
                state,
                int(code),
                msgspec.json.encode(summary).decode(),
                error,
            )
        except Exception as exc:  # the run's own error is the one to report
            self.emit(p.Warning(msgid="db", path=self.opts.db_path, message=str(exc)))

    def _check_paths(self) -> None:
        src, dst = self.opts.source, self.opts.destination
        if not os.path.exists(src):
            raise SourceError(f"source {src} does not exist; check the path")
        if not os.path.isdir(src):
            raise SourceError(f"source {src} is not a directory; give the directory to copy")
        if not os.access(src, os.R_OK | os.X_OK):
            raise SourceError(f"source {src} is not readable by this user; check permissions")
        rs, rd = os.path.realpath(src), os.path.realpath(dst)
        if rs == rd or rd.startswith(rs.rstrip("/") + "/"):
            raise DestinationError(
                f"destination {dst} is inside the source {src}; the copy would copy itself. "
                "Choose a destination outside the source tree"
            )
        if rs.startswith(rd.rstrip("/") + "/"):
            raise DestinationError(
                f"source {src} is inside the destination {dst}; "
                + ("--mirror would delete the source. " if self.opts.mirror else "")
                + "Choose a destination outside the source tree"
            )
        if os.path.lexists(dst) and not os.path.isdir(dst):
            raise DestinationError(f"destination {dst} exists and is not a directory")
        if self.opts.dry_run:
            return
        try:
            os.makedirs(dst, exist_ok=True)
        except OSError as exc:
            raise self._dest_error(exc, dst) from exc
        if not os.access(dst, os.W_OK | os.X_OK):
            raise DestinationError(
                f"destination {dst} is not writable (read-only filesystem or permissions); "
                "nothing was changed"
            )

    def _dest_error(self, exc: OSError, path: str) -> OrbitError:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return DiskFull(
                f"no space left on the destination ({path}); free some space and run the "
                "same command again: finished files and checkpointed blocks are kept"
            )
        return DestinationError(f"cannot write the destination: {exc.strerror or exc}: {path}")

    def _fail(self, err: OrbitError) -> None:
        if self.fatal is None:
            self.fatal = err

    @property
    def stopping(self) -> bool:
        return self.fatal is not None or self.cancel.cancelled

    def _loop(self) -> None:
        o = self.opts
        self.walker = merge_walk(
            o.source,
            o.destination,
            self.rules,
            on_unreadable=self._on_unreadable_dir,
            is_temp=lambda name: is_temp_name(name, self.job.token),
            on_temp=self._on_temp,
            prune=self.prune,
            # --checksum must see files that look unchanged; everyone else lets the kernel
            # count them without building Python objects.
            fold_unchanged=not o.checksum,
            on_folded=self._on_folded,
        )
        while True:
            if not self.stopping:
                self._fill()
                self._dispatch()
            if not self.tasks:
                if self.stopping or (self.scan_done and not self.active):
                    break
                if not self.active:
                    continue
                raise AssertionError(f"transfers without tasks: {[t.rel for t in self.active]}")
            assert self.pool is not None
            results, deaths = self.pool.wait(PROGRESS_INTERVAL_S)
            for _, res in results:
                self._on_result(res)
            for death in deaths:
                self._on_death(death)
            self._tick()
        self.c.scan_done = self.scan_done
        self._tick(force=True)

    def _tick(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.db is not None and (
            force
            or self.db.pending_ops >= CHECKPOINT_MAX_OPS
            or self._blocks_since_ckpt >= CHECKPOINT_BLOCKS
            or now - self._last_ckpt >= CHECKPOINT_INTERVAL_S
        ):
            self.db.checkpoint()
            self._last_ckpt = now
            self._blocks_since_ckpt = 0
        if force or now - self._last_progress >= PROGRESS_INTERVAL_S:
            self._last_progress = now
            self.c.scan_done = self.scan_done
            self.emit(self.c.progress(len(self.tasks)))

    # ---- planning -----------------------------------------------------------------------

    def _fill(self) -> None:
        limit = max(16, 4 * TASK_DEPTH * self.opts.workers)  # 4 files per ring slot
        for _ in range(SCAN_BUDGET):
            if self.scan_done or len(self.active) >= limit:
                return
            try:
                entry = next(self.walker)
            except StopIteration:
                self.scan_done = True
                return
            try:
                self._plan(entry)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
                    self._fail(
                        self._dest_error(exc, os.path.join(self.opts.destination, entry.rel))
                    )
                    return
                self._warn(
                    "io",
                    entry.rel,
                    f"{exc.strerror or exc}: {exc.filename or entry.rel}",
                    skipped=True,
                )

    def _warn(self, msgid: str, rel: str, message: str, skipped: bool = False) -> None:
        self.c.warnings += 1
        path = p.display_path(rel)
        if skipped:
            self.c.skipped.append(path)
            if self.db is not None:
                self.db.queue_error(self.run_id, os.fsencode(rel), msgid, message)
        self.emit(p.Warning(msgid=msgid, path=path, message=message))

    def _on_unreadable_dir(self, rel: str, exc: OSError) -> None:
        self._warn(
            "unreadable_dir",
            rel or ".",
            f"cannot list source directory ({exc.strerror or exc}); skipped with "
            "everything below it (nothing there is deleted either)",
            skipped=True,
        )

    def _on_temp(self, rel: str, path: str) -> None:
        """A temp file of ours left by an interrupted run: keep it only if a resume needs it."""
        if self.opts.dry_run or rel in self._resumable_temps():
            return
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def _resumable_temps(self) -> set[str]:
        """Relative temp paths of the partial files the jobs DB can resume (built once)."""
        if self._temps is None:
            self._temps = set()
            for relb in self.partials:
                d, name = os.path.split(os.fsdecode(relb))
                self._temps.add(os.path.join(d, temp_name(name, self.job.token)))
        return self._temps

    def _changed_destination(self) -> bool:
        c = self.c
        return not self.opts.dry_run and bool(
            c.dirs_created or c.links_created or c.files_total or c.files_deleted or c.files_meta
        )

    def _on_folded(self, n: int) -> None:
        self.c.files_scanned += n
        self.c.files_unchanged += n

    def _plan(self, e: Entry) -> None:
        o = self.opts
        dst = os.path.join(o.destination, e.rel)
        if e.kind is None:
            if o.mirror:
                self._delete(e.rel, dst, e.dst_kind)
            return
        st = e.src
        assert st is not None
        if e.kind == OTHER:
            self._warn("special", e.rel, "not a regular file, directory or symlink; skipped")
            return
        if e.kind == DIR:
            self._plan_dir(e, dst, st)
        elif e.kind == LINK:
            self._plan_link(e, dst, st)
        elif e.kind == FILE:
            self.c.files_scanned += 1
            self._plan_file(e, dst, st)

    def _clear_conflict(self, e: Entry, dst: str, want: str) -> bool:
        """The destination holds another kind of entry. Only --mirror may remove it."""
        if self.opts.mirror:
            self._delete(e.rel, dst, e.dst_kind)
            return True
        self._warn(
            "type_conflict",
            e.rel,
            f"is a {e.kind} in the source but a {e.dst_kind} in the destination; "
            "skipped (use --mirror to replace it)",
            skipped=True,
        )
        if want == DIR:
            self.prune.add(e.rel)
        return False

    def _plan_dir(self, e: Entry, dst: str, st: Stat) -> None:
        if e.dst_kind not in (None, DIR) and not self._clear_conflict(e, dst, DIR):
            return
        if e.dst_kind != DIR:
            self.c.dirs_created += 1
            if not self.opts.dry_run:
                os.mkdir(dst, 0o700)
            self.emit(p.FileDone(path=p.display_path(e.rel), action="mkdir", size=0))
        if not self.opts.dry_run:
            self.dirs.append((dst, st.st_mode, st.st_atime_ns, st.st_mtime_ns))

    def _plan_link(self, e: Entry, dst: str, st: Stat) -> None:
        target = os.readlink(os.path.join(self.opts.source, e.rel))
        if e.dst_kind == LINK and os.readlink(dst) == target:
            return
        if e.dst_kind == DIR and not self._clear_conflict(e, dst, LINK):
            return
        self.c.links_created += 1
        self.emit(p.FileDone(path=p.display_path(e.rel), action="link", size=0))
        if self.opts.dry_run:
            return
        tmp = os.path.join(os.path.dirname(dst), temp_name(os.path.basename(dst), self.job.token))
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        os.symlink(target, tmp)
        os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
        os.replace(tmp, dst)

    def _plan_file(self, e: Entry, dst: str, st: Stat) -> None:
        o = self.opts
        if e.dst_kind == DIR and not self._clear_conflict(e, dst, FILE):
            return
        same = False
        if e.dst_kind == FILE:
            dst_st = e.dst
            assert dst_st is not None
            same = dst_st.st_size == st.st_size and dst_st.st_mtime_ns == st.st_mtime_ns
            if same and not o.checksum:
                self.c.files_unchanged += 1
                if stat.S_IMODE(dst_st.st_mode) != stat.S_IMODE(st.st_mode):
                    if not o.dry_run:
                        os.chmod(dst, stat.S_IMODE(st.st_mode))
                    self.c.files_meta += 1
                    self.emit(p.FileDone(path=p.display_path(e.rel), action="meta", size=0))
                return
        action = "update" if e.dst_kind is not None else "copy"
        tmp = os.path.join(os.path.dirname(dst), temp_name(os.path.basename(dst), self.job.token))
        src = os.path.join(o.source, e.rel)
        tr = Transfer(e.rel, src, dst, tmp, st, action, o.chunk_size_bytes)
        if same:  # --checksum with equal size and mtime: compare content first
            tr.ops.extend([(DIGEST_SRC, 0), (DIGEST_DST, 0)])
            self.active.append(tr)
            return
        self._start_copy(tr)

    def _start_copy(self, tr: Transfer) -> None:
        tr.started = True
        self.c.files_total += 1
        self.c.bytes_total += tr.size
        if self.opts.dry_run:
            self.c.files_done += 1
            self.emit(
                p.FileDone(path=p.display_path(tr.rel), action="plan-" + tr.action, size=tr.size)
            )
            return
        if not tr.single:
            part = None
            if self.db is not None and tr.relb in self.partials:
                part = self.db.partial(self.job.id, tr.relb)
            if (
                part is not None
                and (part.src_size, part.src_mtime_ns, part.block_size)
                == (tr.size, tr.mtime_ns, tr.block_size)
                and os.path.exists(tr.tmp)
            ):
                tr.plan_resume(part.blocks)
            else:
                fd = os.open(tr.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
                os.close(fd)
                assert self.db is not None
                self.db.queue_partial(
                    self.job.id, tr.relb, tr.size, tr.mtime_ns, tr.block_size, tr.tmpb
                )
                tr.had_partial = True
                tr.plan_fresh()
            self.partials.discard(tr.relb)
        else:
            tr.plan_fresh()
        self.active.append(tr)

    def _delete(self, rel: str, path: str, kind: str | None) -> None:
        self.c.files_deleted += 1
        self.emit(
            p.FileDone(
                path=p.display_path(rel),
                action="plan-delete" if self.opts.dry_run else "delete",
                size=0,
            )
        )
        if self.opts.dry_run:
            return
        if kind == DIR:
            shutil.rmtree(path)  # never follows symlinks: a link inside is removed, not entered
        else:
            os.unlink(path)
        if self.db is not None:
            self.db.queue_file_deleted(self.job.id, os.fsencode(rel))

    def _finish_dirs(self) -> None:
        """Directory modes and mtimes, deepest first, after their contents stopped changing."""
        if self.opts.dry_run:
            return
        root = os.stat(self.opts.source)
        self.dirs.insert(
            0, (self.opts.destination, root.st_mode, root.st_atime_ns, root.st_mtime_ns)
        )
        for path, mode, atime_ns, mtime_ns in reversed(self.dirs):
            # Read before writing: an unchanged tree costs one stat per directory, not two
            # metadata writes that the next syncfs would have to flush.
            st = os.lstat(path)
            if stat.S_IMODE(st.st_mode) != stat.S_IMODE(mode):
                os.chmod(path, stat.S_IMODE(mode))
            if st.st_mtime_ns != mtime_ns:
                os.utime(path, ns=(atime_ns, mtime_ns))
        self.dirs.clear()

    # ---- dispatch -----------------------------------------------------------------------

    def _ensure_pool(self) -> Lease:
        if self.pool is None:
            from orbit_fast.workers.pool import open_lease

            # One slot per task out: TASK_DEPTH per worker, all in use at once.
            self.ring = SharedRing.create(
                self.opts.chunk_size_bytes, TASK_DEPTH * self.opts.workers
            )
            self.pool = open_lease(self.ring, self.opts.workers, TASK_DEPTH, self.shared_pool)
            # On a shared pool of another size, the run still keeps `workers` x TASK_DEPTH
            # tasks out (what latency-bound storage needs), spread over the pool's workers.
            self.depth = -(-TASK_DEPTH * self.opts.workers // self.pool.size)
        return self.pool

    def _dispatch(self) -> None:
        if not self.active:
            return
        pool = self._ensure_pool()
        ring = self.ring
        assert ring is not None
        for tr in self.active:
            while tr.ops and not tr.failed:
                kind, idx = tr.ops[0]
                w = pool.least_loaded()
                if pool.load(w) >= self.depth:
                    return
                slot = None
                if kind != FINALIZE:
                    slot = ring.acquire()
                    if slot is None:
                        return
                tid = self.next_task
                self.next_task += 1
                msg = self._task_msg(tid, tr, kind, idx, slot)
                tr.ops.popleft()
                tr.outstanding += 1
                self.tasks[tid] = _Task(tr, kind, idx, slot, msg)
                pool.send(w, tid, msg)

    def _finalize_msg(self, tr: Transfer) -> m.Finalize:
        return m.Finalize(
            tmp=tr.tmpb,
            dst=tr.dstb,
            size=tr.size,
            mtime_ns=tr.mtime_ns,
            atime_ns=tr.atime_ns,
            mode=tr.mode,
            src=tr.srcb,
            src_mtime_ns=tr.mtime_ns,
            fsync=self.opts.fsync == FsyncPolicy.FILE,
        )

    def _task_msg(self, tid: int, tr: Transfer, kind: str, idx: int, slot: int | None) -> m.Task:
        if kind == FINALIZE:
            return m.FinalizeFile(task_id=tid, finalize=self._finalize_msg(tr))
        assert slot is not None
        if kind == COPY:
            off, length = tr.block_range(idx)
            return m.CopyBlock(
                task_id=tid,
                slot=slot,
                src=tr.srcb,
                tmp=tr.tmpb,
                offset=off,
                length=length,
                sparse=self.opts.sparse,
                finalize=self._finalize_msg(tr) if tr.single else None,
            )
        if kind == VERIFY:
            off, length = tr.block_range(idx)
            return m.VerifyBlock(task_id=tid, slot=slot, path=tr.tmpb, offset=off, length=length)
        return m.DigestFile(task_id=tid, slot=slot, path=tr.srcb if kind == DIGEST_SRC else tr.dstb)

    # ---- results ------------------------------------------------------------------------

    def _on_result(self, res: m.Result) -> None:
        tid = getattr(res, "task_id", None)
        if tid is None:
            return  # WorkerReady
        rec = self.tasks.pop(tid)
        if rec.slot is not None:
            assert self.ring is not None
            self.ring.release(rec.slot)
        tr = rec.tr
        tr.outstanding -= 1
        if isinstance(res, m.BlockCopied):
            self._block_done(tr, rec.idx, res.digest, res.length, copied=True)
            if res.finalized:
                self._file_done(tr)
                return
        elif isinstance(res, m.BlockVerified):
            if res.length == tr.block_range(rec.idx)[1] and res.digest == tr.recorded.get(rec.idx):
                self._block_done(tr, rec.idx, res.digest, res.length, copied=False)
            else:
                tr.ops.append((COPY, rec.idx))
        elif isinstance(res, m.FileDigested):
            self._digested(tr, rec.kind, res)
            return
        elif isinstance(res, m.FileFinalized):
            self._file_done(tr)
            return
        elif isinstance(res, m.SourceChanged):
            tr.failed = tr.failed or "changed"
        elif isinstance(res, m.TaskFailed):
            if res.side == "source":
                if tr.failed is None:
                    vanished = res.errno == errno.ENOENT
                    self._warn(
                        "vanished" if vanished else "unreadable",
                        tr.rel,
                        "vanished from the source before it was copied"
                        if vanished
                        else f"cannot read: {res.message}",
                        skipped=not vanished,
                    )
                tr.failed = "source"
            else:
                tr.failed = "destination"
                self._fail(self._dest_error(OSError(res.errno, res.message), tr.dst))
        if not tr.failed and not tr.single and tr.all_blocks_done() and not tr.finalizing:
            tr.finalizing = True
            tr.ops.append((FINALIZE, -1))
        if tr.failed and tr.outstanding == 0:
            self._abandon(tr)

    def _block_done(self, tr: Transfer, idx: int, digest: bytes, n: int, copied: bool) -> None:
        tr.digests[idx] = digest
        tr.blocks_done += 1
        self.c.bytes_done += n
        if copied:
            self.c.bytes_copied += n
        else:
            self.c.bytes_resumed += n
        if not tr.single and copied and self.db is not None:
            self.db.queue_block(self.job.id, tr.relb, idx, digest)
            self._blocks_since_ckpt += 1

    def _digested(self, tr: Transfer, kind: str, res: m.FileDigested) -> None:
        if kind == DIGEST_SRC:
            tr.src_digest = res.digest
        else:
            tr.dst_digest = res.digest
        if tr.outstanding or tr.failed:
            if tr.failed and tr.outstanding == 0:
                self._abandon(tr)
            return
        self.active.remove(tr)
        if tr.src_digest == tr.dst_digest:
            self.c.files_unchanged += 1
            return
        tr.action = "update"
        self._start_copy(tr)

    def _file_done(self, tr: Transfer) -> None:
        self.active.remove(tr)
        self.c.files_done += 1
        self.c.files_copied += 1
        action = "resume" if tr.recorded else tr.action
        if self.db is not None:
            self.db.queue_file_done(
                self.job.id,
                self.run_id,
                tr.relb,
                tr.size,
                tr.mtime_ns,
                tr.file_digest(),
                tr.had_partial,
            )
        self.emit(p.FileDone(path=p.display_path(tr.rel), action=action, size=tr.size))

    def _abandon(self, tr: Transfer) -> None:
        """Drop a failed transfer once none of its tasks is out; retry a changed source."""
        self.active.remove(tr)
        if tr.failed == "destination":
            return  # the run is failing; keep the temp file and checkpoint for the rerun
        try:
            os.unlink(tr.tmp)
        except OSError:
            pass
        if tr.had_partial and self.db is not None:
            self.db.queue_drop_partial(self.job.id, tr.relb)
        if not tr.started:
            return
        self.c.bytes_total -= tr.size
        self.c.files_total -= 1
        done = sum(tr.block_range(i)[1] for i, d in enumerate(tr.digests) if d is not None)
        self.c.bytes_done -= done
        if tr.failed != "changed":
            return
        if tr.attempts + 1 >= MAX_SOURCE_CHANGES or self.stopping:
            self._warn(
                "changed",
                tr.rel,
                f"changed while being copied {tr.attempts + 1} times; skipped, "
                "run again once it is stable",
                skipped=True,
            )
            return
        try:
            st = os.lstat(tr.src)
        except FileNotFoundError:
            self._warn("vanished", tr.rel, "vanished from the source while being copied")
            return
        self._start_copy(
            Transfer(tr.rel, tr.src, tr.dst, tr.tmp, st, tr.action, tr.block_size, tr.attempts + 1)
        )

    def _on_death(self, death: Death) -> None:
        assert self.pool is not None
        self.emit(
            p.Warning(
                msgid="worker_died",
                path="",
                message=f"worker {death.worker} exited with code {death.exitcode}; "
                f"requeued {len(death.task_ids)} task(s) on a new worker",
            )
        )
        for tid in sorted(death.task_ids):
            rec = self.tasks.get(tid)
            if rec is None:
                continue
            rec.deaths += not death.blameless
            if rec.deaths >= MAX_TASK_DEATHS:
                self._fail(
                    WorkerFailed(
                        f"worker processes died {rec.deaths} times on {rec.kind} of "
                        f"{p.display_path(rec.tr.rel)} (last exit code {death.exitcode}); the run "
                        "stopped with progress checkpointed; check memory limits and the file"
                    )
                )
                # Account the task as finished so the loop can end.
                self.tasks.pop(tid)
                if rec.slot is not None and self.ring is not None:
                    self.ring.release(rec.slot)
                rec.tr.outstanding -= 1
                rec.tr.failed = "destination"
                continue
            self.pool.send(self.pool.least_loaded(), tid, rec.msg)

    def _stop_pool(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None
        if self.ring is not None:
            self.ring.close()
            self.ring = None

    def _summary(self, code: int) -> p.Summary:
        c = self.c
        return p.Summary(
            job_id=self.job.id,
            run_id=self.run_id,
            exit_code=int(code),
            files_scanned=c.files_scanned,
            files_copied=c.files_copied,
            files_unchanged=c.files_unchanged,
            files_deleted=c.files_deleted,
            dirs_created=c.dirs_created,
            links_created=c.links_created,
            bytes_copied=c.bytes_copied,
            bytes_resumed=c.bytes_resumed,
            bytes_total=c.bytes_total,
            warnings=c.warnings,
            skipped=c.skipped[:1000],
            elapsed_s=round(time.monotonic() - c.t0, 3),
            dry_run=self.opts.dry_run,
        )
