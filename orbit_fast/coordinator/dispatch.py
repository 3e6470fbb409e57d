"""The dispatch board: the tasks one run has out with the worker pool.

The board hands out task ids, lends ring slots (when the run's tasks carry bytes between
processes), keeps a record of every task in flight, sends each to the least-loaded worker
within a depth per worker, and requeues the tasks a dead worker held, giving up on one that
has killed MAX_TASK_DEATHS workers. It knows nothing of files or objects: a record's `owner`
is whatever the caller tracks, and what came back (results, given-up tasks, deaths) is
returned to the caller, never acted on here. Sync and the chunk pipeline both run on it; an
executor on other machines can stand behind the same calls (#20).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Generic, TypeVar

from orbit_fast import messages as m

if TYPE_CHECKING:  # imported when the first task needs workers: a no-change run never does
    from orbit_fast.workers.pool import Death, Lease, WorkerPool
    from orbit_fast.workers.ring import SharedRing

MAX_TASK_DEATHS = 3  # worker deaths on one task before the run fails

T = TypeVar("T")


class InFlight(Generic[T]):
    """A task out with a worker: what to requeue if that worker dies."""

    __slots__ = ("owner", "kind", "idx", "slot", "msg", "deaths")

    def __init__(self, owner: T, kind: str, idx: int, slot: int | None, msg: m.Task) -> None:
        self.owner, self.kind, self.idx, self.slot, self.msg = owner, kind, idx, slot, msg
        self.deaths = 0


class WorkerDeath(Generic[T]):
    """One worker exit seen by this board: the tasks it requeued, the ones it gave up on
    (each killed MAX_TASK_DEATHS workers; their slots are already released)."""

    __slots__ = ("worker", "exitcode", "lost", "given_up")

    def __init__(self, worker: int, exitcode: int | None, lost: int) -> None:
        self.worker, self.exitcode = worker, exitcode
        self.lost = lost  # tasks of this run it held
        self.given_up: list[InFlight[T]] = []


class TaskBoard(Generic[T]):
    """Tasks of one run on a worker pool (its own, or a lease of a shared one).

    Parameters
    ----------
    workers, threads
        The pool to start when the run has no shared one: `workers` processes running
        `threads` tasks at once each.
    depth
        Tasks out per worker at most (`room()`); None: no limit per worker.
    spread
        Instead of `depth`: keep this many tasks out in all, spread over the pool's workers
        (a shared pool may have another size than `workers`).
    limit
        Tasks out in all at most; 0: no limit.
    slot_bytes, slots
        The ring lent to the workers; `slots` 0: tasks carry no bytes (object copies).
    shared
        The hub's pool, leased for this run; else a pool of our own, started on first use.
    hold_slots
        A result's slot stays taken until the caller releases it (the chunk pipeline reads
        the blobs out of it first); else it is released when the result is taken.
    trees
        The roots the tasks' local paths are relative to (messages.SRC, DST), which the
        workers open and check once per run.
    throttles
        Bandwidth limits the run's tasks share (workers/throttle.py), by name.
    """

    def __init__(self, *, workers: int, threads: int, depth: int | None = None, spread: int = 0,
                 limit: int = 0, slot_bytes: int = 0, slots: int = 0,
                 shared: WorkerPool | None = None, hold_slots: bool = False,
                 trees: list[m.TreeRef] | None = None,
                 throttles: list[str] | None = None) -> None:  # fmt: skip
        self.workers, self.threads = workers, threads
        self.depth, self.spread, self.limit = depth, spread, limit
        self.slot_bytes, self.slots = slot_bytes, slots
        self.shared = shared
        self.hold_slots = hold_slots
        self.trees = trees or []
        self.throttles = throttles or []
        self.tasks: dict[int, InFlight[T]] = {}
        self.ring: SharedRing | None = None
        self.lease: Lease | None = None
        self._next = 1
        self._pick: int | None = None  # the worker room() found below the depth

    # ---- the pool, started on first use ---------------------------------------------------

    def open(self) -> Lease:
        if self.lease is None:
            from orbit_fast.workers.pool import open_lease
            from orbit_fast.workers.ring import SharedRing

            # A pool needs a ring to lend; object tasks never touch it, so one page does.
            self.ring = SharedRing.create(self.slot_bytes or 4096, self.slots or 1)
            self.lease = open_lease(self.ring, self.workers, self.threads, self.shared,
                                    self.trees, self.throttles)  # fmt: skip
            if self.spread:
                self.depth = -(-self.spread // self.lease.size)
        return self.lease

    def close(self) -> None:
        """Let tasks still out finish (their results are dropped), then free the ring."""
        if self.lease is not None:
            self.lease.close()
            self.lease = None
        if self.ring is not None:
            self.ring.close()
            self.ring = None

    # ---- sending ----------------------------------------------------------------------------

    def room(self) -> bool:
        """Whether one more task may go out now (slot aside)."""
        if self.limit and len(self.tasks) >= self.limit:
            return False
        lease = self.open() if self.depth is not None or self.spread else None
        if lease is None or self.depth is None:
            return True
        self._pick = lease.least_loaded()
        return lease.load(self._pick) < self.depth

    def acquire_slot(self) -> int | None:
        self.open()
        assert self.ring is not None
        return self.ring.acquire()

    def release_slot(self, slot: int) -> None:
        assert self.ring is not None
        self.ring.release(slot)

    def send(self, owner: T, kind: str, idx: int, slot: int | None, msg: m.Task) -> int:
        """Send `msg` for `owner` (with `slot`, taken by acquire_slot) to the least-loaded
        worker; returns its task id, which replaces the message's own (the lease tags it with
        the run's ring). The caller checked room()."""
        lease = self.open()
        tid = self._next
        self._next += 1
        self.tasks[tid] = InFlight(owner, kind, idx, slot, msg)
        # The worker room() just chose, or (no depth to check) the least-loaded one now.
        w = self._pick if self._pick is not None else lease.least_loaded()
        self._pick = None
        lease.send(w, tid, msg)
        return tid

    # ---- what came back ---------------------------------------------------------------------

    def wait(self, timeout_s: float
             ) -> tuple[list[tuple[InFlight[T], m.Result]], list[WorkerDeath[T]]]:  # fmt: skip
        """Results (each with the record of its task, now off the board) and worker deaths,
        waiting up to `timeout_s` for the first. A dead worker's tasks are sent again here;
        those that keep killing workers come back in `WorkerDeath.given_up`."""
        assert self.lease is not None
        results, deaths = self.lease.wait(timeout_s)
        out: list[tuple[InFlight[T], m.Result]] = []
        for _, res in results:
            tid = getattr(res, "task_id", None)
            if tid is None:
                continue  # WorkerReady
            rec = self.tasks.pop(tid, None)
            if rec is None:
                continue  # given up on after a death; its late result changes nothing
            if rec.slot is not None and not self.hold_slots:
                self.release_slot(rec.slot)
            out.append((rec, res))
        return out, [self._requeue(d) for d in deaths]

    def _requeue(self, death: Death) -> WorkerDeath[T]:
        assert self.lease is not None
        seen: WorkerDeath[T] = WorkerDeath(death.worker, death.exitcode, len(death.task_ids))
        for tid in sorted(death.task_ids):
            rec = self.tasks.get(tid)
            if rec is None:
                continue
            rec.deaths += not death.blameless
            if rec.deaths >= MAX_TASK_DEATHS:
                del self.tasks[tid]
                if rec.slot is not None:
                    self.release_slot(rec.slot)
                seen.given_up.append(rec)
                continue
            self.lease.send(self.lease.least_loaded(), tid, rec.msg)
        return seen
