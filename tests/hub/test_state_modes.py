"""The hub keeps its state private: jobs.db (argon2 hashes, job URLs), its WAL and SHM, the
universe, the bootstrap token and the state backups are 0600 in a 0700 directory, whatever
the umask it was started with and whatever modes the files had before (issue 13: the guide's
`mkdir -p /var/lib/orbit` leaves the data directory 0755)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orbit_fast.hub import settings as hub_settings
from tests.conftest import make_tree
from tests.hub.conftest import SERVER, HubProcess, new_secret

ORBIT = [sys.executable, "-m", "orbit_fast"]


@pytest.fixture(autouse=True)
def open_umask() -> Iterator[None]:
    """The usual login umask in this process and every child it starts (the hub, the CLI)."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def modes(directory: Path) -> dict[str, int]:
    return {p.name: mode(p) for p in directory.iterdir()}


def loosen(*paths: Path) -> None:
    for p in paths:
        if p.exists():
            os.chmod(p, 0o755 if p.is_dir() else 0o644)


def assert_private(directory: Path, names: set[str] | None = None) -> None:
    """`directory` is 0700 and every file in it 0600 (a directory 0700); `names` must be
    among them."""
    got = modes(directory)
    assert mode(directory) == 0o700, oct(mode(directory))
    assert names is None or names <= got.keys(), (names, got)
    loose = {n: oct(m) for n, m in got.items()
             if m != (0o700 if (directory / n).is_dir() else 0o600)}  # fmt: skip
    assert not loose, loose


def test_state_files_are_private_over_an_open_data_dir(hub_factory: Any, tmp_path: Path,
                                                       rng: Any) -> None:  # fmt: skip
    hub: HubProcess = hub_factory()
    # What the guide's `mkdir -p /var/lib/orbit` and an earlier, looser hub left behind.
    hub.data.mkdir(mode=0o755)
    os.chmod(hub.data, 0o755)
    (hub.data / "jobs.db").touch(mode=0o644)  # empty: SQLite takes it as a new database
    (hub.data / "state-backups").mkdir(mode=0o755)
    hub.start()

    assert mode(hub.data) == 0o700
    db = hub.data / "jobs.db"
    for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm"), hub.data / "bootstrap-token"):
        assert mode(p) == 0o600, (p.name, oct(mode(p)))
    with hub.client(hub.admin_token()) as c:
        # A backup job creates the universe (its checkpoint and journal).
        src = make_tree(tmp_path / "src", rng, files=10)
        bk = c.post("/api/jobs", json={"name": "bk", "source": str(src), "mode": "backup",
                                       "destination": str(tmp_path / "repo")}).json()
        c.post(f"/api/jobs/{bk['id']}/run")
        assert hub.wait_state(c, bk["id"], ("completed", "failed"))["state"] == "completed"
        universe = hub.data / "universe_v3.db"
        assert universe.exists()
        assert_private(hub.data, {"jobs.db", "jobs.db-wal", "jobs.db-shm", "universe_v3.db",
                                  "universe_v3.db-journal", "universe_v3.db.lock"})

        r = c.post("/api/admin/state-backup")
        assert r.status_code == 200, r.text
        written = set(r.json()["files"].values()) | {Path(r.json()["manifest"]).name}
        assert len(written) == 4  # jobs, universe, its journal, the manifest
        assert_private(hub.data / "state-backups", written)
        assert_private(hub.data)

    # The CLI (no umask of its own) into a directory that exists as 0755.
    out = tmp_path / "state"
    out.mkdir(mode=0o755)
    os.chmod(out, 0o755)
    r = subprocess.run([*ORBIT, "state", "backup", str(out)], env=hub.env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    manifest = json.loads(r.stdout)
    assert_private(out, set(manifest["files"].values()) | {Path(manifest["manifest"]).name})

    # Restore leaves the restored files (and the ones it keeps aside) private, whatever the
    # modes of the files it replaces.
    assert hub.stop() in (0, -15)
    state = [db, universe, Path(f"{universe}-journal")]
    loosen(hub.data, *state)
    r = subprocess.run([*ORBIT, "state", "restore", manifest["manifest"]], env=hub.env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["kept"]
    for p in state:
        assert mode(p) == 0o600, (p.name, oct(mode(p)))
    kept = {n: oct(m) for n, m in modes(hub.data).items() if "before-restore" in n}
    assert kept and set(kept.values()) == {"0o600"}, kept

    # A restart tightens whatever was loosened meanwhile (files the hub did not write).
    loosen(hub.data, *state, hub.data / "state-backups", *(hub.data / "state-backups").iterdir())
    hub.start()
    assert_private(hub.data, {"jobs.db", "universe_v3.db", "universe_v3.db-journal"})
    assert_private(hub.data / "state-backups")


def test_an_embedded_hub_makes_private_files_under_any_umask(tmp_path: Path) -> None:
    """Hub.open without orbit-server's umask (an embedder's process)."""
    data = tmp_path / "state"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    code = (
        "from orbit_fast.hub import settings; from orbit_fast.hub.core import Hub; "
        "hub = Hub.open(settings.load()); hub.store.close()"
    )
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{data}/jobs.db",
           "ORBIT_AUTH_SECRET": new_secret()}  # fmt: skip
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert_private(data, {"jobs.db", "bootstrap-token"})


def test_the_universe_is_private_under_any_umask(tmp_path: Path) -> None:
    from orbit_fast.index.universe import Universe

    path = tmp_path / "universe.db"
    Universe.open(str(path)).close()
    assert mode(path) == 0o600 and mode(Path(f"{path}-journal")) == 0o600


def test_an_env_file_others_can_read_is_warned_about(hub_factory: Any, tmp_path: Path) -> None:
    env_file = tmp_path / "orbit.env"
    env_file.write_text(f"ORBIT_AUTH_SECRET={new_secret()}\n")
    os.chmod(env_file, 0o644)
    hub: HubProcess = hub_factory()
    del hub.env["ORBIT_AUTH_SECRET"]  # from the env file only, as systemd's units have it
    hub.command = [*SERVER, "--env-file", str(env_file)]
    hub.start()
    hub.stop()
    line = next((x for x in hub.log.read_text().splitlines() if str(env_file) in x), "")
    assert "WARNING" in line and "chmod 600" in line, hub.log.read_text()

    os.chmod(env_file, 0o600)
    quiet = hub_settings.load(str(env_file), environ={}).warnings
    assert not any(str(env_file) in w for w in quiet), quiet
    os.chmod(env_file, 0o640)  # the group can read it too
    warned = [w for w in hub_settings.load(str(env_file), environ={}).warnings
              if str(env_file) in w]  # fmt: skip
    assert len(warned) == 1 and "ORBIT_AUTH_SECRET" in warned[0]
