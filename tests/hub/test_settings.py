"""The guide's settings: env file and environment, refusals that say how to fix them."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from orbit_fast.errors import UsageError
from orbit_fast.hub import settings as s
from tests.conftest import REQUIRE_SERVERS, make_tree, snapshot
from tests.hub.conftest import SERVER, HubProcess, new_secret

GUIDE_ENV = """# Network Binding
ORBIT_HOST=0.0.0.0
ORBIT_PORT=3000

# Database Locations (CRITICAL: KEEP THESE LOCAL)
# Do NOT point these to /mnt/smb_share/
DATABASE_URL=sqlite:///var/lib/orbit/jobs.db
UNIVERSE_PATH=/var/lib/orbit/universe_v3.db

# Security (REQUIRED - generate your own!)
ORBIT_AUTH_SECRET={secret}

# Optional: Logging
RUST_LOG=info,orbit_web=debug,magnetar=debug
"""


def test_the_guides_env_file_is_read_as_written(tmp_path: Path) -> None:
    secret = new_secret()
    env_file = tmp_path / "orbit.env"
    env_file.write_text(GUIDE_ENV.format(secret=secret))
    got = s.load(str(env_file), environ={})
    assert (got.host, got.port) == ("0.0.0.0", 3000)
    assert got.db_path == "/var/lib/orbit/jobs.db"
    assert got.universe_path == "/var/lib/orbit/universe_v3.db"
    assert got.auth_secret == secret and got.auth_enabled
    assert got.log_level == "info"  # RUST_LOG's first word; the rest breaks nothing
    # The environment overrides the file (systemd Environment= over EnvironmentFile=).
    assert s.load(str(env_file), environ={"ORBIT_PORT": "3100"}).port == 3100
    assert s.db_path_from_url("sqlite:////var/lib/orbit/jobs.db") == "/var/lib/orbit/jobs.db"


@pytest.mark.parametrize("secret, why", [
    ("", "not set"),
    ("CHANGE_THIS_TO_A_SECURE_RANDOM_STRING", "placeholder"),
    ("short-secret", "at least 32"),
    ("a" * 40, "too easy"),
    ("abcdefghijklmnopqrstuvwxyzabcdef", "too easy to guess"),
    ("your-secret-key-here-change-me-please", "placeholder"),
    ("REPLACE_WITH_A_SECURE_RANDOM_STRING", "placeholder"),
    ("0123456789012345678901234567890123", "too easy to guess"),
])
def test_weak_or_missing_secrets_refuse_to_start(secret: str, why: str) -> None:
    with pytest.raises(UsageError) as e:
        s.load(environ={"ORBIT_AUTH_SECRET": secret})
    assert why in str(e.value) and "openssl rand -base64 32" in str(e.value)


def test_auth_off_only_on_loopback() -> None:
    got = s.load(environ={"ORBIT_AUTH_ENABLED": "false"})
    assert not got.auth_enabled and got.host == "127.0.0.1"
    with pytest.raises(UsageError, match="ORBIT_AUTH_ENABLED=false on ORBIT_HOST=0.0.0.0"):
        s.load(environ={"ORBIT_AUTH_ENABLED": "false", "ORBIT_HOST": "0.0.0.0"})


@pytest.mark.parametrize("env, match", [
    ({"DATABASE_URL": "postgres://x/y"}, "only sqlite"),
    ({"DATABASE_URL": "sqlite:///:memory:"}, "name a file"),
    ({"ORBIT_PORT": "http"}, "port number"),
    ({"ORBIT_ALLOWED_ROOTS": "relative/dir"}, "not an absolute path"),
    ({"ORBIT_AUTH_ENABLED": "maybe"}, "true or false"),
    ({"ORBIT_WORKER_NICE": "20"}, "ORBIT_WORKER_NICE=20: use 0"),
    ({"ORBIT_SWITCH_INTERVAL_S": "fast"}, "ORBIT_SWITCH_INTERVAL_S"),
    ({"ORBIT_SWITCH_INTERVAL_S": "0"}, "above 0"),
    ({"ORBIT_RETRY_BASE_S": "soon"}, "ORBIT_RETRY_BASE_S"),
    ({"ORBIT_MIN_FREE_BYTES": "-1"}, "ORBIT_MIN_FREE_BYTES=-1"),
    ({"ORBIT_SESSION_HOURS": "inf"}, "ORBIT_SESSION_HOURS=inf: use hours above 0"),
    ({"ORBIT_SESSION_HOURS": "nan"}, "ORBIT_SESSION_HOURS=nan: use hours above 0"),
    ({"ORBIT_SESSION_HOURS": "-5"}, "ORBIT_SESSION_HOURS=-5: use hours above 0"),
    ({"ORBIT_BODY_TIMEOUT_S": "0"}, "ORBIT_BODY_TIMEOUT_S=0"),
    ({"ORBIT_TRUSTED_PROXIES": "nginx.local"}, "not an address or network"),
    ({"ORBIT_PUBLIC_URL": "orbit.example.com"}, "give the URL users open"),
    ({"ORBIT_ALLOWED_HOSTS": "a/b"}, "is not a host name"),
])
def test_bad_settings_name_the_variable(env: dict[str, str], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        s.load(environ={"ORBIT_AUTH_SECRET": new_secret(), **env})


def test_secrets_as_the_guide_generates_them_pass() -> None:
    import secrets

    for _ in range(50):
        for secret in (new_secret(), secrets.token_hex(32), secrets.token_hex(16),
                       secrets.token_urlsafe(32)):  # fmt: skip
            assert s.secret_problem(secret) is None, secret


def test_proxies_and_host_names() -> None:
    got = s.load(environ={"ORBIT_AUTH_SECRET": new_secret(), "ORBIT_TRUSTED_PROXIES": "none",
                          "ORBIT_PUBLIC_URL": "https://Orbit.Example.com/",
                          "ORBIT_ALLOWED_HOSTS": "a.internal, b.internal",
                          "ORBIT_HOST": "hub.internal"})  # fmt: skip
    assert got.trusted_proxies == ()
    assert got.allowed_hosts == {"orbit.example.com", "a.internal", "b.internal", "hub.internal"}
    assert [str(n) for n in s.load(environ={"ORBIT_AUTH_SECRET": new_secret()}).trusted_proxies
            ] == ["127.0.0.0/8", "::1/128"]  # fmt: skip


def test_env_file_errors_name_the_line(tmp_path: Path) -> None:
    f = tmp_path / "orbit.env"
    f.write_text("ORBIT_PORT=3000\nthis is not a setting\n")
    with pytest.raises(UsageError, match=r"orbit.env:2: expected KEY=VALUE"):
        s.parse_env_file(str(f))


def test_orbit_server_refuses_the_placeholder_with_exit_2(tmp_path: Path) -> None:
    env = {**os.environ, "ORBIT_AUTH_SECRET": "CHANGE_THIS_TO_A_SECURE_RANDOM_STRING",
           "DATABASE_URL": f"sqlite:///{tmp_path}/jobs.db"}
    r = subprocess.run(SERVER, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "placeholder" in r.stderr and "openssl rand -base64 32" in r.stderr
    assert not (tmp_path / "jobs.db").exists()  # refused before touching anything


def test_a_second_hub_on_the_same_databases_refuses(hub: HubProcess) -> None:
    r = subprocess.run(SERVER, env={**hub.env, "ORBIT_PORT": "0"}, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 6, r.stderr
    assert "in use by another orbit-fast process" in r.stderr
    assert hub.proc is not None and hub.proc.poll() is None  # the first one is unharmed


def test_databases_on_a_network_filesystem_are_refused(tmp_path: Path) -> None:
    # /proc is not a network filesystem; make the check see CIFS for the data dir instead.
    env_file = tmp_path / "orbit.env"
    env_file.write_text(f"DATABASE_URL=sqlite:///{tmp_path}/share/jobs.db\n"
                        f"ORBIT_AUTH_SECRET={new_secret()}\n")
    code = (
        "import sys; from orbit_fast import fsinfo; "
        "fsinfo.network_fs_name = lambda d: 'cifs'; "
        "from orbit_fast.cli.hub_cmd import server_main; "
        f"sys.argv=['orbit-server', '--env-file', {str(env_file)!r}]; server_main()"
    )
    r = subprocess.run([SERVER[0], "-c", code], capture_output=True, text=True, timeout=60,
                       env={k: v for k, v in os.environ.items() if k != "DATABASE_URL"})
    assert r.returncode == 5, r.stderr
    assert "network filesystem (cifs)" in r.stderr and "DATABASE_URL" in r.stderr


def test_runs_under_the_guides_systemd_hardening(hub_factory: Any, tmp_path: Path,
                                                 rng: Any) -> None:
    """ProtectSystem=strict + ReadWritePaths=/var/lib/orbit, done with a private mount namespace
    whose root is read-only: the hub and its jobs may write only the data directory, the job's
    destination and /dev/shm."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        if REQUIRE_SERVERS:
            pytest.fail("CI runs as root with unshare(1): the hardening test must run there")
        pytest.skip("needs root and unshare(1) for a read-only mount namespace")
    src = make_tree(tmp_path / "src", rng, files=25)
    dst = tmp_path / "dst"
    dst.mkdir()
    hub = hub_factory(HOME="/nonexistent-home")
    hub.data.mkdir(parents=True)
    rw = " && ".join(f"mount --bind {d} {d}" for d in (hub.data, dst))
    cmd = shlex.join(SERVER)
    hub.command = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                   f"{rw} && mount -o remount,bind,ro / && exec {cmd}"]
    hub.start()
    with hub.client(hub.admin_token()) as c:
        job = c.post("/api/jobs", json={"name": "hardened", "source": str(src),
                                        "destination": str(dst), "mode": "mirror"}).json()
        c.post(f"/api/jobs/{job['id']}/run")
        done = hub.wait_state(c, job["id"], ("completed", "partial", "failed"))
        assert done["state"] == "completed", done
        assert c.post("/api/admin/state-backup").status_code == 200
    assert snapshot(src) == snapshot(dst)
    assert hub.stop() in (0, -15)  # uvicorn re-raises SIGTERM after a clean shutdown
    assert "Read-only file system" not in hub.log.read_text()
