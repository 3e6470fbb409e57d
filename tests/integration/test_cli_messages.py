"""What the CLI says, as an operator reads it (issue #18's list): each corrected message or exit
code shown here."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from orbit_fast.errors import ExitCode
from tests.conftest import ORBIT, REQUIRE_SERVERS, run_cli, write


def _tree(root: Path, n: int = 5) -> Path:
    for i in range(n):
        write(root / f"f{i}", os.urandom(1000))
    return root


def test_the_unknown_snapshot_hint_is_a_command_that_works(tmp_path: Path):
    src, repo = _tree(tmp_path / "s"), tmp_path / "repo"
    run_cli("backup", str(src), str(repo))
    proc = run_cli("restore", "-r", str(repo), "0badc0de", "--target", str(tmp_path / "o"),
                   check=2)  # fmt: skip
    hint = proc.stderr.split("`")[1]
    assert hint == f"orbit-fast snapshots -r {repo}"
    run_cli(*hint.split()[1:])  # the hint runs


def test_a_source_inside_its_destination_is_named_so(tmp_path: Path):
    dst = tmp_path / "d"
    _tree(dst / "inner")
    proc = run_cli("sync", str(dst / "inner"), str(dst), check=ExitCode.DESTINATION)
    assert "does not contain the source" in proc.stderr
    assert "outside the source" not in proc.stderr


def test_concurrency_0_is_refused_with_the_range(tmp_path: Path):
    for cmd in (["sync", str(_tree(tmp_path / "s")), str(tmp_path / "d")],
                ["backup", str(tmp_path / "s"), str(tmp_path / "r")]):  # fmt: skip
        proc = run_cli(*cmd, "-j", "0", check=2)
        assert "1<=x<=256" in proc.stderr


def test_help_lists_the_exit_codes_there_are_and_h_works_everywhere():
    out = run_cli("-h").stdout
    assert "3-22 specific errors" in out
    proc = subprocess.run([*ORBIT[:1], "-c", "from orbit_fast.cli.hub_cmd import server_main; "
                           "server_main()", "-h"], capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0 and "Usage: orbit-server" in proc.stdout


def test_the_secret_message_names_the_env_file_given(tmp_path: Path):
    env = tmp_path / "hub.env"
    env.write_text("ORBIT_AUTH_SECRET=your-secret-key-here\n")
    env.chmod(0o600)
    clean = {k: v for k, v in os.environ.items() if k != "ORBIT_AUTH_SECRET"}
    proc = subprocess.run([*ORBIT[:1], "-c", "from orbit_fast.cli.hub_cmd import server_main; "
                           "server_main()", "--env-file", str(env)], capture_output=True,
                          text=True, env=clean, timeout=60)  # fmt: skip
    assert proc.returncode == 2
    assert f"in the env file ({env})" in proc.stderr


def test_summaries_count_in_words_and_binary_units(tmp_path: Path):
    src = tmp_path / "s"
    write(src / "one", b"x" * 3000)
    out = run_cli("sync", str(src), str(tmp_path / "d")).stdout
    assert out.startswith("copied 1 file (2.9 KiB), 0 unchanged, 0 deleted, 0 dirs and 0 links")
    out = run_cli("bench", "--size-mb", "1", "--rounds", "1").stdout
    assert "MiB/s" in out and "MB/s" not in out


def test_json_into_a_closed_pipe_stops_the_run_with_141(tmp_path: Path):
    src = tmp_path / "s"
    for i in range(3000):
        write(src / f"d{i % 30}" / f"f{i}", b"x")
    env = dict(os.environ, ORBIT_STATE_DIR=str(tmp_path / "state"))
    proc = subprocess.run(f"{' '.join(ORBIT)} sync {src} {tmp_path / 'd'} --json | head -1",
                          shell=True, capture_output=True, text=True, env=env,
                          executable="/bin/bash")  # fmt: skip
    status = subprocess.run(f"{' '.join(ORBIT)} sync {src} {tmp_path / 'd2'} --json | head -1 "
                            "> /dev/null; echo ${PIPESTATUS[0]}", shell=True,
                            capture_output=True, text=True, env=env,
                            executable="/bin/bash")  # fmt: skip
    assert status.stdout.strip() == "141", status.stderr
    assert "reader went away" in status.stderr and "run the same command again" in status.stderr
    assert proc.stdout.startswith('{"event":"start"')
    # The rerun finishes what the stopped run left.
    run_cli("sync", str(src), str(tmp_path / "d2"))
    assert sum(1 for _ in (tmp_path / "d2").rglob("f*")) == 3000


def test_a_failed_sync_does_not_read_as_a_success(tmp_path: Path):
    if os.geteuid() != 0:
        if REQUIRE_SERVERS:
            pytest.fail("mounting a tmpfs needs root")
        pytest.skip("mounting a tmpfs needs root")
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(small)], check=True)
    try:
        src = tmp_path / "s"
        write(src / "a", b"a" * 1000)
        write(src / "big", os.urandom(2 << 20))
        proc = run_cli("sync", str(src), str(small / "d"), "-j", "1", check=ExitCode.DISK_FULL)
        assert proc.stdout.startswith("before it stopped, copied ")
        assert "did not finish (exit code 7)" in proc.stdout
        assert "no space left" in proc.stderr
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_a_damaged_file_is_not_counted_as_restored(tmp_path: Path):
    src, repo = tmp_path / "s", tmp_path / "repo"
    write(src / "a", os.urandom(300_000))
    run_cli("backup", str(src), str(repo))
    first = {p.name for p in repo.rglob("packs/*/*")}
    write(src / "b", os.urandom(500_000))
    run_cli("backup", str(src), str(repo))
    for pack in repo.rglob("packs/*/*"):
        if pack.name not in first:  # b's data, at the start of the second pack
            with open(pack, "r+b") as f:
                f.seek(2000)
                f.write(b"X" * 16)
    proc = run_cli("restore", "-r", str(repo), "latest", "--target", str(tmp_path / "o"),
                   check=ExitCode.AUTHENTICATION)  # fmt: skip
    assert proc.stdout.startswith("restored 1 file, 0 already in place (293.0 KiB)")
    assert "1 entry could not be restored" in proc.stderr
