"""Bad input: a clear message, a documented exit code, nothing lost, and a rerun that resumes."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

import orbit_fast
from orbit_fast.errors import ExitCode, NetworkFilesystemError
from orbit_fast.index.jobs_db import JobsDB
from tests.conftest import ORBIT, assert_same_tree, make_tree, run_cli, summary_of, write

pytestmark = pytest.mark.integration

# Root ignores permission bits; these tests drop the capabilities that let it.
NO_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounts tmpfs / drops capabilities")


def test_missing_source(tmp_path: Path) -> None:
    proc = run_cli("sync", str(tmp_path / "nope"), str(tmp_path / "d"), check=ExitCode.SOURCE)
    assert "does not exist" in proc.stderr and str(tmp_path / "nope") in proc.stderr
    assert not (tmp_path / "d").exists()


def test_source_is_a_file(tmp_path: Path) -> None:
    f = write(tmp_path / "f", b"1")
    proc = run_cli("sync", str(f), str(tmp_path / "d"), check=ExitCode.SOURCE)
    assert "not a directory" in proc.stderr


@pytest.mark.parametrize("inside", ["dst_in_src", "src_in_dst", "same"])
def test_overlapping_trees(tmp_path: Path, inside: str) -> None:
    outer = tmp_path / "outer"
    write(outer / "inner" / "x", b"1")
    src, dst = {
        "dst_in_src": (outer, outer / "inner"),
        "src_in_dst": (outer / "inner", outer),
        "same": (outer, outer),
    }[inside]
    proc = run_cli("sync", str(src), str(dst), "--mirror", check=ExitCode.DESTINATION)
    assert "inside" in proc.stderr
    assert (outer / "inner" / "x").read_bytes() == b"1"


@pytest.mark.parametrize(
    ("flag", "value", "words"),
    [("--chunk-size-mb", "0", "--chunk-size-mb"), ("--chunk-size-mb", "1000", "at most"),
     ("--concurrency", "-3", "--concurrency"), ("--concurrency", "9999", "--concurrency"),
     ("--chunk-size-mb", "abc", "not a valid float")],
)  # fmt: skip
def test_invalid_options(tmp_path: Path, flag: str, value: str, words: str) -> None:
    src = write(tmp_path / "s" / "a", b"1").parent
    proc = run_cli("sync", str(src), str(tmp_path / "d"), flag, value, check=ExitCode.USAGE)
    assert words in proc.stderr
    assert not (tmp_path / "d").exists()


def test_db_on_network_filesystem_is_refused(tmp_path: Path, monkeypatch) -> None:
    # The decision is made from statfs(2); pretend it said CIFS (0xFF534D42).
    import orbit_fast.fsinfo as fsinfo

    monkeypatch.setattr(fsinfo, "fs_type", lambda path: 0xFF534D42)
    src = write(tmp_path / "s" / "a", b"1").parent
    with pytest.raises(NetworkFilesystemError, match="network filesystem \\(cifs\\)"):
        orbit_fast.sync(str(src), str(tmp_path / "d"), db_path=str(tmp_path / "db" / "j.db"))
    assert not (tmp_path / "db" / "j.db").exists()


def test_local_filesystems_are_not_network() -> None:
    from orbit_fast.fsinfo import network_fs_name

    assert network_fs_name("/tmp") is None
    assert network_fs_name("/") is None


def test_second_run_on_same_db_is_refused(tmp_path: Path) -> None:
    src = write(tmp_path / "s" / "a", b"1").parent
    db = tmp_path / "j.db"
    holder = JobsDB.open(str(db))
    try:
        proc = run_cli("sync", str(src), str(tmp_path / "d"), "--db-path", str(db),
                       check=ExitCode.BUSY)  # fmt: skip
        assert f"pid {os.getpid()}" in proc.stderr and "--db-path" in proc.stderr
    finally:
        holder.close()
    run_cli("sync", str(src), str(tmp_path / "d"), "--db-path", str(db))


@needs_root
def test_unreadable_files_warn_continue_exit_1(tmp_path: Path, rng) -> None:
    src, dst = make_tree(tmp_path / "s", rng, files=20), tmp_path / "d"
    locked = write(src / "locked" / "secret.bin", b"s")
    locked.chmod(0)
    (src / "closed_dir").mkdir()
    write(src / "closed_dir" / "x", b"x")
    (src / "closed_dir").chmod(0)
    proc = subprocess.run([*NO_DAC, *ORBIT, "sync", str(src), str(dst), "--json"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == ExitCode.PARTIAL, proc.stderr
    summary = summary_of(proc.stdout)
    assert sorted(summary["skipped"]) == ["closed_dir", "locked/secret.bin"]
    assert summary["files_copied"] == 20
    locked.chmod(0o644)
    (src / "closed_dir").chmod(0o755)
    run_cli("sync", str(src), str(dst))
    assert_same_tree(src, dst)


@needs_root
def test_read_only_destination(tmp_path: Path) -> None:
    src = write(tmp_path / "s" / "a", b"1").parent
    dst = tmp_path / "ro"
    write(dst / "existing", b"keep")
    subprocess.run(["mount", "--bind", str(dst), str(dst)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(dst)], check=True)
        proc = run_cli("sync", str(src), str(dst), "--mirror", check=ExitCode.DESTINATION)
        assert "not writable" in proc.stderr
    finally:
        subprocess.run(["umount", str(dst)], check=True)
    assert (dst / "existing").read_bytes() == b"keep"


@needs_root
def test_disk_full_stops_cleanly_and_resumes(tmp_path: Path, rng) -> None:
    src, dst, db = tmp_path / "s", tmp_path / "small", tmp_path / "j.db"
    for i in range(6):
        write(src / f"f{i}.bin", rng.randbytes(1 << 20))
    write(src / "big.bin", rng.randbytes(5 << 20))
    dst.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(dst)], check=True)
    try:
        proc = run_cli("sync", str(src), str(dst), "--db-path", str(db), "--chunk-size-mb", "1",
                       check=ExitCode.DISK_FULL)  # fmt: skip
        assert "no space left" in proc.stderr and "run the same command again" in proc.stderr
        subprocess.run(["mount", "-o", "remount,size=64m", str(dst)], check=True)
        run_cli("sync", str(src), str(dst), "--db-path", str(db), "--chunk-size-mb", "1")
        assert_same_tree(src, dst)
        assert [p.name for p in dst.iterdir() if p.name.startswith(".")] == []
    finally:
        subprocess.run(["umount", str(dst)], check=True)


@pytest.mark.parametrize("url", ["s3://bucket/prefix", "smb://no-such-host.invalid/share/dir"])
def test_unreachable_remote_urls_are_errors_not_local_directories(tmp_path: Path, url) -> None:
    write(tmp_path / "s" / "f", b"x")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(ORBIT_RETRY_ATTEMPTS="1", AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
               AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_EC2_METADATA_DISABLED="true")
    proc = run_cli("sync", "--source", str(tmp_path / "s"), "--destination", url,
                   "--db-path", str(tmp_path / "j.db"), check=ExitCode.REMOTE, cwd=tmp_path,
                   env=env)  # fmt: skip
    assert ("no S3 credentials" in proc.stderr) if url.startswith("s3") else (
        "no-such-host.invalid" in proc.stderr)  # fmt: skip
    assert not (tmp_path / (url.split(":")[0] + ":")).exists()
