"""Backup repositories on S3 (moto server) and SMB (Samba), end to end through the CLI."""

from __future__ import annotations

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
    import json

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
