"""The sync planner's decisions, one branch at a time (coordinator/sync/plan.py)."""

from __future__ import annotations

import pytest

from orbit_fast.backends.base import ObjectInfo
from orbit_fast.coordinator.scan import DIR, FILE, LINK, OTHER, Stat
from orbit_fast.coordinator.sync import plan as pl
from orbit_fast.filters import FilterRules

F = Stat(st_size=10, st_mtime_ns=5, st_atime_ns=1, st_mode=0o100644, st_ino=7, st_dev=1,
         st_uid=0, st_gid=0, st_ctime_ns=5, st_nlink=1)
F_CHMOD = F._replace(st_mode=0o100600)
F_NEWER = F._replace(st_mtime_ns=6)
D = Stat(0, 5, 1, 0o40755, 8, 1, 0, 0, 5, 2)


@pytest.mark.parametrize(
    ("kind", "dst_kind", "src", "dst", "mirror", "checksum", "same_link", "want"),
    [
        (None, FILE, None, F, False, False, False, ()),
        (None, FILE, None, F, True, False, False, (pl.DELETE,)),
        (OTHER, None, F, None, True, False, False, (pl.SPECIAL,)),
        (DIR, None, D, None, False, False, False, (pl.MKDIR,)),
        (DIR, DIR, D, D, False, False, False, (pl.DIR_SEEN,)),
        (DIR, FILE, D, F, False, False, False, (pl.CONFLICT,)),
        (DIR, FILE, D, F, True, False, False, (pl.DELETE, pl.MKDIR)),
        (LINK, LINK, F, F, False, False, True, ()),
        (LINK, LINK, F, F, False, False, False, (pl.LINK_NEW,)),
        (LINK, None, F, None, False, False, False, (pl.LINK_NEW,)),
        (LINK, DIR, F, D, False, False, False, (pl.CONFLICT,)),
        (LINK, DIR, F, D, True, False, False, (pl.DELETE, pl.LINK_NEW)),
        (FILE, None, F, None, False, False, False, (pl.COPY,)),
        (FILE, FILE, F, F, False, False, False, (pl.SKIP,)),
        (FILE, FILE, F, F, False, True, False, (pl.COMPARE,)),
        (FILE, FILE, F, F_CHMOD, False, False, False, (pl.META,)),
        (FILE, FILE, F, F_NEWER, False, False, False, (pl.UPDATE,)),
        (FILE, FILE, F, F_NEWER, False, True, False, (pl.UPDATE,)),
        (FILE, LINK, F, F, False, False, False, (pl.UPDATE,)),
        (FILE, DIR, F, D, False, False, False, (pl.CONFLICT,)),
        (FILE, DIR, F, D, True, False, False, (pl.DELETE, pl.UPDATE)),
    ],
)
def test_plan_entry(kind, dst_kind, src, dst, mirror, checksum, same_link, want):
    assert pl.plan_entry(kind, dst_kind, src, dst, mirror=mirror, checksum=checksum,
                         same_link=same_link) == want  # fmt: skip


def test_plan_entry_metadata_only_changes():
    other_owner = F._replace(st_uid=7)
    assert pl.plan_entry(FILE, FILE, F, other_owner, mirror=False, checksum=False) == (pl.SKIP,)
    assert pl.plan_entry(FILE, FILE, F, other_owner, mirror=False, checksum=False,
                         owners=True) == (pl.META,)  # fmt: skip
    # A source ctime after the destination's: xattrs or ACLs may differ.
    changed = F._replace(st_ctime_ns=F.st_ctime_ns + 1)
    assert pl.plan_entry(FILE, FILE, changed, F, mirror=False, checksum=False) == (pl.SKIP,)
    assert pl.plan_entry(FILE, FILE, changed, F, mirror=False, checksum=False,
                         xmeta=True) == (pl.META,)  # fmt: skip
    assert pl.plan_entry(FILE, FILE, F, changed, mirror=False, checksum=False,
                         xmeta=True) == (pl.SKIP,)  # fmt: skip
    assert pl.plan_entry(FILE, FILE, F, F, mirror=False, checksum=False,
                         xmeta=True) == (pl.META,)  # fmt: skip


S = ObjectInfo("a/b", 10, 5, etag="e1")
S_FILE = ObjectInfo("a/b", 10, 5)


def test_plan_object():
    assert pl.plan_object(S, None, None, checksum=False) == pl.COPY
    d = ObjectInfo("a/b", 10, 7, etag="e2")
    assert pl.plan_object(S, d, (S.sig, d.sig), checksum=False) == pl.SKIP
    assert pl.plan_object(S, d, ("old", d.sig), checksum=False) == pl.MTIME
    assert pl.plan_object(S, d._replace(size=11), None, checksum=False) == pl.UPDATE
    # --checksum never trusts a record: content decides.
    assert pl.plan_object(S, d, (S.sig, d.sig), checksum=True) == pl.COMPARE
    assert pl.plan_object(S, d._replace(size=11), None, checksum=True) == pl.UPDATE


