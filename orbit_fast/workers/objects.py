"""Worker side of sync between stores: object and part copies, upload completion, digests.

Each worker thread opens its own store per URL (its own S3 client, its own SMB connection:
smbprotocol fails when threads share one connection with large requests, RECIPES.md 8), so
`concurrency` transfers run at once across the pool. Bytes go from the source store to the
destination store inside this thread and never through the coordinator. Failures become
TaskFailed results: "source" (the file is skipped with a warning), "destination", "remote"
(refused: the run stops) or "unavailable" (retries ran out: the run stops, and the hub runs
it again after a while); a rerun resumes.

A file's metadata beyond size and mtime goes with it where the destination keeps it, under the
rules of _carried: as it is from a local file to S3, with what no object holds reported; and
from a remote end's metadata onto a local file only as far as the run trusts that end. Between
SMB ends a file's creation time and DOS attributes go with every copy, or alone (SetFileMeta)
when only they changed; a share that did not keep them is reported (_unkept). With
--smb-security (META_SECURITY) the source's NT security descriptor goes with them (_sd_asked).
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import stat
import threading
from collections.abc import Callable
from typing import Any

import msgspec
import xxhash

from orbit_fast import messages as m
from orbit_fast.backends.base import (
    FileMeta,
    ObjectInfo,
    ServerCopy,
    Store,
    multipart_etag,
    server_copier,
)
from orbit_fast.config import is_remote
from orbit_fast.errors import RemoteError, RemoteUnavailable

_local = threading.local()
DIGEST_READ_BYTES = 8 << 20
_ACL_XATTRS = ("system.posix_acl_access", "system.posix_acl_default")
_SETID = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX


def _store(url: str, ends: m.Ends) -> Any:
    if not hasattr(_local, "stores"):
        _local.stores = {}
    # One per store and settings: a hub's workers serve jobs that write one bucket in
    # different ways.
    stores: dict[tuple[str, str, m.S3Settings], Store] = _local.stores
    key = (url, ends.s3_endpoint, ends.s3)
    store = stores.get(key)
    if store is None:
        from orbit_fast.backends.registry import open_store

        # A store that cannot be opened fails the task, never the worker process.
        store = stores[key] = _on("remote", lambda: open_store(
            url, ends.attempts, ends.s3_endpoint, msgspec.structs.asdict(ends.s3)))  # fmt: skip
    return store


class _Failed(Exception):
    def __init__(self, side: str, err: int, message: str):
        self.side, self.errno, self.message = side, err, message


def _on(side: str, fn: Callable[[], Any]) -> Any:
    """Run fn, turning its failure into a _Failed that names the side."""
    try:
        return fn()
    except RemoteUnavailable as exc:
        raise _Failed("unavailable", 0, str(exc)) from exc
    except RemoteError as exc:
        raise _Failed("source" if side == "source" else "remote", errno.EIO, str(exc)) from exc
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        raise _Failed(side, exc.errno or errno.EIO, f"{exc.strerror or exc}{where}") from exc


def _server_copy(ends: m.Ends) -> ServerCopy:
    """The destination's copy from the source on their server, asked once per pair."""
    if not hasattr(_local, "copiers"):
        _local.copiers = {}
    copiers: dict[tuple[str, str], ServerCopy | None] = _local.copiers
    key = (ends.src, ends.dst)
    if key not in copiers:
        copiers[key] = server_copier(_store(ends.src, ends), _store(ends.dst, ends))
    copy = copiers[key]
    if copy is None:
        raise _Failed("remote", errno.EIO, f"{ends.dst} cannot copy from {ends.src} on the "
                      "server (not one server and one login)")  # fmt: skip
    return copy


