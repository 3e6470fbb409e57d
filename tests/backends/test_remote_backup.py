"""Backup repositories on S3 (moto server) and SMB (Samba), end to end through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from orbit_fast.errors import ExitCode
from tests.conftest import ORBIT, assert_same_tree, json_events, make_tree, run_cli, write
from tests.servers import outage


def _summary(stdout: str) -> dict:
    (s,) = [e for e in json_events(stdout) if e["event"] == "backup_summary"]
    return s


@pytest.fixture(params=["s3", "smb"])
def repo_url(request: pytest.FixtureRequest) -> str:
    if request.param == "s3":
        return f"s3://{request.getfixturevalue('s3_bucket')}/backups/r1"
    samba = request.getfixturevalue("samba")
    return samba.url(request.getfixturevalue("smb_dir") + "/repo")


def test_backup_restore_verify_prune_on_remote_repository(tmp_path: Path, rng, repo_url) -> None:
    src = make_tree(tmp_path / "src", rng, files=40, max_size=200_000)
    write(src / "big.bin", rng.randbytes(3 << 20))
    first = _summary(run_cli("backup", str(src), repo_url, "--json").stdout)
    again = _summary(run_cli("backup", str(src), repo_url, "--json").stdout)
    assert again["bytes_read"] == 0 and again["chunks_added"] == 0
    write(src / "big.bin", rng.randbytes(3 << 20))
    run_cli("backup", str(src), repo_url)
    run_cli("restore", "-r", repo_url, "latest", "--target", str(tmp_path / "out"))
    assert_same_tree(src, tmp_path / "out")
    run_cli("verify", "-r", repo_url)
    run_cli("forget", "-r", repo_url, "--keep-last", "1", "--prune")
    run_cli("verify", "-r", repo_url)
    listing = run_cli("snapshots", "-r", repo_url).stdout
    assert first["snapshot"][:8] not in listing and "1 snapshots" in listing
    # A second machine (a fresh universe) restores from the repository alone.
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "other-host")}
    proc = subprocess.run([*ORBIT, "restore", "-r", repo_url, "latest", "--target",
                           str(tmp_path / "out2")], env=env, capture_output=True,
                          text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert_same_tree(src, tmp_path / "out2")


def test_s3_endpoint_flag_for_every_command(tmp_path: Path, s3_bucket, moto,
                                            monkeypatch) -> None:  # fmt: skip
    monkeypatch.delenv("ORBIT_S3_ENDPOINT")
    write(tmp_path / "src" / "f", b"data")
    repo, flag = f"s3://{s3_bucket}/r", ["--s3-endpoint", moto.endpoint]
    run_cli(*flag, "backup", str(tmp_path / "src"), repo)
    assert "1 snapshots" in run_cli(*flag, "snapshots", "-r", repo).stdout
    run_cli(*flag, "restore", "-r", repo, "latest", "--target", str(tmp_path / "out"))
    assert (tmp_path / "out" / "f").read_bytes() == b"data"


def test_missing_bucket_is_a_clear_error(tmp_path: Path, moto, monkeypatch) -> None:
    for k, v in moto.env().items():
        monkeypatch.setenv(k, v)
    write(tmp_path / "src" / "f", b"x")
    proc = run_cli("backup", str(tmp_path / "src"), "s3://no-such-bucket-zz/r",
                   check=ExitCode.REMOTE)  # fmt: skip
    assert "does not exist" in proc.stderr


def test_smb_server_restart_mid_backup_is_retried(tmp_path: Path, rng, samba, smb_dir) -> None:
    """The guide's promise: a server that goes away for a moment costs retries, not the job."""
    src = tmp_path / "src"
    for i in range(24):
        write(src / f"f{i:02d}", rng.randbytes(1 << 20))
    url = samba.url(smb_dir + "/repo")
    run_cli("init", url, "--codec", "none")
    cfg = samba.share_dir / smb_dir / "repo" / "config"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "pack_bytes": 1 << 20}))
    proc = subprocess.Popen([*ORBIT, "backup", str(src), url, "-j", "1", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    packs = samba.share_dir / smb_dir / "repo" / "packs"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(p.is_file() for p in packs.rglob("*")):
        time.sleep(0.02)
    out, err = outage(proc, samba.stop, samba.start)
    assert proc.returncode == 0, out[-2000:] + err
    assert _summary(out)["files_total"] == 24
    run_cli("restore", "-r", url, "latest", "--target", str(tmp_path / "out"))
    assert_same_tree(src, tmp_path / "out")


@pytest.mark.parametrize("pair", ["smb->s3", "s3->local", "smb->local"])
def test_backup_from_a_remote_source(tmp_path: Path, rng, pair, request) -> None:
    """Backups read SMB shares and S3 prefixes directly; restore gives back the files."""
    from tests.backends.test_remote_sync import _files

    src_kind, repo_kind = pair.split("->")
    s3 = request.getfixturevalue("s3_bucket") if "s3" in pair else None
    if src_kind == "smb":
        samba = request.getfixturevalue("samba")
        source = samba.url(request.getfixturevalue("smb_dir") + "/data")
    else:
        source = f"s3://{s3}/data"
    repo = f"s3://{s3}/repo" if repo_kind == "s3" else str(tmp_path / "repo")
    tree = make_tree(tmp_path / "tree", rng, files=30, max_size=300_000)
    write(tree / "big.bin", rng.randbytes(9 << 20))
    run_cli("sync", str(tree), source, check=1)  # symlinks are not objects: skipped, exit 1
    first = _summary(run_cli("backup", source, repo, "--json").stdout)
    assert first["files_total"] == len(_files(tree))
    again = _summary(run_cli("backup", source, repo, "--json").stdout)
    assert again["bytes_read"] == 0 and again["files_unchanged"] == first["files_total"]
    write(tree / "big.bin", rng.randbytes(9 << 20), mtime=1_700_000_000.5)
    run_cli("sync", str(tree), source, check=1)
    third = _summary(run_cli("backup", source, repo, "--json").stdout)
    assert third["bytes_read"] == 9 << 20 and third["files_changed"] == 1
    run_cli("restore", "-r", repo, "latest", "--target", str(tmp_path / "out"))
    us = src_kind == "smb"
    assert _files(tmp_path / "out", us=us) == _files(tree, us=us)
    run_cli("verify", "-r", repo)


def _s3_source(tmp_path: Path, rng, bucket: str, files: int) -> Path:
    """A tree of plain files (objects hold no links), synced to s3://bucket/data."""
    tree = tmp_path / "tree"
    for i in range(files):
        write(tree / f"d{i % 3}" / f"f{i}", rng.randbytes(rng.randint(0, 300_000)))
    run_cli("sync", str(tree), f"s3://{bucket}/data")
    return tree


def _flag_only(moto, monkeypatch) -> list[str]:
    """S3 credentials in the environment, the endpoint only in --s3-endpoint."""
    for k, v in moto.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("ORBIT_S3_ENDPOINT")
    return ["--s3-endpoint", moto.endpoint]


def test_s3_endpoint_flag_reaches_the_workers_reading_an_s3_source(
        tmp_path: Path, rng, s3_bucket, moto, monkeypatch) -> None:  # fmt: skip
    """A backup of an s3:// source: the worker processes read the objects through the flag's
    endpoint, which wins over a different ORBIT_S3_ENDPOINT in the environment."""
    from tests.backends.test_remote_sync import _files

    tree = _s3_source(tmp_path, rng, s3_bucket, 12)
    flag = _flag_only(moto, monkeypatch)
    monkeypatch.setenv("ORBIT_S3_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    repo = str(tmp_path / "repo")
    first = _summary(run_cli(*flag, "backup", f"s3://{s3_bucket}/data", repo, "--json").stdout)
    assert first["files_total"] == 12 and first["warnings"] == 0
    run_cli("restore", "-r", repo, "latest", "--target", str(tmp_path / "out"))
    assert _files(tmp_path / "out") == _files(tree)


def test_s3_endpoint_flag_for_the_repository_commands(tmp_path: Path, s3_bucket, moto,
                                                      monkeypatch) -> None:  # fmt: skip
    flag = _flag_only(moto, monkeypatch)
    write(tmp_path / "src" / "f", b"data")
    repo = f"s3://{s3_bucket}/r"
    assert "created repository" in run_cli(*flag, "init", repo).stdout
    run_cli(*flag, "backup", str(tmp_path / "src"), repo)
    write(tmp_path / "src" / "g", b"more")
    run_cli(*flag, "backup", str(tmp_path / "src"), repo)
    assert "f\n" in run_cli(*flag, "ls", "-r", repo, "latest").stdout
    snaps = [json.loads(x)["id"] for x in
             run_cli(*flag, "snapshots", "-r", repo, "--json").stdout.splitlines()]  # fmt: skip
    assert "\n+ g\n1 added, 0 removed" in run_cli(*flag, "diff", "-r", repo, *snaps).stdout
    run_cli(*flag, "verify", "-r", repo)
    assert "indexed 2 packs" in run_cli(*flag, "index", "rebuild", "-r", repo).stdout
    assert "no lock was held" in run_cli(*flag, "unlock", "-r", repo).stdout
    assert "forgot 1 snapshots" in run_cli(*flag, "forget", "-r", repo, "--keep-last",
                                           "1").stdout  # fmt: skip
    run_cli(*flag, "prune", "-r", repo)
    # Without the flag (and no ORBIT_S3_ENDPOINT) the same commands go to AWS: the flag alone
    # carried the endpoint.
    proc = run_cli("snapshots", "-r", repo, check=None)
    assert proc.returncode != 0


def test_the_cli_leaves_os_environ_alone(tmp_path: Path, rng, s3_bucket, moto,
                                         monkeypatch) -> None:  # fmt: skip
    """In process: --s3-endpoint goes to the engine as an option; os.environ and the
    environment overlay are as they were."""
    from click.testing import CliRunner

    from orbit_fast import environment
    from orbit_fast.cli import cli
    from tests.backends.test_remote_sync import _files

    tree = _s3_source(tmp_path, rng, s3_bucket, 5)
    flag = _flag_only(moto, monkeypatch)
    before, overlay = dict(os.environ), environment.overlay()
    runner = CliRunner()
    repo = f"s3://{s3_bucket}/r"
    for args in (["backup", f"s3://{s3_bucket}/data", repo, "--no-progress"],
                 ["snapshots", "-r", repo],
                 ["restore", "-r", repo, "latest", "--target", str(tmp_path / "out"),
                  "--no-progress"]):  # fmt: skip
        got = runner.invoke(cli, [*flag, *args])
        assert got.exit_code == 0, got.output
        assert dict(os.environ) == before and environment.overlay() == overlay
    assert _files(tmp_path / "out") == _files(tree)


def test_engine_backup_of_an_s3_source_and_its_workers_endpoint(
        tmp_path: Path, rng, s3_bucket, moto, monkeypatch) -> None:  # fmt: skip
    """A shared pool's workers read an s3:// source through their own endpoint: a run that
    names another one is refused (naming the field) instead of reading elsewhere."""
    from orbit_fast.api import BackupOptions, Engine
    from orbit_fast.errors import UsageError

    _s3_source(tmp_path, rng, s3_bucket, 4)
    _flag_only(moto, monkeypatch)
    db, uni = str(tmp_path / "state" / "jobs.db"), str(tmp_path / "state" / "universe.db")
    opts = BackupOptions(source=f"s3://{s3_bucket}/data", repository=str(tmp_path / "repo"),
                         db_path=db, universe_path=uni, s3_endpoint=moto.endpoint)  # fmt: skip
    for env, ok in (({}, False), ({"ORBIT_S3_ENDPOINT": moto.endpoint}, True)):
        with Engine(db, uni, env=env) as engine:
            engine.start()
            if ok:
                assert engine.backup(opts).files_total == 4
            else:
                with pytest.raises(UsageError, match="shared workers") as exc:
                    engine.backup(opts)
                assert exc.value.field == "s3_endpoint"


def test_a_key_that_is_also_a_prefix_is_backed_up_once(tmp_path: Path, s3_bucket, moto) -> None:
    # S3 holds "data/a" and "data/a/b": a file and a directory of one name, which no tree can
    # hold. The backup keeps the first, warns of the second, and its snapshot restores.
    c = moto.client()
    for key, body in (("data/a", b"file a"), ("data/a/b", b"below a"), ("data/c", b"c")):
        c.put_object(Bucket=s3_bucket, Key=key, Body=body)
    repo = str(tmp_path / "repo")
    proc = run_cli("backup", f"s3://{s3_bucket}/data", repo, "--json", check=ExitCode.PARTIAL)
    assert "a file and a directory share this name" in proc.stdout
    run_cli("verify", "-r", repo)
    run_cli("restore", "-r", repo, "latest", "--target", str(tmp_path / "out"))
    assert (tmp_path / "out" / "c").read_bytes() == b"c"
