"""chunk_files through real worker processes and the ring, against in-process chunking."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from orbit_fast import messages as m
from orbit_fast.chunking import ChunkerParams, cut_points, make_chunker
from orbit_fast.compression import decompress
from orbit_fast.confine import Tree
from orbit_fast.coordinator.chunk_pipeline import chunk_files
from orbit_fast.errors import SourceError
from orbit_fast.hashing import chunk_id, new_repo_key

pytestmark = pytest.mark.integration
PARAMS = ChunkerParams(min_size=4 << 10, avg_size=16 << 10, max_size=64 << 10)


def _files(root: Path, rng: random.Random) -> list[Path]:
    root.mkdir()
    sizes = [0, 1, 4095, 64 << 10, 200_003, 1 << 20, 3 << 20]
    paths = []
    for i, size in enumerate(sizes):
        half = size // 2
        text = (b"ring slot worker chunk " * (size // 23 + 1))[: size - half]
        p = root / f"f{i}.bin"
        p.write_bytes(rng.randbytes(half) + text)
        paths.append(p)
    return paths


@pytest.mark.parametrize("codec", ["none", "lz4", "zstd:3"])
def test_ranges_give_the_whole_file_cut_points(tmp_path: Path, rng, codec: str) -> None:
    paths = _files(tmp_path / "src", rng)
    key = new_repo_key()
    got: dict[str, list] = {p.name: [] for p in paths}
    sent: dict[bytes, bytes] = {}
    # 64 KiB ranges: most files take several tasks, each starting at the previous last cut.
    with Tree.open(tmp_path / "src") as tree:
        out = [(path, rec, bytes(blob)) for path, rec, blob in
               chunk_files([p.name for p in paths], PARAMS, codec, key, workers=2,
                           range_bytes=64 << 10, tree=tree)]  # fmt: skip
    for path, rec, blob in out:
        blob = bytes(blob)  # a view into the ring slot, valid until the next item
        if not blob:  # a repeat: its blob came earlier
            blob = sent[rec.chunk_id]
        sent.setdefault(rec.chunk_id, blob)
        got[path].append((rec, blob))
    for p in paths:
        data = p.read_bytes()
        ends = [*cut_points(make_chunker(PARAMS), data)]
        if data and (not ends or ends[-1] != len(data)):
            ends.append(len(data))
        recs = got[p.name]
        assert [r.offset + r.length for r, _ in recs] == ends, p.name
        assert b"".join(decompress(b) for _, b in recs) == data
        for r, _ in recs:
            assert r.chunk_id == chunk_id(key, data[r.offset : r.offset + r.length])


def test_a_file_that_shrinks_is_an_error(tmp_path: Path, rng) -> None:
    p = tmp_path / "f"
    p.write_bytes(rng.randbytes(1 << 20))
    tree = Tree.open(tmp_path)
    gen = chunk_files(["f"], PARAMS, "lz4", new_repo_key(), workers=1, range_bytes=64 << 10,
                      tree=tree)  # fmt: skip
    next(gen)
    p.write_bytes(b"short now")
    with pytest.raises(SourceError, match="cannot chunk"):
        list(gen)
    tree.close()


def test_a_worker_sends_each_blob_once(tmp_path: Path, rng) -> None:
    data = rng.randbytes(300_000)
    for name in "abc":
        (tmp_path / name).write_bytes(data)
    with Tree.open(tmp_path) as tree:
        out = [(path, rec, bytes(blob)) for path, rec, blob in
               chunk_files(list("abc"), PARAMS, "zstd:3", new_repo_key(), workers=1,
                           tree=tree)]  # fmt: skip
    first = [blob for path, _, blob in out if path.endswith("a")]
    later = [blob for path, _, blob in out if not path.endswith("a")]
    assert all(first) and len(later) == 2 * len(first)
    assert later == [b""] * len(later)


def test_a_file_replaced_after_the_scan_is_never_read_for_it(tmp_path: Path, rng) -> None:
    # The listing saw one file; a same-size, same-mtime other file renamed over it (or a link
    # to a secret) must fail the file, not be stored under its name.
    p = tmp_path / "f"
    p.write_bytes(b"a" * 5000)
    st = os.stat(p)
    ident = m.Ident(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    other = tmp_path / "other"
    other.write_bytes(b"b" * 5000)
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.rename(other, p)
    errors: list[tuple[str, str]] = []
    with Tree.open(tmp_path) as tree:
        got = list(chunk_files(["f"], PARAMS, "lz4", new_repo_key(), workers=1, tree=tree,
                               idents={"f": ident},
                               on_error=lambda path, why: errors.append((path, why))))
        assert got == [] and errors and errors[0][0] == "f" and "replaced" in errors[0][1]
        os.unlink(p)
        os.symlink("/etc/hostname", p)
        errors.clear()
        got = list(chunk_files(["f"], PARAMS, "lz4", new_repo_key(), workers=1, tree=tree,
                               idents={"f": ident},
                               on_error=lambda path, why: errors.append((path, why))))
        assert got == [] and errors and errors[0][0] == "f"
