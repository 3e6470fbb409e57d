"""WorkerPool: N worker processes, supervised and replaced, lent to coordinators as Leases.

The CLI makes a pool for its one run (`open_lease` without a shared pool); the hub makes one
for its whole life and every job it runs leases it, so concurrent jobs share the cores instead
of each starting its own processes (#6).

Each worker has two pipes of its own (tasks in, results out), so a worker killed mid-message
can never leave a shared lock held. A Lease is one coordinator's view: its own ring (attached
by every worker), its own task ids (tagged with the lease id, messages.RING_SHIFT), its own
results and the deaths that cost it tasks. Whichever lease is waiting reads every pipe and
routes what it finds (leader/follower): with one lease that is the direct path, with no
thread in between, and with several no result waits for a particular coordinator to look.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import selectors
import signal
import threading
import time
from collections import deque
from collections.abc import Mapping
from multiprocessing.connection import Connection

import msgspec

from orbit_fast import environment
from orbit_fast import messages as m
from orbit_fast.workers.ring import SharedRing
from orbit_fast.workers.worker import worker_main

# Threads per worker in the hub's shared pool: tasks of several jobs run at once in each
# process (each job still limits its own tasks per worker); idle threads cost nothing.
SHARED_THREADS = 16


class _Slot:
    __slots__ = ("proc", "tasks", "results", "outstanding")

    def __init__(self, proc: mp.process.BaseProcess, tasks: Connection, results: Connection):
        self.proc, self.tasks, self.results = proc, tasks, results
        self.outstanding: set[int] = set()  # pool-wide task ids (lease << RING_SHIFT | id)


class Death:
    """A worker that exited, and the tasks of one lease it still held (to be requeued).

    `blameless`: another lease killed the worker because its own tasks there outlived it
    (Lease.close); the tasks lost with it did nothing wrong and are not counted against
    them (a coordinator fails a task that keeps killing workers)."""

    __slots__ = ("worker", "exitcode", "task_ids", "blameless")

    def __init__(self, worker: int, exitcode: int | None, task_ids: set[int],
                 blameless: bool = False):  # fmt: skip
        self.worker, self.exitcode, self.task_ids = worker, exitcode, task_ids
        self.blameless = blameless


class WorkerPool:
    def __init__(self, size: int, threads: int = 1, nice: int = 0,
                 env: Mapping[str, str] | None = None, s3_endpoint: str = ""):  # fmt: skip
        # spawn: workers inherit no file descriptors, locks or DB handles from the coordinator,
        # which matters when the engine is embedded in the threaded hub.
        self._ctx = mp.get_context("spawn")
        self.size = size
        self.threads = threads  # tasks each worker runs at once
        self.nice = nice  # added to the workers' CPU priority (the hub's: ORBIT_WORKER_NICE)
        # The environment overlay every worker (and every replacement) installs in itself at
        # start: the hub's env file. A spawned child inherits os.environ but not the overlay,
        # so without it a worker's stores would miss the S3/SMB settings the coordinator sees.
        # None: this process's overlay now (empty unless a hub is open here).
        self.env = dict(env) if env is not None else environment.overlay()
        # The S3 endpoint a backup's s3:// source is read through (ChunkRange tasks name only
        # the source's URL): a run's own pool is given the run's endpoint here, as an option
        # that wins over ORBIT_S3_ENDPOINT the way --s3-endpoint does ("": that variable).
        self.s3_endpoint = s3_endpoint
        # The hub's global --bwlimit (workers/throttle.py), shared by every lease: its name.
        self.global_throttle = ""
        self._workers: list[_Slot | None] = [None] * size
        self._enc = m.task_encoder
        self.deaths = 0
        # Guards everything below and the leases' queues; notified when results are routed
        # and when the reader's role is free.
        self._cv = threading.Condition()
        self._leases: dict[int, Lease] = {}
        self._next_lease = 1
        self._reading = False  # a lease is in select(): the others wait for it to route
        self._closed = False
        self._culled: set[int] = set()  # pids killed by Lease.close
        # One epoll set for every result pipe and process sentinel, kept across waits:
        # multiprocessing.connection.wait() rebuilds and re-registers it on every call.
        # Only the reader (or start/shutdown, with no reader) touches it.
        self._sel = selectors.DefaultSelector()

    def start(self) -> None:
        with self._cv:
            for i in range(self.size):
                self._start(i)

    def _start(self, i: int) -> None:
        task_r, task_w = self._ctx.Pipe(duplex=False)
        res_r, res_w = self._ctx.Pipe(duplex=False)
        proc = self._ctx.Process(
            target=worker_main,
            args=(i, task_r, res_w, os.getpid(), self.threads, self.nice, self.env,
                  self.s3_endpoint),
            name=f"orbit-worker-{i}",
            daemon=True,
        )
        proc.start()
        task_r.close()
        res_w.close()
        self._workers[i] = _Slot(proc, task_w, res_r)
        self._sel.register(res_r, selectors.EVENT_READ, (i, "r"))
        self._sel.register(proc.sentinel, selectors.EVENT_READ, (i, "s"))
        for lease in self._leases.values():  # a replacement maps the rings in use
            self._post(i, lease.attach_msg)

    def _post(self, i: int, msg: m.Task) -> None:
        self._write(i, self._enc.encode(msg))

    def _write(self, i: int, raw: bytes) -> None:
        w = self._workers[i]
        assert w is not None
        try:
            w.tasks.send_bytes(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the death is seen by the reader, which returns the tasks for requeueing

    def lease(self, ring: SharedRing, owns_pool: bool = False,
              trees: list[m.TreeRef] | None = None,
              throttles: list[str] | None = None) -> Lease:  # fmt: skip
        """Lend the workers to one coordinator, whose tasks use slots of `ring`, name local
        files below `trees` and share the bandwidth limits `throttles` (with the pool's own,
        `global_throttle`)."""
        with self._cv:
            if self._closed:
                raise RuntimeError("the worker pool is shut down")
            limits = [*(throttles or []), *([self.global_throttle] if self.global_throttle
                                            else [])]  # fmt: skip
            lease = Lease(self, self._next_lease, ring, owns_pool, trees or [], limits)
            self._next_lease += 1
            self._leases[lease.id] = lease
            for i in range(self.size):
                self._post(i, lease.attach_msg)
        return lease

    def source_endpoint(self) -> str:
        """The S3 endpoint the workers read a backup's s3:// source through: the pool's, else
        ORBIT_S3_ENDPOINT as they see it (the environment they inherit over the overlay they
        install), else "" (AWS)."""
        return (self.s3_endpoint or os.environ.get("ORBIT_S3_ENDPOINT")
                or self.env.get("ORBIT_S3_ENDPOINT") or "")  # fmt: skip

    def pids(self) -> list[int]:
        return [w.proc.pid or 0 for w in self._workers if w is not None]

    def busy(self) -> int:
        """Tasks out, all leases together."""
        with self._cv:
            return sum(len(w.outstanding) for w in self._workers if w is not None)

    # ---- the reader: whichever lease waits ------------------------------------------------

    def _read(self, timeout: float) -> None:
        """One select over every pipe; route the results and deaths found to their leases."""
        got: list[tuple[int, m.Result]] = []
        dead: set[int] = set()
        for key, _ in self._sel.select(timeout):
            i, kind = key.data
            if kind == "s":
                dead.add(i)
            elif not self._drain(i, got):
                dead.add(i)
        for i in dead:
            self._drain(i, got)  # results sent just before dying still count
        if not got and not dead:
            return
        with self._cv:
            for i, res in got:
                self._route(i, res)
            for i in sorted(dead):
                self._bury(i)
            self._cv.notify_all()

    def _drain(self, i: int, out: list[tuple[int, m.Result]]) -> bool:
        """Read every complete result waiting on worker i's pipe; False on EOF."""
        w = self._workers[i]
        assert w is not None
        try:
            while w.results.poll():
                out.append((i, m.result_decoder.decode(w.results.recv_bytes())))
        except (EOFError, OSError):
            return False
        return True

    def _route(self, i: int, res: m.Result) -> None:
        gid = getattr(res, "task_id", None)
        if gid is None:
            return  # WorkerReady: nobody needs it
        w = self._workers[i]
        assert w is not None
        w.outstanding.discard(gid)
        lease = self._leases.get(gid >> m.RING_SHIFT)
        if lease is None:
            return  # its coordinator gave up on it (Lease.close after a timeout)
        lease.loads[i] -= 1
        lease.results.append((i, msgspec.structs.replace(res, task_id=gid & m.TASK_ID_MASK)))

    def _bury(self, i: int) -> None:
        w = self._workers[i]
        assert w is not None
        # Results already in the pipe before death were read above; what is left was lost.
        # A worker whose result pipe broke but that still runs can report nothing more: it
        # is ended here, so the join below never holds the other leases waiting.
        if w.proc.is_alive():
            w.proc.kill()
        w.proc.join()
        lost: dict[int, set[int]] = {}
        for gid in w.outstanding:
            lost.setdefault(gid >> m.RING_SHIFT, set()).add(gid & m.TASK_ID_MASK)
        blameless = w.proc.pid in self._culled
        self._culled.discard(w.proc.pid or 0)
        for lid, tids in lost.items():
            lease = self._leases.get(lid)
            if lease is not None:
                lease.loads[i] = 0
                lease.deaths.append(Death(i, w.proc.exitcode, tids, blameless))
        self._sel.unregister(w.results)
        self._sel.unregister(w.proc.sentinel)
        w.tasks.close()
        w.results.close()
        self.deaths += 1
        self._start(i)

    def shutdown(self, timeout_s: float = 10.0) -> None:
        with self._cv:
            self._closed = True
            end = time.monotonic() + timeout_s
            while self._reading and (left := end - time.monotonic()) > 0:
                self._cv.wait(left)
            self._reading = True  # nobody selects on what is being closed
            for i in range(self.size):
                if self._workers[i] is not None:
                    self._post(i, m.Shutdown())
        for w in self._workers:
            if w is None:
                continue
            w.proc.join(timeout_s)
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join()
            self._sel.unregister(w.results)
            self._sel.unregister(w.proc.sentinel)
            w.tasks.close()
            w.results.close()
        self._workers = [None] * self.size
        self._sel.close()