def test_plan_object_with_smb_creation_times_and_dos_attributes():
    """Between SMB ends the listings carry each file's creation time and DOS attributes: a
    difference in only those, content unchanged, is a COMPARE (set alone, no copy), whatever
    the record says; a listing without them never differs."""
    from orbit_fast.backends.base import FileMeta

    hidden = S_FILE._replace(meta=FileMeta(btime_ns=100, dos_attrs=0x22))
    plain = S_FILE._replace(meta=FileMeta(btime_ns=100, dos_attrs=0x20))
    born_later = plain._replace(meta=FileMeta(btime_ns=200, dos_attrs=0x20))
    same = (S_FILE.sig, S_FILE.sig)
    assert pl.dos_meta_differs(hidden, plain) and pl.dos_meta_differs(plain, born_later)
    assert not pl.dos_meta_differs(plain, plain) and not pl.dos_meta_differs(hidden, S_FILE)
    assert not pl.dos_meta_differs(plain, plain._replace(meta=FileMeta(dos_attrs=0x20)))
    assert pl.plan_object(plain, plain, same, checksum=False) == pl.SKIP
    assert pl.plan_object(hidden, plain, same, checksum=False) == pl.COMPARE
    assert pl.plan_object(born_later, plain, None, checksum=False) == pl.COMPARE
    assert pl.plan_object(hidden, plain, same, checksum=False, size_only=True) == pl.COMPARE
    assert pl.plan_object(plain, plain, None, checksum=False, size_only=True) == pl.SKIP
    assert pl.plan_object(hidden, plain, same, checksum=True) == pl.COMPARE
    # Another mtime: the times decide (a copy brings the attributes along).
    assert pl.plan_object(hidden, plain._replace(mtime_ns=6), None, checksum=False) == pl.MTIME
    assert pl.plan_object(hidden, plain._replace(size=11), same, checksum=False) == pl.UPDATE
    assert pl.plan_object(hidden, plain, same, checksum=False, ignore_existing=True) == pl.SKIP


def test_same_mtime_at_the_coarser_precision():
    assert pl.same_mtime(1_000_123, 1_000_999, 1000)
    assert not pl.same_mtime(1_000_123, 1_001_000, 1000)
    assert not pl.same_mtime(None, 5, 1)
    assert not pl.same_mtime(5, None, 1)


def test_digest_styles():
    f = ObjectInfo("x", 10, 5)
    # Two S3 objects: the ETags are the digests, nothing to compute.
    assert pl.digest_styles(S, f._replace(etag="e2")) == ({"src": "e1", "dst": "e2"}, ())
    # S3 against a file: the file digested the way S3 made its ETag.
    assert pl.digest_styles(S, f) == ({"src": "e1"}, (("dst", "md5"),))
    assert pl.digest_styles(f, S) == ({"dst": "e1"}, (("src", "md5"),))
    big = ObjectInfo("x", 12 << 20, 5, "abc-3")  # 12 MiB in 3 parts: 5 MiB ones
    assert pl.digest_styles(big._replace(part_bytes=5 << 20), big._replace(etag="")) == (
        {"src": "abc-3"}, (("dst", f"md5:{5 << 20}"),))  # fmt: skip
    # No part size recorded: the sizes that give 3 parts, 5 MiB (rclone's) first.
    assert pl.digest_styles(big._replace(etag=""), big) == (
        {"dst": "abc-3"}, (("src", f"md5:{5 << 20},{4 << 20}"),))  # fmt: skip
    assert pl.digest_styles(f._replace(etag="abc-3"), f) is None  # 10 bytes cannot be 3 parts
    # A whole-file MD5 ("md5chksum", rclone's and ours) is compared as it is.
    md5 = "0" * 32
    assert pl.digest_styles(big._replace(md5=md5), f) == ({"src": md5}, (("dst", "md5"),))
    # Two S3 objects of other part sizes, or one multipart and one not: their whole MD5s.
    assert pl.digest_styles(big._replace(md5=md5), big._replace(etag=md5)) == (
        {"src": md5, "dst": md5}, ())  # fmt: skip
    assert pl.digest_styles(big, big._replace(etag=md5)) == ({"src": "abc-3", "dst": md5}, ())
    assert pl.digest_styles(f, f) == ({}, (("src", "xxh3"), ("dst", "xxh3")))


def test_part_size_candidates():
    mib = 1 << 20
    # orbit-fast's recorded part size alone, if it gives N parts; else the guesses that do.
    assert pl.part_size_candidates(12 * mib, "e-2", 6 * mib) == [6 * mib]
    assert pl.part_size_candidates(12 * mib, "e-3", 6 * mib) == [5 * mib, 4 * mib]  # 6 gives 2
    assert pl.part_size_candidates(12 * mib, "e-2") == [8 * mib, 6 * mib]
    assert pl.part_size_candidates(256 * mib, "e-52") == [5 * mib]
    assert pl.part_size_candidates(256 * mib, "e-32") == [8 * mib]
    # One part: every part size at least the object's cuts it the same way.
    assert pl.part_size_candidates(3 * mib, "e-1") == [3 * mib]
    # Too large for 10,000 parts of 5 MiB: rclone takes the smallest whole MiB that fits.
    size = 100_000 * mib + 123
    assert pl.part_size_candidates(size, f"e-{-(-size // (11 * mib))}") == [11 * mib]
    assert pl.part_size_candidates(10, "not-a-count") == []
    assert pl.part_size_candidates(10, "d41d8cd98f00b204e9800998ecf8427e") == []
    assert len(pl.part_size_candidates(64 * mib, "e-1")) == 1


def test_digests_match_any_listed():
    assert pl.digests_match("a-3", "b-3,a-3")
    assert not pl.digests_match("a-3", "b-3,c-3")
    assert not pl.digests_match("", "a")


def test_a_listed_name_needs_every_parent_included():
    rules = FilterRules((("exclude", "skip/"),))
    cache: dict[str, bool] = {}
    assert rules.included_name("a/b.txt", cache)
    assert not rules.included_name("skip/b.txt", cache)
    assert not rules.included_name("a/skip/c/d.txt", cache)
    assert cache["skip"] is False
    assert FilterRules().included_name("skip/b.txt", {})
