"""Locations decoded and normalised once (locations.py), the run-start roots check (roots.py)
and the object names a listing refuses (backends/base.name_problem)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orbit_fast import locations
from orbit_fast.backends.base import name_problem
from orbit_fast.backends.s3 import parse_url as s3_parse
from orbit_fast.backends.smb import parse_url as smb_parse
from orbit_fast.errors import DestinationError, OutsideRoots, UsageError
from orbit_fast.roots import check_protected, check_roots

SAME = [
    ("SMB://U@Host:445/Share/a//b/./c/", "smb://U@host/share/a/b/c"),
    ("s3://Bucket//p//q/", "s3://bucket/p/q"),
    ("s3://b1/50%25/x", "s3://b1/50%25/x"),
    ("smb://h/s/%EF%BC%8E%EF%BC%8E/x", "smb://h/s/．．/x"),
    ("smb://h/s/a%2ex", "smb://h/s/a.x"),
    ("/srv//data/./x/", "/srv/data/x"),
    ("file:///srv/a%2e%2e", "/srv/a%2e%2e"),  # local paths are not percent-decoded
]
REFUSED = ["smb://h/s/%2e%2e/x", "smb://h/s/a%2F..%2Fb", "smb://h/s/a%5C..%5Cb", "s3://b1/..",
           "s3://b1/a/%2E%2E", "smb://h/s/%00", "smb://h/s/...%20", "smb://h", "s3:///x",
           "/a/../b", "relative/path", "ftp://h/x", "smb://h%2F/s"]  # fmt: skip


@pytest.mark.parametrize(("given", "canonical"), SAME)
def test_one_spelling_per_place(given: str, canonical: str) -> None:
    assert locations.normalise(given) == canonical
    assert locations.normalise(canonical) == canonical  # a fixed point: decoded only once
    assert locations.parse(canonical) == locations.parse(given)


@pytest.mark.parametrize("url", REFUSED)
def test_traversal_and_malformed_locations_are_refused(url: str) -> None:
    with pytest.raises(UsageError):
        locations.parse(url)


def test_backends_read_the_same_components() -> None:
    """The %2e%2e of issue #15: the backends' parse is the check's parse."""
    with pytest.raises(UsageError):
        smb_parse("smb://u@h/share/allowed/%2e%2e/victim")
    assert smb_parse("smb://u@H:1445/Share//a/%252e%252e") == ("h", 1445, "share", "a/%2e%2e",
                                                               "u", None)  # fmt: skip
    assert s3_parse("s3://B/a//b/") == ("b", "a/b")
    with pytest.raises(UsageError):
        s3_parse("s3://b1/a/%2e%2e/x")


def test_within_and_overlap() -> None:
    p = locations.parse
    assert locations.within(p("smb://h/s/a/b"), p("SMB://H:445/S/a"))
    assert not locations.within(p("smb://h/s/ab"), p("smb://h/s/a"))
    assert not locations.within(p("smb://h:99/s/a"), p("smb://h/s/a"))
    assert locations.overlap(p("/"), p("/var/lib/orbit"))
    assert not locations.overlap(p("/var/lib/orbit2"), p("/var/lib/orbit"))


@pytest.mark.parametrize(("name", "bad"), [
    ("a//b.txt", True), ("./x", True), ("../x", True), ("a/./b", True), ("/abs", True),
    ("a\x00b", True), ("a\\b", True), ("x/" + "n" * 256, True), ("", True),
    ("a/b.txt", False), ("．．/x", False), ("a∕..∕b", False), ("n" * 255, False),
])  # fmt: skip
def test_object_names_a_listing_skips(name: str, bad: bool) -> None:
    assert (name_problem(name) is not None) == bad


def test_roots_are_reached_through_directories_only(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "a" / "b").mkdir(parents=True)
    outside.mkdir()
    (root / "link").symlink_to(outside)
    (root / "a" / "dirlink").symlink_to(root / "a" / "b")  # even one that stays inside
    roots = (str(root),)
    assert check_roots("source", str(root / "a" / "b"), roots) is not None
    assert check_roots("destination", str(root / "new" / "deeper"), roots) is not None
    assert check_roots("source", str(root), roots) is not None
    for bad in (root / "link", root / "link" / "new", root / "a" / "dirlink" / "x",
                outside, tmp_path / "rootx"):  # fmt: skip
        with pytest.raises(OutsideRoots):
            check_roots("destination", str(bad), roots)
    assert check_roots("destination", "/anywhere", ()) is None  # no roots: anywhere
    with pytest.raises(OutsideRoots):
        check_roots("destination", "s3://b1/x", roots)  # a local root covers no URL
    assert check_roots("destination", "s3://B1//x/y", ("s3://b1/x",)) is None


def test_protected_paths_are_no_end(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (tmp_path / "link").symlink_to(state)
    for end in ("/", str(tmp_path), str(state), str(state / "x"), str(tmp_path / "link"),
                str(tmp_path / "link" / "y")):  # fmt: skip
        with pytest.raises(DestinationError):
            check_protected("destination", end, (str(state),))
    check_protected("destination", str(tmp_path / "state2"), (str(state),))
    check_protected("destination", "smb://h/s", (str(state),))
    assert os.path.isdir(state)