def _carried(ends: m.Ends, meta: FileMeta | None) -> tuple[FileMeta | None, int]:
    """What the destination is given of the source file's `meta`, and the META_* bits of
    what it left out (ends.meta says what the run asks for).

    From a local file: mode, owner and atime as they are (S3 keeps them in rclone's keys);
    xattrs, POSIX ACLs and hard links, which no object holds, are reported where the file has
    them: xattrs outside user.* only as root, as a sync between trees copies them.
    From a remote end onto a local file: that metadata is whatever whoever can write there put
    (rclone fixed this in GHSA-945v-v9p3-v5xw): owners (asked for only as root) and the setuid,
    setgid and sticky bits only with META_TRUSTED; else the file gets the running user's owner
    and mode & 0o777, and what would have differed is reported.
    Between remote ends it travels as it is (S3 to S3 through us)."""
    if meta is None:
        return None, 0
    asked, left = ends.meta, 0
    if not is_remote(ends.src):
        if meta.nlink > 1:
            left |= asked & m.META_LINKS
        root = os.geteuid() == 0
        for name in meta.xattrs:
            if name in _ACL_XATTRS:
                left |= asked & m.META_ACLS
            elif root or name.startswith("user."):
                left |= asked & m.META_XATTRS
        return meta, left
    if is_remote(ends.dst):
        return meta, 0
    trusted = bool(asked & m.META_TRUSTED)
    mode = meta.mode
    if mode >= 0 and mode & _SETID and not trusted:
        mode &= ~_SETID
        left |= m.META_SETID
    uid = gid = -1
    if meta.uid >= 0 and asked & m.META_OWNER:
        if trusted:
            uid = meta.uid
        elif meta.uid != os.geteuid():
            left |= m.META_OWNER
    if meta.gid >= 0 and asked & m.META_GROUP:
        if trusted:
            gid = meta.gid
        elif meta.gid != os.getegid():
            left |= m.META_GROUP
    return FileMeta(mode, uid, gid, meta.atime_ns), left


def run_object_task(task: m.Task) -> m.Result:
    tid = task.task_id  # type: ignore[union-attr]
    try:
        if isinstance(task, m.PutObject):
            return _put_object(task)
        if isinstance(task, m.BeginUpload):
            return _begin(task)
        if isinstance(task, m.PutPart):
            return _put_part(task)
        if isinstance(task, m.CompleteUpload):
            return _complete(task)
        if isinstance(task, m.DigestObject):
            return _digest(task)
        if isinstance(task, m.SetFileMeta):
            return _set_meta(task)
    except _Failed as f:
        return m.TaskFailed(task_id=tid, side=f.side, errno=f.errno, message=f.message)
    raise TypeError(f"unexpected task {task!r}")


def _put_object(t: m.PutObject) -> m.Result:
    src, dst = _store(t.ends.src, t.ends), _store(t.ends.dst, t.ends)
    if t.server_side:
        mtime = None if t.mtime_ns < 0 else t.mtime_ns
        listed = FileMeta(btime_ns=t.btime_ns, dos_attrs=t.dos_attrs) if t.dos_attrs >= 0 \
            else None  # fmt: skip
        if _sd_asked(t.ends, src, dst):
            sd, now = _on("source", lambda: src.security(t.name))
            listed = now.meta._replace(security=sd)  # fresher than the listing, no request more
        copy = _server_copy(t.ends)
        copied: ObjectInfo = _on("destination", lambda: copy(t.name, t.size, mtime, listed))
        return m.ObjectPut(task_id=t.task_id, length=t.size, src_sig="", dst_sig=copied.sig,
                           left=_unkept(dst, listed, copied))  # fmt: skip
    expect = ObjectInfo(t.name, t.size, t.mtime_ns) if t.mtime_ns >= 0 else None
    data, info = _on("source", lambda: src.read_info(t.name, expect, meta=True))
    if info.mtime_ns is None:
        raise _Failed("source", errno.EIO, f"{t.name}: no modification time")
    # A local file is taken only as the listing saw it: `info` is the fstat of the fd it was
    # read from, after the read (backends/local.py). Another size or mtime: it was written
    # while read, or replaced since it was listed. Copy it again later.
    if not is_remote(t.ends.src):
        seen = expect if expect is not None else _on("source", lambda: src.stat_info(t.name))
        if seen.sig != info.sig:
            return m.SourceChanged(task_id=t.task_id, detail=f"{seen.sig} -> {info.sig}")
    meta, left = _carried(t.ends, info.meta)
    if meta is not None and _sd_asked(t.ends, src, dst):
        meta = meta._replace(security=_on("source", lambda: src.security(t.name))[0])
    out: ObjectInfo = _on("destination", lambda: dst.put_file(t.name, data, info.mtime_ns,
                                                              t.durable, meta))  # fmt: skip
    return m.ObjectPut(task_id=t.task_id, length=len(data), src_sig=info.sig, dst_sig=out.sig,
                       left=left | _unkept(dst, meta, out))  # fmt: skip


