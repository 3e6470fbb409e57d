"""Object copies between stores (either end remote): whole, server-side, or in parts with
resume; and what the run records about objects (the "unchanged" records, the deletes).

Results flow up as outcomes (sync/outcome.py); the jobs DB rows written here are the resume
and "unchanged" records of this job, which only the copies know how to read back. Between SMB
ends a file whose content is unchanged but whose creation time or DOS attributes are not the
source's gets them alone (a "meta" task), and counts as unchanged; with --smb-security and
--checksum every file found equal gets one, which compares the security descriptors.
"""

from __future__ import annotations

import errno
import os
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from orbit_fast import messages as m
from orbit_fast.backends.base import (
    ObjectInfo,
    PartUploads,
    TransientError,
    part_uploads,
    server_copier,
    upload_part_bytes,
)
from orbit_fast.config import FsyncPolicy, SyncOptions, url_scheme
from orbit_fast.coordinator.dispatch import InFlight, TaskBoard
from orbit_fast.coordinator.sync.objects import SINGLE_MAX, Obj
from orbit_fast.coordinator.sync.outcome import (
    Changed,
    Differs,
    Done,
    Dropped,
    Fatal,
    Hidden,
    Moved,
    Outcome,
    Same,
    Warn,
)
from orbit_fast.coordinator.sync.paths import dest_error
from orbit_fast.coordinator.sync.plan import digest_styles, digests_match, dos_meta_differs
from orbit_fast.errors import OrbitError, RemoteError, RemoteUnavailable
from orbit_fast.fsinfo import temp_token
from orbit_fast.index.jobs_db import Job, JobsDB

# A temp file whose name carries the token of a job this jobs DB does not know (a job of
# another jobs DB or host, or a server copy's one-off name) counts as held while it changed
# less than this long ago: a live upload in parts writes a part every few seconds.
FOREIGN_TEMP_S = 3600

# What a run says of the metadata its copies left out (workers/objects.py, _carried): one
# warning per kind, with the count of files, when the run ends.
_LEFT = (
    (m.META_XATTRS, "extended attributes, which {dst} cannot hold: copied without them "
     "(--no-xattrs stops this warning)"),
    (m.META_ACLS, "POSIX ACLs, which {dst} cannot hold: copied without them (--no-acls stops "
     "this warning)"),
    (m.META_LINKS, "several hard links, which {dst} cannot hold: each name copied as a file "
     "of its own (--no-hard-links stops this warning)"),
    (m.META_SETID, "setuid, setgid or sticky bits in {its} metadata: left out, the mode "
     "masked with 0o777 (--trust-remote-metadata applies them)"),
    (m.META_OWNER, "another owner in {its} metadata: left to the running user "
     "(--trust-remote-metadata applies it, --no-owner stops this warning)"),
    (m.META_GROUP, "another group in {its} metadata: left to the running user's "
     "(--trust-remote-metadata applies it, --no-group stops this warning)"),
    (m.META_DOS, "a creation time or DOS attributes the destination share did not keep (does "
     "it store DOS attributes? Samba: `store dos attributes = yes`); each run sets them again"),
)  # fmt: skip


def meta_asked(opts: SyncOptions) -> int:
    """The META_* bits of what a run between stores keeps or reports (messages.Ends.meta)."""
    keep = opts.keep  # owners only as root
    return ((m.META_XATTRS if keep & m.KEEP_XATTRS else 0)
            | (m.META_ACLS if keep & m.KEEP_ACLS else 0)
            | (0 if opts.no_hard_links else m.META_LINKS)
            | (m.META_OWNER if keep & m.KEEP_OWNER else 0)
            | (m.META_GROUP if keep & m.KEEP_GROUP else 0)
            | (m.META_TRUSTED if opts.trust_remote_metadata else 0)
            | (m.META_SECURITY if opts.smb_security else 0))  # fmt: skip

if TYPE_CHECKING:
    from orbit_fast.workers.pool import WorkerPool


