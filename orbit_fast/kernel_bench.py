"""Per-core throughput of the data kernels on this machine (`orbit-fast bench`).

A mixed corpus (half random, half text-like, seeded) goes through each stage on one core:
chunking alone, chunking plus keyed chunk ids, and that plus each codec. The rates say how
many cores a link needs: a 10GbE link moves 1.25 GB/s.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable

import msgspec

LINK_10GBE_BPS = 1.25e9


class Rate(msgspec.Struct, frozen=True):
    stage: str
    bytes_per_s: float
    cores_for_10gbe: int


def corpus(size: int, seed: int = 1) -> bytes:
    """`size` bytes: random data, then text-like words (compressible about 3:1)."""
    rng = random.Random(seed)
    half = size // 2
    words = [rng.randbytes(rng.randint(1, 6)).hex().encode() for _ in range(5000)]
    text = bytearray()
    while len(text) < size - half:
        text += b" ".join(rng.choices(words, k=8192)) + b"\n"
    rand = b"".join(rng.randbytes(min(1 << 24, half - i)) for i in range(0, half, 1 << 24))
    return rand + bytes(text[: size - half])


def _best(fn: Callable[[], object], rounds: int) -> float:
    best = math.inf
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure(size: int = 64 << 20, rounds: int = 3, codecs: tuple[str, ...] = ("lz4", "zstd:3")
            ) -> list[Rate]:  # fmt: skip
    from orbit_fast.chunking import ChunkerParams, cut_points, make_chunker
    from orbit_fast.compression import HEADER, compress_into, parse_codec
    from orbit_fast.hashing import chunk_id, new_repo_key

    data = corpus(size)
    view = memoryview(data)
    params = ChunkerParams()
    key = new_repo_key()

    def chunk() -> None:
        for _ in cut_points(make_chunker(params), data):
            pass

    def stage(codec: str | None) -> Callable[[], None]:
        c = parse_codec(codec) if codec else None
        out = memoryview(bytearray(params.max_size + HEADER.size))  # the slot's output half

        def run() -> None:  # as a worker does it: cut, name, compress into the slot
            start = 0
            for end in [*cut_points(make_chunker(params), data), len(data)]:
                if end > start:
                    chunk_id(key, view[start:end])
                    if c is not None:
                        compress_into(c, view[start:end], out)
                start = end

        return run

    stages: list[tuple[str, Callable[[], None]]] = [
        ("chunk (FastCDC, avg 1 MiB)", chunk),
        ("chunk + id (keyed BLAKE3)", stage(None)),
    ]
    stages += [(f"chunk + id + {c}", stage(c)) for c in codecs]
    out = []
    for name, fn in stages:
        bps = size / _best(fn, rounds)
        out.append(Rate(name, bps, max(1, math.ceil(LINK_10GBE_BPS / bps))))
    return out
