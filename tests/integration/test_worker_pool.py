"""One WorkerPool shared by several coordinators (the hub's jobs): each lease gets its own
results in its own ring, deaths reach every lease that lost a task, and a lease that gives up
on a stuck worker does not take the others' work down with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import xxhash

from orbit_fast import messages as m
from orbit_fast.chunking import ChunkerParams
from orbit_fast.confine import Tree
from orbit_fast.coordinator.chunk_pipeline import chunk_files
from orbit_fast.hashing import new_repo_key
from orbit_fast.workers.pool import Lease, WorkerPool
from orbit_fast.workers.ring import SharedRing

pytestmark = pytest.mark.integration
SLOT = 64 << 10


@pytest.fixture
def pool() -> Iterator[WorkerPool]:
    p = WorkerPool(2, threads=4)
    p.start()
    yield p
    p.shutdown()


# The tasks' paths are relative to the run's trees: here one tree, "/", and paths below it.
_ROOT = os.stat("/")
TREES = [m.TreeRef(b"/", _ROOT.st_dev, _ROOT.st_ino)]


def _rel(path: Path) -> bytes:
    return bytes(path).lstrip(b"/")


def _lease(pool: WorkerPool, slots: int = 4) -> tuple[Lease, SharedRing]:
    ring = SharedRing.create(SLOT, slots)
    return pool.lease(ring, trees=TREES), ring


def _digest_all(lease: Lease, ring: SharedRing, files: list[Path], out: dict) -> None:
    """Digest every file through the lease, checking each result against its own ring."""
    todo = list(enumerate(files, 1))
    sent: dict[int, tuple[Path, int]] = {}
    while todo or sent:
        while todo and (slot := ring.acquire()) is not None:
            tid, path = todo.pop()
            sent[tid] = (path, slot)
            task = m.DigestFile(task_id=tid, slot=slot, tree=m.SRC, path=_rel(path))
            lease.send(lease.least_loaded(), tid, task)
        results, deaths = lease.wait(5.0)
        assert not deaths
        for _, res in results:
            assert isinstance(res, m.FileDigested), res
            path, slot = sent.pop(res.task_id)  # KeyError: another lease's result came here
            data = path.read_bytes()
            assert res.digest == xxhash.xxh3_128_digest(data) and res.size == len(data)
            view = ring.view(slot, len(data))
            assert bytes(view) == data  # the bytes went through this lease's ring
            view.release()
            ring.release(slot)
            out[path] = res.digest


def test_two_leases_at_once_each_get_their_own_results(pool: WorkerPool, tmp_path: Path,
                                                        rng) -> None:  # fmt: skip
    sets = []
    for name in "ab":
        (tmp_path / name).mkdir()
        files = [tmp_path / name / f"{i}" for i in range(150)]
        for f in files:
            f.write_bytes(rng.randbytes(rng.randint(0, SLOT)))
        sets.append(files)
    leases = [_lease(pool) for _ in sets]
    outs: list[dict] = [{}, {}]
    errors: list[BaseException] = []

    def run(k: int) -> None:
        try:
            _digest_all(*leases[k], sets[k], outs[k])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[0]
    assert [len(o) for o in outs] == [150, 150]
    for lease, ring in leases:
        lease.close()
        ring.close()
    assert pool.busy() == 0


def _stuck(tmp_path: Path, name: str) -> bytes:
    """A FIFO nobody writes: a worker digesting it blocks in open() until killed."""
    path = tmp_path / name
    os.mkfifo(path)
    return _rel(path)


def test_a_death_reaches_every_lease_that_lost_a_task(pool: WorkerPool, tmp_path: Path,
                                                      rng) -> None:  # fmt: skip
    (a, ring_a), (b, ring_b) = _lease(pool), _lease(pool)
    a.send(0, 7, m.DigestFile(task_id=7, slot=0, tree=m.SRC, path=_stuck(tmp_path, "fa")))
    b.send(0, 9, m.DigestFile(task_id=9, slot=0, tree=m.SRC, path=_stuck(tmp_path, "fb")))
    b.send(1, 10, m.DigestFile(task_id=10, slot=1, tree=m.SRC, path=_stuck(tmp_path, "fc")))
    old = pool.pids()
    os.kill(old[0], 9)
    deaths = {}
    for lease in (a, b):
        deadline = time.monotonic() + 30
        while lease.id not in deaths and time.monotonic() < deadline:
            results, dead = lease.wait(1.0)
            assert not results
            if dead:
                deaths[lease.id] = [(d.worker, d.task_ids, d.blameless) for d in dead]
    # b's task on worker 1 lives on; a death from outside (an OOM kill, say) counts
    assert deaths == {a.id: [(0, {7}, False)], b.id: [(0, {9}, False)]}
    assert pool.pids()[0] != old[0] and pool.pids()[1] == old[1]
    assert (a.load(0), b.load(0), b.load(1)) == (0, 0, 1)
    # The replacement mapped both rings: work sent to it lands in the right one.
    for lease, ring, name in ((a, ring_a, "ok-a"), (b, ring_b, "ok-b")):
        (tmp_path / name).write_bytes(rng.randbytes(1000))
        out: dict = {}
        _digest_all(lease, ring, [tmp_path / name], out)
        assert len(out) == 1
    a.close()
    b.close(timeout_s=0.5)  # its stuck task on worker 1: that worker is killed and replaced
    ring_a.close()
    ring_b.close()


def test_a_lease_that_gives_up_kills_only_what_it_waits_for(pool: WorkerPool,
                                                            tmp_path: Path) -> None:  # fmt: skip
    (a, ring_a), (b, ring_b) = _lease(pool), _lease(pool)
    a.send(1, 1, m.DigestFile(task_id=1, slot=0, tree=m.SRC, path=_stuck(tmp_path, "fa")))
    b.send(1, 1, m.DigestFile(task_id=1, slot=0, tree=m.SRC, path=_stuck(tmp_path, "fb")))
    before = pool.pids()
    a.close(timeout_s=0.5)
    results, deaths = [], []
    deadline = time.monotonic() + 30
    while not deaths and time.monotonic() < deadline:
        r, deaths = b.wait(1.0)
        results += r
    assert not results
    assert [(d.worker, d.task_ids, d.blameless) for d in deaths] == [(1, {1}, True)]
    assert pool.pids()[0] == before[0] and pool.pids()[1] != before[1]
    b.close()
    ring_a.close()
    ring_b.close()


def test_runs_on_one_pool_do_not_share_what_their_workers_remember(pool: WorkerPool,
                                                                    tmp_path: Path,
                                                                    rng) -> None:  # fmt: skip
    # Workers send a chunk's blob once per run and only its id after; a second run on the
    # same pool (same repository key, same data) must get every blob again.
    params = ChunkerParams(min_size=4 << 10, avg_size=16 << 10, max_size=64 << 10)
    block = rng.randbytes(300 << 10)
    path = tmp_path / "f"
    path.write_bytes(block * 3)  # repeats within a run: blob-less records after the first
    key = new_repo_key()
    tree = Tree.open(tmp_path)
    for _ in range(2):
        seen: set[bytes] = set()
        records = 0
        for _p, rec, blob in chunk_files(["f"], params, "lz4", key, workers=2,
                                         range_bytes=128 << 10, shared=pool,
                                         tree=tree):  # fmt: skip
            records += 1
            if rec.chunk_id not in seen:
                assert rec.blob_len > 0 and len(blob) == rec.blob_len
                seen.add(rec.chunk_id)
        assert records > len(seen) > 10
    assert pool.busy() == 0


_COORDINATOR = """
import os, sys, time
from orbit_fast import messages as m
from orbit_fast.workers.pool import WorkerPool
from orbit_fast.workers.ring import SharedRing
pool = WorkerPool(1, threads=2)
pool.start()
ring = SharedRing.create(1 << 16, 2)
root = os.stat("/")
lease = pool.lease(ring, trees=[m.TreeRef(b"/", root.st_dev, root.st_ino)])
lease.send(0, 1, m.DigestFile(task_id=1, slot=0, tree=m.SRC, path=sys.argv[1].encode()[1:]))
print(pool.pids()[0], flush=True)
time.sleep(600)
"""


def test_a_worker_whose_coordinator_died_stops_at_once(tmp_path: Path) -> None:
    """kill -9 of the coordinator: its worker exits although a task of it is stuck in I/O, so
    the task cannot write later, over a file the next run may have resumed meanwhile."""
    fifo = _stuck(tmp_path, "hung")
    coordinator = subprocess.Popen([sys.executable, "-c", _COORDINATOR, fifo.decode()],
                                   stdout=subprocess.PIPE, text=True)  # fmt: skip
    worker = int(coordinator.stdout.readline())  # type: ignore[union-attr]
    try:
        # The task has reached the worker once a thread runs it (the executor starts its
        # threads on the first task): it is then in, or on its way into, open() of the FIFO.
        deadline = time.monotonic() + 15
        while len(os.listdir(f"/proc/{worker}/task")) < 2:
            assert time.monotonic() < deadline, "the task never reached the worker"
            time.sleep(0.05)
        coordinator.kill()
        coordinator.wait()
        deadline = time.monotonic() + 15
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(worker), "the orphaned worker waits for its stuck task"
    finally:
        if _alive(worker):
            os.kill(worker, signal.SIGKILL)
        coordinator.stdout.close()  # type: ignore[union-attr]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
