"""The backup's tree builder (coordinator/backup.py) driven without workers or a disk: a
directory's tree is stored once, after its whole listing is taken in and its last entry is
done, whatever order the files finish in. The workers may finish a file while the walk still
waits at that file's `yield`, mid-listing."""

from __future__ import annotations

from orbit_fast import progress as p
from orbit_fast.cancel import CancelToken
from orbit_fast.compression import decompress
from orbit_fast.coordinator import backup as b
from orbit_fast.hashing import chunk_id
from orbit_fast.repo import tree as treefmt
from orbit_fast.repo.trees import TreeReader, TreeWriter

KEY = bytes(range(32))
T = 1_700_000_000_000_000_000


class MemWriter:
    def __init__(self) -> None:
        self.blobs: dict[bytes, bytes] = {}
        self.chunks_written = self.bytes_written = 0

    def has(self, blob_id: bytes) -> bool:
        return blob_id in self.blobs

    def add(self, blob_id: bytes, blob: bytes, raw_len: int) -> None:
        self.blobs[blob_id] = bytes(blob)


class MemReader(TreeReader):
    def __init__(self, blobs: dict[bytes, bytes]) -> None:
        self.blobs, self.key, self.trees_read, self.bytes_read = blobs, KEY, 0, 0

    def load(self, tid: bytes, where: bytes = b"") -> treefmt.TreeBlob:
        raw = decompress(self.blobs[tid], max_bytes=treefmt.MAX_TREE_BYTES)
        assert chunk_id(KEY, raw) == tid
        return treefmt.decode("tree", raw)


def fstat(size: int, ino: int) -> tuple[int, ...]:
    return (0, size, T, T, 0o100644, T, ino, 0, 0, 1, 1, 0)


DSTAT = (1, 0, T, T, 0o40755, T, 1, 0, 0, 1, 2, 0)
LISTINGS = [
    (b"", [(b"a", fstat(5, 1)), (b"b", fstat(0, 2)), (b"c", fstat(7, 3)), (b"d", DSTAT),
           (b"e", DSTAT)]),
    (b"d", [(b"x", fstat(3, 4)), (b"y", fstat(4, 5))]),
    (b"e", [(b"z", fstat(1, 6))]),
]  # fmt: skip


def build(order: str) -> tuple[MemReader, bytes, int]:
    """Run the builder over LISTINGS; files finish at once ("now"), or all at the end."""
    writer = MemWriter()
    run = object.__new__(b.Backup)
    run.cancel, run.remote, run.tree, run.src = CancelToken(), False, None, None
    run.counters, run.warnings, run.emit = p.Counters(), [], lambda ev: None
    run.reader = MemReader(writer.blobs)
    run.trees = TreeWriter(writer, KEY)  # type: ignore[arg-type]
    run.waiting = {b"": (None, 0, b"")}
    run.inflight, run.idents, run.object_sizes = {}, {}, {}
    run.owners, run.linked, run.metas = None, {}, {}
    run.root_tree = None
    run.files_new = run.files_changed = run.files_unchanged = 0
    run.files_total = run.dirs_total = run.bytes_total = 0
    run.last_progress = 0.0
    later = []
    for path in run._files_to_read(iter(LISTINGS)):
        if order == "now":  # done while the walk waits at this file's yield
            f = run.inflight[path]
            f.chunks.append(chunk_id(KEY, path.encode()))
            f.done = f.size
            run._file_done(path, f)
        else:
            later.append(path)
    for path in later:
        f = run.inflight[path]
        f.chunks.append(chunk_id(KEY, path.encode()))
        f.done = f.size
        run._file_done(path, f)
    assert run.root_tree is not None and not run.inflight
    return run.reader, run.root_tree, run.trees.trees_added


def listed(reader: MemReader, tid: bytes, where: bytes = b"") -> list[bytes]:
    out = []
    for e in reader.entries(tid):
        rel = where + b"/" + e.name if where else e.name
        out.append(rel + (b" %d chunks" % e.chunk_count if e.kind == treefmt.FILE else b""))
        if e.kind == treefmt.DIR:
            out += listed(reader, e.subtree, rel)
    return out


def test_files_done_mid_listing_wait_for_the_rest_of_their_directory() -> None:
    reader, root, added = build("now")
    assert listed(reader, root) == [b"a 1 chunks", b"b 0 chunks", b"c 1 chunks", b"d",
                                    b"d/x 1 chunks", b"d/y 1 chunks", b"e", b"e/z 1 chunks"]
    assert added == 3  # each directory's tree stored once
    reader2, root2, _ = build("end")
    assert root2 == root  # the order files finish in changes nothing
    del reader2
