"""Sync where either side is remote storage (S3, SMB): list both, compare, copy objects.

The run and its bookkeeping are the local sync's (Coordinator: jobs DB, run history, events,
cancellation, worker deaths); what differs is below. The destination is listed into memory,
then the source is listed in a thread while the copies of what it found already run, each
source entry compared with the destination's by name. A file is unchanged when the jobs DB
says this job copied it (or compared it equal) from the source object that is there now to
the destination object that is there now:
the listing alone decides, with no request per file. Otherwise size and mtime are compared,
asking the server for an mtime a listing lacks (S3 keeps it in metadata), and a match is
recorded so the next run needs no such request. `--checksum` compares content instead: the
MD5 S3 keeps as the ETag against the same digest of the other side, or xxh3 of both.

Copies run in the worker pool (workers/objects.py), `concurrency` at a time. When both ends
are on one server with one login (two S3 prefixes, two SMB shares), the server copies (S3
CopyObject up to 5 GiB, SMB server-side copy) and no data comes to this machine. An object up to
SINGLE_MAX (or one part) moves in one read and one write. A larger one moves in parts read
with ranged reads and written as an S3 multipart upload or into a temp file at offsets, all in
parallel; the upload id or temp name and every finished part are checkpointed, so a rerun
after a crash confirms the recorded parts with the server (ListParts, or re-reading the temp
file) and sends only the others. An upload whose source changed is aborted and started over.
"""

from __future__ import annotations

import errno
import os
import queue
import threading
from collections import deque
from typing import Any

import msgspec

from orbit_fast import messages as m
from orbit_fast import progress as p
from orbit_fast.backends.base import ObjectInfo, upload_part_bytes
from orbit_fast.config import FsyncPolicy, is_remote
from orbit_fast.coordinator.coordinator import (
    MAX_SOURCE_CHANGES,
    PROGRESS_INTERVAL_S,
    Coordinator,
    _Task,
)
from orbit_fast.errors import OrbitError, RemoteError, RemoteUnavailable, SourceError

SINGLE_MAX = 8 << 20  # larger objects move in parts (the AWS CLI's multipart threshold)
DELETE_BATCH = 1000


class _Obj:
    """One object being compared or copied; `rel`, `outstanding` and `failed` are what the
    Coordinator's worker-death handling reads."""

    __slots__ = ("rel", "info", "action", "mtime_ns", "part_bytes", "nparts", "upload",
                 "tokens", "outstanding", "failed", "attempts", "digests", "want",
                 "started")  # fmt: skip

    def __init__(self, info: ObjectInfo, action: str, attempts: int = 0) -> None:
        self.rel = info.name
        self.info = info
        self.action = action
        self.mtime_ns = info.mtime_ns
        self.part_bytes = 0
        self.nparts = 0
        self.upload = ""
        self.tokens: dict[int, str] = {}
        self.outstanding = 0
        self.failed: str | None = None
        self.attempts = attempts
        self.digests: dict[str, str] = {}
        self.want: tuple[tuple[str, str], ...] = ()  # digest tasks: (side, style)
        self.started = False


