"""scan_pair (ext/scan.pyx) against its pure-Python twin, on random directory pairs.

Both list directories given as open fds (the walk opens them below its tree, confine.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orbit_fast._native import reference, scan
from orbit_fast.confine import Tree
from orbit_fast.coordinator.scan import merge_walk
from orbit_fast.filters import FilterRules


def _open(path: bytes) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


class _Fds:
    """Directory fds opened for one test, closed at its end."""

    def __init__(self) -> None:
        self.fds: list[int] = []

    def __call__(self, path: bytes) -> int:
        self.fds.append(_open(path))
        return self.fds[-1]

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)


@pytest.fixture
def fd():
    fds = _Fds()
    yield fds
    fds.close()

NAMES = st.sampled_from([b"a", b"b", b"c.txt", b"d d", b"\xe9\xff", "ü☃".encode(), b".hid",
                         b"z" * 200])  # fmt: skip
SIDE = st.sampled_from(["file", "file_same", "file_other_mode", "file_other_mtime", "dir",
                        "link", "absent"])  # fmt: skip


def _populate(src: bytes, dst: bytes, plan: dict[bytes, tuple[str, str]]) -> None:
    for name, (s_kind, d_kind) in plan.items():
        for root, kind in ((src, s_kind), (dst, d_kind)):
            path = os.path.join(root, name)
            if kind == "absent":
                continue
            if kind == "dir":
                os.mkdir(path)
            elif kind == "link":
                os.symlink(b"../elsewhere", path)
            else:
                with open(path, "wb") as f:
                    f.write(b"x" * (3 if kind != "file" else 5))
                os.chmod(path, 0o600 if kind == "file_other_mode" and root == dst else 0o644)
                mtime = 1_600_000_000_123_456_789
                if kind == "file_other_mtime" and root == dst:
                    mtime += 1
                os.utime(path, ns=(mtime, mtime))


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(NAMES, st.tuples(SIDE, SIDE), max_size=8), st.integers(0, 15))
def test_matches_reference(tmp_path_factory, plan, fold: int) -> None:
    root = tmp_path_factory.mktemp("scan")
    src, dst = os.fsencode(root / "s"), os.fsencode(root / "d")
    os.mkdir(src)
    os.mkdir(dst)
    _populate(src, dst, plan)
    s_fd, d_fd = _open(src), _open(dst)
    try:
        got = scan.scan_pair(s_fd, d_fd, fold)
        assert got == reference.scan_pair(s_fd, d_fd, fold)
        assert scan.scan_pair(s_fd, d_fd, fold) == got  # the fds' offsets are not consumed
    finally:
        os.close(s_fd)
        os.close(d_fd)
    names = [e[0] for e in got[0]]
    assert names == sorted(names)
    present = {n for n, (a, b) in plan.items() if (a, b) != ("absent", "absent")}
    assert len(names) + got[1] == len(present)


def test_folds_only_identical_regular_files(tmp_path: Path, fd) -> None:
    src, dst = os.fsencode(tmp_path / "s"), os.fsencode(tmp_path / "d")
    os.mkdir(src)
    os.mkdir(dst)
    _populate(src, dst, {b"same": ("file_same", "file_same"),
                         b"mode": ("file_other_mode", "file_other_mode"),
                         b"new": ("file", "absent"), b"gone": ("absent", "file")})  # fmt: skip
    entries, folded = scan.scan_pair(fd(src), fd(dst), True)
    assert folded == 1
    assert [e[0] for e in entries] == [b"gone", b"mode", b"new"]
    assert scan.scan_pair(fd(src), fd(dst), False)[1] == 0
    # Folding by owner too (2): a file whose owner differs is listed, natively and in the twin.
    if os.geteuid() == 0:
        os.chown(dst + b"/same", 4321, 4321)
        for impl in (scan, reference):
            entries, folded = impl.scan_pair(fd(src), fd(dst), 3)
            assert folded == 0 and b"same" in [e[0] for e in entries]
            assert impl.scan_pair(fd(src), fd(dst), 1)[1] == 1
        os.chown(dst + b"/same", 0, 0)
    # By ctime (8): a source file whose ctime moved past the destination's (an xattr or ACL
    # set on it) is listed.
    same = os.stat(src + b"/same")
    time.sleep(0.02)  # ctimes tick by the kernel's coarse clock (a few ms)
    os.utime(dst + b"/same", ns=(same.st_atime_ns, same.st_mtime_ns))  # the same times
    for impl in (scan, reference):  # the destination's ctime is later: folded
        assert impl.scan_pair(fd(src), fd(dst), 9)[1] == 1
    time.sleep(0.02)
    os.chmod(src + b"/same", same.st_mode)  # the source's ctime alone moves
    for impl in (scan, reference):
        assert impl.scan_pair(fd(src), fd(dst), 1)[1] == 1
        entries, folded = impl.scan_pair(fd(src), fd(dst), 9)
        assert folded == 0 and b"same" in [e[0] for e in entries]


def test_no_destination_lists_the_source_alone(tmp_path: Path, fd) -> None:
    (tmp_path / "f").write_bytes(b"1")
    for impl in (scan, reference):
        entries, folded = impl.scan_pair(fd(os.fsencode(tmp_path)), -1, True)
        assert [e[0] for e in entries] == [b"f"] and entries[0][2] is None and folded == 0
        st_ = os.lstat(tmp_path / "f")
        assert entries[0][1][5:7] == (st_.st_ino, st_.st_dev)  # what a worker checks
        assert entries[0][1][7:9] == (st_.st_uid, st_.st_gid)  # what a sync keeping owners compares


@pytest.mark.parametrize("kernel", ["native", "reference"])
def test_the_walk_never_enters_a_symlinked_directory_below_a_root(tmp_path: Path, kernel,
                                                                  monkeypatch) -> None:
    monkeypatch.setenv("ORBIT_KERNEL", kernel)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"s")
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_bytes(b"x")
    (dst / "d").mkdir(parents=True)
    (src / "link").symlink_to(outside)
    (dst / "dlink").symlink_to(outside)  # a destination "directory" that is a link: empty
    skipped: list[str] = []
    with Tree.open(src) as s, Tree.open(dst) as d:
        walk = merge_walk(s, d, FilterRules(()), lambda rel, exc: skipped.append(rel))
        entries = {e.rel: (e.kind, e.dst_kind) for e in walk}
        assert entries == {"d": ("dir", "dir"), "d/f": ("file", None), "link": ("link", None),
                           "dlink": (None, "link")}
        # A listed directory swapped for a link before the walk reaches it is refused whole.
        walk = merge_walk(s, d, FilterRules(()), lambda rel, exc: skipped.append(rel))
        assert next(walk).rel == "d"
        os.rename(src / "d", tmp_path / "moved")
        (src / "d").symlink_to(outside)
        assert [e.rel for e in walk] == ["dlink", "link"]
        assert skipped == ["d"]


@settings(max_examples=25, deadline=None)
@given(st.dictionaries(NAMES, st.tuples(SIDE, SIDE), max_size=8))
def test_scan_dir_matches_reference(tmp_path_factory, plan) -> None:
    root = tmp_path_factory.mktemp("d")
    path, other = os.fsencode(root / "s"), os.fsencode(root / "x")
    os.mkdir(path)
    os.mkdir(other)
    _populate(path, other, plan)
    dfd = _open(path)
    try:
        got = scan.scan_dir(dfd)
        assert got == reference.scan_dir(dfd)
    finally:
        os.close(dfd)
    st_ = os.lstat(path)
    for name, full in got:
        s = os.lstat(os.path.join(path, name))
        assert full[1:] == (s.st_size, s.st_mtime_ns, s.st_atime_ns, s.st_mode, s.st_ctime_ns,
                            s.st_ino, s.st_uid, s.st_gid, s.st_dev, s.st_nlink,
                            s.st_rdev)  # fmt: skip
    assert st_.st_ino not in [f[6] for _, f in got]
