"""Before/after on one machine: the same orbit-fast command from two checkouts, alternating.

    git worktree add /tmp/before <commit>      # then copy orbit_fast/_native/*.so into it
    .venv/bin/python bench/ab_commits.py --before /tmp/before --runs 6 -- \\
        backup /tmp/orbit-bench/src /dev/shm/abrepo --codec lz4 --no-progress

Each run starts from a clean state (`--clean` paths are removed first; ORBIT_STATE_DIR is a
fresh directory) and uses the venv's `orbit-fast` with PYTHONPATH pointing at one checkout, so
only the code differs. Prints wall seconds and CPU seconds (user + system of the whole process
tree, workers included) per side: best and median. Alternation (ABBA...) spreads a noisy
minute of the shared machine over both sides; for a change that should not move the numbers,
compare the medians against the spread of each side (#14 used it: docs/performance.md).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORBIT = str(Path(sys.executable).with_name("orbit-fast"))


def one(checkout: Path, args: list[str], clean: list[str]) -> tuple[float, float]:
    for path in clean:
        shutil.rmtree(path, ignore_errors=True)
    state = tempfile.mkdtemp(prefix="orbit-ab-state-")
    env = {**os.environ, "PYTHONPATH": str(checkout), "ORBIT_STATE_DIR": state}
    t0 = time.perf_counter()
    proc = subprocess.Popen([ORBIT, *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)  # fmt: skip
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    shutil.rmtree(state, ignore_errors=True)
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):
        raise SystemExit(f"{checkout}: exit {code}: {proc.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True, type=Path, help="checkout of the old commit")
    ap.add_argument("--after", type=Path, default=ROOT, help="default: this checkout")
    ap.add_argument("--runs", type=int, default=6)
    ap.add_argument("--clean", action="append", default=[], help="removed before each run")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- then orbit-fast's arguments")
    a = ap.parse_args()
    args = a.command[1:] if a.command[:1] == ["--"] else a.command
    sides = {"before": a.before, "after": a.after}
    got: dict[str, list[tuple[float, float]]] = {k: [] for k in sides}
    for i in range(a.runs):
        for name in ("before", "after") if i % 2 == 0 else ("after", "before"):
            got[name].append(one(sides[name], args, a.clean))
    for name, runs in got.items():
        walls, cpus = sorted(w for w, _ in runs), sorted(c for _, c in runs)
        print(f"{name:6}: wall best {walls[0]:.2f} s, median {walls[len(walls) // 2]:.2f} s; "
              f"cpu best {cpus[0]:.2f} s, median {cpus[len(cpus) // 2]:.2f} s "
              f"(runs: {', '.join(f'{w:.2f}' for w, _ in runs)})")


if __name__ == "__main__":
    main()
