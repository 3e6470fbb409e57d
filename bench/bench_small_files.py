"""Small files at rsync's pace (issue #16): initial local sync of many 0-4 KiB files.

Usage:  python bench/bench_small_files.py [--root /tmp/orbit-small] [--files 50000] [--runs 3]
        [--drop-caches] [--only orbit-none,rsync] [--before /tmp/before]

The tree: `--files` files of 0-4 KiB (seeded), 100 per directory, in two directory levels.
Each round runs every tool into a fresh destination on the same filesystem, interleaved, and
times the tool followed by `sync(1)` (so each side's data reaches the disk: orbit-fast
`--fsync none` and `rsync -a` then have the same durability; the default `--fsync batch` ends
with a syncfs of its own). With `--drop-caches` the page cache is dropped before each copy
(root only), as the issue measured. Reports wall (tool + sync) and CPU (user + sys of the
tool and its children, wait4), medians, and orbit-fast's jobs DB bytes per file copied.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data import drop_caches  # noqa: E402
from product import ORBIT, commit, compile_bytecode  # noqa: E402

PER_DIR = 100


def make_small_tree(root: Path, files: int, seed: int = 16) -> int:
    """`files` files of 0-4 KiB, PER_DIR per directory; skipped if a marker says complete."""
    marker = root / ".complete"
    if marker.exists() and marker.read_text().split()[0] == str(files):
        return int(marker.read_text().split()[1])
    shutil.rmtree(root, ignore_errors=True)
    rng = random.Random(seed)
    total = 0
    ndirs = -(-files // PER_DIR)
    for i in range(files):
        k = i // PER_DIR
        d = root / f"d{k // 32:03d}" / f"e{k % 32:02d}"
        if i % PER_DIR == 0:
            d.mkdir(parents=True, exist_ok=True)
        data = rng.randbytes(rng.randint(0, 4096))
        (d / f"f{i:06d}.dat").write_bytes(data)
        total += len(data)
    marker.write_text(f"{files} {total} {ndirs}")
    return total


def timed(cmd: list[str]) -> tuple[float, float, float]:
    """(tool wall s, tool CPU s, wall of the `sync` that follows)."""
    t0 = time.perf_counter()
    # cwd "/": `python -m orbit_fast` puts the cwd first on sys.path (--before needs its own)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd="/")
    _, status, usage = os.wait4(proc.pid, 0)
    t1 = time.perf_counter()
    code = os.waitstatus_to_exitcode(status)
    assert proc.stderr is not None
    if code != 0:
        raise SystemExit(f"{cmd[:3]} failed ({code}): {proc.stderr.read()[-2000:]!r}")
    subprocess.run(["sync"], check=True)
    t2 = time.perf_counter()
    return t1 - t0, usage.ru_utime + usage.ru_stime, t2 - t1


BEFORE = [""]  # --before: another checkout of orbit_fast, run by this interpreter


def tools(src: Path, dst: Path, db: Path) -> dict[str, list[str]]:
    args = ["sync", str(src), str(dst), "--db-path", str(db), "--no-progress"]
    out = {
        "orbit-none": [ORBIT, *args, "--fsync", "none"],
        "orbit-default": [ORBIT, *args],
        "rsync": ["rsync", "-a", f"{src}/", f"{dst}/"],
    }
    if BEFORE[0]:
        before = ["env", f"PYTHONPATH={BEFORE[0]}", sys.executable, "-m", "orbit_fast", *args]
        out["before-none"] = [*before, "--fsync", "none"]
        out["before-default"] = before
    return out


def db_bytes(db: Path) -> int:
    """Bytes the jobs DB holds (pages in use, WAL folded in: the file after its last close)."""
    return sum(os.path.getsize(str(db) + s) for s in ("", "-wal")
               if os.path.exists(str(db) + s))  # fmt: skip


def empty_db_bytes(root: Path, src: Path) -> int:
    """A run with nothing to copy into a new DB: the fixed cost (schema, job and run rows)."""
    empty, dst, db = root / "empty-src", root / "empty-dst", root / "empty.db"
    for p in (empty, dst):
        shutil.rmtree(p, ignore_errors=True)
    empty.mkdir()
    for s in ("", "-wal", "-shm", ".lock"):
        Path(str(db) + s).unlink(missing_ok=True)
    subprocess.run(tools(empty, dst, db)["orbit-none"], check=True, stdout=subprocess.DEVNULL)
    return db_bytes(db)


def table_bytes(db: Path) -> dict[str, int]:
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall()
    except sqlite3.OperationalError:  # no dbstat in this SQLite
        rows = []
    con.close()
    return {str(n): int(b) for n, b in rows}


def main() -> None:
    compile_bytecode()
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="/tmp/orbit-small")
    ap.add_argument("--files", type=int, default=50_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--drop-caches", action="store_true")
    ap.add_argument("--only", default="", help="comma-separated tool names")
    ap.add_argument("--before", default="",
                    help="a worktree of an earlier commit (with the native modules copied "
                    "in): also times it, as before-none and before-default")  # fmt: skip
    args = ap.parse_args()
    BEFORE[0] = args.before
    root = Path(args.root)
    src = root / f"src{args.files}"
    total = make_small_tree(src, args.files)
    names = [n for n in tools(src, root, root) if not args.only or n in args.only.split(",")]
    base = empty_db_bytes(root, src)
    res: dict[str, dict[str, list[float]]] = {n: {"wall": [], "cpu": [], "sync": []}
                                              for n in names}  # fmt: skip
    dbinfo: dict[str, object] = {}
    for run in range(args.runs):
        for name in names:
            dst, db = root / f"dst-{name}", root / f"{name}.db"
            shutil.rmtree(dst, ignore_errors=True)
            for s in ("", "-wal", "-shm", ".lock"):
                Path(str(db) + s).unlink(missing_ok=True)
            subprocess.run(["sync"], check=True)
            if args.drop_caches and not drop_caches():
                raise SystemExit("--drop-caches needs root")
            wall, cpu, sync_s = timed(tools(src, dst, db)[name])
            r = res[name]
            r["wall"].append(round(wall + sync_s, 3))
            r["cpu"].append(round(cpu, 3))
            r["sync"].append(round(sync_s, 3))
            extra = ""
            if name.startswith("orbit"):
                grown = db_bytes(db) - base
                dbinfo = {"bytes": db_bytes(db), "empty": base,
                          "per_file": round(grown / args.files, 1), "tables": table_bytes(db)}
                extra = f", jobs DB +{grown} B ({grown / args.files:.1f} B/file)"
            print(f"run {run}: {name}: {wall:.2f} s + sync {sync_s:.2f} s, CPU {cpu:.2f} s"
                  f"{extra}", flush=True)  # fmt: skip
            shutil.rmtree(dst, ignore_errors=True)
    print(f"\n{args.files} files, {total / 1e6:.1f} MB, medians of {args.runs}"
          f"{', page cache dropped' if args.drop_caches else ''}\n")
    print("| tool | wall (tool + sync) | CPU | runs |")
    print("|---|---|---|---|")
    for name, r in res.items():
        print(f"| {name} | {statistics.median(r['wall']):.2f} s | "
              f"{statistics.median(r['cpu']):.2f} s | "
              f"{' / '.join(f'{w:.2f}' for w in r['wall'])} |")  # fmt: skip
    if dbinfo:
        print(f"\njobs DB: {dbinfo}")
    out = {"bench": "small_files", "files": args.files, "bytes": total, "runs": args.runs,
           "drop_caches": args.drop_caches, "git": commit(), "results": res, "jobs_db": dbinfo}
    Path(__file__).with_name("results").mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (Path(__file__).with_name("results") / f"small-files-{stamp}.json").write_text(
        json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
