"""Content-defined chunking: parameters, the gear table, and the kernel that does the cutting.

`ChunkerParams` validates min/avg/max; `make_chunker()` returns a streaming chunker (the Cython
kernel from ext/cdc.pyx, or its twin with ORBIT_KERNEL=reference) and logs which one it chose.
Cut points are a storage format: changing the gear table, the masks or the algorithm changes
every chunk id and breaks deduplication against existing repositories, so all three are frozen
by golden tests (tests/native/test_cdc.py).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
from array import array
from collections.abc import Iterator
from typing import TYPE_CHECKING

import msgspec

from orbit_fast.errors import UsageError

if TYPE_CHECKING:
    from orbit_fast._native import StreamChunker

log = logging.getLogger(__name__)

GEAR_SEED = b"orbit-fast gear table v1"
# Normalized chunking level 2 (FastCDC 2020): the strict mask (below avg) has 4 more bits
# than the loose one (above avg). Both sit one bit lower than the paper's log2(avg) +- 2,
# which centres the mean on avg despite the unhashed first `min` bytes: measured with
# min = avg/4, max = 4 avg, the mean is 0.95-0.97 avg on random and text-like data (the
# paper's masks give 1.14 avg; tests/native/test_cdc.py checks the 15% bound).
STRICT_BITS, LOOSE_BITS = +1, -3
MIN_CHUNK = 64
MAX_CHUNK = 64 << 20


@functools.cache
def gear_table() -> bytes:
    """256 little-endian uint64: entry i is the first 8 bytes of SHA-256(GEAR_SEED || i)."""
    return b"".join(hashlib.sha256(GEAR_SEED + bytes([i])).digest()[:8] for i in range(256))


def top_bits_mask(bits: int) -> int:
    """`bits` ones ending at bit 62: high bits depend on the most bytes (the last 63).

    Bit 63 stays out so that the kernel can test the first byte of a pair on ``fp << 1``
    against ``mask << 1`` without losing a bit (rolling two bytes, FastCDC 2020).
    """
    return ((1 << bits) - 1) << (63 - bits)


class ChunkerParams(msgspec.Struct, frozen=True, kw_only=True):
    """Chunk size bounds in bytes. Every chunk but a stream's last is min..max bytes long.

    Defaults 256 KiB / 1 MiB / 4 MiB (bench/bench_chunk_params.py, docs/performance.md): on
    the 2 GB bench tree 64 KiB chunks store 6% less and add 18% less after a 1% mutation, but
    at a hub's scale the index grows with 1/avg, 16x from 1 MiB to 64 KiB (10 TB: ~10M
    entries, ~1 GB at 100 B each, vs ~160M, ~16 GB). 1 MiB is restic's average; borg's is 2 MiB.
    """

    min_size: int = 256 << 10
    avg_size: int = 1 << 20
    max_size: int = 4 << 20

    def validate(self) -> ChunkerParams:
        mn, av, mx = self.min_size, self.avg_size, self.max_size
        if not all(isinstance(v, int) for v in (mn, av, mx)):
            raise UsageError(f"chunk sizes must be whole numbers of bytes, got {mn}/{av}/{mx}")
        if not (MIN_CHUNK <= mn <= av <= mx <= MAX_CHUNK):
            raise UsageError(
                f"chunk sizes must satisfy {MIN_CHUNK} <= min <= avg <= max <= {MAX_CHUNK}, "
                f"got min={mn} avg={av} max={mx}"
            )
        if av & (av - 1):
            raise UsageError(f"the average chunk size must be a power of two, got {av}")
        return self

    @property
    def masks(self) -> tuple[int, int]:
        bits = int(math.log2(self.avg_size))
        return top_bits_mask(bits + STRICT_BITS), top_bits_mask(max(1, bits + LOOSE_BITS))


def make_chunker(params: ChunkerParams) -> StreamChunker:
    """A new streaming chunker for one stream (see ext/cdc.pyx for `feed`)."""
    from orbit_fast._native import kernels

    params.validate()
    k = kernels()
    mask_s, mask_l = params.masks
    log.debug("chunker kernel: %s", getattr(k.Chunker, "__module__", "?"))
    return k.Chunker(gear_table(), params.min_size, params.avg_size, params.max_size,
                     mask_s, mask_l)  # fmt: skip


def cut_points(
    chunker: StreamChunker, data: bytes | bytearray | memoryview, batch: int = 4096
) -> Iterator[int]:
    """Feed `data` into `chunker`; yield the absolute end offset of every chunk it closes."""
    out = array("Q", bytes(8 * batch))
    mv = memoryview(data).cast("B")
    pos = 0
    while pos < len(mv):
        ncuts, used = chunker.feed(mv[pos:], memoryview(out))
        yield from out[:ncuts]
        pos += used
