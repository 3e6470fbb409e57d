"""Deterministic corpora for the benchmarks: the seeded ~2 GB tree of the engine issue (#2).

About 20k files of 1-64 KiB in nested dirs, about 50 of 1-20 MiB, a few of 200 MiB or more;
partly compressible (text-like runs), some exact duplicates. Same seed, same bytes.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

_WORDS = [w.encode() for w in "the orbit hub chunk index ring slot worker coordinator sync "
          "backup mirror resume block digest shared memory pool".split()]  # fmt: skip


def _text_like(rng: random.Random, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        out += b" ".join(rng.choice(_WORDS) for _ in range(64)) + b"\n"
    return bytes(out[:n])


def _blob(rng: random.Random, n: int) -> bytes:
    # Half random, half text-like: compressible to about 60-70%.
    half = n // 2
    return rng.randbytes(half) + _text_like(rng, n - half)


def make_tree(root: Path, seed: int = 2, small: int = 20_000, medium: int = 50,
              large: int = 3, large_mib: int = 256) -> int:  # fmt: skip
    """Create the tree under `root` (skipped if a marker says it is complete); return bytes."""
    marker = root / ".complete"
    if marker.exists():
        return int(marker.read_text())
    rng = random.Random(seed)
    total = 0
    dup_pool: list[bytes] = []
    for i in range(small):
        d = root / "small" / f"a{i % 20:02d}" / f"b{(i // 20) % 50:02d}"
        d.mkdir(parents=True, exist_ok=True)
        if dup_pool and rng.random() < 0.05:
            data = rng.choice(dup_pool)
        else:
            data = _blob(rng, rng.randint(1 << 10, 64 << 10))
            if len(dup_pool) < 200:
                dup_pool.append(data)
        (d / f"f{i:05d}.dat").write_bytes(data)
        total += len(data)
    for i in range(medium):
        d = root / "medium" / f"m{i % 5}"
        d.mkdir(parents=True, exist_ok=True)
        data = _blob(rng, rng.randint(1 << 20, 20 << 20))
        (d / f"m{i:03d}.bin").write_bytes(data)
        total += len(data)
    block = _blob(rng, 8 << 20)
    for i in range(large):
        with open(root / f"large{i}.img", "wb") as f:
            for k in range(large_mib // 8):
                f.write(k.to_bytes(8, "little") + i.to_bytes(8, "little") + block[16:])
        total += large_mib << 20
    marker.write_text(str(total))
    return total


def drop_caches() -> bool:
    """Ask the kernel to drop clean page cache (root only); False when not allowed."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False
