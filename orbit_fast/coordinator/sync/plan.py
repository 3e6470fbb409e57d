"""Planning a sync: what to do with one entry, as pure functions of what both sides show.

Decisions, in the order they are carried out for an entry: SKIP (unchanged), META (content
unchanged, permission bits differ), COPY (absent from the destination), UPDATE (different
there), COMPARE (--checksum: same size and mtime, so compare content), MKDIR, DIR (directory
present on both sides: only its mode and mtime are set at the end), LINK, DELETE (--mirror:
absent from the source, or in the way of another kind), CONFLICT (another kind is in the way
and --mirror is off: skipped, with a warning), SPECIAL (sockets, fifos, devices: skipped), and
for object listings RECORD (unchanged, and worth recording so the next run needs no request)
and MTIME (same size, no record: compare modification times). No I/O happens here; callers
pass what they read (tests/unit/test_sync_plan.py covers every branch).
"""

from __future__ import annotations

import stat
from typing import TYPE_CHECKING

from orbit_fast.coordinator.scan import DIR, FILE, LINK, OTHER, Stat

if TYPE_CHECKING:  # a sync between trees never imports the backends
    from orbit_fast.backends.base import ObjectInfo

SKIP, META, COPY, UPDATE, COMPARE = "skip", "meta", "copy", "update", "compare"
MKDIR, DIR_SEEN, LINK_NEW, DELETE = "mkdir", "dir", "link", "delete"
CONFLICT, SPECIAL, RECORD, MTIME = "conflict", "special", "record", "mtime"


def plan_entry(kind: str | None, dst_kind: str | None, src: Stat | None, dst: Stat | None, *,
               mirror: bool, checksum: bool,
               same_link: bool = False) -> tuple[str, ...]:  # fmt: skip
    """Decisions for one entry of the merge-walk of two trees.

    `kind` / `dst_kind`: FILE, DIR, LINK, OTHER or None (absent on that side); `same_link`:
    both are symlinks with the same target."""
    if kind is None:
        return (DELETE,) if mirror else ()
    if kind == OTHER:
        return (SPECIAL,)
    if kind == DIR:
        if dst_kind not in (None, DIR):
            return (DELETE, MKDIR) if mirror else (CONFLICT,)
        return (DIR_SEEN,) if dst_kind == DIR else (MKDIR,)
    if kind == LINK:
        if dst_kind == LINK and same_link:
            return ()
        if dst_kind == DIR:
            return (DELETE, LINK_NEW) if mirror else (CONFLICT,)
        return (LINK_NEW,)
    assert kind == FILE and src is not None
    if dst_kind == DIR:
        # The file replaces what was there: reported as an update, like any other.
        return (DELETE, UPDATE) if mirror else (CONFLICT,)
    if dst_kind == FILE:
        assert dst is not None
        if dst.st_size == src.st_size and dst.st_mtime_ns == src.st_mtime_ns:
            if checksum:
                return (COMPARE,)
            return (META,) if stat.S_IMODE(dst.st_mode) != stat.S_IMODE(src.st_mode) else (SKIP,)
    return (UPDATE,) if dst_kind is not None else (COPY,)


def plan_object(s: ObjectInfo, d: ObjectInfo | None, record: tuple[str, str] | None, *,
                checksum: bool) -> str:  # fmt: skip
    """The decision for a source object `s` against the destination's `d` (None: absent).

    `record` is what the jobs DB holds for the name: the (source, destination) signatures of
    the last copy or match. When it equals both signatures now, the listing alone decides."""
    if d is None:
        return COPY
    if checksum:
        return UPDATE if s.size != d.size else COMPARE
    if record == (s.sig, d.sig):
        return SKIP
    if s.size != d.size:
        return UPDATE
    return MTIME


def same_mtime(src_ns: int | None, dst_ns: int | None, precision_ns: int) -> bool:
    """Whether two modification times are equal at the coarser store's precision (an SMB
    listing keeps 100 ns, S3 metadata what we wrote); unknown is never equal."""
    if src_ns is None or dst_ns is None:
        return False
    return src_ns // precision_ns == dst_ns // precision_ns


def digest_styles(s: ObjectInfo, d: ObjectInfo, part_bytes: int
                  ) -> tuple[dict[str, str], tuple[tuple[str, str], ...]] | None:  # fmt: skip
    """How --checksum compares two objects of one size: (digests already known by side,
    digests to compute as (side, style)); None when they cannot be compared (a multipart
    ETag of unknown part size: copy instead).

    S3 keeps an MD5 (or an MD5 of part MD5s) as the ETag: two S3 objects compare ETags; an S3
    object against a file digests the file the way S3 made the ETag (`part_bytes`: the part
    size of the object with the ETag, 0 if not known); two files compare xxh3."""
    if s.etag and d.etag:
        return {"src": s.etag, "dst": d.etag}, ()
    if s.etag or d.etag:
        side, info = ("dst", s) if s.etag else ("src", d)
        style = "md5"
        if "-" in info.etag:
            if not part_bytes:
                return None
            style = f"md5:{part_bytes}"
        return {"src" if side == "dst" else "dst": info.etag}, ((side, style),)
    return {}, (("src", "xxh3"), ("dst", "xxh3"))
