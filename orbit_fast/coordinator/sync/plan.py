"""Planning a sync: what to do with one entry, as pure functions of what both sides show.

Decisions, in the order they are carried out for an entry: SKIP (unchanged), META (content
unchanged; permission bits, owner, xattrs or ACLs may differ), COPY (absent from the
destination), UPDATE (different there), COMPARE (--checksum: same size and mtime, so compare
content), MKDIR, DIR (directory present on both sides: only its mode and mtime are set at the
end), LINK, DELETE (--mirror:
absent from the source, or in the way of another kind), CONFLICT (another kind is in the way
and --mirror is off: skipped, with a warning), SPECIAL (sockets, fifos, devices: skipped), and
for object listings RECORD (unchanged, and worth recording so the next run needs no request)
and MTIME (same size, no record: compare modification times); COMPARE also stands for an
object whose content is unchanged but whose creation time or DOS attributes differ (between SMB
ends: ObjectCopies.compare sets them). No I/O happens here; callers pass what they read
(tests/unit/test_sync_plan.py covers every branch).
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
               mirror: bool, checksum: bool, same_link: bool = False, size_only: bool = False,
               ignore_existing: bool = False, update: bool = False,
               owners: bool = False, xmeta: bool = False) -> tuple[str, ...]:  # fmt: skip
    """Decisions for one entry of the merge-walk of two trees.

    `kind` / `dst_kind`: FILE, DIR, LINK, OTHER or None (absent on that side); `same_link`:
    both are symlinks with the same target. Between two files: `ignore_existing` never
    replaces one (rsync --ignore-existing), `update` keeps one newer than the source (rsync
    -u, rclone --update), `size_only` calls equal sizes unchanged (--size-only); `owners`
    compares owner and group, `xmeta` (xattrs or ACLs kept) calls a file whose source ctime
    is not before the destination's a META update: its xattrs or ACLs are compared then
    (ctimes tick coarsely, so an equal one may be later)."""
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
        if ignore_existing or (update and dst.st_mtime_ns > src.st_mtime_ns):
            return (SKIP,)
        if dst.st_size == src.st_size and (size_only or dst.st_mtime_ns == src.st_mtime_ns):
            if checksum:
                return (COMPARE,)
            moved = (stat.S_IMODE(dst.st_mode) != stat.S_IMODE(src.st_mode)
                     or (owners and (dst.st_uid, dst.st_gid) != (src.st_uid, src.st_gid))
                     or (xmeta and src.st_ctime_ns >= dst.st_ctime_ns))  # fmt: skip
            return (META,) if moved else (SKIP,)
    return (UPDATE,) if dst_kind is not None else (COPY,)


def plan_object(s: ObjectInfo, d: ObjectInfo | None, record: tuple[str, str] | None, *,
                checksum: bool, size_only: bool = False,
                ignore_existing: bool = False) -> str:  # fmt: skip
    """The decision for a source object `s` against the destination's `d` (None: absent).

    `record` is what the jobs DB holds for the name: the (source, destination) signatures of
    the last copy or match. When it equals both signatures now, the listing alone decides.
    (--update needs both times: the engine asks for them when this says UPDATE or MTIME.)
    Where both listings show creation times and DOS attributes (SMB), content the listing
    calls unchanged (same size and mtime, or --size-only) with other ones is COMPARE: they
    are set alone. The record does not cover them: a change of only them moves no mtime."""
    if d is None:
        return COPY
    if ignore_existing:
        return SKIP
    if size_only:
        if s.size != d.size:
            return UPDATE
        return COMPARE if dos_meta_differs(s, d) else SKIP
    if checksum:
        return UPDATE if s.size != d.size else COMPARE
    if s.size != d.size:
        return UPDATE
    if s.mtime_ns == d.mtime_ns and dos_meta_differs(s, d):  # both SMB: both to 100 ns
        return COMPARE
    if record == (s.sig, d.sig):
        return SKIP
    return MTIME


def dos_meta_differs(s: ObjectInfo, d: ObjectInfo) -> bool:
    """Whether two files' creation times or kept DOS attributes differ, where both infos have
    them (SMB listings with meta=True); False when either lacks them."""
    a, b = s.meta, d.meta
    if a is None or b is None or a.dos_attrs < 0 or b.dos_attrs < 0:
        return False
    if a.dos_attrs != b.dos_attrs:
        return True
    return a.btime_ns is not None and b.btime_ns is not None and a.btime_ns != b.btime_ns


def same_mtime(src_ns: int | None, dst_ns: int | None, precision_ns: int) -> bool:
    """Whether two modification times are equal at the coarser store's precision (an SMB
    listing keeps 100 ns, S3 metadata what we wrote); unknown is never equal."""
    if src_ns is None or dst_ns is None:
        return False
    return src_ns // precision_ns == dst_ns // precision_ns


def digest_styles(s: ObjectInfo, d: ObjectInfo
                  ) -> tuple[dict[str, str], tuple[tuple[str, str], ...]] | None:  # fmt: skip
    """How --checksum compares two objects of one size: (digests already known by side,
    digests to compute as (side, style)); None when they cannot be compared (a multipart
    ETag of no part size it could have: copy instead). A multipart S3 object's info must be
    its stat_info (a listing has no metadata: no "md5chksum", no part size).

    S3 keeps an MD5 as the ETag of a single PUT, and an MD5 of part MD5s for a multipart
    upload, where rclone (and orbit-fast) add the whole file's MD5 as "md5chksum". Two S3
    objects compare ETags, or their whole MD5s where both are known; an S3 object against a
    file digests the file to the object's whole MD5, else to its multipart ETag for each part
    size it could have been uploaded in (part_size_candidates); two files compare xxh3."""
    if s.etag and d.etag:
        a, b = s.whole_md5, d.whole_md5
        if s.etag != d.etag and a and b:  # e.g. one multipart, one not, or other part sizes
            return {"src": a, "dst": b}, ()
        return {"src": s.etag, "dst": d.etag}, ()
    if s.etag or d.etag:
        side, info = ("dst", s) if s.etag else ("src", d)
        other = "src" if side == "dst" else "dst"
        if info.whole_md5:
            return {other: info.whole_md5}, ((side, "md5"),)
        sizes = part_size_candidates(info.size, info.etag, info.part_bytes)
        if not sizes:
            return None
        return {other: info.etag}, ((side, "md5:" + ",".join(map(str, sizes))),)
    return {}, (("src", "xxh3"), ("dst", "xxh3"))


MIB = 1 << 20
# Part sizes of common uploaders, most likely first: rclone's --s3-chunk-size default (5 MiB,
# also S3's minimum part), the AWS CLI's and boto3's multipart_chunksize (8 MiB), s3cmd's
# multipart_chunk_size_mb (15 MiB) and 16 MiB (MinIO's mc for small objects).
KNOWN_PART_BYTES = (5 * MIB, 8 * MIB, 15 * MIB, 16 * MIB)
MAX_PART_GUESSES = 4  # each is one more MD5 pass over the file (~760 MB/s a core)


def part_size_candidates(size: int, etag: str, part_bytes: int = 0) -> list[int]:
    """Part sizes a multipart object of `size` bytes with ETag "<hex>-N" may have been
    uploaded in, most likely first: the part size orbit-fast recorded (`part_bytes`; then the
    only one, as only our uploads write that metadata), else the common uploaders' defaults,
    the smallest whole MiB giving N parts (what rclone chooses for a file too large for 10,000
    parts of its chunk size) and powers of two MiB (boto3 doubles its 8 MiB until 10,000
    parts do). Only sizes giving exactly N parts are kept (ceil(size / part) == N), and sizes
    that cut the same parts are tried once. []: not a multipart ETag."""
    head, _, count = etag.rpartition("-")
    if not head or not count.isdigit() or int(count) < 1 or size < 1:
        return []
    n = int(count)
    fit = -(-size // n)  # the smallest part size giving at most n parts
    guesses = [*KNOWN_PART_BYTES, -(-fit // MIB) * MIB, *(MIB << k for k in range(13))]
    if part_bytes and -(-size // part_bytes) == n:
        guesses = [part_bytes]
    out: list[int] = []
    for p in guesses:
        if p < 1 or -(-size // p) != n:
            continue
        # One part: every size >= the object cuts it alike.
        p = size if n == 1 else p
        if p not in out:
            out.append(p)
    return out[:MAX_PART_GUESSES]


def digests_match(a: str, b: str) -> bool:
    """Whether two --checksum digests agree; either may list several ("," joined: the
    multipart ETags of several part sizes), and one equal pair is enough."""
    return bool(set(a.split(",")) & set(b.split(",")))
