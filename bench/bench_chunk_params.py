"""Choose chunk-size defaults: index size vs deduplication after a small change (issue #3).

Usage:  .venv/bin/python bench/bench_chunk_params.py [--root /tmp/orbit-bench]
For each (min, avg, max), every file of the seeded 2 GB tree (bench/data.py) is chunked on
its own, as backup does. Reported: unique chunks (= universe index entries; at <= 100 bytes an
entry, #4) and the bytes that a 1% mutation adds. The mutation inserts 1-16 random bytes at
a random offset in 1% of the files, which shifts everything after it. Chunk identity is
xxh3-128 here (speed; the store uses keyed BLAKE3, with the same equalities).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import xxhash

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data import make_tree  # noqa: E402

from orbit_fast.chunking import ChunkerParams, cut_points, make_chunker  # noqa: E402

GRID = [(16 << 10, 64 << 10, 256 << 10), (64 << 10, 256 << 10, 1 << 20),
        (256 << 10, 1 << 20, 4 << 20), (512 << 10, 2 << 20, 8 << 20)]  # fmt: skip


def chunks(params: ChunkerParams, data: bytes) -> list[tuple[bytes, int]]:
    view, start, out = memoryview(data), 0, []
    for end in [*cut_points(make_chunker(params), data), len(data)]:
        if end > start:
            out.append((xxhash.xxh3_128_digest(view[start:end]), end - start))
        start = end
    return out


def mutate(data: bytes, rng: random.Random) -> bytes:
    at = rng.randrange(len(data) + 1)
    return data[:at] + rng.randbytes(rng.randint(1, 16)) + data[at:]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="/tmp/orbit-bench")
    args = ap.parse_args()
    src = Path(args.root) / "src"
    total = make_tree(src)
    files = sorted(str(p) for p in src.rglob("*") if p.is_file() and p.name != ".complete")
    rng = random.Random(42)
    mutated = set(rng.sample(range(len(files)), max(1, len(files) // 100)))
    rows = []
    for mn, av, mx in GRID:
        params = ChunkerParams(min_size=mn, avg_size=av, max_size=mx)
        index: dict[bytes, int] = {}
        added = 0
        t0 = time.perf_counter()
        mrng = random.Random(7)
        for i, path in enumerate(files):
            data = Path(path).read_bytes()
            for digest, size in chunks(params, data):
                index.setdefault(digest, size)
            if i in mutated:
                for digest, size in chunks(params, mutate(data, mrng)):
                    if digest not in index:
                        added += size
                        index[digest] = size
        stored = sum(index.values())
        rows.append({"min": mn, "avg": av, "max": mx, "index_entries": len(index),
                     "stored_bytes": stored, "added_by_1pct_mutation": added,
                     "seconds": round(time.perf_counter() - t0, 1)})  # fmt: skip
        print(rows[-1], flush=True)
    out = (
        Path(__file__).with_name("results") / f"chunk-params-{time.strftime('%Y%m%d-%H%M%S')}.json"
    )
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"bench": "chunk_params", "tree_bytes": total,
                               "files": len(files), "mutated_files": len(mutated),
                               "rows": rows}, indent=1))  # fmt: skip
    print(f"\n{len(files)} files, {total / 1e9:.2f} GB, {len(mutated)} mutated\n")
    print(
        "| min / avg / max | index entries | index at 100 B/entry | stored | added by 1% mutation |"
    )
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['min'] >> 10} K / {r['avg'] >> 10} K / {r['max'] >> 10} K "
            f"| {r['index_entries']:,} | {r['index_entries'] * 100 / 1e6:.1f} MB "
            f"| {r['stored_bytes'] / 1e6:,.0f} MB | {r['added_by_1pct_mutation'] / 1e6:.1f} MB |"
        )


if __name__ == "__main__":
    os.environ.setdefault("ORBIT_KERNEL", "native")
    main()
