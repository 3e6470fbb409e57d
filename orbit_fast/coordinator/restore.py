"""Restore files of a snapshot into a target directory: byte-identical, with metadata, resumable.

Each file is written to a temp file beside its final name, every chunk checked against its id
on the way (a damaged chunk fails that file only, named in a warning), then renamed into place
with its mode and times; directory times are set last. A rerun skips files already in place
(same size and mtime), so an interrupted restore resumes. Owners are restored when running as
root, as tar and restic do.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from orbit_fast import progress as p
from orbit_fast.cancel import CancelToken
from orbit_fast.compression import CorruptBlob, decompress
from orbit_fast.errors import DestinationError, ExitCode, IntegrityError, Interrupted, UsageError
from orbit_fast.hashing import chunk_id
from orbit_fast.index.universe import Universe
from orbit_fast.repo import snapshot as snapfmt
from orbit_fast.repo.repository import Repository
from orbit_fast.repo.snapshot import Node
from orbit_fast.roots import check_run

TMP_SUFFIX = ".orbit-restore.tmp"


def select(nodes: list[Node], paths: tuple[str, ...], parents: bool = True) -> list[Node]:
    """The nodes at or below any of `paths` (all of them when none is given), plus (with
    `parents`) the directories above them, so that they are created with their metadata."""
    if not paths:
        return nodes
    want = [os.fsencode(x.strip("/")) for x in paths]
    keep: set[bytes] = set()
    for n in nodes:
        if any(w == b"" or n.path == w or n.path.startswith(w + b"/") for w in want):
            keep.add(n.path)
            if parents:
                parts = n.path.split(b"/")
                keep.update(b"/".join(parts[:i]) for i in range(len(parts)))
    missing = [x for x, w in zip(paths, want, strict=True) if w and w not in keep]
    if missing:
        raise UsageError(f"not in the snapshot: {', '.join(missing)}")
    return [n for n in nodes if n.path in keep]


def restore(repo: Repository, universe: Universe, snap: snapfmt.Snapshot, target: str,
            paths: tuple[str, ...], on_event: Callable[[p.Event], None],
            cancel: CancelToken,
            allowed_roots: tuple[str, ...] = ()) -> p.RestoreSummary:  # fmt: skip
    t0 = time.monotonic()
    check_run((("restore target", os.path.abspath(target)),), allowed_roots)
    repo.sync_index(universe)
    nodes = select(snap.nodes, paths)
    target = os.path.abspath(target)
    try:
        os.makedirs(target, exist_ok=True)
    except OSError as exc:
        raise DestinationError(
            f"cannot create the restore target {target}: {exc.strerror}"
        ) from exc
    key = repo.config.key_bytes
    as_root = os.geteuid() == 0
    counters = p.Counters()
    counters.bytes_total = sum(n.size for n in nodes if n.kind == snapfmt.FILE)
    counters.files_total = sum(1 for n in nodes if n.kind == snapfmt.FILE)
    counters.scan_done = True
    problems: list[str] = []
    restored = skipped = 0
    last = 0.0
    dirs: list[tuple[str, Node]] = []
    for node in nodes:
        if cancel.cancelled:
            raise Interrupted("restore interrupted; rerun it to resume",
                              cancel.exit_code or ExitCode.INTERRUPTED)  # fmt: skip
        dst = os.path.join(target, os.fsdecode(node.path)) if node.path else target
        try:
            if node.kind == snapfmt.DIR:
                os.makedirs(dst, exist_ok=True)
                dirs.append((dst, node))
            elif node.kind == snapfmt.LINK:
                if os.path.lexists(dst):
                    if os.path.islink(dst) and os.readlink(dst) == os.fsdecode(node.target):
                        continue
                    os.unlink(dst)
                os.symlink(node.target, dst)
                if as_root:
                    os.lchown(dst, node.uid, node.gid)
                os.utime(dst, ns=(node.atime_ns, node.mtime_ns), follow_symlinks=False)
            else:
                try:
                    have = os.lstat(dst)
                    if have.st_size == node.size and have.st_mtime_ns == node.mtime_ns:
                        skipped += 1
                        counters.bytes_done += node.size
                        continue
                except FileNotFoundError:
                    pass
                bad = _restore_file(repo, universe, key, node, dst, as_root, counters)
                if bad:
                    problems.append(f"{os.fsdecode(node.path)}: {bad}")
                    on_event(p.Warning(msgid="integrity", path=os.fsdecode(node.path),
                                       message=bad))  # fmt: skip
                else:
                    restored += 1
        except OSError as exc:
            raise DestinationError(f"cannot restore {dst}: {exc.strerror or exc}") from exc
        now = time.monotonic()
        if now - last >= 0.25:
            last = now
            counters.files_done = restored + skipped
            on_event(counters.progress(0))
    for dst, node in reversed(dirs):  # deepest first: writing into a dir changes its mtime
        os.chmod(dst, node.mode)
        if as_root:
            os.chown(dst, node.uid, node.gid)
        os.utime(dst, ns=(node.atime_ns, node.mtime_ns))
    summary = p.RestoreSummary(
        exit_code=int(ExitCode.INTEGRITY if problems else ExitCode.OK),
        files_restored=restored, files_skipped=skipped, bytes_total=counters.bytes_total,
        problems=problems, elapsed_s=round(time.monotonic() - t0, 3),
    )  # fmt: skip
    on_event(summary)
    if problems:
        raise IntegrityError(
            f"{len(problems)} files could not be restored because chunks are missing or "
            f"damaged (first: {problems[0]}); every other file was restored. Run "
            "`orbit-fast verify` to see what else is affected"
        )
    return summary


def _restore_file(repo: Repository, universe: Universe, key: bytes, node: Node, dst: str,
                  as_root: bool, counters: p.Counters) -> str | None:  # fmt: skip
    """Write one file; returns what was wrong if a chunk is missing or damaged."""
    ids = node.chunk_ids()
    locs = universe.locate(repo.id, ids)
    for cid, loc in zip(ids, locs, strict=True):
        if loc is None:
            return f"chunk {cid.hex()[:16]} is missing from the repository"
    tmp = os.path.join(os.path.dirname(dst), "." + os.path.basename(dst) + TMP_SUFFIX)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        for cid, loc in zip(ids, locs, strict=True):
            assert loc is not None
            try:
                data = decompress(repo.read_blob(loc))
            except CorruptBlob as exc:
                return f"chunk {cid.hex()[:16]} is damaged ({exc})"
            if chunk_id(key, data) != cid:
                return f"chunk {cid.hex()[:16]} is damaged (its content does not match its id)"
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            counters.bytes_done += len(data)
        if as_root:
            os.fchown(fd, node.uid, node.gid)
        os.fchmod(fd, node.mode)
        os.utime(fd, ns=(node.atime_ns, node.mtime_ns))
    finally:
        os.close(fd)
        if os.path.exists(tmp) and os.path.getsize(tmp) != node.size:
            os.unlink(tmp)
    os.replace(tmp, dst)
    return None
