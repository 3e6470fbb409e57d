"""How closely --bwlimit holds: the rate of a local copy of 6 x 16 MiB files under a limit, as
the run's own progress events show it (first to last event with bytes in flight), and over the
whole run (worker start-up included).

Usage:  python bench/bench_bwlimit.py [--root /tmp/orbit-bwlimit] [--limits 20M:4,20M:1,50M:4]
Numbers go to docs/sync.md ("Bandwidth").
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sync import ORBIT  # noqa: E402

MIB = 1 << 20


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="/tmp/orbit-bwlimit")
    ap.add_argument("--limits", default="20M:4,20M:1,50M:4", help="LIMIT:WORKERS,...")
    ap.add_argument("--runs", type=int, default=2)
    a = ap.parse_args()
    root = Path(a.root)
    src = root / "src"
    if not src.exists():
        src.mkdir(parents=True)
        for i in range(6):
            (src / f"f{i}").write_bytes(os.urandom(16 * MIB))
    total = 96 * MIB
    for spec in a.limits.split(","):
        limit, workers = spec.rsplit(":", 1)
        for _ in range(a.runs):
            for d in ("dst", "state"):
                shutil.rmtree(root / d, ignore_errors=True)
            env = dict(os.environ, ORBIT_STATE_DIR=str(root / "state"))
            out = subprocess.run([*ORBIT, "sync", str(src), str(root / "dst"), "--bwlimit",
                                  limit, "-j", workers, "--json"], capture_output=True,
                                 text=True, env=env, check=True).stdout  # fmt: skip
            ev = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
            prog = [e for e in ev if e["event"] == "progress" and 0 < e["bytes_done"] < total]
            first, last = prog[0], prog[-1]
            rate = ((last["bytes_done"] - first["bytes_done"]) / MIB
                    / (last["elapsed_s"] - first["elapsed_s"]))  # fmt: skip
            s = next(e for e in ev if e["event"] == "summary")
            print(f"--bwlimit {limit} -j {workers}: {rate:.2f} MiB/s between events, "
                  f"{s['bytes_copied'] / MIB / s['elapsed_s']:.2f} MiB/s over the whole run "
                  f"({s['elapsed_s']:.2f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
