"""Effect of --chunk-size-mb (and --concurrency) on an initial local sync of the seeded tree.

Usage:  python bench/bench_chunk_size.py [--root /tmp/orbit-bench] [--sizes 1,2,4,8,16]
This is how the default block size (config.DEFAULT_CHUNK_SIZE_MB) was chosen; results go to
bench/results/ and docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sync import ORBIT, timed  # noqa: E402
from data import make_tree  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="/tmp/orbit-bench")
    ap.add_argument("--sizes", default="1,2,4,8,16")
    ap.add_argument("--concurrency", default="1,2")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument(
        "--dst-root",
        default=None,
        help="where destinations go (a tmpfs such as /dev/shm/obench takes the "
        "disk out of the measurement); default: --root",
    )
    args = ap.parse_args()
    root = Path(args.root)
    total = make_tree(root / "src")
    dst_root = Path(args.dst_root or args.root)
    dst_root.mkdir(parents=True, exist_ok=True)
    rows = []
    for conc in [int(c) for c in args.concurrency.split(",")]:
        for size in [float(s) for s in args.sizes.split(",")]:
            best = float("inf")
            for _ in range(args.runs):
                dst, db = dst_root / "dst-chunk", root / "chunk.db"
                shutil.rmtree(dst, ignore_errors=True)
                for suffix in ("", "-wal", "-shm", ".lock"):
                    Path(str(db) + suffix).unlink(missing_ok=True)
                subprocess.run(["sync"], check=True)
                dt, _ = timed([*ORBIT, "sync", str(root / "src"), str(dst), "--db-path", str(db),
                               "--fsync", "none", "--no-progress", "--chunk-size-mb", str(size),
                               "--concurrency", str(conc)])  # fmt: skip
                best = min(best, dt)
            rows.append({"concurrency": conc, "chunk_size_mb": size, "seconds": round(best, 3),
                         "mb_per_s": round(total / best / 1e6)})  # fmt: skip
            print(rows[-1], flush=True)
    shutil.rmtree(dst_root / "dst-chunk", ignore_errors=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(__file__).with_name("results") / f"chunk-size-{stamp}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"bench": "chunk_size", "bytes": total, "rows": rows}, indent=1))
    print("\n| concurrency | chunk_size_mb | initial sync | MB/s |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['concurrency']} | {r['chunk_size_mb']:g} | {r['seconds']:.2f} s "
              f"| {r['mb_per_s']} |")  # fmt: skip


if __name__ == "__main__":
    main()