class Lease:
    """One coordinator's share of a WorkerPool: the calls a coordinator makes.

    `load(i)` counts this lease's own tasks on worker i, so each coordinator keeps its usual
    depth per worker whatever the others do; `least_loaded` breaks ties by the pool's load.
    """

    def __init__(self, pool: WorkerPool, lease_id: int, ring: SharedRing, owns_pool: bool,
                 trees: list[m.TreeRef], throttles: list[str] | None = None) -> None:  # fmt: skip
        self.pool = pool
        self.id = lease_id
        self.size = pool.size
        self.owns_pool = owns_pool
        self.attach_msg = m.AttachRing(ring=lease_id, name=ring.name, slot_size=ring.slot_size,
                                       slots=ring.slots, trees=trees,
                                       throttles=throttles or [])  # fmt: skip
        self.loads = [0] * pool.size
        self.results: deque[tuple[int, m.Result]] = deque()
        self.deaths: deque[Death] = deque()
        self._base = lease_id << m.RING_SHIFT

    def load(self, i: int) -> int:
        return self.loads[i]

    def least_loaded(self) -> int:
        ws = self.pool._workers

        def key(i: int) -> tuple[int, int]:
            w = ws[i]
            return self.loads[i], len(w.outstanding) if w is not None else 1 << 30

        return min(range(self.size), key=key)

    def send(self, i: int, task_id: int, task: m.Task) -> None:
        assert 0 < task_id <= m.TASK_ID_MASK
        gid = self._base | task_id
        raw = self.pool._enc.encode(msgspec.structs.replace(task, task_id=gid))
        with self.pool._cv:
            w = self.pool._workers[i]
            assert w is not None
            w.outstanding.add(gid)
            self.loads[i] += 1
            self.pool._write(i, raw)

    def _take(self) -> tuple[list[tuple[int, m.Result]], list[Death]]:
        res, dead = list(self.results), list(self.deaths)
        self.results.clear()
        self.deaths.clear()
        return res, dead

    def wait(self, timeout: float) -> tuple[list[tuple[int, m.Result]], list[Death]]:
        """This lease's results and deaths, waiting up to `timeout` s for the first."""
        pool = self.pool
        end = time.monotonic() + timeout
        with pool._cv:
            while True:
                if self.results or self.deaths:
                    return self._take()
                left = end - time.monotonic()
                if left <= 0:
                    return [], []
                if not pool._reading:
                    break
                pool._cv.wait(left)  # another lease reads and routes; it wakes us
            pool._reading = True
        try:
            while True:
                pool._read(left)
                with pool._cv:
                    if self.results or self.deaths:
                        break
                left = end - time.monotonic()
                if left <= 0:
                    break
        finally:
            with pool._cv:
                pool._reading = False
                pool._cv.notify_all()  # another waiting lease takes over the reading
        with pool._cv:
            return self._take()

    def outstanding(self) -> int:
        return sum(self.loads)

    def close(self, timeout_s: float = 10.0) -> None:
        """Let this lease's tasks finish (their results are dropped), then unmap its ring
        everywhere. Workers still busy for it after `timeout_s` are killed: the pool replaces
        them and any other lease requeues what it lost, as after any death."""
        end = time.monotonic() + timeout_s
        while self.outstanding() and (left := end - time.monotonic()) > 0:
            self.wait(min(left, 0.5))
        pool = self.pool
        with pool._cv:
            for i, n in enumerate(self.loads):
                w = pool._workers[i]
                if n and w is not None and w.proc.pid:
                    try:
                        os.kill(w.proc.pid, signal.SIGKILL)
                        pool._culled.add(w.proc.pid)
                    except ProcessLookupError:
                        pass
            pool._leases.pop(self.id, None)
            detach = m.DetachRing(ring=self.id)
            for i in range(pool.size):
                if pool._workers[i] is not None:
                    pool._post(i, detach)
        if self.owns_pool:
            pool.shutdown()


def open_lease(ring: SharedRing, size: int, threads: int, shared: WorkerPool | None,
               trees: list[m.TreeRef] | None = None,
               throttles: list[str] | None = None) -> Lease:  # fmt: skip
    """Workers for one coordinator: a lease of `shared` when the process has a pool (the
    hub), else a pool of `size` workers with `threads` each, for this run only. `trees`: the
    roots the run's local paths are relative to (messages.SRC, DST)."""
    if shared is not None:
        return shared.lease(ring, trees=trees, throttles=throttles)
    pool = WorkerPool(size, threads)
    pool.start()
    return pool.lease(ring, owns_pool=True, trees=trees, throttles=throttles)