class ObjectCopies:
    """Copies of objects in the worker pool, `concurrency` at a time, no ring slots."""

    def __init__(self, opts: SyncOptions, src: Any, dst: Any, db: JobsDB | None, job: Job,
                 shared: WorkerPool | None,
                 throttles: list[str] | None = None) -> None:  # fmt: skip
        self.opts, self.src, self.dst, self.db, self.job = opts, src, dst, db, job
        self.ends = m.Ends(src=opts.source, dst=opts.destination, s3_endpoint=opts.s3_endpoint,
                           attempts=opts.retry_attempts,
                           s3=m.S3Settings(opts.s3_storage_class, opts.s3_sse,
                                           opts.s3_sse_kms_key_id, opts.s3_region),
                           meta=meta_asked(opts))  # fmt: skip
        self.left: dict[int, int] = {}  # META_* bit -> files whose copy left it out
        procs = min(opts.workers, os.cpu_count() or 1)
        # A task queued behind each running one: no idle gap between objects.
        self.board: TaskBoard[Obj] = TaskBoard(workers=procs, threads=-(-opts.workers // procs),
                                               limit=2 * opts.workers, shared=shared,
                                               throttles=throttles)  # fmt: skip
        self.ready: deque[tuple[Obj, str, int]] = deque()  # (object, task kind, part)
        self.todo: deque[Obj] = deque()
        self.records: dict[str, tuple[str, str]] = {}
        self.uploads: dict[str, Any] = {}
        if db is not None:
            self.records = db.records(job.id)
            self.uploads = db.uploads(job.id)
        # Both ends on one server (and one login): the server copies, no byte comes here
        # (the workers make the same check for their own connections).
        self.server_side = server_copier(src, dst) is not None
        # None: the destination takes objects whole only.
        self.uploads_to: PartUploads | None = part_uploads(dst)
        self.precision_ns = max(src.capabilities.mtime_ns_precision,
                                dst.capabilities.mtime_ns_precision)  # fmt: skip

    # ---- the engine's questions -------------------------------------------------------------

    def full(self) -> bool:
        return False  # the listing is in memory already; what it finds waits in `todo`

    def busy(self) -> bool:
        return bool(self.ready or self.todo)

    def describe(self) -> str:
        return ", ".join(o.rel for o, _, _ in self.ready)

    def item(self, info: ObjectInfo, action: str) -> Obj:
        return Obj(info, action)

    def again(self, obj: Obj) -> Obj | None:
        try:
            info = self.src.stat_info(obj.rel)
        except FileNotFoundError:
            return None
        return Obj(info, obj.action, obj.attempts + 1)

    def mtimes(self, s: ObjectInfo, d: ObjectInfo) -> tuple[int | None, int | None]:
        """Both modification times, asking a store whose listing lacks them (S3 metadata)."""
        sm = s.mtime_ns if s.mtime_ns is not None else self.src.stat_info(s.name).mtime_ns
        dm = d.mtime_ns if d.mtime_ns is not None else self.dst.stat_info(d.name).mtime_ns
        return sm, dm

    def record(self, name: str, src_sig: str, dst_sig: str) -> None:
        """This job found (or made) `name` equal on both ends: the next run trusts a listing
        that shows the same two signatures."""
        if self.db is not None:
            self.db.queue_record(self.job.id, name, src_sig, dst_sig)

    # ---- comparing and starting ---------------------------------------------------------------

    def compare(self, s: ObjectInfo, d: ObjectInfo) -> list[Outcome]:
        """plan_object's COMPARE: with --checksum, the content is compared; without, the
        listing called it unchanged and only the creation time or DOS attributes differ
        (SMB ends, plan.dos_meta_differs). Content found equal with those differing gets
        them alone (a "meta" task), not a copy; so does, with --smb-security, every file
        --checksum finds equal: the task compares the security descriptors too (a change of
        only one moves nothing a listing shows)."""
        obj = Obj(s, "update")
        obj.meta_only = dos_meta_differs(s, d)
        if not self.opts.checksum:
            return self._compared(obj, equal=True)
        if s.etag != d.etag:
            # A multipart object's whole MD5 ("md5chksum") and part size are in its metadata,
            # which listings lack: one HEAD each, only for objects uploaded in parts.
            if "-" in s.etag:
                s = self.src.stat_info(s.name)
            if "-" in d.etag:
                d = self.dst.stat_info(d.name)
        styles = digest_styles(s, d)
        if styles is None:  # uploaded in parts of no size we could guess: copy it
            return [Differs(obj)]
        obj.digests, obj.want = styles
        if not obj.want:
            return self._compared(obj)
        for side, _ in obj.want:
            self.ready.append((obj, "digest:" + side, 0))
        return []

    def _compared(self, obj: Obj, equal: bool | None = None) -> list[Outcome]:
        if equal is None:
            equal = digests_match(obj.digests.get("src", ""), obj.digests.get("dst", ""))
        if not equal:
            return [Differs(obj)]
        security = self.opts.smb_security and self.opts.checksum
        if (obj.meta_only or security) and not self.opts.dry_run:
            self.ready.append((obj, "meta", 0))
            return []
        return [Same(obj.rel, meta=obj.meta_only)]  # a dry run: what it would set

    def begin(self, obj: Obj) -> list[Outcome]:
        self.todo.append(obj)
        return []

    def _start(self, obj: Obj) -> list[Outcome]:
        """Queue the tasks of one copy: a whole-object put, or the parts of an upload."""
        size = obj.info.size
        limit = self.dst.capabilities.max_copy_bytes
        if self.server_side and (not limit or size <= limit):
            self.ready.append((obj, "copy", 0))
            return []
        part = upload_part_bytes(size, self.opts.block_bytes, self.dst.capabilities)
        uploads = self.uploads_to
        if uploads is None or size <= max(part, SINGLE_MAX):
            self.ready.append((obj, "put", 0))
            return []
        if obj.mtime_ns is None:  # S3 keeps the file's mtime in metadata
            obj.mtime_ns = self.src.stat_info(obj.rel).mtime_ns
        obj.part_bytes = part
        obj.nparts = -(-size // part)
        done = self._resume(uploads, obj)
        if done is None:
            # A worker starts it: for S3 it first reads the file for its MD5 (_whole_md5).
            self.ready.append((obj, "begin", 0))
            return []
        return self._queue_parts(obj, done)

    def _begun(self, obj: Obj, state: str) -> None:
        obj.upload = state
        assert self.db is not None
        self.db.queue_upload(self.job.id, obj.rel, obj.info.sig, obj.part_bytes, state)
        self.db.checkpoint()  # recorded before any part is sent: a crash can resume it
        if not obj.failed:
            self._queue_parts(obj, {})

    def _queue_parts(self, obj: Obj, done: dict[int, str]) -> list[Outcome]:
        obj.tokens = done
        for n in range(1, obj.nparts + 1):
            if n not in done:
                self.ready.append((obj, "part", n))
        if len(done) == obj.nparts:
            self.ready.append((obj, "complete", 0))
        resumed = sum(obj.part_len(n) for n in done)
        return [Moved(resumed=resumed)] if resumed else []

    def _resume(self, uploads: PartUploads, obj: Obj) -> dict[int, str] | None:
        """The parts of this object's recorded upload the server still has, or None to start
        a new upload (the old one, from another version of the source, is aborted)."""
        rec = self.uploads.pop(obj.rel, None)
        if rec is None:
            return None
        up = uploads.resume_upload(obj.rel, rec.state, obj.info.size, rec.part_bytes,
                                   obj.mtime_ns or 0)  # fmt: skip
        if rec.src_sig == obj.info.sig and rec.part_bytes == obj.part_bytes:
            lengths = {n: obj.part_len(n) for n in range(1, obj.nparts + 1)}
            try:
                ok = up.confirmed(rec.parts, lengths)
            except FileNotFoundError:
                ok = None
            if ok is not None:
                obj.upload = rec.state
                return {n: rec.parts[n] for n in ok}
        up.abort()
        return None

    # ---- dispatch -----------------------------------------------------------------------------

    def fill(self, stopping: Callable[[], bool]) -> list[Outcome]:
        board = self.board
        out: list[Outcome] = []
        # A start may take a request or two (ListParts, a new upload): a cancel or a failure
        # meanwhile stops more from starting.
        while board.room() and not stopping():
            if not self.ready:
                if not self.todo:
                    break
                obj = self.todo.popleft()
                try:
                    out += self._start(obj)
                except OSError as exc:
                    return out + [Fatal(dest_error(exc, obj.rel))]
                except OrbitError as exc:
                    return out + [Fatal(exc)]
                continue
            obj, kind, part = self.ready.popleft()
            if obj.failed:
                continue
            obj.outstanding += 1
            board.send(obj, kind, part, None, self._msg(obj, kind, part))
        return out

    def _msg(self, obj: Obj, kind: str, part: int) -> m.Task:
        e, size = self.ends, obj.info.size
        if kind in ("put", "copy"):
            listed = obj.info.meta  # SMB ends: what the server copy gives the file
            return m.PutObject(task_id=0, ends=e, name=obj.rel,
                               durable=self.opts.fsync == FsyncPolicy.FILE,
                               server_side=kind == "copy", size=size,
                               mtime_ns=-1 if obj.mtime_ns is None else obj.mtime_ns,
                               btime_ns=listed.btime_ns if listed else None,
                               dos_attrs=listed.dos_attrs if listed else -1)  # fmt: skip
        if kind == "begin":
            return m.BeginUpload(task_id=0, ends=e, name=obj.rel, size=size,
                                 part_bytes=obj.part_bytes, mtime_ns=obj.mtime_ns or 0,
                                 token=self.job.token,
                                 md5=self.dst.capabilities.whole_md5)  # fmt: skip
        if kind == "part":
            return m.PutPart(task_id=0, ends=e, name=obj.rel, upload=obj.upload, size=size,
                             part_bytes=obj.part_bytes, mtime_ns=obj.mtime_ns or 0, part=part,
                             offset=(part - 1) * obj.part_bytes,
                             length=obj.part_len(part))  # fmt: skip
        if kind == "complete":
            return m.CompleteUpload(task_id=0, ends=e, name=obj.rel, upload=obj.upload,
                                    size=size, part_bytes=obj.part_bytes,
                                    mtime_ns=obj.mtime_ns or 0, tokens=dict(obj.tokens),
                                    src_sig=obj.info.sig)  # fmt: skip
        if kind == "meta":  # the creation time and DOS attributes where they differ
            meta = obj.info.meta
            if not obj.meta_only or meta is None:  # only the security descriptors to compare
                return m.SetFileMeta(task_id=0, ends=e, name=obj.rel, btime_ns=None,
                                     dos_attrs=-1)  # fmt: skip
            return m.SetFileMeta(task_id=0, ends=e, name=obj.rel, btime_ns=meta.btime_ns,
                                 dos_attrs=meta.dos_attrs)  # fmt: skip
        side = kind.split(":", 1)[1]
        style = next(st for sd, st in obj.want if sd == side)
        return m.DigestObject(task_id=0, ends=e, side=side, name=obj.rel, style=style)

    # ---- results ------------------------------------------------------------------------------

    def on_result(self, rec: InFlight[Obj], res: m.Result) -> list[Outcome]:
        obj = rec.owner
        obj.outstanding -= 1
        out: list[Outcome] = []
        if isinstance(res, m.TaskFailed):
            out += self._task_failed(obj, res)
        elif isinstance(res, m.UploadBegun):  # recorded even if failed: the rerun aborts it
            self._begun(obj, res.state)
        elif obj.failed:
            pass
        elif isinstance(res, m.ObjectPut):
            self._count_left(res.left)
            out += self._copied(obj, res.length, res.src_sig or obj.info.sig, res.dst_sig,
                                server_side=rec.kind == "copy")  # fmt: skip
        elif isinstance(res, m.PartPut):
            obj.tokens[rec.idx] = res.token
            if self.db is not None:
                self.db.queue_part(self.job.id, obj.rel, rec.idx, res.token)
            out.append(Moved(copied=res.length, recorded=True))
            if len(obj.tokens) == obj.nparts:
                self.ready.append((obj, "complete", 0))
        elif isinstance(res, m.UploadCompleted):
            self._count_left(res.left)
            if self.db is not None:
                self.db.queue_drop_upload(self.job.id, obj.rel)
            out += self._copied(obj, 0, obj.info.sig, res.dst_sig)
        elif isinstance(res, m.ObjectDigested):
            obj.digests[rec.kind.split(":", 1)[1]] = res.digest
            if all(sd in obj.digests for sd, _ in obj.want):
                out += self._compared(obj)
        elif isinstance(res, m.FileMetaSet):  # an attributes-only update: the data was equal
            self._count_left(res.left)
            self.record(obj.rel, obj.info.sig, res.dst_sig)
            out.append(Same(obj.rel, meta=obj.meta_only))  # (else descriptors only: unknown)
        elif isinstance(res, m.SourceChanged):
            obj.failed = "changed"
            if self.db is not None and obj.upload:
                self.db.queue_drop_upload(self.job.id, obj.rel)  # the worker aborted it
            out.append(Changed(obj))
        if obj.failed and obj.outstanding == 0 and obj.started and obj.failed != "done":
            # A copy that will not finish in this run leaves the progress totals.
            obj.started = False
            out.append(Dropped(obj.info.size, sum(obj.part_len(n) for n in obj.tokens)))
        return out

    def _count_left(self, left: int) -> None:
        while left:
            bit = left & -left
            self.left[bit] = self.left.get(bit, 0) + 1
            left ^= bit

    def left_out(self) -> list[Outcome]:
        """Once the copies are done: one warning per kind of metadata they left out, with the
        number of files (exit code 1: the destination is not all the source is)."""
        dst = {"s3": "S3 objects", "smb": "files orbit-fast writes to SMB"}.get(
            url_scheme(self.ends.dst), "the destination")  # fmt: skip
        out: list[Outcome] = []
        for bit, what in _LEFT:
            n = self.left.get(bit, 0)
            if n:
                files = "1 file has" if n == 1 else f"{n} files have"
                what = what.format(dst=dst, its="its" if n == 1 else "their")
                out.append(Warn("metadata", "", f"{files} {what}", partial=True))
        return out

    def lost(self, rec: InFlight[Obj]) -> list[Outcome]:
        """A task given up after it killed workers: the run is failing; keep the upload."""
        rec.owner.outstanding -= 1
        rec.owner.failed = "done"
        return []

    def _copied(self, obj: Obj, length: int, src_sig: str, dst_sig: str,
                server_side: bool = False) -> list[Outcome]:  # fmt: skip
        self.record(obj.rel, src_sig, dst_sig)
        return [Moved(copied=length), Done(obj.rel, obj.action, obj.info.size, server_side)]

    def _task_failed(self, obj: Obj, res: m.TaskFailed) -> list[Outcome]:
        if obj.failed:
            return []
        if res.side == "source":
            obj.failed = "source"
            if res.errno == errno.ENOENT:
                return [Warn("vanished", obj.rel, "vanished from the source while being copied")]
            return [Warn("unreadable", obj.rel, f"cannot read: {res.message}", skipped=True)]
        obj.failed = "done"  # the run stops; the upload and its parts stay for the rerun
        if res.side == "unavailable":  # the hub waits and runs the job again
            return [Fatal(RemoteUnavailable(res.message))]
        if res.side == "remote":  # refused: a person must look
            return [Fatal(RemoteError(res.message))]
        return [Fatal(dest_error(OSError(res.errno, res.message), obj.rel))]

    # ---- after the copies ---------------------------------------------------------------------

    def delete_many(self, names: list[str]) -> None:
        """Delete a batch of destination objects (--mirror) and forget their records."""
        self.dst.delete_many(names)
        if self.db is not None:
            for name in names:
                self.db.queue_record_deleted(self.job.id, name)

    def sweep_temps(self, temps: set[str], dry_run: bool) -> list[Outcome]:
        """Remove the destination's temp files (`temps`, found when the run listed it) that
        no run holds; the rest stay and are counted. Called once every copy has ended.

        Who can hold a temp file here (docs/sync.md, "Temp files"):
        - A job of this jobs DB, through its recorded upload (the temp name is the resume
          handle): kept, its next run resumes it or aborts it.
        - Otherwise no run of this jobs DB: this run holds the DB (JobsDB.open's flock; a
          hub's runs share its claim but run one job at a time per overlapping destination,
          hub/runner.py), so a temp file named with the token of any of its jobs, or a whole
          write's ".tmp-<12 hex>" still there at the end of the run that found it (such a
          write lasts one request, and on SMB its writer holds it open, which makes the
          delete fail: then it is kept), is stale.
        - A run of another jobs DB cannot be asked: a temp file with a token this DB does
          not know is stale only once unchanged for FOREIGN_TEMP_S."""
        if not temps:
            return []
        held = self.db.upload_states() if self.db is not None else set()
        ours = self.db.job_tokens() if self.db is not None else {self.job.token}
        removed, kept = 0, 0
        for name in sorted(temps):
            token = temp_token(name.rpartition("/")[2])
            if name in held:
                kept += 1
                continue
            try:
                if token is not None and token not in ours:
                    mtime = self.dst.stat_info(name).mtime_ns
                    if mtime is None or time.time_ns() - mtime < FOREIGN_TEMP_S * 10**9:
                        kept += 1
                        continue
                if dry_run or self.dst.remove_temp(name):
                    removed += 1
                else:  # held open by its writer (SMB refuses the delete), or the server away
                    kept += 1
            except FileNotFoundError:  # renamed by its writer, or gone with the run's copies
                continue
            except (OSError, RemoteError, TransientError):  # the stat failed: try next run
                kept += 1
        what = "would be removed" if dry_run else "removed"
        why = (f"{removed + kept} writers' temp files in the destination: {removed} of "
               f"interrupted runs {what}, {kept} kept (held by a run that may resume or "
               "finish them)")  # fmt: skip
        return [Hidden(removed + kept, 0 if dry_run else removed, why)]

    def abort_stale_uploads(self) -> list[Outcome]:
        """Uploads recorded for objects this run did not copy (gone from the source, or now
        excluded): abort them so no parts linger on the server."""
        out: list[Outcome] = []
        if self.db is None or self.uploads_to is None:
            return out
        for name, rec in self.uploads.items():
            try:
                self.uploads_to.resume_upload(name, rec.state, 0, rec.part_bytes, 0).abort()
            except (OSError, RemoteError) as exc:
                out.append(Warn("upload", name, f"could not abort an old upload: {exc}"))
                continue
            self.db.queue_drop_upload(self.job.id, name)
        return out
