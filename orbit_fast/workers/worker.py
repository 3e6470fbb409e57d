"""Worker process: executes block tasks on ring slots and reports one result per task.

A worker is a pure transform of files through its lent slot: it reads source bytes into the
slot, digests them (xxh3-128), writes them to the temp file and, for the last step, renames the
temp file into place. Every local file is reached below a tree root the run named (confine.py):
no symlink is followed on the way, and bytes read are kept only if the fstat of the fd they
came from is the file the listing saw (dev, inode, size, mtime). It never opens a database
and keeps no state between tasks; the coordinator owns slots, files and progress. It exits
on Shutdown (after its tasks in flight), and at once on EOF of its task pipe or when its
parent disappears.
"""

from __future__ import annotations

import gc
import os
import signal
import stat
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, NoReturn

import xxhash

from orbit_fast import environment
from orbit_fast import messages as m
from orbit_fast._native import kernels
from orbit_fast.config import is_remote
from orbit_fast.confine import Tree, create_fresh_at, same_file
from orbit_fast.crypto import BLOB
from orbit_fast.errors import OrbitError
from orbit_fast.fsmeta import Meta, read_meta, set_owner, set_xattrs
from orbit_fast.workers.ring import SharedRing
from orbit_fast.workers.throttle import DOWN, UP, Throttle

if TYPE_CHECKING:
    from orbit_fast.crypto import Sealer

_PARENT_POLL_S = 1.0
# Chunk ids this worker has sent with their blob (a set of ~100 bytes per id; cleared when
# full). A repeat is sent without a blob: the coordinator has the first one, because one
# worker's results arrive in order. Saves compressing duplicates (75% of the bench tree's
# large files) before the coordinator's dedup could say they are not needed.
MAX_SENT_IDS = 1 << 20


def worker_main(
    index: int,
    tasks: Connection,
    results: Connection,
    parent_pid: int,
    threads: int = 1,
    nice: int = 0,
    env: dict[str, str] | None = None,
    s3_endpoint: str = "",
) -> None:
    """Run tasks from `tasks` until Shutdown, EOF or the parent's death.

    Up to `threads` tasks run at once: the file system calls they spend their time in
    (open, pread, pwrite, rename) release the GIL, so one process per core still keeps
    several I/O operations in flight when the storage is latency-bound (docs/performance.md).
    Rings come and go with the coordinators the pool serves (AttachRing, DetachRing); a task's
    id says whose ring its slot is in (messages.RING_SHIFT). `env` is the pool's environment
    overlay (the hub's env file), read by the stores this worker opens; `s3_endpoint` the
    pool's endpoint for a backup's s3:// source ("": ORBIT_S3_ENDPOINT).
    """
    # Ctrl-C and SIGTERM go to the coordinator, which checkpoints and then sends Shutdown;
    # a worker killed mid-write would only cost a requeue, but a clean stop costs nothing.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # The hub runs its jobs' workers at a lower CPU priority (ORBIT_WORKER_NICE): bulk
    # copying yields the CPU to the API and the dashboard when they need it, and takes all of
    # it otherwise.
    if nice:
        os.nice(nice)
    if env:
        # This process is the pool's own child: the overlay is its for its whole life.
        environment.install(worker_main, env)
    # Everything made so far (the interpreter's start-up, the imports) lives as long as the
    # worker: kept out of the collector's full walks, which small-file tasks trigger often.
    gc.freeze()
    enc = m.task_encoder
    send_lock = threading.Lock()  # one writer at a time on the pipe; the encoder is shared too
    lock = threading.Lock()  # guards `tenants` and each tenant's inflight/detached
    tenants: dict[int, _Tenant] = {}

    def send(res: m.Result) -> None:
        with send_lock:
            results.send_bytes(enc.encode(res))

    def run(t: _Tenant, task: m.JobTask) -> None:
        try:
            if isinstance(task, m.ChunkRange):
                # One ring's chunk results leave in the order they were made: a chunk sent
                # without its blob (MAX_SENT_IDS) must reach the coordinator after the one
                # that carried it.
                with t.in_order:
                    send(t.runner.run(task))
            else:
                t.throttle(task)
                send(t.runner.run(task))
        except BaseException:
            # Not an I/O error of a file (those are results): a bug or a broken pipe. Die
            # loudly, as a single-threaded worker would, so the pool requeues the tasks.
            traceback.print_exc()
            os._exit(70)
        with lock:
            t.inflight -= 1
            last = t.detached and not t.inflight
        if last:
            t.close()

    send(m.WorkerReady(worker=index, pid=os.getpid()))
    executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"orbit-w{index}")
    try:
        while True:
            if not tasks.poll(_PARENT_POLL_S):
                if os.getppid() != parent_pid:
                    _orphaned()
                continue
            try:
                raw = tasks.recv_bytes()
            except EOFError:  # only the coordinator's death closes the pipe before Shutdown
                _orphaned()
            task = m.task_decoder.decode(raw)
            if isinstance(task, m.Shutdown):
                return
            if isinstance(task, m.AttachRing):
                ring = SharedRing.attach(task.name, task.slot_size, task.slots)
                with lock:
                    tenants[task.ring] = _Tenant(ring, task.trees, s3_endpoint, task.throttles)
                continue
            if isinstance(task, m.DetachRing):
                with lock:
                    t = tenants.pop(task.ring, None)
                    if t is not None:
                        t.detached = True
                    idle = t is not None and not t.inflight
                if idle:
                    t.close()  # type: ignore[union-attr]
                continue
            with lock:
                t = tenants[task.task_id >> m.RING_SHIFT]  # KeyError: a pool bug; die loudly
                t.inflight += 1
            executor.submit(run, t, task)
    finally:
        executor.shutdown(wait=True)  # no thread may still hold a view when a ring closes
        for t in tenants.values():
            t.close()


