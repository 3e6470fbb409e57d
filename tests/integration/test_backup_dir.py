"""--backup-dir / --suffix between local trees: every replaced and deleted entry is found there
with its content; a kill -9 in the middle leaves each file at the destination or in the backup
directory (or both), never lost; a dry run lists what would be moved."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ORBIT, run_cli, summary_of, write


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _start(tmp_path: Path, n: int = 30, size: int = 64 * 1024) -> tuple[Path, Path, dict]:
    """A replica of an old tree, and the source now: every file changed, a third gone."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    for i in range(n):
        write(dst / f"d{i % 3}" / f"f{i:03}", os.urandom(size), mtime=1_700_000_000)
    old = _files(dst)
    for i in range(n):
        if i % 3 != 2:
            write(src / f"d{i % 3}" / f"f{i:03}", os.urandom(size), mtime=1_750_000_000)
    return src, dst, old


def test_replaced_and_deleted_entries_are_kept(tmp_path: Path):
    src, dst, old = _start(tmp_path)
    write(dst / "in-the-way", b"a file where the source has a directory")
    write(src / "in-the-way" / "x", b"x")
    old = _files(dst)
    proc = run_cli("sync", str(src), str(dst), "--mirror", "--backup-dir", ".old/{date}",
                   "--suffix", "~", "--json")  # fmt: skip
    summary = summary_of(proc.stdout)
    assert summary["files_backed_up"] == 20 + 1 + 1  # 20 replaced, d2 moved whole, the file
    (day,) = os.listdir(dst / ".old")
    assert day == time.strftime("%Y-%m-%d")
    kept = _files(dst / ".old" / day)
    for rel, data in old.items():
        name = rel if rel.startswith("d2/") else rel + "~"
        assert kept[name] == data, rel
    now = _files(dst)
    assert {k: v for k, v in now.items() if not k.startswith(".old/")} == _files(src)
    # The next mirror leaves the backup directory alone (it is not in the source).
    proc = run_cli("sync", str(src), str(dst), "--mirror", "--backup-dir", ".old/{date}",
                   "--json")  # fmt: skip
    assert summary_of(proc.stdout)["files_deleted"] == 0
    assert _files(dst / ".old" / day) == kept
    # Even with --delete-excluded.
    run_cli("sync", str(src), str(dst), "--mirror", "--delete-excluded", "--exclude", "*.tmp",
            "--backup-dir", ".old/{date}")  # fmt: skip
    assert _files(dst / ".old" / day) == kept


def test_a_dry_run_lists_what_would_be_moved(tmp_path: Path):
    src, dst, old = _start(tmp_path, n=6)
    proc = run_cli("sync", str(src), str(dst), "--mirror", "--backup-dir", str(tmp_path / "bk"),
                   "--dry-run")  # fmt: skip
    lines = [x.split() for x in proc.stdout.splitlines() if x.startswith(" ")]
    backed = sorted(name for action, name in lines if action == "backup")
    assert backed == sorted(["d0/f000", "d0/f003", "d1/f001", "d1/f004", "d2"])
    assert _files(dst) == old and not (tmp_path / "bk").exists()


def test_backup_dir_elsewhere_on_the_same_filesystem(tmp_path: Path):
    src, dst, old = _start(tmp_path, n=6)
    run_cli("sync", str(src), str(dst), "--mirror", "--backup-dir", str(tmp_path / "bk"))
    kept = _files(tmp_path / "bk")
    assert kept == {k: v for k, v in old.items()}


def test_backup_dir_on_another_filesystem_or_in_the_source_is_refused(tmp_path: Path):
    src, dst, _ = _start(tmp_path, n=3)
    proc = run_cli("sync", str(src), str(dst), "--backup-dir", str(src / "bk"), check=2)
    assert "inside the source" in proc.stderr
    if os.path.isdir("/dev/shm") and os.stat("/dev/shm").st_dev != os.stat(tmp_path).st_dev:
        proc = run_cli("sync", str(src), str(dst), "--backup-dir", "/dev/shm/orbit-test-bk",
                       check=2)  # fmt: skip
        assert "another filesystem" in proc.stderr
    proc = run_cli("sync", str(src), str(dst), "--backup-dir", "x/{when}", check=2)
    assert "unknown placeholder" in proc.stderr


@pytest.mark.parametrize("seed", [1, 2])
def test_kill_9_loses_nothing(tmp_path: Path, seed: int):
    rng = random.Random(seed)
    src, dst, old = _start(tmp_path, n=45, size=256 * 1024)
    args = ["sync", str(src), str(dst), "--mirror", "--backup-dir", str(tmp_path / "bk"),
            "--bwlimit", "4M", "-j", "2"]  # about 3 s of copying: killed somewhere inside
    env = dict(os.environ)
    proc = subprocess.Popen([*ORBIT, *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, env=env)
    time.sleep(rng.uniform(0.4, 3.0))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # Every old file is at the destination, or kept, or both.
    now, kept = _files(dst), _files(tmp_path / "bk") if (tmp_path / "bk").exists() else {}
    for rel, data in old.items():
        assert now.get(rel) == data or kept.get(rel) == data, rel
    # The rerun finishes the job; still nothing is lost.
    run_cli(*args[:-4])
    now, kept = _files(dst), _files(tmp_path / "bk")
    assert now == _files(src)
    for rel, data in old.items():
        assert kept.get(rel) == data, rel
