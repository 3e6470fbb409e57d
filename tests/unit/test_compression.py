from __future__ import annotations

import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orbit_fast.compression import (
    BLOB_FORMAT,
    FLAG_INCOMPRESSIBLE,
    HEADER,
    LZ4,
    MAX_RAW_BYTES,
    RAW,
    ZSTD,
    Codec,
    CorruptBlob,
    OutputLimit,
    blob_info,
    compress,
    decompress,
    decompress_zstd,
    parse_codec,
)  # fmt: skip
from orbit_fast.errors import UsageError

CODECS = [Codec("none"), Codec("lz4"), Codec("zstd", 3), Codec("zstd", 19)]


@pytest.mark.parametrize(
    ("spec", "codec"),
    [("none", Codec("none")), ("lz4", Codec("lz4")), ("zstd", Codec("zstd", 3)),
     ("zstd:3", Codec("zstd", 3)), ("ZSTD:19", Codec("zstd", 19)), (" zstd:1 ", Codec("zstd", 1))],
)  # fmt: skip
def test_parse(spec: str, codec: Codec) -> None:
    assert parse_codec(spec) == codec
    assert parse_codec(str(codec)) == codec


@pytest.mark.parametrize("bad", ["", "gzip", "zstd:0", "zstd:20", "zstd:x", "lz4:1", "none:3"])
def test_bad_specs_name_the_accepted_forms(bad: str) -> None:
    with pytest.raises(UsageError, match="none, lz4, zstd or zstd:N"):
        parse_codec(bad)


@pytest.mark.parametrize("codec", CODECS, ids=str)
@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 65537, 1 << 20, 64 << 20])
def test_round_trip_text_like(codec: Codec, size: int) -> None:
    data = (b"orbit hub chunk index ring slot worker " * (size // 39 + 1))[:size]
    blob = compress(codec, data)
    assert decompress(blob) == data
    code, _, raw_len, stored = blob_info(blob)
    assert raw_len == size and stored == len(blob) - HEADER.size
    if codec.name != "none" and size > 65536:
        assert code == (LZ4 if codec.name == "lz4" else ZSTD) and stored < size // 10


@pytest.mark.parametrize("codec", CODECS[1:], ids=str)
def test_incompressible_is_stored_raw_and_flagged(codec: Codec) -> None:
    data = os.urandom(1 << 20)
    code, flags, raw_len, stored = blob_info(compress(codec, data))
    assert (code, flags, raw_len, stored) == (RAW, FLAG_INCOMPRESSIBLE, len(data), len(data))


@pytest.mark.parametrize("codec", CODECS[1:], ids=str)
def test_varied_text_is_compressed_not_probed_away(codec: Codec) -> None:
    # Regression: a 4 KiB lz4 probe called this "incompressible" and stored it raw, although
    # zstd:3 takes it to about 0.31 of its size.
    from orbit_fast.kernel_bench import corpus

    text = corpus(4 << 20)[2 << 20 :][: 1 << 20]
    code, flags, raw_len, stored = blob_info(compress(codec, text))
    assert code != RAW and flags == 0
    assert stored < (0.9 if codec.name == "lz4" else 0.4) * raw_len


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=20_000), st.sampled_from(CODECS))
def test_round_trip_anything(data: bytes, codec: Codec) -> None:
    assert decompress(compress(codec, data)) == data


def test_structural_damage_is_reported_not_guessed() -> None:
    # Structure only: a flipped bit inside the compressed body may decompress to other bytes
    # of the right length. Content is checked by the chunk id (hashing.chunk_id) on verify.
    data = bytes(random.Random(1).choices(b"abc", k=100_000))
    blob = compress(Codec("zstd", 3), data)
    with pytest.raises(CorruptBlob, match="header says"):
        decompress(blob[:-1])
    with pytest.raises(CorruptBlob, match="format"):
        decompress(b"\x09" + blob[1:])
    with pytest.raises(CorruptBlob, match="unknown codec"):
        decompress(blob[:1] + b"\x07" + blob[2:])
    with pytest.raises(CorruptBlob, match="shorter than its 12-byte header"):
        decompress(blob[:5])


# ---- output limits: a blob's header and a zstd frame's are what an attacker writes ------------


def test_the_default_limit_is_the_largest_chunk() -> None:
    from orbit_fast.chunking import MAX_CHUNK

    assert MAX_RAW_BYTES == MAX_CHUNK


@pytest.mark.parametrize("codec", CODECS, ids=str)
def test_a_blob_claiming_more_than_the_limit_is_refused(codec: Codec) -> None:
    data = bytes(100_000)
    blob = compress(codec, data)
    assert decompress(blob, max_bytes=100_000) == data
    with pytest.raises(OutputLimit, match="claims 100000 bytes, more than the 99999 allowed"):
        decompress(blob, max_bytes=99_999)


def test_a_zstd_frame_declaring_more_than_its_blob_is_refused_before_decompressing() -> None:
    import zstandard

    body = zstandard.ZstdCompressor(level=19).compress(bytes(200 << 20))
    assert len(body) < 8 << 10
    blob = HEADER.pack(BLOB_FORMAT, ZSTD, 0, 1000, len(body)) + body
    with pytest.raises(OutputLimit, match="declares 209715200 bytes, more than the 1000"):
        decompress(blob)
    assert isinstance(OutputLimit("x"), CorruptBlob)  # callers that name damaged chunks


def test_a_zstd_frame_without_a_declared_size_is_read_up_to_the_limit_only() -> None:
    import zstandard

    body = zstandard.ZstdCompressor(write_content_size=False).compress(bytes(50 << 20))
    assert zstandard.frame_content_size(body) == -1
    with pytest.raises(OutputLimit, match="more than the 1048576 bytes"):
        decompress_zstd(body, 1 << 20)
    assert decompress_zstd(body, 50 << 20) == bytes(50 << 20)
    small = zstandard.ZstdCompressor(write_content_size=False).compress(b"abc" * 1000)
    assert decompress_zstd(memoryview(small), 3000) == b"abc" * 1000


def test_an_lz4_blob_claiming_a_huge_size_is_refused_without_allocating_it() -> None:
    blob = HEADER.pack(BLOB_FORMAT, LZ4, 0, 0xFFFFFFFF, 4) + b"\x00" * 4
    with pytest.raises(OutputLimit, match="claims 4294967295 bytes"):
        decompress(blob)
