"""State backups while the hub runs, and restores that check before they swap anything in."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REQUIRE_SERVERS, make_tree
from tests.hub.conftest import HubProcess

ORBIT = [sys.executable, "-m", "orbit_fast"]

GUIDE_SCRIPT = """#!/bin/bash
# /usr/local/bin/orbit-backup-state.sh (the deployment guide's, with its paths as variables)
BACKUP_DIR="{backup_dir}"
TIMESTAMP=$(date +%Y%m%d_%H%M%S)
mkdir -p "$BACKUP_DIR"
sqlite3 {data}/jobs.db ".backup '$BACKUP_DIR/jobs_$TIMESTAMP.db'"
cp {data}/universe_v3.db "$BACKUP_DIR/universe_v3_$TIMESTAMP.db"
find "$BACKUP_DIR" -type f -mtime +30 -delete
echo "Backup completed: $TIMESTAMP"
"""


def _busy_hub(hub: HubProcess, tmp_path: Path, rng: Any) -> tuple[dict[str, Any], Any]:
    """A hub with a finished backup job (so the universe has chunks) and a sync running."""
    c = hub.client(hub.admin_token())
    src = make_tree(tmp_path / "src", rng, files=40, max_size=300_000)
    bk = c.post("/api/jobs", json={"name": "bk", "source": str(src), "mode": "backup",
                                   "destination": str(tmp_path / "repo")}).json()
    c.post(f"/api/jobs/{bk['id']}/run")
    assert hub.wait_state(c, bk["id"], ("completed", "failed"))["state"] == "completed"
    big = tmp_path / "big"
    big.mkdir()
    for i in range(3):
        (big / f"f{i}").write_bytes(os.urandom(48 << 20))
    sync = c.post("/api/jobs", json={"name": "sync", "source": str(big),
                                     "destination": str(tmp_path / "copy"),
                                     "config": {"concurrency": 1, "chunk_size_mb": 0.25}}).json()
    c.post(f"/api/jobs/{sync['id']}/run")
    hub.wait_state(c, sync["id"], ("running",))
    return sync, c


def test_backup_while_running_then_restore(hub: HubProcess, tmp_path: Path, rng: Any) -> None:
    sync, c = _busy_hub(hub, tmp_path, rng)
    out = tmp_path / "state"
    r = subprocess.run([*ORBIT, "state", "backup", str(out)], env=hub.env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    manifest = json.loads(r.stdout)
    assert manifest["universe_chunks"] > 0
    # The API does the same for admins.
    api = c.post("/api/admin/state-backup")
    assert api.status_code == 200 and api.json()["universe_chunks"] == manifest["universe_chunks"]
    assert Path(api.json()["manifest"]).parent == hub.data / "state-backups"
    hub.wait_state(c, sync["id"], ("completed",), timeout=120)
    c.close()
    con = sqlite3.connect(out / manifest["files"]["jobs"])
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("SELECT count(*) FROM hub_jobs").fetchone()[0] == 2
    con.close()

    # Restore refuses while the hub runs, and changes nothing.
    before = (hub.data / "jobs.db").stat().st_mtime_ns
    r = subprocess.run([*ORBIT, "state", "restore", manifest["manifest"]], env=hub.env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 6 and "stop the hub first" in r.stderr
    assert (hub.data / "jobs.db").stat().st_mtime_ns == before
    hub.stop()
    # A damaged backup is refused before anything is swapped.
    damaged = tmp_path / "damaged"
    shutil.copytree(out, damaged)
    jobs_copy = damaged / manifest["files"]["jobs"]
    data = bytearray(jobs_copy.read_bytes())
    data[5000:5100] = b"\xff" * 100
    jobs_copy.write_bytes(bytes(data))
    r = subprocess.run([*ORBIT, "state", "restore", str(damaged / Path(manifest["manifest"]).name)],
                       env=hub.env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 9 and "does not match its checksum" in r.stderr
    # The good one restores; the replaced files are kept aside.
    r = subprocess.run([*ORBIT, "state", "restore", manifest["manifest"]], env=hub.env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["kept"]
    # The restored hub starts; the sync that was running at backup time resumes by itself.
    hub.start()
    with hub.client(hub.login("admin", "SecurePassword123!")) as c2:
        got = hub.wait_state(c2, sync["id"], ("completed",), timeout=120)
        assert got["state"] == "completed"
        runs = c2.get(f"/api/jobs/{sync['id']}/runs").json()["runs"]
        assert runs[0]["trigger"] == "recovery"


def test_the_guides_backup_script_works(hub: HubProcess, tmp_path: Path, rng: Any) -> None:
    if not shutil.which("sqlite3"):
        if REQUIRE_SERVERS:
            pytest.fail("the sqlite3 shell is not installed (tools/test installs it as root)")
        pytest.skip("apt-get install sqlite3")
    sync, c = _busy_hub(hub, tmp_path, rng)
    c.close()
    script = tmp_path / "orbit-backup-state.sh"
    script.write_text(GUIDE_SCRIPT.format(backup_dir=tmp_path / "orbit-state", data=hub.data))
    r = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "Backup completed" in r.stdout, r.stderr
    jobs = next((tmp_path / "orbit-state").glob("jobs_*.db"))
    universe = next((tmp_path / "orbit-state").glob("universe_v3_*.db"))
    hub.stop()
    r = subprocess.run([*ORBIT, "state", "restore", str(jobs), "--universe", str(universe)],
                       env=hub.env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    hub.start()
    with hub.client(hub.login("admin", "SecurePassword123!")) as c2:
        assert hub.wait_state(c2, sync["id"], ("completed",), timeout=120)["state"] == "completed"
        # The universe copy is a checkpoint without its journal: the next backup reconciles it
        # with the repository and stores nothing twice.
        bk = c2.get("/api/jobs?name=bk").json()["jobs"][0]
        c2.post(f"/api/jobs/{bk['id']}/run")
        hub.wait_state(c2, bk["id"], ("completed",), timeout=120)
        stats = c2.get(f"/api/jobs/{bk['id']}/runs").json()["runs"][0]["stats"]
        assert stats["bytes_added"] == 0 and stats["files_unchanged"] == stats["files_total"]


def test_the_guides_script_works_on_a_hub_that_never_ran_a_backup(hub: HubProcess,
                                                                  tmp_path: Path) -> None:
    if not shutil.which("sqlite3"):
        if REQUIRE_SERVERS:
            pytest.fail("the sqlite3 shell is not installed (tools/test installs it as root)")
        pytest.skip("apt-get install sqlite3")
    universe = hub.data / "universe_v3.db"
    assert universe.exists() and oct(universe.stat().st_mode & 0o777) == "0o600"
    script = tmp_path / "orbit-backup-state.sh"
    script.write_text("set -e\n" + GUIDE_SCRIPT.format(backup_dir=tmp_path / "st",
                                                      data=hub.data))  # fmt: skip
    r = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "Backup completed" in r.stdout, r.stderr
    # The copy is a valid, empty index.
    copy = next((tmp_path / "st").glob("universe_v3_*.db"))
    r = subprocess.run([*ORBIT, "state", "restore", str(next((tmp_path / "st").glob(
        "jobs_*.db"))), "--universe", str(copy), "--db-path", str(tmp_path / "r" / "jobs.db"),
        "--universe-path", str(tmp_path / "r" / "u.db")], capture_output=True, text=True,
        timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr
