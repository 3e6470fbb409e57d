"""The hub and its `job` client as an operator meets them (issue #18's list): job ids are never
reused, a job whose source is missing is warned about when made, `job list` without a token
says how to give one, and `job run --wait` shows the run's progress."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.conftest import ORBIT, write
from tests.hub.conftest import HubProcess


def test_a_deleted_jobs_id_is_never_given_again(hub: HubProcess, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with hub.client(hub.admin_token()) as c:
        ids = [c.post("/api/jobs", json={"name": f"j{i}", "source": str(src),
                                         "destination": str(tmp_path / f"d{i}")}).json()["id"]
               for i in range(2)]  # fmt: skip
        assert c.delete(f"/api/jobs/{ids[1]}").status_code == 200
        again = c.post("/api/jobs", json={"name": "j2", "source": str(src),
                                          "destination": str(tmp_path / "d2")}).json()  # fmt: skip
        assert again["id"] > ids[1]


def test_a_missing_source_is_warned_about_when_the_job_is_made(hub: HubProcess,
                                                               tmp_path: Path) -> None:
    with hub.client(hub.admin_token()) as c:
        r = c.post("/api/jobs", json={"name": "later", "source": str(tmp_path / "not-mounted"),
                                      "destination": str(tmp_path / "d")})  # fmt: skip
        assert r.status_code == 201
        assert any("not-mounted is not a directory here now" in w for w in r.json()["warnings"])


def test_job_list_without_a_token_says_how_to_give_one(hub: HubProcess) -> None:
    hub.admin_token()  # auth is on once a user exists
    env = {k: v for k, v in os.environ.items() if k not in ("ORBIT_TOKEN", "ORBIT_TOKEN_FILE")}
    r = subprocess.run([*ORBIT, "job", "list", "--hub", hub.url], capture_output=True,
                       text=True, env=env, timeout=60)  # fmt: skip
    assert r.returncode == 16
    assert "--token-file" in r.stderr and "ORBIT_TOKEN" in r.stderr


def test_job_run_wait_shows_progress(hub: HubProcess, tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i in range(4):
        write(src / f"f{i}", os.urandom(8 << 20))
    with hub.client(hub.admin_token()) as c:
        token = c.post("/api/auth/tokens", json={"name": "t"}).json()["token"]
        c.post("/api/jobs", json={"name": "slow", "source": str(src),
                                  "destination": str(tmp_path / "dst"),
                                  "config": {"bwlimit": "12M"}})  # fmt: skip
    env = {**os.environ, "ORBIT_HUB_URL": hub.url, "ORBIT_TOKEN": token}
    r = subprocess.run([*ORBIT, "job", "run", "slow", "--wait", "--json"], env=env,
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    running = [x for x in lines if x["state"] == "running" and x["progress"].get("bytes_done")]
    assert running, lines
    done = [x["progress"]["bytes_done"] for x in running]
    assert done == sorted(done) and done[-1] <= 32 << 20
    assert lines[-1]["state"] == "completed"
    # Without --json and without a terminal: the state lines on stderr.
    r = subprocess.run([*ORBIT, "job", "run", "slow", "--wait"], env=env, capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0 and "job " in r.stderr and "(slow): " in r.stderr
    assert r.stderr.strip().endswith("(slow): completed")


def test_a_job_is_changed_only_when_not_running_and_only_to_a_valid_one(
        hub: HubProcess, tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i in range(3):
        write(src / f"f{i}", os.urandom(8 << 20))
    with hub.client(hub.admin_token()) as c:
        job = c.post("/api/jobs", json={"name": "j", "source": str(src),
                                        "destination": str(tmp_path / "d"),
                                        "config": {"bwlimit": "4M", "exclude": ["*.tmp"]}}
                     ).json()  # fmt: skip
        r = c.patch(f"/api/jobs/{job['id']}", json={"config": {"max_size": "huge"}})
        assert r.status_code == 400 and r.json()["error"]["fields"][0]["field"] == "config.max_size"
        r = c.patch(f"/api/jobs/{job['id']}", json={"name": "renamed", "schedule": "@daily"})
        assert r.status_code == 200, r.text
        got = r.json()
        assert got["name"] == "renamed" and got["schedule"] == "@daily" and got["next_run_at"]
        assert got["config"] == {"bwlimit": "4M", "exclude": ["*.tmp"]}  # untouched
        c.post(f"/api/jobs/{job['id']}/run")
        hub.wait_state(c, job["id"], ("running",))
        r = c.patch(f"/api/jobs/{job['id']}", json={"destination": str(tmp_path / "elsewhere")})
        assert r.status_code == 409 and r.json()["error"]["code"] == "job_active"
        c.post(f"/api/jobs/{job['id']}/cancel")
        hub.wait_state(c, job["id"], ("cancelled",))
        r = c.patch(f"/api/jobs/{job['id']}", json={"schedule": ""})
        assert r.status_code == 200 and r.json()["schedule"] is None
