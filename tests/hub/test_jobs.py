"""Jobs in the hub: transient errors retried by themselves, schedules, the queue's limit, and
`orbit-fast job run --wait` as the guide's trigger script uses it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from orbit_fast.api import Engine
from orbit_fast.hub.runner import JobRunner
from orbit_fast.hub.store import HubStore
from tests.conftest import child_pids, make_tree, snapshot
from tests.hub.conftest import HubProcess
from tests.servers import TcpProxy

ORBIT = [sys.executable, "-m", "orbit_fast"]


def test_a_storage_outage_pauses_the_job_and_it_resumes_by_itself(
        hub_factory: Any, moto: Any, s3_bucket: str, tmp_path: Path, rng: Any) -> None:
    proxy = TcpProxy(moto.port)
    proxy.pause()  # S3 is away when the job starts
    try:
        hub = hub_factory(**{**moto.env(), "ORBIT_S3_ENDPOINT": f"http://127.0.0.1:{proxy.port}",
                             "ORBIT_RETRY_BASE_S": "1"}).start()
        src = tmp_path / "src"
        for i in range(20):  # plain files: S3 keeps no symlinks
            (src / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
            (src / f"d{i % 3}" / f"f{i}").write_bytes(rng.randbytes(rng.randint(0, 50000)))
        with hub.client(hub.admin_token()) as c:
            job = c.post("/api/jobs", json={"name": "to-s3", "source": str(src),
                                            "destination": f"s3://{s3_bucket}/copy",
                                            "config": {"retry_attempts": 3}}).json()
            c.post(f"/api/jobs/{job['id']}/run")
            waiting = hub.wait_state(c, job["id"], ("retrying", "failed", "completed"))
            assert waiting["state"] == "retrying", waiting
            assert waiting["retries"] == 1 and waiting["retry_at"] > time.time() - 5
            assert "127.0.0.1" in waiting["last_error"]
            # Said for the hub, which reruns the job by itself: no CLI advice to rerun it.
            assert "retrying in" in waiting["last_error"] and "(attempt 1 of 3)" in waiting[
                "last_error"]
            assert "then rerun" not in waiting["last_error"]
            proxy.resume()  # the network is back: no user action from here on
            done = hub.wait_state(c, job["id"], ("completed", "failed"), timeout=120)
            assert done["state"] == "completed", done
            # The pass's progress spans the failed attempt and the retry: exactly its totals.
            p = done["progress"]
            assert p["files_done"] == p["files_total"] == 20 and p["percent"] == 100.0
            runs = c.get(f"/api/jobs/{job['id']}/runs").json()["runs"]
            assert runs[0]["state"] == "completed" and runs[0]["trigger"] == "retry"
            assert runs[-1]["state"] == "failed" and runs[-1]["error"]
    finally:
        proxy.pause()
    keys = {o["Key"] for o in moto.client().list_objects_v2(Bucket=s3_bucket)["Contents"]}
    assert keys == {f"copy/{p.relative_to(src)}" for p in src.rglob("f*")}


def test_missed_scheduled_runs_collapse_into_one(tmp_path: Path) -> None:
    engine = Engine(str(tmp_path / "jobs.db"), str(tmp_path / "u.db")).open()  # the file first
    store = HubStore(str(tmp_path / "jobs.db"))
    runner = JobRunner(store, engine, max_jobs=1)
    runner.max_jobs = 0  # queue only: this test looks at what the scheduler enqueues
    now = time.time()
    job = store.create_job({"name": "nightly", "mode": "sync", "source": "/a",
                            "destination": "/b", "config": {}, "schedule": "0 2 * * *",
                            "state": "completed", "warnings": [], "created_by": "t",
                            "next_run_at": now - 3 * 86400})  # the hub was down for 3 nights
    runner.tick(now)
    got = store.job(job["id"])
    assert got is not None and got["state"] == "pending"
    assert now < got["next_run_at"] <= now + 86400
    queued = [e for e in store.events_after(0) if e[2] == "job" and '"queued"' in e[3]]
    assert len(queued) == 1 and '"schedule"' in queued[0][3]
    runner.tick(now + 1)  # nothing more is due
    assert len([e for e in store.events_after(0) if '"queued"' in e[3]]) == 1
    # A job that is still running when its time comes is not queued twice.
    store.update_job(job["id"], state="running", next_run_at=now - 10)
    runner.tick(now)
    assert store.job(job["id"])["state"] == "running"  # type: ignore[index]
    store.close()
    engine.close()


def test_the_queue_runs_at_most_max_jobs_at_once(hub_factory: Any, tmp_path: Path) -> None:
    hub = hub_factory(ORBIT_MAX_JOBS="1").start()
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"f{i}").write_bytes(os.urandom(24 << 20))
    with hub.client(hub.admin_token()) as c:
        ids = [c.post("/api/jobs", json={"name": f"j{i}", "source": str(src),
                                         "destination": str(tmp_path / f"d{i}"),
                                         "config": {"concurrency": 1, "chunk_size_mb": 0.5}}
                      ).json()["id"] for i in range(3)]
        for i in ids:
            c.post(f"/api/jobs/{i}/run")
        states = {c.get(f"/api/jobs/{i}").json()["state"] for i in ids}
        assert "pending" in states
        for i in ids:
            hub.wait_state(c, i, ("completed",), timeout=120)
        runs = sorted((c.get(f"/api/jobs/{i}/runs").json()["runs"][0] for i in ids),
                      key=lambda r: r["started_at"])
    for a, b in zip(runs, runs[1:], strict=False):
        assert a["finished_at"] <= b["started_at"]


def test_job_run_wait_for_cron_and_timers(hub: HubProcess, tmp_path: Path, rng: Any) -> None:
    src = make_tree(tmp_path / "src", rng, files=15)
    with hub.client(hub.admin_token()) as c:
        token = c.post("/api/auth/tokens", json={"name": "timer"}).json()["token"]
        c.post("/api/jobs", json={"name": "Nightly copy", "source": str(src),
                                  "destination": str(tmp_path / "dst")})
        c.post("/api/jobs", json={"name": "broken", "source": str(tmp_path / "missing"),
                                  "destination": str(tmp_path / "dst2")})
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    env = {**os.environ, "ORBIT_HUB_URL": hub.url}

    def job(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*ORBIT, "job", *args], env=env, capture_output=True, text=True,
                              timeout=120)

    r = job("run", "Nightly copy", "--wait", "--token-file", str(token_file))
    assert r.returncode == 0, r.stderr
    assert "completed" in r.stderr and snapshot(src) == snapshot(tmp_path / "dst")
    r = job("run", "broken", "--wait", "--token-file", str(token_file))
    assert r.returncode == 15 and "failed" in r.stderr and "missing" in r.stderr
    r = job("run", "no such job", "--token-file", str(token_file))
    assert r.returncode == 16 and "no job named 'no such job'" in r.stderr
    r = job("run", "Nightly copy")  # no token
    assert r.returncode == 16 and "unauthorized" in r.stderr
    r = job("list", "--token-file", str(token_file))
    assert r.returncode == 0 and "Nightly copy" in r.stdout
    r = subprocess.run([*ORBIT, "job", "run", "x", "--hub", "http://127.0.0.1:9"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 16 and "cannot reach the hub" in r.stderr
    assert httpx.get(hub.url + "/api/health").status_code == 200


def test_jobs_running_at_once_share_one_pool_of_workers(hub_factory: Any, tmp_path: Path,
                                                        rng: Any) -> None:  # fmt: skip
    hub = hub_factory(ORBIT_MAX_JOBS="2", ORBIT_WORKERS="2").start()
    assert hub.proc is not None
    workers = set(child_pids(hub.proc.pid, "spawn_main"))
    assert len(workers) == 2  # started with the hub, before any job
    src = make_tree(tmp_path / "src", rng, files=1500, max_size=4000)
    for i in range(4):
        (src / f"big{i}").write_bytes(os.urandom(16 << 20))
    seen: set[int] = set()
    with hub.client(hub.admin_token()) as c:
        ids = [c.post("/api/jobs", json={"name": mode, "mode": mode, "source": str(src),
                                         "destination": str(tmp_path / mode),
                                         "config": {"concurrency": 4}}).json()["id"]
               for mode in ("sync", "backup")]  # fmt: skip
        for i in ids:
            c.post(f"/api/jobs/{i}/run")
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            seen.update(child_pids(hub.proc.pid, "spawn_main"))
            states = [c.get(f"/api/jobs/{i}").json()["state"] for i in ids]
            if all(s in ("completed", "failed", "partial") for s in states):
                break
        assert states == ["completed", "completed"], hub.log.read_text()[-3000:]
        runs = [c.get(f"/api/jobs/{i}/runs").json()["runs"][0] for i in ids]
    assert seen == workers  # no job started processes of its own
    for pid in workers:  # at ORBIT_WORKER_NICE's default, 10: copying yields to the API
        with open(f"/proc/{pid}/stat") as f:
            assert int(f.read().rsplit(")", 1)[1].split()[16]) == 10
    assert snapshot(src) == snapshot(tmp_path / "sync")
    # Both started at once (ORBIT_MAX_JOBS=2, no shared destination): the pool served both.
    overlap = min(r["finished_at"] for r in runs) - max(r["started_at"] for r in runs)
    assert overlap > 0, runs
