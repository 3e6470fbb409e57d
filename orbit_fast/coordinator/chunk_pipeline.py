"""Chunk, name and compress files in the worker pool: the front half of backup (#4).

A task is one or more parts, each a range of one file that starts at a cut point; small
files share a task (up to MAX_PARTS), a large file's range fills a slot alone. The worker reads
the parts into its ring slot, cuts each (a fresh chunker gives the whole file's cut points,
because CDC state resets at every cut), names each complete chunk with the keyed id and
compresses it into the slot's output half. Each part's result says where its file's next
range starts, so a file has at most one range out and different files are worked on in
parallel. A range that does not reach its file's end is at least the maximum chunk size, so
every task makes progress. The caller gets (path, record, blob) in file order per file; a
blob is a view into the ring slot, valid until the next item is asked for: copy what you keep.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from orbit_fast import crypto
from orbit_fast import messages as m
from orbit_fast.chunking import ChunkerParams
from orbit_fast.compression import HEADER, parse_codec
from orbit_fast.config import url_scheme
from orbit_fast.confine import Tree
from orbit_fast.coordinator.dispatch import TaskBoard
from orbit_fast.errors import SourceError, UsageError, WorkerFailed

if TYPE_CHECKING:
    from orbit_fast.workers.pool import WorkerPool

TASKS_PER_WORKER = 2  # one being cut, one waiting: chunking is CPU work, one thread each
# Small files share a task, up to this many (one round trip per file cost the coordinator
# more than the workers' chunking of the bench tree's 20k small files).
MAX_PARTS = 256
MAX_READY = 4096  # files stat'ed ahead of dispatch


def chunk_files(
    paths: Iterable[str],
    params: ChunkerParams,
    codec: str,
    key: bytes,
    workers: int,
    range_bytes: int = 4 << 20,
    on_error: Callable[[str, str], None] | None = None,
    cancelled: Callable[[], bool] = lambda: False,
    src_url: str = "",
    sizes: dict[str, int] | None = None,
    shared: WorkerPool | None = None,
    s3_endpoint: str = "",
    tree: Tree | None = None,
    idents: dict[str, m.Ident] | None = None,
    seal: tuple[bytes, bytes] = (b"", b""),
) -> Iterator[tuple[str, m.ChunkRecord, memoryview]]:
    """Yield (path, chunk record, blob view) for every chunk of every file, in order per file.
    The view is valid until the next item is asked for.

    A file that cannot be read (or changes size while it is read) raises SourceError, or with
    `on_error` is reported there as (path, message) and dropped: chunks of it already yielded
    are to be discarded by the caller. Once `cancelled()` is true no new range is started and
    the generator ends after the ranges in flight. With `src_url` the paths are object names
    in that store (the workers read them there) and `sizes` gives their sizes. With `shared`
    the work runs on that pool (the hub's), else on `workers` processes started for it.
    `s3_endpoint` is the run's for an s3:// `src_url` ("": ORBIT_S3_ENDPOINT). With `tree`
    the paths are relative to it (the workers reach them without following a symlink) and
    `idents` says which file each one is: its size, and the fstat the worker checks after
    each read (another file, or one changed meanwhile, fails that file). `seal`: an
    encrypted repository's (encryption key, id): the blobs come sealed.
    """
    params.validate()
    parse_codec(codec)  # a bad spec fails here, not in every worker
    if tree is None and not src_url:
        raise ValueError("chunk_files: local paths are read below a tree (pass tree=)")
    own = None
    if s3_endpoint and url_scheme(src_url) == "s3":
        # The tasks name the source by its URL alone: the workers read it through their
        # pool's endpoint, so a run with its own endpoint gets a pool of its own for it.
        if shared is None:
            from orbit_fast.workers.pool import WorkerPool

            own = shared = WorkerPool(workers, 1, s3_endpoint=s3_endpoint)
        elif shared.source_endpoint() != s3_endpoint:
            raise UsageError(f"s3_endpoint {s3_endpoint} is not the one the shared workers read "
                             f"{src_url} through ({shared.source_endpoint() or 'AWS'}); set "
                             "ORBIT_S3_ENDPOINT for them instead", "s3_endpoint")  # fmt: skip
    in_cap = max(range_bytes, params.max_size)
    # Output: every chunk's blob is at most its raw bytes plus a header (raw fallback); a part
    # may end in a chunk shorter than min_size, so each part adds one more header.
    # Sealed, each grows by crypto.OVERHEAD more.
    out_cap = in_cap + (HEADER.size + crypto.OVERHEAD) * (in_cap // params.min_size + 2
                                                          + MAX_PARTS)  # fmt: skip
    # task owner: [(path, size)] of its parts; a result's slot is released once its blobs
    # have been handed out.
    trees = [m.TreeRef(os.fsencode(tree.path), tree.dev, tree.ino)] if tree is not None else []
    board: TaskBoard[list[tuple[str, int]]] = TaskBoard(
        workers=workers, threads=1, depth=TASKS_PER_WORKER, slot_bytes=in_cap + out_cap,
        slots=TASKS_PER_WORKER * workers, shared=shared, hold_slots=True, trees=trees,
    )  # fmt: skip
    slots = TASKS_PER_WORKER * workers
    files = iter(paths)
    ready: deque[tuple[str, int, int]] = deque()  # (path, next offset, size)
    ready_bytes = 0
    more = True

    def fail(path: str, detail: str) -> None:
        if on_error is None:
            raise SourceError(f"cannot chunk {path}: {detail}")
        on_error(path, f"changed or unreadable while read: {detail}")

    try:
        if own is not None:
            own.start()
        while True:
            if cancelled():
                more = False
                ready.clear()
            while more and ready_bytes < slots * in_cap and len(ready) < MAX_READY:
                path = next(files, None)
                if path is None:
                    more = False
                    break
                try:
                    if sizes is not None:
                        size = sizes[path]
                    elif idents is not None:
                        size = idents[path].size
                    else:
                        assert tree is not None
                        size = tree.lstat(path).st_size
                except OSError as exc:
                    if on_error is None:
                        raise SourceError(f"cannot read {path}: {exc.strerror}") from exc
                    on_error(path, exc.strerror or str(exc))
                    continue
                if size:
                    ready.append((path, 0, size))
                    ready_bytes += size
            while ready and board.room() and (slot := board.acquire_slot()) is not None:
                parts: list[m.RangePart] = []
                owners: list[tuple[str, int]] = []
                used = 0
                while ready and len(parts) < MAX_PARTS:
                    path, offset, size = ready[0]
                    left = size - offset
                    if left > in_cap - used and parts:
                        break  # a part that does not reach its file's end needs a whole slot
                    ready.popleft()
                    length = min(in_cap - used, left)
                    ready_bytes -= left  # the rest comes back with the result
                    parts.append(m.RangePart(os.fsencode(path), offset, length,
                                             offset + length == size,
                                             idents.get(path) if idents else None))  # fmt: skip
                    owners.append((path, size))
                    used += length
                task = m.ChunkRange(
                    task_id=0, slot=slot, parts=parts, out_at=in_cap,
                    min_size=params.min_size, avg_size=params.avg_size,
                    max_size=params.max_size, codec=codec, key=key, src_url=src_url,
                    seal_key=seal[0], seal_repo=seal[1],
                )  # fmt: skip
                board.send(owners, "chunk", 0, slot, task)
            if not board.tasks:
                if not ready and not more:
                    return
                continue
            results, deaths = board.wait(1.0)
            for rec, res in results:
                owners, slot = rec.owner, rec.slot
                assert slot is not None
                if not isinstance(res, m.RangeChunked):
                    board.release_slot(slot)
                    detail = getattr(res, "message", None) or getattr(res, "detail", res)
                    for path, _ in owners:
                        fail(path, str(detail))
                    continue
                assert board.ring is not None
                view = board.ring.view(slot)
                try:
                    for (path, size), part in zip(owners, res.parts, strict=True):
                        if part.error:
                            fail(path, part.error)
                            continue
                        if part.next_offset < size:
                            ready.appendleft((path, part.next_offset, size))
                            ready_bytes += size - part.next_offset
                        for chunk in part.chunks:
                            blob = view[chunk.blob_at : chunk.blob_at + chunk.blob_len]
                            try:
                                yield path, chunk, blob
                            finally:
                                blob.release()  # a kept view would pin the ring's memory
                finally:
                    view.release()
                    board.release_slot(slot)
            for death in deaths:
                for lost in death.given_up:
                    owners = lost.owner
                    raise WorkerFailed(
                        f"workers died {lost.deaths} times chunking {owners[0][0]}"
                        + (f" (and {len(owners) - 1} more files)" if len(owners) > 1 else "")
                    )
    finally:
        board.close()
        if own is not None:
            own.shutdown()
