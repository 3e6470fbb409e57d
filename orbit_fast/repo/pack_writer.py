"""Fills packs and writes them on a background thread, indexing each once it is stored.

The thread only builds and writes bytes (the store write releases the GIL, so disk time
overlaps the coordinator's work); indexing stays in the caller's thread, which owns the
universe. A pack is indexed only after its write returned, so the index never points at a
pack that is not complete. At most `depth` packs wait to be written (memory bound:
(depth + 1) pack buffers, each up to 1.5 x the pack size).
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from orbit_fast.errors import WorkerFailed
from orbit_fast.index.universe import Universe
from orbit_fast.repo.pack import HEADER, PackBuilder
from orbit_fast.repo.repository import Repository, _records

if TYPE_CHECKING:
    import numpy as np

# A pack is sent once it holds this many blobs, however small they are: the builder's entries
# and the ids waiting to be indexed take ~200 bytes a blob, so a 32 MiB pack of 150-byte blobs
# (small files) held 40 MiB of them (#16: backup memory must not follow the file count).
MAX_PACK_BLOBS = 1 << 14
START_BYTES = 1 << 20


class PackWriter:
    # depth 1: one pack written while the next fills. A second in flight cost 40 MiB of
    # buffers and no time (300k small files, local disk: 11.3 s and 276 MiB at 2, 10.3 s and
    # 235 MiB at 1; #16).
    def __init__(self, repo: Repository, universe: Universe, depth: int = 1) -> None:
        self.repo = repo
        self.universe = universe
        self.depth = depth
        # Pack buffers are reused once their pack is written: fresh ones cost a page fault per
        # 4 KiB (a quarter of a backup's system time before they were pooled).
        self._free: list[bytearray] = []
        self.builder = self._new_builder()
        self.pending: set[bytes] = set()  # ids in packs not yet indexed: dedup against them too
        self._inflight: deque[tuple[Future[tuple[bytes, np.ndarray]], list[bytes], bytearray]]
        self._inflight = deque()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="orbit-pack-writer")
        self.packs_written = 0
        self.names_written: list[bytes] = []
        self.chunks_written = 0
        self.bytes_written = 0

    def _new_builder(self) -> PackBuilder:
        if self._free:
            return self.repo.new_builder(self._free.pop())
        # Grown as it fills (and kept so when pooled): a pack of small files' blobs, sent at
        # MAX_PACK_BLOBS, never touches the pages a full pack would.
        return self.repo.new_builder(bytearray(START_BYTES))

    def has(self, chunk_id: bytes) -> bool:
        """Stored already, or on its way: in a pack being filled or written."""
        return chunk_id in self.pending or self.universe.locate(
            self.repo.id, [chunk_id])[0] is not None  # fmt: skip

    def add(self, chunk_id: bytes, blob: bytes | memoryview, raw_len: int) -> None:
        """Store a chunk's blob (copied: a view into a ring slot may be passed)."""
        if not blob:
            raise WorkerFailed(
                f"chunk {chunk_id.hex()[:16]} came without its data and is not stored yet "
                "(a worker protocol error); rerun the backup"
            )
        self.builder.add(chunk_id, blob, raw_len)
        self.pending.add(chunk_id)
        self.chunks_written += 1
        self.bytes_written += len(blob)
        if len(self.builder) >= self.repo.config.pack_bytes or self.builder.count >= MAX_PACK_BLOBS:
            self.flush()

    def flush(self) -> None:
        """Send the pack being filled to the writer thread (if it holds anything)."""
        sent = self.builder
        if sent.count:
            fut = self._pool.submit(self.repo.write_pack, sent)
            self._inflight.append((fut, sent.ids, sent.buf))
            # An empty stand-in until a written pack's buffer is free: taking a buffer first
            # would hold depth + 2 of them (38 MiB each at 1M small files; #16).
            self.builder = PackBuilder(bytearray(HEADER.size))
        while len(self._inflight) > self.depth:
            self._index_next()
        if sent.count:
            self.builder = self._new_builder()

    def _index_next(self) -> None:
        fut, ids, buf = self._inflight.popleft()
        name, entries = fut.result()  # a write error surfaces here, in the owner's thread
        self._free.append(buf)
        self.universe.add_pack(self.repo.id, name, _records(entries))
        self.pending.difference_update(ids)
        self.packs_written += 1
        self.names_written.append(name)

    def close(self) -> None:
        """Write and index everything added so far."""
        try:
            self.flush()
            while self._inflight:
                self._index_next()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