class ObjectSync(Coordinator):
    def run(self) -> p.Summary:
        from orbit_fast.backends.registry import open_store

        o = self.opts
        self.ends = m.Ends(src=o.source, dst=o.destination, s3_endpoint=o.s3_endpoint,
                           attempts=o.retry_attempts)  # fmt: skip
        self.src: Any = open_store(o.source, o.retry_attempts, o.s3_endpoint)
        self.dst: Any = open_store(o.destination, o.retry_attempts, o.s3_endpoint)
        self.ready: deque[tuple[_Obj, str, int]] = deque()  # (object, task kind, part)
        self.todo: deque[_Obj] = deque()
        self.records: dict[str, tuple[str, str]] = {}
        self.uploads: dict[str, Any] = {}
        self.deletes: list[str] = []
        self.unlisted: list[str] = []  # source directories that could not be listed
        self._dir_ok: dict[str, bool] = {}
        self._lister: threading.Thread | None = None
        self._stop_listing = threading.Event()
        # Both ends on one server (and one login): the server copies, no byte comes here.
        same = getattr(self.dst, "same_server", None)
        self.server_side = bool(same and same(self.src))
        self.server_copies = 0
        try:
            return super().run()
        finally:
            self.src.close()
            self.dst.close()

    # ---- hooks of Coordinator.run ---------------------------------------------------------

    def _check_paths(self) -> None:
        src = self.opts.source
        if not is_remote(src):
            if not os.path.isdir(src):
                raise SourceError(f"source {src} does not exist or is not a directory; "
                                  "check the path")  # fmt: skip
            if not os.access(src, os.R_OK | os.X_OK):
                raise SourceError(f"source {src} is not readable by this user")

    def _changed_destination(self) -> bool:
        return not is_remote(self.opts.destination) and super()._changed_destination()

    def _finish_dirs(self) -> None:
        if self.opts.mirror and not self.stopping:
            self._mirror_deletes()
        if self.db is not None and not self.stopping:
            self._abort_stale_uploads()

    def _loop(self) -> None:
        self._start_listing()
        try:
            while True:
                if not self.stopping:
                    self._take_listing()
                    self._dispatch()
                if not self.tasks:
                    if self.stopping or (self.scan_done and not (self.ready or self.todo)):
                        break
                    if not (self.ready or self.todo):
                        self._take_listing(wait=PROGRESS_INTERVAL_S)
                        self._tick()
                    continue
                assert self.pool is not None
                # While the listing runs, come back soon for what it found.
                results, deaths = self.pool.wait(PROGRESS_INTERVAL_S if self.scan_done
                                                 else 0.005)  # fmt: skip
                for _, res in results:
                    self._on_result(res)
                for death in deaths:
                    self._on_death(death)
                self._tick()
        finally:
            self._stop_listing.set()
            if self._lister is not None:
                self._lister.join()
        self._tick(force=True)

    # ---- listing and comparing ------------------------------------------------------------

    def _included(self, name: str) -> bool:
        if not self.rules:
            return True
        parts = name.split("/")
        for i in range(1, len(parts)):
            d = "/".join(parts[:i])
            ok = self._dir_ok.get(d)
            if ok is None:
                ok = self._dir_ok[d] = self.rules.included(d, True)
            if not ok:
                return False
        return self.rules.included(name, False)

    def _descend(self, d: str) -> bool:
        ok = self._dir_ok.get(d)
        if ok is None:
            ok = self._dir_ok[d] = self.rules.included(d, True)
        return ok

    def _on_skip(self, rel: str, why: str) -> None:
        if why.startswith("cannot list"):
            self.unlisted.append(rel)
            self._warn("unreadable_dir", rel or ".", f"{why}; skipped with everything below it "
                       "(nothing there is deleted either)", skipped=True)  # fmt: skip
        else:
            self._warn("special", rel, f"{why}; skipped", skipped=True)

    def _start_listing(self) -> None:
        """List the destination, then list the source in a thread while copies already run:
        on an SMB share with many directories the listing is seconds of CPU in smbprotocol,
        which the transfers in the worker processes overlap."""
        try:
            self.dstl = {i.name: i for i in self.dst.list_info("", self._descend)
                         if self._included(i.name)}  # fmt: skip
        except FileNotFoundError:
            self.dstl = {}
        if self.db is not None:
            self.records = self.db.object_records(self.job.id)
            self.uploads = self.db.uploads(self.job.id)
        self.seen: set[str] = set()
        self._found: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._lister = threading.Thread(target=self._list_source, name="orbit-list",
                                        daemon=True)  # fmt: skip
        self._lister.start()

    def _list_source(self) -> None:
        """The listing thread: hands every entry (and skip, and the end) to the loop."""
        put = self._found.put
        try:
            for info in self.src.list_info("", self._descend,
                                           lambda rel, why: put(("skip", (rel, why)))):  # fmt: skip
                if self._stop_listing.is_set():
                    break
                put(("file", info))
        except BaseException as exc:  # noqa: BLE001 - handed to the coordinator's thread
            put(("error", exc))
        put(("end", None))

    def _take_listing(self, wait: float = 0.0) -> None:
        """Plan what the listing thread found so far (up to a budget, to keep results
        flowing); with `wait`, block that long for the first entry."""
        for n in range(4096):
            try:
                kind, item = (self._found.get(timeout=wait) if wait and n == 0
                              else self._found.get_nowait())  # fmt: skip
            except queue.Empty:
                return
            if kind == "file":
                if self._included(item.name):
                    self._plan_entry(item)
            elif kind == "skip":
                self._on_skip(*item)
            elif kind == "error":
                if isinstance(item, OSError) and not is_remote(self.opts.source):
                    item = SourceError(f"cannot list the source {self.opts.source}: {item}")
                self._fail(item if isinstance(item, OrbitError) else RemoteError(str(item)))
            else:
                self._listing_done()
                return

    def _plan_entry(self, s: ObjectInfo) -> None:
        name = s.name
        self.seen.add(name)
        self.c.files_scanned += 1
        d = self.dstl.get(name)
        if d is None:
            self._plan_copy(_Obj(s, "copy"))
        elif self.opts.checksum:
            self._plan_compare(s, d)
        elif self.records.get(name) == (s.sig, d.sig):
            self.c.files_unchanged += 1
        elif s.size != d.size:
            self._plan_copy(_Obj(s, "update"))
        elif self._same_mtime(s, d):
            self.c.files_unchanged += 1
            self._record(name, s.sig, d.sig)
        else:
            self._plan_copy(_Obj(s, "update"))

    def _listing_done(self) -> None:
        if self.opts.mirror:
            gone = [n for n in sorted(self.dstl) if n not in self.seen]
            self.deletes = [n for n in gone if not self._below_unlisted(n)]
        self.scan_done = self.c.scan_done = True

    def _below_unlisted(self, name: str) -> bool:
        return any(not u or name.startswith(u + "/") for u in self.unlisted)

    def _same_mtime(self, s: ObjectInfo, d: ObjectInfo) -> bool:
        sm = s.mtime_ns if s.mtime_ns is not None else self.src.stat_info(s.name).mtime_ns
        dm = d.mtime_ns if d.mtime_ns is not None else self.dst.stat_info(d.name).mtime_ns
        if sm is None or dm is None:
            return False
        prec = max(self.src.capabilities.mtime_ns_precision,
                   self.dst.capabilities.mtime_ns_precision)  # fmt: skip
        return sm // prec == dm // prec

    def _plan_compare(self, s: ObjectInfo, d: ObjectInfo) -> None:
        if s.size != d.size:
            self._plan_copy(_Obj(s, "update"))
            return
        obj = _Obj(s, "update")
        if s.etag and d.etag:  # S3 to S3: the ETags are the stored digests
            obj.want = ()
            obj.digests = {"src": s.etag, "dst": d.etag}
        elif s.etag or d.etag:
            # Digest the other side the way S3 made the ETag it keeps.
            side, info, store = ("dst", s, self.src) if s.etag else ("src", d, self.dst)
            style = "md5"
            if "-" in info.etag:
                part = info.part_bytes or store.stat_info(info.name).part_bytes
                if not part:  # uploaded in parts of unknown size by another tool: copy it
                    self._plan_copy(obj)
                    return
                style = f"md5:{part}"
            obj.digests = {"src" if side == "dst" else "dst": info.etag}
            obj.want = ((side, style),)
        else:
            obj.want = (("src", "xxh3"), ("dst", "xxh3"))
        if not obj.want:
            self._compared(obj)
            return
        for side, _ in obj.want:
            self.ready.append((obj, "digest:" + side, 0))

    def _compared(self, obj: _Obj) -> None:
        if obj.digests.get("src") == obj.digests.get("dst"):
            self.c.files_unchanged += 1
        else:
            self._plan_copy(obj)

    def _plan_copy(self, obj: _Obj) -> None:
        self.c.files_total += 1
        self.c.bytes_total += obj.info.size
        obj.started = True
        if self.opts.dry_run:
            self.c.files_done += 1
            self.emit(p.FileDone(path=obj.rel, action="plan-" + obj.action, size=obj.info.size))
            return
        self.todo.append(obj)

    def _record(self, name: str, src_sig: str, dst_sig: str) -> None:
        if self.db is not None:
            self.db.queue_object(self.job.id, name, src_sig, dst_sig)

    # ---- starting copies --------------------------------------------------------------------

    def _start(self, obj: _Obj) -> None:
        """Queue the tasks of one copy: a whole-object put, or the parts of an upload."""
        size = obj.info.size
        limit = self.dst.capabilities.max_copy_bytes
        if self.server_side and (not limit or size <= limit):
            self.ready.append((obj, "copy", 0))
            return
        part = upload_part_bytes(size, self.opts.chunk_size_bytes, self.dst.capabilities)
        if size <= max(part, SINGLE_MAX):
            self.ready.append((obj, "put", 0))
            return
        if obj.mtime_ns is None:  # S3 keeps the file's mtime in metadata
            obj.mtime_ns = self.src.stat_info(obj.rel).mtime_ns
        obj.part_bytes = part
        obj.nparts = -(-size // part)
        done = self._resume(obj)
        if done is None:
            up = self.dst.begin_upload(obj.rel, size, part, obj.mtime_ns)
            obj.upload = up.state
            assert self.db is not None
            self.db.queue_upload(self.job.id, obj.rel, obj.info.sig, part, up.state)
            self.db.checkpoint()  # recorded before any part is sent: a crash can resume it
            done = {}
        obj.tokens = done
        resumed = sum(self._part_len(obj, n) for n in done)
        self.c.bytes_resumed += resumed
        self.c.bytes_done += resumed
        for n in range(1, obj.nparts + 1):
            if n not in done:
                self.ready.append((obj, "part", n))
        if len(done) == obj.nparts:
            self.ready.append((obj, "complete", 0))

    def _part_len(self, obj: _Obj, n: int) -> int:
        return min(obj.part_bytes, obj.info.size - (n - 1) * obj.part_bytes)

    def _resume(self, obj: _Obj) -> dict[int, str] | None:
        """The parts of this object's recorded upload the server still has, or None to start
        a new upload (the old one, from another version of the source, is aborted)."""
        rec = self.uploads.pop(obj.rel, None)
        if rec is None:
            return None
        up = self.dst.resume_upload(obj.rel, rec.state, obj.info.size, rec.part_bytes,
                                    obj.mtime_ns)  # fmt: skip
        if rec.src_sig == obj.info.sig and rec.part_bytes == obj.part_bytes:
            lengths = {n: self._part_len(obj, n) for n in range(1, obj.nparts + 1)}
            try:
                ok = up.confirmed(rec.parts, lengths)
            except FileNotFoundError:
                ok = None
            if ok is not None:
                obj.upload = rec.state
                return {n: rec.parts[n] for n in ok}
        up.abort()
        return None

    # ---- dispatch and results -----------------------------------------------------------

    def _dispatch(self) -> None:
        limit = 2 * self.opts.workers  # a task queued behind each running one: no idle gap
        while len(self.tasks) < limit and not self.stopping:
            if not self.ready:
                if not self.todo:
                    return
                obj = self.todo.popleft()
                try:
                    self._start(obj)
                except OSError as exc:
                    self._fail(self._dest_error(exc, obj.rel))
                except OrbitError as exc:
                    self._fail(exc)
                continue
            obj, kind, part = self.ready.popleft()
            if obj.failed:
                continue
            pool = self._ensure_pool()
            tid = self.next_task
            self.next_task += 1
            msg = self._msg(tid, obj, kind, part)
            obj.outstanding += 1
            self.tasks[tid] = _Task(obj, kind, part, None, msg)  # type: ignore[arg-type]
            pool.send(pool.least_loaded(), tid, msg)

    def _msg(self, tid: int, obj: _Obj, kind: str, part: int) -> m.Task:
        e, size = self.ends, obj.info.size
        if kind in ("put", "copy"):
            return m.PutObject(task_id=tid, ends=e, name=obj.rel,
                               durable=self.opts.fsync == FsyncPolicy.FILE,
                               server_side=kind == "copy", size=size,
                               mtime_ns=-1 if obj.mtime_ns is None else obj.mtime_ns)  # fmt: skip
        if kind == "part":
            return m.PutPart(task_id=tid, ends=e, name=obj.rel, upload=obj.upload, size=size,
                             part_bytes=obj.part_bytes, mtime_ns=obj.mtime_ns or 0, part=part,
                             offset=(part - 1) * obj.part_bytes,
                             length=self._part_len(obj, part))  # fmt: skip
        if kind == "complete":
            return m.CompleteUpload(task_id=tid, ends=e, name=obj.rel, upload=obj.upload,
                                    size=size, part_bytes=obj.part_bytes,
                                    mtime_ns=obj.mtime_ns or 0, tokens=dict(obj.tokens),
                                    src_sig=obj.info.sig)  # fmt: skip
        side = kind.split(":", 1)[1]
        style = next(st for sd, st in obj.want if sd == side)
        return m.DigestObject(task_id=tid, ends=e, side=side, name=obj.rel, style=style)

    def _ensure_pool(self) -> Any:
        if self.pool is None:
            from orbit_fast.workers.pool import open_lease
            from orbit_fast.workers.ring import SharedRing

            # Object tasks carry no bytes between processes; the pool still wants a ring.
            self.ring = SharedRing.create(4096, 1)
            procs = min(self.opts.workers, os.cpu_count() or 1)
            self.pool = open_lease(self.ring, procs, -(-self.opts.workers // procs),
                                   self.shared_pool)  # fmt: skip
        return self.pool

    def _on_result(self, res: m.Result) -> None:
        if isinstance(res, m.WorkerReady):
            return
        rec = self.tasks.pop(res.task_id, None)  # type: ignore[union-attr]
        if rec is None:
            return
        obj: _Obj = rec.tr  # type: ignore[assignment]
        obj.outstanding -= 1
        if isinstance(res, m.TaskFailed):
            self._task_failed(obj, res)
        elif obj.failed:
            pass
        elif isinstance(res, m.ObjectPut):
            self.server_copies += rec.kind == "copy"
            self._copied(obj, res.length, res.src_sig or obj.info.sig, res.dst_sig)
        elif isinstance(res, m.PartPut):
            obj.tokens[rec.idx] = res.token
            self.c.bytes_copied += res.length
            self.c.bytes_done += res.length
            self._blocks_since_ckpt += 1
            if self.db is not None:
                self.db.queue_part(self.job.id, obj.rel, rec.idx, res.token)
            if len(obj.tokens) == obj.nparts:
                self.ready.append((obj, "complete", 0))
        elif isinstance(res, m.UploadCompleted):
            if self.db is not None:
                self.db.queue_drop_upload(self.job.id, obj.rel)
            self._copied(obj, 0, obj.info.sig, res.dst_sig)
        elif isinstance(res, m.ObjectDigested):
            side = rec.kind.split(":", 1)[1]
            obj.digests[side] = res.digest
            if all(sd in obj.digests for sd, _ in obj.want):
                self._compared(obj)
        elif isinstance(res, m.SourceChanged):
            self._source_changed(obj)
        if obj.failed and obj.outstanding == 0 and obj.started and obj.failed != "done":
            self._drop_totals(obj)

    def _copied(self, obj: _Obj, length: int, src_sig: str, dst_sig: str) -> None:
        self.c.bytes_copied += length
        self.c.bytes_done += length
        self.c.files_done += 1
        self.c.files_copied += 1
        self._record(obj.rel, src_sig, dst_sig)
        self.emit(p.FileDone(path=obj.rel, action=obj.action, size=obj.info.size))

    def _task_failed(self, obj: _Obj, res: m.TaskFailed) -> None:
        if obj.failed:
            return
        if res.side == "source":
            obj.failed = "source"
            if res.errno == errno.ENOENT:
                self._warn("vanished", obj.rel, "vanished from the source while being copied")
            else:
                self._warn("unreadable", obj.rel, f"cannot read: {res.message}", skipped=True)
            return
        obj.failed = "done"  # the run stops; the upload and its parts stay for the rerun
        if res.side == "unavailable":  # the hub waits and runs the job again
            self._fail(RemoteUnavailable(res.message))
        elif res.side == "remote":  # refused: a person must look
            self._fail(RemoteError(res.message))
        else:
            self._fail(self._dest_error(OSError(res.errno, res.message), obj.rel))

    def _source_changed(self, obj: _Obj) -> None:
        obj.failed = "changed"
        if self.db is not None and obj.upload:
            self.db.queue_drop_upload(self.job.id, obj.rel)  # the worker aborted it
        if obj.attempts + 1 >= MAX_SOURCE_CHANGES:
            self._warn("changed", obj.rel, f"changed while being copied {obj.attempts + 1} "
                       "times; skipped, run again once it is stable", skipped=True)  # fmt: skip
            return
        try:
            info = self.src.stat_info(obj.rel)
        except FileNotFoundError:
            self._warn("vanished", obj.rel, "vanished from the source while being copied")
            return
        self._plan_copy(_Obj(info, obj.action, obj.attempts + 1))

    def _drop_totals(self, obj: _Obj) -> None:
        """A copy that will not finish in this run leaves the progress totals."""
        obj.started = False
        self.c.files_total -= 1
        self.c.bytes_total -= obj.info.size
        self.c.bytes_done -= sum(self._part_len(obj, n) for n in obj.tokens)

    def _summary(self, code: int) -> p.Summary:
        return msgspec.structs.replace(super()._summary(code),
                                       files_server_side=self.server_copies)  # fmt: skip

    # ---- after the copies -------------------------------------------------------------------

    def _mirror_deletes(self) -> None:
        if self.opts.dry_run:
            for name in self.deletes:
                self.c.files_deleted += 1
                self.emit(p.FileDone(path=name, action="plan-delete", size=0))
            return
        for i in range(0, len(self.deletes), DELETE_BATCH):
            batch = self.deletes[i : i + DELETE_BATCH]
            try:
                self.dst.delete_many(batch)
            except OSError as exc:
                self._fail(self._dest_error(exc, batch[0]))
                return
            for name in batch:
                self.c.files_deleted += 1
                if self.db is not None:
                    self.db.queue_object_deleted(self.job.id, name)
                self.emit(p.FileDone(path=name, action="delete", size=0))

    def _abort_stale_uploads(self) -> None:
        """Uploads recorded for objects this run did not copy (gone from the source, or now
        excluded): abort them so no parts linger on the server."""
        assert self.db is not None
        for name, rec in self.uploads.items():
            try:
                self.dst.resume_upload(name, rec.state, 0, rec.part_bytes, 0).abort()
            except (OSError, RemoteError) as exc:
                self.emit(p.Warning(msgid="upload", path=name,
                                    message=f"could not abort an old upload: {exc}"))  # fmt: skip
                continue
            self.db.queue_drop_upload(self.job.id, name)
