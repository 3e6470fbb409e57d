"""Crash safety, tested by crashing: kill -9 of the whole process group at moments spread over
a run, then the same command again. Also SIGINT/SIGTERM checkpoints and a killed worker."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from orbit_fast.workers.ring import SHM_PREFIX
from tests.conftest import (
    ORBIT,
    assert_same_tree,
    child_pids,
    json_events,
    run_cli,
    summary_of,
    temp_files,
)

pytestmark = pytest.mark.integration

TRIALS = int(os.environ.get("ORBIT_CRASH_TRIALS", "20"))
BIG_MIB = int(os.environ.get("ORBIT_CRASH_BIG_MIB", "256"))


def seeded_tree(root: Path, rng, small: int = 2000, big: int = 2) -> int:
    """Thousands of small files in nested dirs and `big` files of BIG_MIB MiB (distinct
    blocks, a zero run for holes). Returns the total size."""
    total = 0
    for i in range(small):
        p = root / f"d{i % 17}" / f"e{i % 5}" / f"s{i}.dat"
        p.parent.mkdir(parents=True, exist_ok=True)
        data = rng.randbytes(rng.randint(1, 16 << 10))
        p.write_bytes(data)
        total += len(data)
    base = rng.randbytes(1 << 20)
    for b in range(big):
        with open(root / f"big{b}.bin", "wb") as f:
            for mib in range(BIG_MIB):
                f.write(
                    bytes(1 << 20)
                    if 10 <= mib < 14
                    else mib.to_bytes(4, "little") + b.to_bytes(4, "little") + base[8:]
                )
        total += BIG_MIB << 20
    return total


def shm_of(pids: set[int]) -> list[str]:
    return [
        n
        for n in os.listdir("/dev/shm")
        if n.startswith(SHM_PREFIX) and int(n[len(SHM_PREFIX) :].split("-")[0]) in pids
    ]


def committed_resume_bytes(db: Path, src: Path, dst: Path) -> int:
    """Bytes of checkpointed blocks that a rerun must verify instead of copying: blocks of
    partial files that are not already complete at the destination."""
    con = sqlite3.connect(db)  # the coordinator is dead: no other connection exists
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        if not con.execute("SELECT 1 FROM sqlite_master WHERE name='uploads'").fetchone():
            return 0  # killed before the schema was committed
        # The resume records of copies in blocks: src_sig "size:mtime_ns", block i is part i+1.
        rows = [(path, block_size, int(sig.split(":")[0]), count, last - 1)
                for path, block_size, sig, count, last in con.execute(
                    "SELECT u.path, u.part_bytes, u.src_sig, count(p.part), max(p.part) "
                    "FROM uploads u JOIN upload_parts p USING (job_id, path) "
                    "GROUP BY u.job_id, u.path")]  # fmt: skip
    finally:
        con.close()
    total = 0
    for path, block_size, size, count, last in rows:
        rel = os.fsdecode(path)
        s, d = src / rel, dst / rel
        if (
            d.exists()
            and d.stat().st_size == s.stat().st_size
            and d.stat().st_mtime_ns == s.stat().st_mtime_ns
        ):
            continue
        tail = size - last * block_size  # the last block may be short
        total += (
            (count - 1) * block_size + min(tail, block_size)
            if last == size // block_size
            else count * block_size
        )
    return total


@pytest.mark.slow
def test_kill_9_at_random_moments_then_rerun(tmp_path: Path, rng) -> None:
    src, dst, db = tmp_path / "src", tmp_path / "dst", tmp_path / "jobs.db"
    total = seeded_tree(src, rng)
    args = ["sync", str(src), str(dst), "--db-path", str(db), "--json", "--chunk-size-mb", "4"]
    t0 = time.monotonic()
    run_cli(*args)
    full_s = time.monotonic() - t0
    killed_pids: set[int] = set()
    for trial in range(TRIALS):
        subprocess.run(["rm", "-rf", str(dst)], check=True)
        db.unlink(missing_ok=True)
        at = full_s * (trial + rng.random()) / TRIALS  # spread over the whole run
        proc = subprocess.Popen(
            [*ORBIT, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        time.sleep(at)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        killed_pids.add(proc.pid)
        expect_resumed = committed_resume_bytes(db, src, dst)  # also: integrity_check == ok
        rerun = run_cli(*args)
        s = summary_of(rerun.stdout)
        unchanged = s["files_unchanged"]
        # Every checkpointed block is verified, none is copied again ...
        assert s["bytes_resumed"] == expect_resumed, (trial, at, s)
        # ... and the bytes copied are exactly what was missing.
        assert s["bytes_total"] == s["bytes_copied"] + s["bytes_resumed"]
        assert s["files_copied"] + unchanged == s["files_scanned"] == 2002
        assert temp_files(dst) == [], (trial, temp_files(dst))
        assert_same_tree(src, dst)
        con = sqlite3.connect(db)
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        con.close()
    assert shm_of(killed_pids) == []  # the reruns reaped the segments of killed coordinators
    assert total > 2 * BIG_MIB << 20


def test_kill_9_inside_a_large_file_resumes_from_its_checkpoint(tmp_path: Path, rng) -> None:
    """The random trials above land inside a big file after a checkpoint only by chance; this
    one always does: kill -9 as soon as the jobs DB shows 64 checkpointed blocks (of 1,024)."""
    src, dst, db = tmp_path / "src", tmp_path / "dst", tmp_path / "jobs.db"
    seeded_tree(src, rng, small=10, big=1)
    args = ["sync", str(src), str(dst), "--db-path", str(db), "--json", "--chunk-size-mb",
            "0.25", "--concurrency", "1"]  # fmt: skip
    proc = subprocess.Popen([*ORBIT, *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while _checkpointed_blocks(db) < 64:
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint seen"
        time.sleep(0.002)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    expect = committed_resume_bytes(db, src, dst)
    assert expect >= 64 << 18
    s = summary_of(run_cli(*args).stdout)
    assert s["bytes_resumed"] == expect
    assert s["bytes_total"] == s["bytes_copied"] + s["bytes_resumed"]
    assert_same_tree(src, dst)
    assert temp_files(dst) == []


def _checkpointed_blocks(db: Path) -> int:
    """Blocks committed so far, read beside the running coordinator (WAL readers never block
    its writes)."""
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.1)
        try:
            return int(con.execute("SELECT count(*) FROM upload_parts").fetchone()[0])
        finally:
            con.close()
    except sqlite3.OperationalError:  # not created yet, or schema not committed yet
        return 0


def _json_sync(src: Path, dst: Path, db: Path, concurrency: int) -> list[str]:
    """A sync with 1 MiB blocks, so that a 256 MiB file takes long enough to interrupt."""
    return ["sync", str(src), str(dst), "--db-path", str(db), "--json", "--chunk-size-mb", "1",
            "--concurrency", str(concurrency)]  # fmt: skip


def _start(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*ORBIT, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _wait_for_bytes(proc: subprocess.Popen[str], lines: list[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if '"progress"' in line and '"bytes_done":0,' not in line:
            return
    raise AssertionError(f"run ended before copying: {lines[-3:]}")


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_checkpoints_and_exits(tmp_path: Path, rng, sig: int, code: int) -> None:
    src, dst, db = tmp_path / "src", tmp_path / "dst", tmp_path / "jobs.db"
    seeded_tree(src, rng, small=50, big=1)
    args = _json_sync(src, dst, db, concurrency=1)
    proc = _start(args)
    lines: list[str] = []
    _wait_for_bytes(proc, lines)
    os.killpg(proc.pid, sig)  # like Ctrl-C in a terminal: the whole group gets it
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    events = json_events("".join(lines) + out)
    assert events[-2]["event"] == "error" and "resume" in events[-2]["message"]
    assert shm_of({proc.pid}) == []
    runs = sqlite3.connect(db).execute("SELECT state, exit_code FROM runs").fetchall()
    assert runs == [("interrupted", code)]
    rerun = run_cli(*args)
    assert summary_of(rerun.stdout)["bytes_resumed"] > 0
    assert_same_tree(src, dst)


def test_killed_worker_is_replaced_and_its_task_requeued(tmp_path: Path, rng) -> None:
    src, dst, db = tmp_path / "src", tmp_path / "dst", tmp_path / "jobs.db"
    seeded_tree(src, rng, small=20, big=1)
    proc = _start(_json_sync(src, dst, db, concurrency=2))
    lines: list[str] = []
    _wait_for_bytes(proc, lines)
    workers = child_pids(proc.pid, "spawn_main")
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    events = json_events("".join(lines) + out)
    assert any(e["event"] == "warning" and e["msgid"] == "worker_died" for e in events)
    assert_same_tree(src, dst)
