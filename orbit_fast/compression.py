"""Compression codecs: the spec parser shared by CLI, config and API, and self-describing blobs.

A codec spec is `none`, `lz4`, `zstd` (level 3) or `zstd:N` with N from 1 to 19; the guide
writes `zstd:3`. Every stored blob starts with a 12-byte header (format, codec, flags, raw
length, stored length), so reading one never guesses. Incompressible input is found by
compressing a 64 KiB sample with lz4 first, and stored raw (flagged) without running the real
codec, so random data costs tens of microseconds per chunk. The header makes damage to a blob's
structure an error, never a guess; damage to its content is found by the keyed chunk id, which
verify and restore recompute (neither lz4 blocks nor zstd frames without their optional
checksum can tell).
"""

from __future__ import annotations

import struct
import threading
from typing import TYPE_CHECKING, NamedTuple

from orbit_fast.errors import DatabaseError, UsageError

if TYPE_CHECKING:
    import zstandard

BLOB_FORMAT = 1
HEADER = struct.Struct("<BBHII")  # format, codec, flags, raw length, stored length
RAW, LZ4, ZSTD = 0, 1, 2
FLAG_INCOMPRESSIBLE = 1  # stored raw because compression would not pay
# Flag bits 1-15 are free; authenticated encryption of blobs will take one (format 2 header).
ZSTD_DEFAULT_LEVEL = 3
# 64 KiB: lz4 needs room to find matches. On varied text that zstd:3 takes to 0.31, lz4 gives
# 0.997 on a 4 KiB sample (wrongly "incompressible"), 0.92 on 16 KiB, 0.85 on 64 KiB; random
# data gives 1.004 at any size. The probe costs ~3% of compressing a 1 MiB chunk.
SAMPLE_BYTES = 64 << 10
# Store raw unless the sample shrinks below this.
SAMPLE_MAX_RATIO = 0.97
SPECS = "none, lz4, zstd or zstd:N with N from 1 to 19 (e.g. zstd:3)"
# No blob holds more: it is chunking.MAX_CHUNK, the largest chunk any parameters allow.
MAX_RAW_BYTES = 64 << 20


class Codec(NamedTuple):
    name: str  # "none" | "lz4" | "zstd"
    level: int = 0

    def __str__(self) -> str:
        return f"zstd:{self.level}" if self.name == "zstd" else self.name


class CorruptBlob(DatabaseError):
    msgid = "corrupt_blob"


def parse_codec(spec: str) -> Codec:
    """`none`, `lz4`, `zstd`, `zstd:N` -> Codec; anything else is a UsageError naming them."""
    text = spec.strip().lower() if isinstance(spec, str) else ""
    name, _, level = text.partition(":")
    if name in ("none", "lz4") and not level:
        return Codec(name)
    if name == "zstd":
        if not level:
            return Codec("zstd", ZSTD_DEFAULT_LEVEL)
        if level.isdigit() and 1 <= int(level) <= 19:
            return Codec("zstd", int(level))
    raise UsageError(f"unknown compression {spec!r}: use {SPECS}")


_local = threading.local()


def _zstd(level: int) -> zstandard.ZstdCompressor:
    """This thread's compressor for `level`: a ZstdCompressor owns a context of about 1 MiB
    that is slow to set up (and not safe to share between threads), so it is made once."""
    cache: dict[int, zstandard.ZstdCompressor] | None = getattr(_local, "zstd", None)
    if cache is None:
        cache = _local.zstd = {}
    comp = cache.get(level)
    if comp is None:
        import zstandard

        comp = cache[level] = zstandard.ZstdCompressor(level=level)
    return comp


def _compress_with(codec: Codec, data: bytes | memoryview) -> bytes:
    if codec.name == "lz4":
        import lz4.block

        packed: bytes = lz4.block.compress(data, store_size=False)  # lz4 ships no types
        return packed
    return _zstd(codec.level).compress(data)


def worth_compressing(data: bytes | memoryview) -> bool:
    """Cheap test: does lz4 shrink a sample from the middle of `data` noticeably?"""
    n = len(data)
    if n <= SAMPLE_BYTES:
        return True  # small: compress it whole and keep the smaller
    mid = (n - SAMPLE_BYTES) // 2
    sample = bytes(data[mid : mid + SAMPLE_BYTES])
    return len(_compress_with(Codec("lz4"), sample)) < SAMPLE_MAX_RATIO * SAMPLE_BYTES


