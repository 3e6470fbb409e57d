"""Chunking throughput on one core: orbit-fast's FastCDC kernel vs pyfastcdc, same data, same run.

Usage:  .venv/bin/pip install -e ".[bench]"
        .venv/bin/python -m pytest bench/bench_chunking.py --benchmark-columns=min,mean,rounds
Data: 256 MiB of seeded random bytes (no dedup, the worst case for CDC: every byte hashed
from min on). Throughput = 256 MiB / the round's time; the test prints GB/s and the ratio.
"""

from __future__ import annotations

import random

import pytest

from orbit_fast.chunking import ChunkerParams, cut_points, make_chunker

SIZE = 256 << 20
DATA = b"".join(random.Random(3 + i).randbytes(16 << 20) for i in range(SIZE >> 24))
AVGS = [64 << 10, 1 << 20]


def _orbit(avg: int) -> int:
    params = ChunkerParams(min_size=avg // 4, avg_size=avg, max_size=avg * 4)
    return sum(1 for _ in cut_points(make_chunker(params), DATA))


def _pyfastcdc(avg: int) -> int:
    pyfastcdc = pytest.importorskip("pyfastcdc")
    return sum(1 for _ in pyfastcdc.FastCDC(avg_size=avg, normalized_chunking=2).cut_buf(DATA))


@pytest.mark.parametrize("avg", AVGS, ids=lambda a: f"avg{a >> 10}KiB")
@pytest.mark.parametrize("impl", [_orbit, _pyfastcdc], ids=["orbit-fast", "pyfastcdc"])
def test_chunking(benchmark, impl, avg: int) -> None:
    chunks = benchmark.pedantic(impl, args=(avg,), rounds=5, iterations=1, warmup_rounds=1)
    gbps = SIZE / benchmark.stats.stats.min / 1e9
    benchmark.extra_info["GB/s (best)"] = round(gbps, 2)
    print(f"\n{impl.__name__} avg {avg >> 10} KiB: {gbps:.2f} GB/s, {chunks} chunks")


def _chunk_and_id(avg: int) -> int:
    from orbit_fast.hashing import chunk_id

    key = bytes(32)
    params = ChunkerParams(min_size=avg // 4, avg_size=avg, max_size=avg * 4)
    view = memoryview(DATA)
    start = 0
    for end in cut_points(make_chunker(params), DATA):
        chunk_id(key, view[start:end])
        start = end
    return start


@pytest.mark.parametrize("avg", AVGS, ids=lambda a: f"avg{a >> 10}KiB")
def test_chunk_and_id(benchmark, avg: int) -> None:
    """Chunking plus a keyed BLAKE3-256 id per chunk on one core (issue #3: >= 1.5 GB/s)."""
    benchmark.pedantic(_chunk_and_id, args=(avg,), rounds=3, iterations=1, warmup_rounds=1)
    gbps = SIZE / benchmark.stats.stats.min / 1e9
    benchmark.extra_info["GB/s (best)"] = round(gbps, 2)
    print(f"\nchunk + id avg {avg >> 10} KiB: {gbps:.2f} GB/s")