def _orphaned() -> NoReturn:
    """The coordinator is gone (killed, or crashed): stop now, without waiting for the tasks
    in flight. One stuck in I/O (a hung share, say) would otherwise write when it wakes, maybe
    after the next run has resumed that file and checkpointed the block, with source bytes
    from before a change: a block the next run's checkpoint says is new would be old."""
    os._exit(0)


class _Tenant:
    """One coordinator's ring as this worker sees it, with what it remembers for that run."""

    def __init__(self, ring: SharedRing, trees: list[m.TreeRef], s3_endpoint: str = "",
                 throttles: list[str] | None = None) -> None:  # fmt: skip
        self.ring = ring
        self.trees = _Trees(trees)
        self.runner = _Runner(ring, self.trees, s3_endpoint)
        self.inflight = 0
        self.detached = False
        self.in_order = threading.Lock()
        self.throttles = [Throttle.attach(name) for name in throttles or []]

    def throttle(self, task: m.JobTask) -> None:
        """Wait until the run's bandwidth limits let this task's bytes move: written to the
        destination count up, read from a remote source down (a local copy: up only)."""
        if not self.throttles:
            return
        nbytes, up, down = _moves(task)
        for t in self.throttles:
            if up:
                t.charge(nbytes, UP)
            if down:
                t.charge(nbytes, DOWN)

    def close(self) -> None:
        self.ring.close()
        self.trees.close()
        for t in self.throttles:
            t.close()


def _moves(task: m.JobTask) -> tuple[int, bool, bool]:
    """(bytes a task moves, counted up, counted down)."""
    if isinstance(task, m.CopyBlock):
        return task.length, True, False
    if isinstance(task, m.CopyFiles):
        return sum(f.size for f in task.files), True, False
    if isinstance(task, m.PutObject | m.PutPart):
        if isinstance(task, m.PutObject) and task.server_side:
            return 0, False, False
        n = task.length if isinstance(task, m.PutPart) else task.size
        src, dst = is_remote(task.ends.src), is_remote(task.ends.dst)
        return n, dst or not src, src
    return 0, False, False  # verifying, digesting, renaming: no transfer


class _Trees:
    """The run's tree roots, each opened on first use and checked to be the directory the
    coordinator opened (a root swapped meanwhile fails every task below it, ESTALE)."""

    def __init__(self, refs: list[m.TreeRef]) -> None:
        self.refs = refs
        self.open: list[Tree | None] = [None] * len(refs)
        self.lock = threading.Lock()

    def __getitem__(self, i: int) -> Tree:
        t = self.open[i]
        if t is None:
            with self.lock:
                t = self.open[i]
                if t is None:
                    ref = self.refs[i]
                    t = self.open[i] = Tree.reopen(ref.path, ref.dev, ref.ino)
        return t

    def close(self) -> None:
        for t in self.open:
            if t is not None:
                t.close()