def compress_into(codec: Codec, data: bytes | bytearray | memoryview, out: memoryview) -> int:
    """Write the self-describing blob of `data` (compressed with `codec` when that pays) to
    the start of `out`, which must hold len(data) + HEADER.size bytes; returns its length.
    Stored raw, the data is copied once; compressed, the codec's output is copied once."""
    raw = memoryview(data).cast("B")
    # The probe is lz4: for lz4 itself it would only be the same work done twice.
    if codec.name == "lz4" or (codec.name != "none" and worth_compressing(raw)):
        packed = _compress_with(codec, raw)
        if len(packed) < len(raw):
            code = LZ4 if codec.name == "lz4" else ZSTD
            HEADER.pack_into(out, 0, BLOB_FORMAT, code, 0, len(raw), len(packed))
            out[HEADER.size : HEADER.size + len(packed)] = packed
            return HEADER.size + len(packed)
    flags = FLAG_INCOMPRESSIBLE if codec.name != "none" else 0
    HEADER.pack_into(out, 0, BLOB_FORMAT, RAW, flags, len(raw), len(raw))
    out[HEADER.size : HEADER.size + len(raw)] = raw
    return HEADER.size + len(raw)


def compress(codec: Codec, data: bytes | bytearray | memoryview) -> bytes:
    """A self-describing blob holding `data`, compressed with `codec` when that pays."""
    out = bytearray(len(data) + HEADER.size)
    return bytes(out[: compress_into(codec, data, memoryview(out))])


def blob_info(blob: bytes | memoryview) -> tuple[int, int, int, int]:
    """(codec, flags, raw length, stored length) from a blob's header, checked."""
    if len(blob) < HEADER.size:
        raise CorruptBlob(
            f"blob of {len(blob)} bytes is shorter than its {HEADER.size}-byte header"
        )
    fmt, code, flags, raw_len, stored_len = HEADER.unpack_from(blob)
    if fmt != BLOB_FORMAT:
        raise CorruptBlob(f"blob format {fmt} is not one this orbit-fast reads ({BLOB_FORMAT})")
    if code not in (RAW, LZ4, ZSTD):
        raise CorruptBlob(f"blob names unknown codec {code}")
    if len(blob) - HEADER.size != stored_len:
        raise CorruptBlob(f"blob holds {len(blob) - HEADER.size} bytes, header says {stored_len}")
    return code, flags, raw_len, stored_len


class OutputLimit(CorruptBlob):
    """Decompressing would give more than the caller allows (a damaged or a hostile object)."""

    msgid = "output_limit"


def decompress(blob: bytes | memoryview, *, max_bytes: int = MAX_RAW_BYTES) -> bytes:
    """The original bytes of a blob; CorruptBlob if header and content disagree, OutputLimit
    (a CorruptBlob) if the header claims more than `max_bytes` (for a repository's chunks:
    its maximum chunk size), so that a hostile header never makes it allocate more."""
    code, _, raw_len, _ = blob_info(blob)
    if raw_len > max_bytes:
        raise OutputLimit(f"blob claims {raw_len} bytes, more than the {max_bytes} allowed")
    body = memoryview(blob)[HEADER.size :]
    try:
        if code == RAW:
            out = bytes(body)
        elif code == LZ4:
            import lz4.block

            out = lz4.block.decompress(body, uncompressed_size=raw_len)
        else:
            out = decompress_zstd(body, raw_len)
    except OutputLimit:
        raise
    except Exception as exc:  # each library raises its own error type for damaged input
        raise CorruptBlob(f"blob does not decompress ({exc})") from exc
    if len(out) != raw_len:
        raise CorruptBlob(f"blob decompressed to {len(out)} bytes, header says {raw_len}")
    return out


# Output is read from a frame without a size in its header in steps of this much.
_STEP_BYTES = 1 << 20


def decompress_zstd(data: bytes | memoryview, max_bytes: int) -> bytes:
    """One zstd frame's content, never more than `max_bytes` of it held: OutputLimit beyond.

    zstandard's one-shot decompress allocates what the frame header declares and ignores
    `max_output_size` when it declares something (a 6 KB frame may declare 200 MiB), so the
    declared size is checked first; a frame that declares none is read in steps."""
    import zstandard

    declared = zstandard.frame_content_size(data)
    if declared > max_bytes:
        raise OutputLimit(f"zstd frame declares {declared} bytes, more than the {max_bytes} "
                          "allowed")  # fmt: skip
    if declared >= 0:  # known and within the limit: decompress fails if the content is longer
        return zstandard.ZstdDecompressor().decompress(data)
    out = bytearray()
    with zstandard.ZstdDecompressor().stream_reader(data) as reader:
        while True:
            piece = reader.read(min(_STEP_BYTES, max_bytes - len(out) + 1))
            if not piece:
                return bytes(out)
            out += piece
            if len(out) > max_bytes:
                raise OutputLimit(f"zstd frame holds more than the {max_bytes} bytes allowed")
