"""The worker's CopyFiles task in one process: each file of the task arrives or fails alone."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from orbit_fast import messages as m
from orbit_fast.workers import worker as w
from orbit_fast.workers.ring import SharedRing


def _whole(src: Path, rel: str, **change: int) -> m.Finalize:
    st = os.lstat(src / rel)
    d, _, name = rel.rpartition("/")
    tmp = f"{d}/.{name}.orbit-0000abcd.tmp" if d else f".{name}.orbit-0000abcd.tmp"
    ident = dict(dev=st.st_dev, ino=st.st_ino, size=st.st_size, mtime_ns=st.st_mtime_ns)
    ident.update(change)
    return m.Finalize(tmp=tmp.encode(), dst=rel.encode(), size=st.st_size,
                      mtime_ns=st.st_mtime_ns, atime_ns=st.st_atime_ns, mode=st.st_mode,
                      src=rel.encode(), src_id=m.Ident(**ident), fsync=False)  # fmt: skip


def test_copy_files_reports_each_failure_by_index_and_copies_the_rest(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    for rel, data in (("a/one", b"1" * 100), ("a/two", b""), ("a/three", b"333"),
                      ("b/four", b"\0" * 4096), ("five", b"5")):  # fmt: skip
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
    os.chmod(src / "a" / "three", 0o640)
    files = [_whole(src, "a/one"), _whole(src, "a/two"),
             _whole(src, "a/three", mtime_ns=1),  # the listing saw another file
             _whole(src, "b/four"), _whole(src, "five")]  # fmt: skip
    (src / "five").unlink()  # gone since the listing
    ring = SharedRing.create(1 << 16, 1)
    s, d = os.stat(src), os.stat(dst)
    trees = w._Trees([m.TreeRef(os.fsencode(src), s.st_dev, s.st_ino),
                      m.TreeRef(os.fsencode(dst), d.st_dev, d.st_ino)])  # fmt: skip
    try:
        res = w._Runner(ring, trees).run(m.CopyFiles(task_id=7, slot=0, files=files,
                                                     sparse=True))  # fmt: skip
    finally:
        trees.close()
        ring.close()
    assert isinstance(res, m.FilesCopied) and res.task_id == 7
    assert [(f.index, f.side) for f in res.failed] == [(2, "changed"), (4, "source")]
    assert res.failed[1].errno == errno.ENOENT
    for rel in ("a/one", "a/two", "b/four"):
        got, want = os.lstat(dst / rel), os.lstat(src / rel)
        assert (dst / rel).read_bytes() == (src / rel).read_bytes()
        assert (got.st_mode, got.st_mtime_ns) == (want.st_mode, want.st_mtime_ns)
    assert not (dst / "a" / "three").exists() and not (dst / "five").exists()
    assert sorted(p.name for p in dst.rglob("*") if p.is_file()) == ["four", "one", "two"]
