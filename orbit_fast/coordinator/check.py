"""`verify`: read every pack and check every blob (chunk or tree) against its id, then walk
every snapshot's trees and check that every chunk they name is present and intact; name the
snapshot, file and chunk of each problem.

Every tree is decoded as restore decodes it (repo/tree.py: output limits, each name one clean
component, unique, in order), so a tree that restore would refuse is reported here as damaged,
named with its directory. A tree shared by several snapshots is checked once, for the first
snapshot that reaches it (its problems are named with that snapshot).

`--quick` checks structure only: every pack's trailer and index parse, every tree decodes, and
every chunk a tree names is listed in some pack's index. Memory: a set of the blob ids seen
(about 100 bytes each) and of the trees walked.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import blake3

from orbit_fast import progress as p
from orbit_fast.compression import CorruptBlob, decompress
from orbit_fast.errors import AuthenticationFailed, ExitCode, IntegrityError, RepositoryError
from orbit_fast.hashing import chunk_id
from orbit_fast.index.universe import Universe
from orbit_fast.names import shown
from orbit_fast.repo.repository import Repository
from orbit_fast.repo.tree import MAX_TREE_BYTES, join
from orbit_fast.repo.trees import TreeReader

MAX_LISTED = 1000


def verify(repo: Repository, universe: Universe, quick: bool,
           on_event: Callable[[p.Event], None]) -> p.VerifySummary:  # fmt: skip
    t0 = time.monotonic()
    repo.sync_index(universe)
    key = repo.config.key_bytes
    max_raw = max(repo.config.max_size, MAX_TREE_BYTES)  # a blob is a chunk or a tree
    good: set[bytes] = set()
    damaged: dict[bytes, str] = {}
    problems: list[str] = []
    bytes_read = chunks = 0
    auth_failed = False  # some object failed authentication: its own exit code
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
            entries = repo.read_index_from(name, data)
        except AuthenticationFailed as exc:
            problems.append(f"pack {label}: {exc}")
            auth_failed = True
            continue
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
                blob = repo.open_blob(cid, view[off : off + stored])
                raw = decompress(blob, max_bytes=max_raw)
                ok = chunk_id(key, raw) == cid and len(raw) == int(e["raw"])
                why = "its content does not match its id"
            except AuthenticationFailed:
                ok, why = False, "it failed authentication"
                auth_failed = True
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
    reader = TreeReader(repo, universe)
    walked: set[bytes] = set()
    metas_seen: set[bytes] = set()
    for sname in snaps:
        try:
            snap = repo.load_snapshot(sname)
        except (RepositoryError, IntegrityError) as exc:
            problems.append(str(exc))
            auth_failed |= isinstance(exc, AuthenticationFailed)
            continue

        def bad_tree(exc: IntegrityError, sname: str = sname) -> None:
            nonlocal auth_failed
            problems.append(f"snapshot {sname[:8]}: {exc}")
            auth_failed |= isinstance(exc, AuthenticationFailed)

        metas = [(b"", snap.root)]
        for where, run in reader.walk(snap.tree, walked, bad_tree):
            for e in run:
                if e.meta and e.meta not in metas_seen:
                    metas.append((where, e))
                for cid in e.chunk_ids():
                    if cid in good:
                        continue
                    why = damaged.get(cid, "missing from every pack")
                    problems.append(
                        f"snapshot {sname[:8]} file {shown(join(where, e.name))} "
                        f"chunk {cid.hex()[:16]}: {why}"
                    )
        for where, e in metas:  # each xattr set read and checked once
            mid = e.meta
            if not mid or mid in metas_seen:
                continue
            assert isinstance(mid, bytes)
            metas_seen.add(mid)
            try:
                reader.meta(mid)
            except IntegrityError as exc:
                problems.append(f"snapshot {sname[:8]} entry "
                                f"{shown(join(where, e.name)) or '.'}: {exc}")  # fmt: skip
                auth_failed |= isinstance(exc, AuthenticationFailed)
    summary = p.VerifySummary(
        exit_code=int(ExitCode.AUTHENTICATION if auth_failed else
                      ExitCode.INTEGRITY if problems else ExitCode.OK), quick=quick,
        packs=len(packs), chunks=chunks, bytes_read=bytes_read, snapshots=len(snaps),
        problems=problems[:MAX_LISTED], elapsed_s=round(time.monotonic() - t0, 3),
    )  # fmt: skip
    on_event(summary)
    return summary
