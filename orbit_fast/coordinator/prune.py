"""`forget` (which snapshots to keep) and `prune` (drop the chunks no snapshot references).

Forget applies restic-style retention per (host, source) group: keep the N newest, and the
newest snapshot of each of the last N days / ISO weeks / months that have one; the union is
kept. It only deletes snapshot files; the data goes at the next prune.

Prune is crash-safe by ordering alone: (1) live chunks of mostly-dead packs are copied into
new packs, which are written whole and indexed; (2) the universe forgets the old packs; (3)
the old pack files are deleted. A crash before (3) leaves extra packs that the next
reconcile indexes again and the next prune removes; no step ever removes the only copy of a
chunk a snapshot references.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

import numpy as np

from orbit_fast import progress as p
from orbit_fast.errors import ExitCode, UsageError
from orbit_fast.index.universe import Universe
from orbit_fast.repo import snapshot as snapfmt
from orbit_fast.repo.pack_writer import PackWriter
from orbit_fast.repo.repository import Repository
from orbit_fast.repo.trees import TreeReader

# A pack whose live chunks fill less than this is rewritten; above it the dead bytes stay
# until more of the pack dies (restic's default --max-unused is 5% of the repository; borg
# compacts segments with more than 10% free).
REPACK_BELOW = 0.5


def plan_forget(snaps: list[tuple[str, snapfmt.Snapshot]], keep_last: int = 0,
                keep_daily: int = 0, keep_weekly: int = 0,
                keep_monthly: int = 0) -> list[str]:  # fmt: skip
    """Names of the snapshots the policy does not keep (none if no policy is given)."""
    if not any((keep_last, keep_daily, keep_weekly, keep_monthly)):
        raise UsageError(
            "forget needs a policy: --keep-last N, --keep-daily N, --keep-weekly N or "
            "--keep-monthly N (refusing to forget every snapshot)"
        )
    groups: dict[tuple[str, str], list[tuple[str, snapfmt.Snapshot]]] = {}
    for name, snap in snaps:
        groups.setdefault((snap.hostname, snap.source), []).append((name, snap))
    drop: list[str] = []
    for members in groups.values():
        newest_first = sorted(members, key=lambda s: s[1].time_ns, reverse=True)
        keep: set[str] = {n for n, _ in newest_first[:keep_last]}
        for count, bucket in ((keep_daily, "%Y-%m-%d"), (keep_weekly, "%G-W%V"),
                              (keep_monthly, "%Y-%m")):  # fmt: skip
            seen: list[str] = []
            for name, snap in newest_first:
                b = datetime.fromtimestamp(snap.time_ns / 1e9).strftime(bucket)
                if len(seen) >= count:
                    break
                if b not in seen:
                    seen.append(b)
                    keep.add(name)
        drop += [n for n, _ in newest_first if n not in keep]
    return drop


def live_blobs(repo: Repository, universe: Universe) -> np.ndarray:
    """The sorted, unique ids (numpy "V32") of every tree, xattr set and chunk some snapshot
    reaches.
    Each tree is read once however many snapshots share it; a snapshot or tree that cannot be
    read stops the prune (its chunks would look dead). Memory: 32 bytes per live blob, plus
    the ids gathered since the last merge (at most as many again), plus a set of tree ids."""
    reader = TreeReader(repo, universe)
    trees: set[bytes] = set()
    metas: set[bytes] = set()  # xattr sets: few, however many entries name them
    merged = np.empty(0, "V32")
    pending = bytearray()
    for _, snap in repo.snapshots():
        if snap.root.meta:
            metas.add(snap.root.meta)  # type: ignore[arg-type]
        for _, entries in reader.walk(snap.tree, trees):
            for e in entries:
                pending += e.chunks
                if e.meta:
                    metas.add(e.meta)  # type: ignore[arg-type]
            if len(pending) > max(32 << 20, 32 * len(merged)):
                merged = np.unique(np.concatenate([merged, np.frombuffer(pending, "V32")]))
                pending = bytearray()
    pending += b"".join(trees) + b"".join(metas)
    return np.unique(np.concatenate([merged, np.frombuffer(bytes(pending), "V32")]))


def prune(repo: Repository, universe: Universe, on_event: Callable[[p.Event], None],
          forgotten: list[str] | None = None) -> p.PruneSummary:
    t0 = time.monotonic()
    repo.sync_index(universe)
    referenced = live_blobs(repo, universe)
    packs = repo.pack_names()
    numbers = universe.packs_of(repo.id)
    dead_packs: list[bytes] = []
    repack: list[tuple[bytes, np.ndarray]] = []
    freed = dropped_chunks = 0
    for name, size in packs.items():
        entries = repo.read_pack_index(name, size)
        # Live: referenced, and this pack is where the index finds it (a copy elsewhere,
        # left by a crash or an earlier prune, is as dead as an unreferenced chunk).
        rows = np.frombuffer(universe.lookup(entries["id"].tobytes()), np.uint32).reshape(-1, 4)
        here = numbers.get(name, -1)
        reached = np.isin(entries["id"], referenced)
        live = reached & (rows[:, 0] == here) & (rows[:, 1] == entries["offset"])
        stored = entries["stored"].astype(np.int64)
        live_bytes = int(stored[live].sum()) if len(live) else 0
        total = int(stored.sum())
        if live_bytes == 0:
            dead_packs.append(name)
            freed += size
            dropped_chunks += len(entries)
        elif live_bytes < REPACK_BELOW * total:
            repack.append((name, entries[live]))
            freed += size - live_bytes
            dropped_chunks += int((~live).sum())
    writer = PackWriter(repo, universe)
    try:
        for name, live_entries in repack:
            # One read per pack, not one per chunk: on S3 each read is a request.
            data = memoryview(repo.store.read(repo.pack_path(name)))
            for e in live_entries:
                off = int(e["offset"])
                writer.add(e["id"].tobytes(), data[off : off + int(e["stored"])], int(e["raw"]))
    finally:
        writer.close()
    written = writer.packs_written
    kept_names = set(writer.names_written)
    # Never delete what this prune wrote (pack names are unique, but this is the invariant
    # that keeps the only copy of a chunk: checked, not assumed).
    old = [n for n in dead_packs + [n for n, _ in repack] if n not in kept_names]
    universe.drop_packs(repo.id, old)
    for name in old:
        repo.delete_pack(name)
    summary = p.PruneSummary(
        exit_code=int(ExitCode.OK), snapshots_forgotten=forgotten or [],
        packs_deleted=len(dead_packs), packs_repacked=len(repack), packs_written=written,
        bytes_freed=freed, chunks_dropped=dropped_chunks,
        elapsed_s=round(time.monotonic() - t0, 3),
    )  # fmt: skip
    on_event(summary)
    return summary
