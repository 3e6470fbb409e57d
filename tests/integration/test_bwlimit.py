"""--bwlimit: one limit for every worker of a run, measured from the run's own progress events;
a timetable's boundary crossed during a run changes the rate (workers/throttle.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.conftest import json_events, run_cli, summary_of

MIB = 1 << 20


def _files(root: Path, n: int, size: int) -> None:
    root.mkdir(parents=True)
    for i in range(n):
        (root / f"f{i}").write_bytes(os.urandom(size))


def _rate(events: list[dict], t0: float, t1: float) -> float:
    """MiB/s between the progress events nearest the times t0 and t1 (seconds into the run)."""
    prog = [e for e in events if e["event"] == "progress"]
    a = min(prog, key=lambda e: abs(e["elapsed_s"] - t0))
    b = min(prog, key=lambda e: abs(e["elapsed_s"] - t1))
    return (b["bytes_done"] - a["bytes_done"]) / MIB / (b["elapsed_s"] - a["elapsed_s"])


def test_one_limit_across_four_workers(tmp_path: Path):
    src = tmp_path / "src"
    _files(src, 6, 16 * MIB)
    proc = run_cli("sync", str(src), str(tmp_path / "dst"), "--bwlimit", "20M", "-j", "4",
                   "--json")  # fmt: skip
    events = json_events(proc.stdout)
    assert summary_of(proc.stdout)["bytes_copied"] == 96 * MIB
    prog = [e for e in events if e["event"] == "progress" and 0 < e["bytes_done"] < 96 * MIB]
    first, last = prog[0], prog[-1]
    rate = _rate(events, first["elapsed_s"], last["elapsed_s"])
    assert 18.0 <= rate <= 22.0, f"{rate:.1f} MiB/s against a 20 MiB/s limit"
    # Four workers without a shared limit would each have taken 20 MiB/s.
    assert last["elapsed_s"] - first["elapsed_s"] > 3.5


def test_a_timetable_boundary_changes_the_rate_during_a_run(tmp_path: Path):
    src = tmp_path / "src"
    _files(src, 24, 4 * MIB)
    now = time.time()
    before, after = time.localtime(now - 60), time.localtime(now + 4)
    table = (f"{time.strftime('%H:%M:%S', before)},8M "
             f"{time.strftime('%H:%M:%S', after)},32M")  # fmt: skip
    proc = run_cli("sync", str(src), str(tmp_path / "dst"), "--bwlimit", table, "-j", "2",
                   "--chunk-size-mb", "1", "--json")  # fmt: skip
    events = json_events(proc.stdout)
    # When the boundary came, in the run's own seconds (its start is taken from its end).
    ended = time.time()
    boundary = now + 4 - (ended - summary_of(proc.stdout)["elapsed_s"])
    # Well before the boundary: its time is known only to a few tenths of a second here (the
    # run's start is taken from its end).
    slow = _rate(events, 0.5, boundary - 1.0)
    end = max(e["elapsed_s"] for e in events if e["event"] == "progress" and e["bytes_done"]
              < 96 * MIB)  # fmt: skip
    fast = _rate(events, boundary + 0.6, end)
    assert 6.0 <= slow <= 10.5, f"{slow:.1f} MiB/s before the boundary (8 MiB/s)"
    assert fast >= 2.5 * slow, f"{fast:.1f} MiB/s after the boundary (32 MiB/s)"


def test_bad_bwlimit_is_refused(tmp_path: Path):
    proc = run_cli("sync", str(tmp_path), str(tmp_path / "d"), "--bwlimit", "08:00,fast",
                   check=2)  # fmt: skip
    assert "--bwlimit" in proc.stderr
