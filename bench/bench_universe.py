"""The universe index at scale (#4): batched lookups and inserts per second, disk per entry.

    .venv/bin/python bench/bench_universe.py [--entries 10000000] [--dir /tmp/orbit-bench/univ]

Fills an index with `entries` random chunk ids in packs of 2,000 (one journal fsync per pack,
as a backup does), checkpoints, reopens, then measures at full size: inserts of 200k more ids,
lookups of 1M ids (half hits, half misses) in batches of 1,000, and the bytes on disk per entry.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from orbit_fast.index.universe import RECORD, Universe  # noqa: E402

PACK = 2000


def rows(rng: np.random.Generator, n: int) -> np.ndarray:
    r = np.zeros(n, RECORD)
    r["id"] = np.frombuffer(rng.bytes(32 * n), "V32")
    r["offset"] = np.arange(n) * 1000
    r["stored"] = 900
    r["raw"] = 1000
    return r


def fill(u: Universe, rng: np.random.Generator, n: int, repo: str) -> float:
    t0 = time.perf_counter()
    for i in range(0, n, PACK):
        u.add_pack(repo, rng.bytes(32), rows(rng, min(PACK, n - i)))
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=10_000_000)
    ap.add_argument("--dir", default="/tmp/orbit-bench/univ")
    a = ap.parse_args()
    shutil.rmtree(a.dir, ignore_errors=True)
    os.makedirs(a.dir)
    path = os.path.join(a.dir, "universe.db")
    rng = np.random.default_rng(4)
    u = Universe.open(path)
    t0 = time.perf_counter()
    fill_rate = fill(u, rng, a.entries, "bench-repo")
    t1 = time.perf_counter()
    u.checkpoint()
    ckpt_s = time.perf_counter() - t1
    known = u.records()["id"][rng.integers(0, a.entries, 500_000)].tobytes()
    u.close(checkpoint=False)
    t2 = time.perf_counter()
    u = Universe.open(path)
    open_s = time.perf_counter() - t2
    probe = np.frombuffer(known + rng.bytes(32 * 500_000), "V32").copy()
    rng.shuffle(probe)
    probe_b = probe.tobytes()
    t3 = time.perf_counter()
    hits = 0
    for i in range(0, len(probe_b), 32 * 1000):
        rows = np.frombuffer(u.lookup(probe_b[i : i + 32 * 1000]), np.uint32)
        hits += int(np.count_nonzero(rows[0::4]))
    lookup_rate = len(probe) / (time.perf_counter() - t3)
    insert_rate = fill(u, rng, 200_000, "bench-repo")
    u.close(checkpoint=False)
    disk = sum(os.path.getsize(os.path.join(a.dir, f)) for f in os.listdir(a.dir))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"entries           {a.entries + 200_000:,}")
    print(f"fill              {fill_rate:,.0f} ids/s ({t1 - t0:.1f} s, one fsync per {PACK})")
    print(f"checkpoint        {ckpt_s:.1f} s;  reopen {open_s * 1000:.0f} ms")
    print(f"lookups (batched) {lookup_rate:,.0f} ids/s  (hits {hits:,} of {len(probe):,})")
    print(f"inserts at size   {insert_rate:,.0f} ids/s")
    print(f"disk per entry    {disk / (a.entries + 200_000):.1f} bytes ({disk / 1e6:,.0f} MB)")
    print(f"peak RSS          {rss / 1e6:,.0f} MB")


if __name__ == "__main__":
    main()