def _unkept(dst: Any, given: FileMeta | None, got: ObjectInfo) -> int:
    """META_DOS when `dst` keeps creation times and DOS attributes (SMB) but the file it
    wrote has other ones than it was `given` (a share that stores no DOS attributes)."""
    if given is None or given.dos_attrs < 0 or not dst.capabilities.dos_meta:
        return 0
    now = got.meta
    if now is None or now.dos_attrs != given.dos_attrs or (
            given.btime_ns is not None and now.btime_ns != given.btime_ns):  # fmt: skip
        return m.META_DOS
    return 0


def _sd_asked(ends: m.Ends, src: Any, dst: Any) -> bool:
    """--smb-security, between two stores that keep NT security descriptors."""
    return bool(ends.meta & m.META_SECURITY) and src.capabilities.nt_security and \
        dst.capabilities.nt_security  # fmt: skip


def _set_meta(t: m.SetFileMeta) -> m.Result:
    """An attributes-only update: the creation time and DOS attributes the task carries
    (None, -1: they are equal), and with --smb-security the source's security descriptor
    where the destination's is another (both read: one request each). Nothing to set, nothing
    written. A file gone from the destination since it was listed is copied again instead
    (SourceChanged: the engine starts its copy anew)."""
    src, dst = _store(t.ends.src, t.ends), _store(t.ends.dst, t.ends)
    meta = FileMeta(btime_ns=t.btime_ns, dos_attrs=t.dos_attrs)
    try:
        if _sd_asked(t.ends, src, dst):
            sd = _on("source", lambda: src.security(t.name))[0]
            now: ObjectInfo
            there, now = _on("destination", lambda: dst.security(t.name))
            if there != sd:
                meta = meta._replace(security=sd)
            elif t.btime_ns is None and t.dos_attrs < 0:
                return m.FileMetaSet(task_id=t.task_id, dst_sig=now.sig)
        out: ObjectInfo = _on("destination", lambda: dst.set_meta(t.name, meta))
    except _Failed as f:
        if f.side == "destination" and f.errno == errno.ENOENT:
            return m.SourceChanged(task_id=t.task_id, detail="gone from the destination")
        raise
    return m.FileMetaSet(task_id=t.task_id, dst_sig=out.sig, left=_unkept(dst, meta, out))


def _begin(t: m.BeginUpload) -> m.Result:
    src, dst = _store(t.ends.src, t.ends), _store(t.ends.dst, t.ends)
    meta = None
    if is_remote(t.ends.dst) and dst.capabilities.file_meta:  # S3 takes it now or never
        # Before _whole_md5 reads the file and moves its atime; a local file's xattr names
        # come from the fd that read and the parts' then go through.
        now: ObjectInfo = _on("source", lambda: src.stat_info(t.name, meta=True))
        meta = _carried(t.ends, now.meta)[0]
    md5 = _whole_md5(t, src) if t.md5 else ""
    up = _on("destination", lambda: dst.begin_upload(t.name, t.size, t.part_bytes, t.mtime_ns,
                                                     t.token, md5, meta))  # fmt: skip
    return m.UploadBegun(task_id=t.task_id, state=up.state)


def _whole_md5(t: m.BeginUpload, src: Any) -> str:
    """The source's whole-file MD5 (hex) for the destination's "md5chksum", or "".

    It has to be known when the upload is created (S3 takes metadata then only), and the
    parts' MD5s, which go out in parallel from several workers, cannot be combined into it:
    so the file is read once more here, in a worker rather than the coordinator (MD5 runs at
    ~760 MB/s on one core of the 2-core bench machine, ~0.35 s for 256 MiB, and would stall
    the loop that feeds every worker). A local file is read from the page cache its parts are
    then read from again; rclone does the same (it hashes a local source before a multipart
    upload). A remote source gives what it knows (an S3 ETag or "md5chksum") or nothing:
    reading an SMB file twice over the network to learn it is not cheap, and rclone skips it
    too. If the file changes after this read, CompleteUpload sees another signature and
    aborts, as for any part."""
    if is_remote(t.ends.src):
        info: ObjectInfo = _on("source", lambda: src.stat_info(t.name))
        return info.whole_md5
    h = hashlib.md5()  # noqa: S324 (the MD5 peers compare, not a security digest)
    for off in range(0, t.size, DIGEST_READ_BYTES):
        length = min(DIGEST_READ_BYTES, t.size - off)
        data = _on("source", functools.partial(src.read_range, t.name, off, length))
        h.update(data)
    return h.hexdigest()


