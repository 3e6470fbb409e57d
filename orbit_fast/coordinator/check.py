"""`verify`: read every pack and check every chunk against its id, then check that every
snapshot's chunks are present and intact; name the snapshot, file and chunk of each problem.

Every snapshot is decoded as restore decodes it (repo/snapshot.py: output limits, every node
path a clean path below the root, unique, under a directory), so a snapshot that restore would
refuse is reported here as damaged, named with the offending path.

`--quick` checks structure only: every pack's trailer and index parse, and every chunk a
snapshot needs is listed in some pack's index. Memory: a set of the chunk ids seen
(about 100 bytes each).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import blake3

from orbit_fast import progress as p
from orbit_fast.compression import CorruptBlob, decompress
from orbit_fast.errors import ExitCode, IntegrityError, RepositoryError
from orbit_fast.hashing import chunk_id
from orbit_fast.names import shown
from orbit_fast.repo import pack as packfmt
from orbit_fast.repo.repository import Repository

MAX_LISTED = 1000


def verify(repo: Repository, quick: bool, on_event: Callable[[p.Event], None]) -> p.VerifySummary:
    t0 = time.monotonic()
    key = repo.config.key_bytes
    max_raw = repo.config.max_size
    good: set[bytes] = set()
    damaged: dict[bytes, str] = {}
    problems: list[str] = []
    bytes_read = chunks = 0
    packs = repo.pack_names()
    for name, size in packs.items():
        label = name.hex()[:12]
        try:
            if quick:
                entries = repo.read_pack_index(name, size)
                good.update(e.tobytes() for e in entries["id"])
                chunks += len(entries)
                continue
            data = repo.store.read(repo.pack_path(name))
            bytes_read += len(data)
            whole_ok = blake3.blake3(data).digest() == name
            entries = packfmt.read_index_from(label, data)
        except RepositoryError as exc:
            problems.append(f"pack {label}: {exc}")
            continue
        except OSError as exc:
            problems.append(f"pack {label}: cannot be read ({exc.strerror or exc})")
            continue
        view = memoryview(data)
        for e in entries:
            cid, off, stored = e["id"].tobytes(), int(e["offset"]), int(e["stored"])
            chunks += 1
            try:
                raw = decompress(view[off : off + stored], max_bytes=max_raw)
                ok = chunk_id(key, raw) == cid and len(raw) == int(e["raw"])
                why = "its content does not match its id"
            except CorruptBlob as exc:
                ok, why = False, str(exc)
            if ok:
                good.add(cid)
                damaged.pop(cid, None)
            elif cid not in good:
                damaged[cid] = f"damaged in pack {label} ({why})"
        if not whole_ok:
            problems.append(f"pack {label}: content does not match its name (damaged)")
    snaps = repo.snapshot_names()
    for sname in snaps:
        try:
            snap = repo.load_snapshot(sname)
        except (RepositoryError, IntegrityError) as exc:
            problems.append(str(exc))
            continue
        for node in snap.nodes:
            for cid in node.chunk_ids():
                if cid in good:
                    continue
                why = damaged.get(cid, "missing from every pack")
                problems.append(
                    f"snapshot {sname[:8]} file {shown(node.path)} "
                    f"chunk {cid.hex()[:16]}: {why}"
                )
    summary = p.VerifySummary(
        exit_code=int(ExitCode.INTEGRITY if problems else ExitCode.OK), quick=quick,
        packs=len(packs), chunks=chunks, bytes_read=bytes_read, snapshots=len(snaps),
        problems=problems[:MAX_LISTED], elapsed_s=round(time.monotonic() - t0, 3),
    )  # fmt: skip
    on_event(summary)
    return summary
