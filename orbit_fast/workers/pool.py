"""WorkerPool: starts N worker processes once per run, supervises and replaces them.

Each worker has two pipes of its own (tasks in, results out), so a worker killed mid-message
can never leave a shared lock held. `wait()` multiplexes every result pipe and every process
sentinel; a dead worker is reported to the coordinator, which requeues its tasks, and replaced.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import selectors
from multiprocessing.connection import Connection

from orbit_fast import messages as m
from orbit_fast.workers.ring import SharedRing
from orbit_fast.workers.worker import worker_main


class _Slot:
    __slots__ = ("proc", "tasks", "results", "outstanding")

    def __init__(self, proc: mp.process.BaseProcess, tasks: Connection, results: Connection):
        self.proc, self.tasks, self.results = proc, tasks, results
        self.outstanding: set[int] = set()


class Death:
    """A worker that exited, and the tasks it still held (to be requeued)."""

    __slots__ = ("worker", "exitcode", "task_ids")

    def __init__(self, worker: int, exitcode: int | None, task_ids: set[int]):
        self.worker, self.exitcode, self.task_ids = worker, exitcode, task_ids


class WorkerPool:
    def __init__(self, size: int, ring: SharedRing, threads: int = 1):
        # spawn: workers inherit no file descriptors, locks or DB handles from the coordinator,
        # which matters when the engine is embedded in the threaded hub.
        self._ctx = mp.get_context("spawn")
        self.size = size
        self.ring = ring
        self.threads = threads  # tasks each worker runs at once
        self._workers: list[_Slot | None] = [None] * size
        self._enc = m.task_encoder
        self.deaths = 0
        # One epoll set for every result pipe and process sentinel, kept across waits:
        # multiprocessing.connection.wait() rebuilds and re-registers it on every call.
        self._sel = selectors.DefaultSelector()

    def start(self) -> None:
        for i in range(self.size):
            self._start(i)

    def _start(self, i: int) -> None:
        task_r, task_w = self._ctx.Pipe(duplex=False)
        res_r, res_w = self._ctx.Pipe(duplex=False)
        proc = self._ctx.Process(
            target=worker_main,
            args=(
                i,
                self.ring.name,
                self.ring.slot_size,
                self.ring.slots,
                task_r,
                res_w,
                os.getpid(),
                self.threads,
            ),
            name=f"orbit-worker-{i}",
            daemon=True,
        )
        proc.start()
        task_r.close()
        res_w.close()
        self._workers[i] = _Slot(proc, task_w, res_r)
        self._sel.register(res_r, selectors.EVENT_READ, (i, "r"))
        self._sel.register(proc.sentinel, selectors.EVENT_READ, (i, "s"))

    def pids(self) -> list[int]:
        return [w.proc.pid or 0 for w in self._workers if w is not None]

    def load(self, i: int) -> int:
        w = self._workers[i]
        return len(w.outstanding) if w else 1 << 30

    def least_loaded(self) -> int:
        return min(range(self.size), key=self.load)

    def send(self, i: int, task_id: int, task: m.Task) -> None:
        w = self._workers[i]
        assert w is not None
        w.outstanding.add(task_id)
        try:
            w.tasks.send_bytes(self._enc.encode(task))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the death is seen by wait(), which returns this task for requeueing

    def wait(self, timeout: float) -> tuple[list[tuple[int, m.Result]], list[Death]]:
        results: list[tuple[int, m.Result]] = []
        dead: set[int] = set()
        for key, _ in self._sel.select(timeout):
            i, kind = key.data
            if kind == "s":
                dead.add(i)
                continue
            if not self._drain(i, results):
                dead.add(i)
        for i in dead:
            self._drain(i, results)  # results sent just before dying still count
        deaths = [self._bury(i) for i in sorted(dead)]
        return results, deaths

    def _drain(self, i: int, out: list[tuple[int, m.Result]]) -> bool:
        """Read every complete result waiting on worker i's pipe; False on EOF."""
        w = self._workers[i]
        assert w is not None
        try:
            while w.results.poll():
                res = m.result_decoder.decode(w.results.recv_bytes())
                tid = getattr(res, "task_id", None)
                if tid is not None:
                    w.outstanding.discard(tid)
                out.append((i, res))
        except (EOFError, OSError):
            return False
        return True

    def _bury(self, i: int) -> Death:
        w = self._workers[i]
        assert w is not None
        # Results already in the pipe before death were read above; what is left was lost.
        w.proc.join(timeout=5)
        death = Death(i, w.proc.exitcode, set(w.outstanding))
        self._sel.unregister(w.results)
        self._sel.unregister(w.proc.sentinel)
        w.tasks.close()
        w.results.close()
        self.deaths += 1
        self._start(i)
        return death

    def shutdown(self, timeout_s: float = 10.0) -> None:
        for w in self._workers:
            if w is not None:
                try:
                    w.tasks.send_bytes(self._enc.encode(m.Shutdown()))
                except OSError:
                    pass
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