def _put_part(t: m.PutPart) -> m.Result:
    src, dst = _store(t.ends.src, t.ends), _store(t.ends.dst, t.ends)
    data = _on("source", lambda: src.read_range(t.name, t.offset, t.length))
    upload = dst.resume_upload(t.name, t.upload, t.size, t.part_bytes, t.mtime_ns)
    token = _on("destination", lambda: upload.write_part(t.part, t.offset, data))
    return m.PartPut(task_id=t.task_id, length=len(data), token=token)


def _complete(t: m.CompleteUpload) -> m.Result:
    src, dst = _store(t.ends.src, t.ends), _store(t.ends.dst, t.ends)
    if _sd_asked(t.ends, src, dst):  # the stat and the descriptor in one request
        sd, now = _on("source", lambda: src.security(t.name))
        now = now._replace(meta=now.meta._replace(security=sd))
    else:
        now = _on("source", lambda: src.stat_info(t.name, meta=True))
    upload = dst.resume_upload(t.name, t.upload, t.size, t.part_bytes, t.mtime_ns)
    if now.sig != t.src_sig:
        _on("destination", upload.abort)
        return m.SourceChanged(task_id=t.task_id, detail=f"{t.src_sig} -> {now.sig}")
    meta, left = _carried(t.ends, now.meta)  # a file store gives it the file before its rename
    info = _on("destination", lambda: upload.complete(t.tokens, t.size, meta))
    return m.UploadCompleted(task_id=t.task_id, dst_sig=info.sig,
                             left=left | _unkept(dst, meta, info))  # fmt: skip


class MultipartEtags:
    """The multipart ETags data would have if uploaded in parts of each of `part_sizes`, from
    one sequential pass (--checksum against an object of unknown part size tries several)."""

    def __init__(self, part_sizes: list[int]) -> None:
        self._sizes = part_sizes
        self._parts: list[list[str]] = [[] for _ in part_sizes]
        self._open = [hashlib.md5() for _ in part_sizes]  # noqa: S324 (as S3 does)
        self._filled = [0 for _ in part_sizes]

    def update(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        for i, size in enumerate(self._sizes):
            at = 0
            while at < len(view):
                take = min(size - self._filled[i], len(view) - at)
                self._open[i].update(view[at : at + take])
                self._filled[i] += take
                at += take
                if self._filled[i] == size:
                    self._parts[i].append(self._open[i].hexdigest())
                    self._open[i], self._filled[i] = hashlib.md5(), 0  # noqa: S324

    def etags(self) -> list[str]:
        out = []
        for parts, h, filled in zip(self._parts, self._open, self._filled, strict=True):
            out.append(multipart_etag(parts + [h.hexdigest()] if filled or not parts else parts))
        return out


def _digest(t: m.DigestObject) -> m.Result:
    url = t.ends.src if t.side == "src" else t.ends.dst
    store = _store(url, t.ends)
    side = "source" if t.side == "src" else "destination"
    size = _on(side, lambda: store.size(t.name))
    style, _, parts = t.style.partition(":")
    h: Any
    if parts:  # S3 multipart ETags: the MD5 of each part's MD5, for each part size
        h = MultipartEtags([int(p) for p in parts.split(",")])
    else:
        h = xxhash.xxh3_128() if style == "xxh3" else hashlib.md5()  # noqa: S324
    for off in range(0, size, DIGEST_READ_BYTES):
        length = min(DIGEST_READ_BYTES, size - off)
        h.update(_on(side, functools.partial(store.read_range, t.name, off, length)))
    digest = ",".join(h.etags()) if parts else h.hexdigest()
    return m.ObjectDigested(task_id=t.task_id, digest=digest)


def read_remote(url: str, name: bytes, view: memoryview, offset: int,
                s3_endpoint: str = "") -> int:  # fmt: skip
    """Fill `view` from object `name` of the store at `url` (a backup's remote source), an
    s3:// one through `s3_endpoint` ("": ORBIT_S3_ENDPOINT)."""
    try:
        store = _store(url, m.Ends(src=url, dst=url, s3_endpoint=s3_endpoint, attempts=0))
    except _Failed as f:
        raise RemoteError(f.message) from None
    data = store.read_range(os.fsdecode(name), offset, len(view))
    view[: len(data)] = data
    return len(data)

