"""scan_pair (ext/scan.pyx) against its pure-Python twin, on random directory pairs."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orbit_fast._native import reference, scan

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
@given(st.dictionaries(NAMES, st.tuples(SIDE, SIDE), max_size=8), st.booleans())
def test_matches_reference(tmp_path_factory, plan, fold: bool) -> None:
    root = tmp_path_factory.mktemp("scan")
    src, dst = os.fsencode(root / "s"), os.fsencode(root / "d")
    os.mkdir(src)
    os.mkdir(dst)
    _populate(src, dst, plan)
    got = scan.scan_pair(src, dst, fold)
    assert got == reference.scan_pair(src, dst, fold)
    names = [e[0] for e in got[0]]
    assert names == sorted(names)
    present = {n for n, (a, b) in plan.items() if (a, b) != ("absent", "absent")}
    assert len(names) + got[1] == len(present)


def test_folds_only_identical_regular_files(tmp_path: Path) -> None:
    src, dst = os.fsencode(tmp_path / "s"), os.fsencode(tmp_path / "d")
    os.mkdir(src)
    os.mkdir(dst)
    _populate(src, dst, {b"same": ("file_same", "file_same"),
                         b"mode": ("file_other_mode", "file_other_mode"),
                         b"new": ("file", "absent"), b"gone": ("absent", "file")})  # fmt: skip
    entries, folded = scan.scan_pair(src, dst, True)
    assert folded == 1
    assert [e[0] for e in entries] == [b"gone", b"mode", b"new"]
    assert scan.scan_pair(src, dst, False)[1] == 0


def test_missing_destination_is_empty_missing_source_raises(tmp_path: Path) -> None:
    src = os.fsencode(tmp_path)
    (tmp_path / "f").write_bytes(b"1")
    entries, folded = scan.scan_pair(src, os.fsencode(tmp_path / "nope"), True)
    assert [e[0] for e in entries] == [b"f"] and entries[0][2] is None
    entries, _ = scan.scan_pair(src, os.fsencode(tmp_path / "f"), True)  # not a directory
    assert [e[0] for e in entries] == [b"f"]
    with pytest.raises(OSError) as info:
        scan.scan_pair(os.fsencode(tmp_path / "nope"), src, True)
    assert info.value.errno == errno.ENOENT and info.value.filename == os.fsencode(
        tmp_path / "nope"
    )


@pytest.mark.parametrize("impl", [scan, reference], ids=["native", "reference"])
def test_symlinked_directories_are_entered_only_at_the_roots(tmp_path: Path, impl) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"s")
    (tmp_path / "link").symlink_to(outside)
    link, real = os.fsencode(tmp_path / "link"), os.fsencode(tmp_path / "empty")
    os.mkdir(real)
    with pytest.raises(OSError) as info:
        impl.scan_pair(link, real, True)  # below a root: a swapped-in link is refused
    assert info.value.errno in (errno.ELOOP, errno.ENOTDIR)  # Linux says ENOTDIR
    assert impl.scan_pair(real, link, True) == ([], 0)  # ... and is no destination to list
    entries, _ = impl.scan_pair(link, real, True, True)  # a root the user named: followed
    assert [e[0] for e in entries] == [b"secret"]


@settings(max_examples=25, deadline=None)
@given(st.dictionaries(NAMES, st.tuples(SIDE, SIDE), max_size=8))
def test_scan_dir_matches_reference(tmp_path_factory, plan) -> None:
    root = tmp_path_factory.mktemp("d")
    path, other = os.fsencode(root / "s"), os.fsencode(root / "x")
    os.mkdir(path)
    os.mkdir(other)
    _populate(path, other, plan)
    got = scan.scan_dir(path)
    assert got == reference.scan_dir(path)
    st_ = os.lstat(path)
    for name, full in got:
        s = os.lstat(os.path.join(path, name))
        assert full[1:] == (s.st_size, s.st_mtime_ns, s.st_atime_ns, s.st_mode, s.st_ctime_ns,
                            s.st_ino, s.st_uid, s.st_gid)  # fmt: skip
    assert st_.st_ino not in [f[6] for _, f in got]
    os.symlink(path, os.path.join(os.fsencode(root), b"ln"))
    with pytest.raises(OSError):
        scan.scan_dir(os.path.join(os.fsencode(root), b"ln"))
    assert scan.scan_dir(os.path.join(os.fsencode(root), b"ln"), True) == got