class _Side(Exception):
    """An OSError tagged with the side it happened on."""

    def __init__(self, side: str, exc: OSError, path: bytes):
        self.side, self.exc, self.path = side, exc, path


def _changed(st: os.stat_result, want: m.Ident) -> str:
    """How an fstat differs from the file the listing saw (for SourceChanged)."""
    if (st.st_dev, st.st_ino) != (want.dev, want.ino) or not stat.S_ISREG(st.st_mode):
        return "replaced by another file"
    return f"size {want.size}->{st.st_size}, mtime_ns {want.mtime_ns}->{st.st_mtime_ns}"


class _Runner:
    def __init__(self, ring: SharedRing, trees: _Trees, s3_endpoint: str = ""):
        self.ring = ring
        self.trees = trees
        self.s3_endpoint = s3_endpoint  # of a remote source (ChunkRange.src_url)
        self.is_zero = kernels().is_zero
        self.sent_ids: set[bytes] = set()
        self._sealers: dict[tuple[bytes, bytes], Sealer] = {}
        self._seal_buf = bytearray()

    def run(self, task: m.JobTask) -> m.Result:
        try:
            if isinstance(task, m.CopyFiles):
                return self._copy_files(task)
            if isinstance(task, m.CopyBlock):
                return self._copy(task)
            if isinstance(task, m.VerifyBlock):
                return self._verify(task)
            if isinstance(task, m.DigestFile):
                return self._digest_file(task)
            if isinstance(task, m.FinalizeFile):
                return self._finalize(task.task_id, task.finalize)
            if isinstance(task, m.ChunkRange):
                return self._chunk_range(task)
            if isinstance(task, m.PutObject | m.BeginUpload | m.PutPart | m.CompleteUpload
                          | m.DigestObject | m.SetFileMeta):  # fmt: skip
                from orbit_fast.workers.objects import run_object_task

                return run_object_task(task)
        except _Side as err:
            return m.TaskFailed(task_id=task.task_id, side=err.side, errno=err.exc.errno or 0,
                                message=_side_message(err))  # fmt: skip
        raise TypeError(f"unexpected task {task!r}")

    def _open(self, side: str, tree: int, rel: bytes, flags: int = os.O_RDONLY) -> int:
        """An fd of `rel` below the run's tree (no symlink followed in any component)."""
        try:
            return self.trees[tree].open_file(rel, flags)
        except OSError as exc:
            raise _Side(side, exc, rel) from exc

    def _dir(self, rel: bytes) -> tuple[int, bytes]:
        """(fd of the destination directory holding `rel`, rel's name there)."""
        d, _, name = rel.rpartition(b"/")
        try:
            return self.trees[m.DST].open_dir(d), name
        except OSError as exc:
            raise _Side("destination", exc, rel) from exc

    @staticmethod
    def _read_into(fd: int, path: bytes, view: memoryview, offset: int) -> int:
        """Fill `view` from `fd` at `offset`; fewer bytes only at end of file."""
        try:
            got, want = 0, len(view)
            while got < want:
                n = os.preadv(fd, [view[got:]], offset + got)
                if n == 0:
                    break
                got += n
            return got
        except OSError as exc:
            raise _Side("source", exc, path) from exc

    def _read_source(self, path: bytes, want: m.Ident, view: memoryview, offset: int,
                     keep: int = 0) -> tuple[int, str | None, Meta | None]:  # fmt: skip
        """Read a block of a listed source file: (bytes read, None, its metadata to keep), or
        (_, how it differs from the file the listing saw, _) when the fstat after the read
        says another file."""
        fd = self._open("source", m.SRC, path)
        try:
            got = self._read_into(fd, path, view, offset)
            st = os.fstat(fd)
            meta = read_meta(fd, st, keep) if keep else None
        finally:
            os.close(fd)
        if same_file(st, want.dev, want.ino, want.size, want.mtime_ns):
            return got, None, meta
        return got, _changed(st, want), None

    def _copy(self, t: m.CopyBlock) -> m.Result:
        view = self.ring.view(t.slot, t.length)
        fd = -1
        try:
            got, changed, _ = self._read_source(t.src, t.src_id, view, t.offset)
            if changed is not None:
                return m.SourceChanged(task_id=t.task_id, detail=changed)
            if got != t.length:
                return m.SourceChanged(
                    task_id=t.task_id, detail=f"shrank below {t.offset + t.length} bytes"
                )
            digest = xxhash.xxh3_128_digest(view)
            # A zero block becomes a hole: the length is then set by ftruncate.
            hole = bool(got) and t.sparse and self.is_zero(view)
            try:
                fd = self.trees[m.DST].open_file(t.tmp, os.O_WRONLY)
                if got and not hole:
                    done = 0
                    while done < got:
                        done += os.pwrite(fd, view[done:], t.offset + done)
            except OSError as exc:
                _close_quietly(fd)
                raise _Side("destination", exc, t.tmp) from exc
        finally:
            view.release()
        os.close(fd)
        return m.BlockCopied(task_id=t.task_id, length=got, digest=digest)

    def _copy_files(self, t: m.CopyFiles) -> m.Result:
        """Whole files one after another through the slot; a file that fails is reported by
        its index and the others go on (their outcomes are independent)."""
        slot = self.ring.view(t.slot)
        failed: list[m.FileFailed] = []
        # The destination directory's fd, kept while consecutive files of the task (a walk
        # sends them directory by directory) go to it: one openat2 + close per directory
        # instead of per file. As for any file on its way, a directory moved meanwhile gets
        # the files still to come in this task (docs/sync.md, "Confinement").
        dir_rel, dirfd = b"", -1
        lost = 0
        try:
            for i, f in enumerate(t.files):
                d = f.dst.rpartition(b"/")[0]
                try:
                    if dirfd < 0 or d != dir_rel:
                        _close_quietly(dirfd)
                        dirfd = -1
                        dirfd, _ = self._dir(f.dst)
                        dir_rel = d
                    changed, missed = self._copy_whole(f, slot[: f.src_id.size], t.sparse,
                                                       dirfd)  # fmt: skip
                    lost |= missed
                except _Side as err:
                    failed.append(m.FileFailed(i, err.side, err.exc.errno or 0,
                                               _side_message(err)))  # fmt: skip
                    continue
                if changed is not None:
                    failed.append(m.FileFailed(i, "changed", 0, changed))
        finally:
            _close_quietly(dirfd)
            slot.release()
        return m.FilesCopied(task_id=t.task_id, failed=failed, lost=lost)

    def _copy_whole(self, f: m.Finalize, view: memoryview, sparse: bool,
                    dirfd: int) -> tuple[str | None, int]:  # fmt: skip
        """One file of at most a block, read through `view` (its size) and renamed into place
        in `dirfd` (left open): (None, KEEP_* bits not kept) once it is there, else (how the
        source differs from the file the listing saw, 0): nothing under the final name
        changed. Raises _Side."""
        got, changed, meta = self._read_source(f.src, f.src_id, view, 0, f.keep)
        if changed is not None:
            return changed, 0
        if got != len(view):
            return f"{got} of {len(view)} bytes", 0
        # A zero file becomes a hole: its length is then set by ftruncate.
        hole = bool(got) and sparse and self.is_zero(view)
        tmp = f.tmp.rpartition(b"/")[2]
        fd = -1
        try:
            # The worker creates the temp file (fresh, O_EXCL: never through whatever is at
            # its name) in the directory it renames it in.
            fd = create_fresh_at(dirfd, tmp)
            if got and not hole:
                done = 0
                while done < got:
                    done += os.pwrite(fd, view[done:], done)
        except OSError as exc:
            _close_quietly(fd)
            raise _Side("destination", exc, f.tmp) from exc
        # Its source already checked after the read: seal it through the descriptor still open.
        return None, self._seal(f, fd, dirfd, truncate=hole, meta=meta)

    def _chunk_range(self, t: m.ChunkRange) -> m.Result:
        from orbit_fast.chunking import ChunkerParams, cut_points, make_chunker
        from orbit_fast.compression import compress_into, parse_codec
        from orbit_fast.hashing import chunk_id

        params = ChunkerParams(min_size=t.min_size, avg_size=t.avg_size,
                               max_size=t.max_size)  # fmt: skip
        codec = parse_codec(t.codec)
        sealer = self._sealer(t.seal_key, t.seal_repo) if t.seal_key else None
        slot = self.ring.view(t.slot)
        pos, at, parts = t.out_at, 0, []
        try:
            for part in t.parts:
                data = slot[at : at + part.length]
                at += part.length
                try:
                    if t.src_url:
                        from orbit_fast.workers.objects import read_remote

                        got = read_remote(t.src_url, part.path, data, part.offset,
                                          self.s3_endpoint)  # fmt: skip
                    else:
                        got, changed = self._read_part(part, data)
                        if changed is not None:
                            parts.append(m.PartChunked([], part.offset, changed))
                            continue
                except _Side as err:
                    parts.append(m.PartChunked([], part.offset, err.exc.strerror or str(err.exc)))
                    continue
                except OrbitError as err:  # a remote source that failed (after retries)
                    parts.append(m.PartChunked([], part.offset, str(err)))
                    continue
                if got != part.length:
                    why = f"shrank while read ({got} of {part.length} bytes at {part.offset})"
                    parts.append(m.PartChunked([], part.offset, why))
                    continue
                ends = list(cut_points(make_chunker(params), data))
                if part.eof and (not ends or ends[-1] != got) and got:
                    ends.append(got)  # the file's last chunk may be shorter than min
                start, records = 0, []
                for end in ends:
                    piece = data[start:end]
                    cid = chunk_id(t.key, piece)
                    if cid in self.sent_ids:
                        n = 0  # sent with its blob earlier in this run: not compressed again
                    else:
                        if sealer is None:
                            n = compress_into(codec, piece, slot[pos:])
                        else:  # compressed beside the slot, sealed into it
                            scratch = self._scratch(len(piece))
                            n = compress_into(codec, piece, scratch)
                            n = sealer.seal_into(BLOB, cid, scratch[:n], slot[pos:])
                        if len(self.sent_ids) >= MAX_SENT_IDS:
                            self.sent_ids.clear()
                        self.sent_ids.add(cid)
                    records.append(m.ChunkRecord(offset=part.offset + start, length=end - start,
                                                 chunk_id=cid, blob_at=pos,
                                                 blob_len=n))  # fmt: skip
                    pos += n
                    start = end
                parts.append(m.PartChunked(records, part.offset + start))
            return m.RangeChunked(task_id=t.task_id, parts=parts)
        finally:
            slot.release()

    def _sealer(self, key: bytes, repo: bytes) -> Sealer:
        """One per repository key for the worker's life: its salt and counter go on from
        task to task (crypto.py: a nonce is never reused under one subkey)."""
        from orbit_fast.crypto import Sealer

        sealer = self._sealers.get((key, repo))
        if sealer is None:
            sealer = self._sealers[(key, repo)] = Sealer(key, repo)
        return sealer

    def _scratch(self, raw: int) -> memoryview:
        """A buffer for one compressed blob of a chunk of `raw` bytes, reused."""
        from orbit_fast.compression import HEADER

        need = raw + HEADER.size
        if len(self._seal_buf) < need:
            self._seal_buf = bytearray(need)
        return memoryview(self._seal_buf)

    def _read_part(self, part: m.RangePart, data: memoryview) -> tuple[int, str | None]:
        """A range of a local file for a backup: read below the source tree and, with the
        listing's ident, kept only if the fstat after the read is that file."""
        if part.ident is not None:
            got, changed, _ = self._read_source(part.path, part.ident, data, part.offset)
            return got, changed
        fd = self._open("source", m.SRC, part.path)
        try:
            return self._read_into(fd, part.path, data, part.offset), None
        finally:
            os.close(fd)

    def _verify(self, t: m.VerifyBlock) -> m.Result:
        view = self.ring.view(t.slot, t.length)
        try:
            try:
                fd = self.trees[m.DST].open_file(t.path, os.O_RDONLY)
            except FileNotFoundError:  # a missing temp file just means "nothing to keep"
                return m.BlockVerified(task_id=t.task_id, length=0, digest=b"")
            except OSError as exc:
                raise _Side("destination", exc, t.path) from exc
            try:
                got = self._read_into(fd, t.path, view, t.offset)
            except _Side as err:
                raise _Side("destination", err.exc, t.path) from err.exc
            finally:
                os.close(fd)
            return m.BlockVerified(
                task_id=t.task_id, length=got, digest=xxhash.xxh3_128_digest(view[:got])
            )
        finally:
            view.release()

    def _digest_file(self, t: m.DigestFile) -> m.Result:
        view = self.ring.view(t.slot)
        h = xxhash.xxh3_128()
        size = 0
        side = "source" if t.tree == m.SRC else "destination"
        try:
            fd = self._open(side, t.tree, t.path)
            try:
                while n := os.readv(fd, [view]):
                    h.update(view[:n])
                    size += n
            except OSError as exc:
                raise _Side(side, exc, t.path) from exc
            finally:
                os.close(fd)
        finally:
            view.release()
        return m.FileDigested(task_id=t.task_id, size=size, digest=h.digest())

    def _finalize(self, task_id: int, f: m.Finalize) -> m.Result:
        """Check the source is unchanged, seal the temp file (length, mode, times, optional
        fdatasync) and rename it into place, in its directory's fd."""
        dirfd, _ = self._dir(f.dst)
        try:
            tmp, dst = f.tmp.rpartition(b"/")[2], f.dst.rpartition(b"/")[2]
            changed, meta = self._source_changed(f)
            if changed is not None:
                _unlink_quietly(dirfd, tmp)
                return m.SourceChanged(task_id=task_id, detail=changed)
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
            except FileNotFoundError as exc:
                # Requeued after a worker died between the rename and its report.
                if _matches(dirfd, dst, f.size, f.mtime_ns):
                    return m.FileFinalized(task_id=task_id)
                raise _Side("destination", exc, f.dst) from exc
            except OSError as exc:
                raise _Side("destination", exc, f.dst) from exc
            lost = self._seal(f, fd, dirfd, truncate=True, meta=meta)
        finally:
            os.close(dirfd)
        return m.FileFinalized(task_id=task_id, lost=lost)

    @staticmethod
    def _seal(f: m.Finalize, fd: int, dirfd: int, truncate: bool,
              meta: Meta | None = None) -> int:  # fmt: skip
        """Length (with `truncate`), optional fdatasync, owner, mode, xattrs and ACLs (`meta`,
        as Finalize.keep asks) and times of the temp file open as `fd` (closed here), then
        renameat in `dirfd` (left open): whatever is at the final name now (a link someone
        planted included) is replaced, never followed; nobody sees the file under its name
        before it has all of them. Returns the KEEP_* bits the destination refused."""
        tmp, dst = f.tmp.rpartition(b"/")[2], f.dst.rpartition(b"/")[2]
        lost = 0
        try:
            try:
                if truncate:
                    os.ftruncate(fd, f.size)
                if f.fsync:
                    os.fdatasync(fd)
                if meta is not None:  # the owner first: chown clears setuid and setgid bits
                    lost |= set_owner(fd, meta, f.keep)
                os.fchmod(fd, f.mode & 0o7777)
                if meta is not None:
                    lost |= set_xattrs(fd, meta.xattrs)
                os.utime(fd, ns=(f.atime_ns, f.mtime_ns))
            finally:
                os.close(fd)
            os.rename(tmp, dst, src_dir_fd=dirfd, dst_dir_fd=dirfd)
            if f.fsync:
                os.fsync(dirfd)
        except OSError as exc:
            raise _Side("destination", exc, f.dst) from exc
        return lost

    def _source_changed(self, f: m.Finalize) -> tuple[str | None, Meta | None]:
        """After the last block: is the source still the file the listing saw? With its
        metadata to keep (Finalize.keep) when it is."""
        sfd = self._open("source", m.SRC, f.src)
        try:
            st = os.fstat(sfd)
            meta = read_meta(sfd, st, f.keep) if f.keep else None
        finally:
            os.close(sfd)
        w = f.src_id
        if same_file(st, w.dev, w.ino, w.size, w.mtime_ns):
            return None, meta
        return _changed(st, w), None


def _side_message(err: _Side) -> str:
    shown = os.fsdecode(err.path).encode("utf-8", "surrogateescape").decode("utf-8",
                                                                           "backslashreplace")
    return f"{err.exc.strerror or err.exc}: {shown}"


def _close_quietly(fd: int) -> None:
    if fd >= 0:
        os.close(fd)


def _matches(dirfd: int, name: bytes, size: int, mtime_ns: int) -> bool:
    try:
        st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except OSError:
        return False
    return st.st_size == size and st.st_mtime_ns == mtime_ns


def _unlink_quietly(dirfd: int, name: bytes) -> None:
    try:
        os.unlink(name, dir_fd=dirfd)
    except OSError:
        pass
