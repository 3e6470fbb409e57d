"""Crash recovery as the guide promises it: kill -9 the hub mid-job, start it again, and the job
resumes by itself, finishes with the destination identical to the source, and never runs twice.
"""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import snapshot

TRIALS = 10


def _source(root: Path, rng: random.Random) -> Path:
    for i in range(12):
        (root / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        (root / f"d{i % 3}" / f"big{i}.bin").write_bytes(rng.randbytes((4 + i) << 20))
    for i in range(150):
        (root / "small").mkdir(exist_ok=True)
        (root / "small" / f"s{i}.txt").write_bytes(rng.randbytes(rng.randint(0, 30000)))
    return root


def _runs(db: Path, job_id: int) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT id, trigger, started_at, finished_at, state FROM hub_runs "
                           "WHERE job_id=? ORDER BY id", (job_id,)).fetchall()
    finally:
        con.close()


@pytest.mark.parametrize("modes", [("mirror",), ("mirror", "backup")], ids="+".join)
def test_kill9_during_jobs_resumes_to_identical_and_never_runs_twice(
        hub_factory: Any, tmp_path: Path, modes: tuple[str, ...]) -> None:
    """With two modes the jobs run at once, on the hub's one shared pool of workers."""
    rng = random.Random(int(os.environ.get("ORBIT_TEST_SEED", "0")) or 4242)
    src = _source(tmp_path / "src", rng)
    dests = {mode: tmp_path / ("dst" if mode == "mirror" else "repo") for mode in modes}
    hub = hub_factory().start()
    token = hub.admin_token()  # sessions live in the jobs DB: they survive the restarts
    with hub.client(token) as c:
        jobs = {mode: c.post("/api/jobs", json={
            "name": f"nightly {mode}", "source": str(src), "destination": str(dst),
            "mode": mode, "config": {"concurrency": 1, "chunk_size_mb": 0.25}}).json()["id"]
            for mode, dst in dests.items()}  # fmt: skip
        for job_id in jobs.values():
            assert c.post(f"/api/jobs/{job_id}/run").status_code == 202
    kills_mid_run = attempts = 0
    cut = dict.fromkeys(jobs.values(), 0)  # kills that landed while each job ran
    while kills_mid_run < TRIALS:
        attempts += 1
        assert attempts <= 3 * TRIALS, f"only {kills_mid_run} kills landed while jobs ran"
        with hub.client(token) as c:
            states = [hub.wait_state(c, job_id, ("running", "completed"), timeout=120)["state"]
                      for job_id in jobs.values()]  # fmt: skip
            if all(state == "completed" for state in states):  # give them new work
                for victim in sorted(src.rglob("big*.bin")):
                    victim.write_bytes(rng.randbytes(victim.stat().st_size + (1 << 20)))
                (src / "small" / f"s{rng.randrange(150)}.txt").unlink(missing_ok=True)
                (src / "small" / f"new{attempts}.txt").write_bytes(rng.randbytes(5000))
                for job_id in jobs.values():
                    assert c.post(f"/api/jobs/{job_id}/run").status_code == 202
                    hub.wait_state(c, job_id, ("running", "completed"), timeout=60)
        time.sleep(rng.uniform(0.0, 0.3))
        running = [j for j in jobs.values() if _runs(hub.data / "jobs.db", j)[-1][4] == "running"]
        hub.kill9()
        kills_mid_run += bool(running)
        for j in running:
            cut[j] += 1
        hub.start()  # same data dir and port: the systemd restart
    with hub.client(token) as c:
        for job_id in jobs.values():
            final = hub.wait_state(c, job_id, ("completed", "failed"), timeout=300)
            assert final["state"] == "completed", final
    if "mirror" in dests:
        assert snapshot(src) == snapshot(dests["mirror"])
    # No job ran twice: runs never overlap, every cut run was closed as crashed, and every run
    # after a kill was started by recovery, not by a user.
    runs = {job_id: _runs(hub.data / "jobs.db", job_id) for job_id in jobs.values()}
    for job_id, rs in runs.items():
        for a, b in zip(rs, rs[1:], strict=False):
            assert a[3] is not None and a[3] <= b[2], (a, b)
        assert rs[-1][4] == "completed"
        assert {r[4] for r in rs} <= {"completed", "crashed"}
        assert sum(r[1] == "recovery" for r in rs) >= cut[job_id]
    # One more restart: a completed job stays completed and does not run again.
    hub.stop()
    hub.start()
    time.sleep(2.5)
    for job_id, rs in runs.items():
        assert len(_runs(hub.data / "jobs.db", job_id)) == len(rs)
    hub.stop()
    con = sqlite3.connect(hub.data / "jobs.db")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    if "backup" in dests:  # the repository is whole and its latest snapshot is the source
        repo = dests["backup"]
        env = {**hub.env, "ORBIT_STATE_DIR": str(hub.data)}
        orbit = [sys.executable, "-m", "orbit_fast"]
        r = subprocess.run([*orbit, "verify", "-r", str(repo)], env=env, capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        r = subprocess.run([*orbit, "restore", "-r", str(repo), "latest", "--target",
                            str(tmp_path / "out"), "--universe-path",
                            str(hub.data / "universe_v3.db")], env=env, capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        restored = tmp_path / "out"
        assert snapshot(src, with_dir_times=False) == snapshot(restored, with_dir_times=False)
