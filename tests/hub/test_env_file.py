"""The hub's env file reaches the jobs it runs (issue 13): S3 credentials and the endpoint of an
S3-compatible store written only in `--env-file` are what a hub job uses, in the hub's own
process and in its worker processes, without touching any process's environment."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.hub.conftest import HubProcess
from tests.servers import free_port

# Every variable that could tell boto3 (or orbit-fast) where S3 is and who we are: the tests
# below must get them from the env file alone.
S3_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION",
           "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_CONFIG_FILE",
           "AWS_SHARED_CREDENTIALS_FILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
           "ORBIT_S3_ENDPOINT", "ORBIT_S3_PATH_STYLE", "ORBIT_S3_CHECKSUMS")  # fmt: skip
ENDED = ("completed", "partial", "failed")


@pytest.fixture
def bucket(moto: Any) -> str:
    """A fresh bucket on the moto server, made without putting its settings in our env."""
    name = f"env-file-{os.getpid() % 10000}-{random.randrange(10**6)}"
    moto.client().create_bucket(Bucket=name)
    return name


def _hub(hub_factory: Any, tmp_path: Path, env_file: Path, **env: str) -> HubProcess:
    """orbit-server --env-file F, with none of S3_VARS in its own environment and a home
    without ~/.aws: whatever S3 access it has comes from F (and `env`)."""
    hub: HubProcess = hub_factory(ORBIT_RETRY_ATTEMPTS="1")
    for key in S3_VARS:
        hub.env.pop(key, None)
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    hub.env.update(HOME=str(home), **env)
    hub.command = [*hub.command, "--env-file", str(env_file)]
    return hub.start()


def _tree(root: Path) -> set[str]:
    for i in range(12):
        (root / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        (root / f"d{i % 3}" / f"f{i}").write_bytes(os.urandom(1000 + 700 * i))
    return {str(p.relative_to(root)) for p in root.rglob("f*")}


def _keys(moto: Any, bucket: str, prefix: str) -> set[str]:
    listed = moto.client().list_objects_v2(Bucket=bucket, Prefix=prefix + "/")
    return {o["Key"].removeprefix(prefix + "/") for o in listed.get("Contents", [])}


def _sync_job(hub: HubProcess, src: Path, dst: str, until: tuple[str, ...]) -> dict[str, Any]:
    with hub.client(hub.admin_token()) as c:
        job = c.post("/api/jobs", json={"name": "env-file", "mode": "sync", "source": str(src),
                                        "destination": dst,
                                        "config": {"retry_attempts": 1}}).json()  # fmt: skip
        assert c.post(f"/api/jobs/{job['id']}/run").status_code in (200, 202)
        return hub.wait_state(c, job["id"], until, timeout=120)


def _env_file(tmp_path: Path, moto: Any, endpoint: bool = True) -> Path:
    lines = ["# S3 for the hub's jobs, as systemd's EnvironmentFile= would give it",
             "AWS_ACCESS_KEY_ID=test", 'AWS_SECRET_ACCESS_KEY="test"',
             "export AWS_DEFAULT_REGION=us-east-1"]  # fmt: skip
    if endpoint:
        lines.append(f"ORBIT_S3_ENDPOINT={moto.endpoint}")
    path = tmp_path / "orbit.env"
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)  # it holds credentials: the service user's alone, as the guide says
    return path


def test_a_hub_job_reaches_s3_configured_only_in_the_env_file(
        hub_factory: Any, moto: Any, bucket: str, tmp_path: Path) -> None:
    want = _tree(tmp_path / "src")
    hub = _hub(hub_factory, tmp_path, _env_file(tmp_path, moto))
    done = _sync_job(hub, tmp_path / "src", f"s3://{bucket}/copy", ENDED)
    assert done["state"] == "completed", (done, hub.log.read_text()[-3000:])
    assert _keys(moto, bucket, "copy") == want
    head = moto.client().head_object(Bucket=bucket, Key="copy/d0/f0")
    assert head["ContentLength"] == 1000


def test_without_the_endpoint_line_the_job_does_not_go_elsewhere(
        hub_factory: Any, moto: Any, bucket: str, tmp_path: Path) -> None:
    # The hub's real environment sends boto3's default endpoint to a closed local port
    # (botocore honours AWS_ENDPOINT_URL), standing in for real AWS: with the endpoint line
    # gone, the job must try there, with the env file's credentials, and reach nothing.
    closed = free_port()
    _tree(tmp_path / "src")
    hub = _hub(hub_factory, tmp_path, _env_file(tmp_path, moto, endpoint=False),
               AWS_ENDPOINT_URL=f"http://127.0.0.1:{closed}")  # fmt: skip
    job = _sync_job(hub, tmp_path / "src", f"s3://{bucket}/copy", (*ENDED, "retrying"))
    assert job["state"] in ("retrying", "failed"), job
    assert f"127.0.0.1:{closed}" in (job["last_error"] or ""), job
    assert _keys(moto, bucket, "copy") == set()


def test_the_global_s3_endpoint_flag_reaches_the_hubs_jobs(
        hub_factory: Any, moto: Any, bucket: str, tmp_path: Path) -> None:
    """`orbit-fast --s3-endpoint URL serve`: the flag is every job's endpoint (through the jobs'
    overlay, not os.environ); a different ORBIT_S3_ENDPOINT in the environment is refused."""
    import subprocess
    import sys

    want = _tree(tmp_path / "src")
    hub: HubProcess = hub_factory(ORBIT_RETRY_ATTEMPTS="1")
    for key in S3_VARS:
        hub.env.pop(key, None)
    hub.env["HOME"] = str(tmp_path)
    env_file = _env_file(tmp_path, moto, endpoint=False)
    serve = [sys.executable, "-m", "orbit_fast", "--s3-endpoint", moto.endpoint, "serve",
             "--env-file", str(env_file)]  # fmt: skip
    clash = subprocess.run(serve, env={**hub.env, "ORBIT_S3_ENDPOINT": "http://127.0.0.1:9"},
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert clash.returncode == 2 and "disagree" in clash.stderr, clash.stderr
    hub.command = serve
    hub.start()
    done = _sync_job(hub, tmp_path / "src", f"s3://{bucket}/copy", ENDED)
    assert done["state"] == "completed", (done, hub.log.read_text()[-3000:])
    assert _keys(moto, bucket, "copy") == want


# ---- in one process: the overlay as the engine's stores and the workers see it ----------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for key in S3_VARS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.aws either
    yield


def test_the_env_file_becomes_the_jobs_environment_and_the_process_one_wins(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from orbit_fast import environment
    from orbit_fast.hub import settings as s
    from tests.hub.conftest import new_secret

    f = tmp_path / "orbit.env"
    f.write_text(f"ORBIT_AUTH_SECRET={new_secret()}\nORBIT_SMB_USER=from-file\n"
                 "ORBIT_SMB_TIMEOUT=7\nAWS_PROFILE=backup\n")  # fmt: skip
    got = s.load(str(f), environ={})
    assert got.job_env == {"ORBIT_SMB_USER": "from-file", "ORBIT_SMB_TIMEOUT": "7",
                           "AWS_PROFILE": "backup"}  # the hub's own secret stays with the hub
    monkeypatch.delenv("ORBIT_SMB_USER", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("ORBIT_SMB_TIMEOUT", "3")
    owner = object()
    environment.install(owner, got.job_env)
    try:
        assert environment.getenv("ORBIT_SMB_USER") == "from-file"
        assert environment.getenv("ORBIT_SMB_TIMEOUT") == "3"  # the process environment wins
        assert environment.from_overlay("AWS_PROFILE")
        assert not environment.from_overlay("ORBIT_SMB_TIMEOUT")
        assert "ORBIT_SMB_USER" not in os.environ  # nobody's environment changed
        with pytest.raises(RuntimeError, match="env file"):
            environment.install(object(), {"ORBIT_SMB_USER": "another hub's"})
    finally:
        environment.remove(owner)
    assert environment.getenv("ORBIT_SMB_USER") is None


def test_worker_processes_and_their_replacements_see_the_overlay(
        clean_env: None, moto: Any, bucket: str, tmp_path: Path) -> None:
    from orbit_fast import messages as m
    from orbit_fast.workers.pool import WorkerPool
    from orbit_fast.workers.ring import SharedRing

    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"hello")
    (src / "b").write_bytes(b"again")
    ends = m.Ends(src=str(src), dst=f"s3://{bucket}/w", s3_endpoint="", attempts=1)
    pool = WorkerPool(1, threads=1, env=moto.env())
    pool.start()
    ring = SharedRing.create(4096, 1)
    try:
        lease = pool.lease(ring)
        for tid, name in ((1, "a"), (2, "b")):
            lease.send(0, tid, m.PutObject(task_id=tid, ends=ends, name=name, durable=False))
            got = _results(lease)
            assert isinstance(got, m.ObjectPut), got  # a TaskFailed says "no S3 credentials"
            if tid == 1:  # kill it: its replacement must be given the overlay too
                os.kill(pool.pids()[0], 9)
                deadline = time.monotonic() + 30
                while pool.deaths == 0 and time.monotonic() < deadline:
                    lease.wait(0.2)
                assert pool.deaths == 1
        lease.close()
    finally:
        pool.shutdown()
        ring.close()
    assert _keys(moto, bucket, "w") == {"a", "b"}


def _results(lease: Any) -> Any:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        results, deaths = lease.wait(1.0)
        assert not deaths
        if results:
            return results[0][1]
    raise AssertionError("no result in 30 s")


def test_boto3_gets_what_only_the_env_file_sets_and_the_environment_still_wins(
        clean_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from orbit_fast import environment
    from orbit_fast.backends.s3 import _session

    creds = tmp_path / "credentials"
    creds.write_text("[default]\naws_access_key_id = FILE_DEFAULT\naws_secret_access_key = s\n"
                     "[backup]\naws_access_key_id = FILE_BACKUP\naws_secret_access_key = s\n")

    def access_key(overlay: dict[str, str]) -> str | None:
        owner = object()
        environment.install(owner, overlay)
        try:
            got = _session().get_credentials()
            return got.access_key if got is not None else None
        finally:
            environment.remove(owner)

    assert access_key({}) is None  # nothing anywhere (HOME has no ~/.aws)
    assert access_key({"AWS_SHARED_CREDENTIALS_FILE": str(creds)}) == "FILE_DEFAULT"
    assert access_key({"AWS_SHARED_CREDENTIALS_FILE": str(creds),
                       "AWS_PROFILE": "backup"}) == "FILE_BACKUP"  # fmt: skip
    # Keys beat a profile, as in the environment.
    assert access_key({"AWS_ACCESS_KEY_ID": "ENV_FILE", "AWS_SECRET_ACCESS_KEY": "s",
                       "AWS_SHARED_CREDENTIALS_FILE": str(creds),
                       "AWS_PROFILE": "backup"}) == "ENV_FILE"  # fmt: skip
    # The process environment wins over the file, key by key.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "PROCESS")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    assert access_key({"AWS_ACCESS_KEY_ID": "ENV_FILE", "AWS_SECRET_ACCESS_KEY": "s"}) == "PROCESS"
    assert access_key({"AWS_SHARED_CREDENTIALS_FILE": str(creds),
                       "AWS_PROFILE": "backup"}) == "PROCESS"  # fmt: skip
    monkeypatch.setenv("AWS_PROFILE", "default")
    assert access_key({"AWS_SHARED_CREDENTIALS_FILE": str(creds)}) == "PROCESS"
