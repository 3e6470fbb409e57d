"""FastCDC (ext/cdc.pyx) against its twin, frozen by golden values, and its chunk quality."""

from __future__ import annotations

import hashlib
import random
import struct
from array import array

import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from orbit_fast._native import cdc, reference
from orbit_fast.chunking import ChunkerParams, cut_points, gear_table, make_chunker
from orbit_fast.errors import UsageError

SMALL = [(64, 256, 1024), (64, 64, 64), (64, 128, 4096), (100, 256, 300), (64, 64, 65)]


def _chunker(mod, mn: int, av: int, mx: int):
    m_s, m_l = ChunkerParams(min_size=mn, avg_size=av, max_size=mx).masks
    return mod.Chunker(gear_table(), mn, av, mx, m_s, m_l)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=12_000), st.lists(st.integers(1, 3000), max_size=8),
       st.sampled_from(SMALL))  # fmt: skip
def test_streaming_native_equals_whole_reference(data: bytes, pieces: list[int], params) -> None:
    whole = list(cut_points(_chunker(reference, *params), data))
    native = _chunker(cdc, *params)
    got: list[int] = []
    pos = 0
    for size in pieces + [len(data)]:  # arbitrary slot-sized pieces, then the rest
        got += cut_points(native, data[pos : pos + size])
        pos += size
    assert got == whole
    assert native.offset == len(data)


def test_feed_stops_when_out_is_full_and_resumes() -> None:
    data = random.Random(5).randbytes(50_000)
    c = _chunker(cdc, 64, 256, 1024)
    out = array("Q", bytes(8 * 3))
    n, used = c.feed(data, memoryview(out))
    assert n == 3 and 0 < used < len(data)
    rest = list(cut_points(c, data[used:]))
    assert list(out) + rest == list(cut_points(_chunker(cdc, 64, 256, 1024), data))


def test_gear_table_is_frozen() -> None:
    # Changing it changes every cut point, so every chunk id of every existing repository.
    assert hashlib.sha256(gear_table()).hexdigest() == (
        "b7265296cdd84a943c2f09568c05c67c8a6af3c86a8e337b39bf6db25ae180f2"
    )


def test_cut_points_are_frozen() -> None:
    stream = hashlib.shake_256(b"orbit-fast cdc golden stream").digest(8 << 20)
    grid = [(64, 256, 1024), (2048, 8192, 32768), (16384, 65536, 262144),
            (262144, 1 << 20, 4 << 20)]  # fmt: skip
    h = hashlib.sha256()
    for mn, av, mx in grid:
        cuts = list(cut_points(make_chunker(ChunkerParams(min_size=mn, avg_size=av,
                                                          max_size=mx)), stream))  # fmt: skip
        h.update(struct.pack(f"<{len(cuts)}Q", *cuts))
    assert h.hexdigest() == "3531bab20415479068b7f613ccff832d4550a7f4bc5d39d1df92954f0c9e75ac"


def _sizes(params: ChunkerParams, data: bytes) -> list[int]:
    cuts = list(cut_points(make_chunker(params), data))
    if not cuts or cuts[-1] != len(data):
        cuts.append(len(data))  # the stream's last chunk
    return [b - a for a, b in zip([0] + cuts[:-1], cuts, strict=True)]


def _text_like(n: int, seed: int) -> bytes:
    r = random.Random(seed)
    words = [r.randbytes(r.randint(2, 9)).hex().encode() for _ in range(3000)]
    out = bytearray()
    while len(out) < n:
        out += b" ".join(r.choices(words, k=4096)) + b"\n"
    return bytes(out[:n])


@pytest.mark.parametrize("avg", [1 << 16, 1 << 20])
@pytest.mark.parametrize("kind", ["random", "text"])
def test_mean_min_max(avg: int, kind: str) -> None:
    params = ChunkerParams(min_size=avg // 4, avg_size=avg, max_size=avg * 4)
    n = 64 << 20 if kind == "random" else 24 << 20
    data = random.Random(7).randbytes(n) if kind == "random" else _text_like(n, 7)
    sizes = _sizes(params, data)
    mean = sum(sizes[:-1]) / len(sizes[:-1])
    assert abs(mean - avg) <= 0.15 * avg, f"mean {mean:.0f} vs avg {avg} ({len(sizes)} chunks)"
    assert min(sizes[:-1]) >= params.min_size and max(sizes) <= params.max_size


def test_one_byte_insert_keeps_99_percent_of_chunks() -> None:
    params = ChunkerParams(min_size=16 << 10, avg_size=64 << 10, max_size=256 << 10)
    data = random.Random(11).randbytes(64 << 20)
    shifted = data[:1000] + b"!" + data[1000:]

    def chunk_ids(buf: bytes) -> list[bytes]:
        cuts = [0, *cut_points(make_chunker(params), buf)]
        if cuts[-1] != len(buf):
            cuts.append(len(buf))
        return [xxhash.xxh3_128_digest(buf[a:b]) for a, b in zip(cuts, cuts[1:], strict=False)]

    before, after = chunk_ids(data), set(chunk_ids(shifted))
    kept = sum(1 for c in before if c in after) / len(before)
    assert kept >= 0.99, f"{kept:.4f} of {len(before)} chunks unchanged"


@pytest.mark.parametrize(
    ("mn", "av", "mx", "words"),
    [(10, 256, 1024, "64 <= min"), (512, 256, 1024, "min <= avg"),
     (64, 300, 1024, "power of two"), (64, 256, 128 << 20, "<= 67108864")],
)  # fmt: skip
def test_bad_parameters_are_clear_errors(mn: int, av: int, mx: int, words: str) -> None:
    with pytest.raises(UsageError, match=words):
        ChunkerParams(min_size=mn, avg_size=av, max_size=mx).validate()
