"""Per-file transfer state kept by the coordinator while a file's blocks are in flight.

A Transfer is a queue of block operations ("verify" a block already in the temp file from an
interrupted run, "copy" a block, then "finalize"), the digests gathered so far and the count of
tasks still out. Only the coordinator touches it.
"""

from __future__ import annotations

import os
from collections import deque

from orbit_fast import messages as m
from orbit_fast.coordinator.scan import Stat

COPY, VERIFY, FINALIZE, DIGEST_SRC, DIGEST_DST = "copy", "verify", "finalize", "dsrc", "ddst"
_COPY_WHOLE = (COPY, 0)


class Transfer:
    __slots__ = (
        "rel",
        "tmp",
        "relb",
        "tmpb",
        "ident",
        "size",
        "mtime_ns",
        "atime_ns",
        "mode",
        "action",
        "block_bytes",
        "nblocks",
        "ops",
        "outstanding",
        "blocks_done",
        "digests",
        "recorded",
        "had_partial",
        "failed",
        "attempts",
        "finalizing",
        "src_digest",
        "dst_digest",
        "started",
    )

    def __init__(
        self,
        rel: str,
        tmp: str,
        st: Stat | os.stat_result,
        action: str,
        block_bytes: int,
        attempts: int = 0,
    ) -> None:
        # The file's path in both trees and its temp file's in the destination, relative to
        # the roots (the workers open them below the run's trees).
        self.rel, self.tmp = rel, tmp
        # Encoded once: every task message carries paths as bytes.
        self.relb, self.tmpb = os.fsencode(rel), os.fsencode(tmp)
        # The source file the listing saw: a worker keeps what it read only from this one.
        self.ident = m.Ident(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        self.size = st.st_size
        self.mtime_ns = st.st_mtime_ns
        self.atime_ns = st.st_atime_ns
        self.mode = st.st_mode
        self.action = action
        self.block_bytes = block_bytes
        self.nblocks = max(1, -(-self.size // block_bytes))
        self.ops: deque[tuple[str, int]] = deque()
        self.outstanding = 0
        self.blocks_done = 0
        self.digests: list[bytes | None] = [None] * self.nblocks
        self.recorded: dict[int, bytes] = {}
        self.had_partial = False
        self.failed: str | None = None
        self.attempts = attempts
        self.finalizing = False
        self.src_digest: bytes | None = None
        self.dst_digest: bytes | None = None
        self.started = False  # counted in the run's totals (not just compared)

    @property
    def single(self) -> bool:
        return self.nblocks == 1

    def whole_pending(self) -> bool:
        """A file of one block whose copy is yet to be sent: it goes in a CopyFiles task."""
        return self.nblocks == 1 and not self.outstanding and not self.failed \
            and len(self.ops) == 1 and self.ops[0][0] == COPY  # fmt: skip

    def block_range(self, idx: int) -> tuple[int, int]:
        off = idx * self.block_bytes
        return off, min(self.block_bytes, self.size - off)

    def plan_fresh(self) -> None:
        if self.nblocks == 1:
            self.ops.append(_COPY_WHOLE)
        else:
            self.ops.extend((COPY, i) for i in range(self.nblocks))

    def plan_resume(self, recorded: dict[int, bytes]) -> None:
        """Verify the blocks an interrupted run committed, copy the others."""
        self.had_partial = True
        self.recorded = {i: d for i, d in recorded.items() if 0 <= i < self.nblocks}
        self.ops.extend((VERIFY if i in self.recorded else COPY, i) for i in range(self.nblocks))

    def all_blocks_done(self) -> bool:
        return self.blocks_done == self.nblocks


class Batch:
    """Whole files of one block copied in one CopyFiles task (the owner of its record)."""

    __slots__ = ("transfers",)

    def __init__(self, transfers: list[Transfer]) -> None:
        self.transfers = transfers

    @property
    def rel(self) -> str:
        """For messages about the task."""
        n = len(self.transfers) - 1
        return self.transfers[0].rel + (f" (and {n} other files of its task)" if n else "")
