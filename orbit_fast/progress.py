"""Progress events of a run and the counters they are made from.

Events are msgspec Structs tagged by `event`; `--json` prints each as one line and the hub
stores and streams the same objects. Counters are updated by the coordinator where results
arrive (bytes are counted when a worker reports them written, not when they are planned).
"""

from __future__ import annotations

import os
import time

import msgspec


# Subclasses repeat `frozen=True`: msgspec inherits it, but mypy reads each class statement
# alone (PEP 681) and would call an unmarked subclass non-frozen (msgspec issue 657).
class _Event(msgspec.Struct, tag_field="event", kw_only=True, frozen=True):
    pass


class Started(_Event, tag="start", frozen=True):
    job_id: int
    run_id: int
    source: str
    destination: str
    dry_run: bool
    workers: int
    block_bytes: int  # sync: the block size; backup: the repository's average chunk size


class FileDone(_Event, tag="file_done", frozen=True):
    path: str
    action: str  # copy | update | resume | delete | mkdir | link | meta | plan-*
    size: int


class Progress(_Event, tag="progress", frozen=True):
    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int
    scan_done: bool
    rate_bps: float
    eta_s: float | None
    elapsed_s: float
    queue_depth: int


class Warning(_Event, tag="warning", frozen=True):  # noqa: A001 - the event's name on the wire
    msgid: str
    path: str
    message: str


class Error(_Event, tag="error", frozen=True):
    msgid: str
    message: str
    exit_code: int


class Summary(_Event, tag="summary", frozen=True):
    job_id: int
    run_id: int
    exit_code: int
    files_scanned: int
    files_copied: int
    files_unchanged: int
    files_deleted: int
    dirs_created: int
    links_created: int
    bytes_copied: int
    bytes_resumed: int  # already at the destination from an interrupted run, verified by digest
    bytes_total: int
    warnings: int
    skipped: list[str]
    elapsed_s: float
    dry_run: bool
    files_server_side: int = 0  # of files_copied, those the server copied (S3 or SMB to itself)
    # Names a listing of either end found but did not sync as files (writers' temp files, a
    # destination's entries that are not files); a warning names the kinds (docs/sync.md).
    names_unlisted: int = 0
    temps_removed: int = 0  # of names_unlisted: stale temp files of interrupted runs, removed
    deletes_withheld: int = 0  # --mirror: deletions a guard held back (exit code 22)
    files_backed_up: int = 0  # --backup-dir: replaced or deleted entries moved there


class BackupSummary(_Event, tag="backup_summary", frozen=True):
    job_id: int
    run_id: int
    exit_code: int
    snapshot: str
    parent: str | None
    files_new: int
    files_changed: int
    files_unchanged: int  # not read again: size, mtime, ctime and inode as in the parent
    files_total: int
    bytes_total: int
    bytes_read: int
    chunks_added: int
    bytes_added: int  # stored (compressed) bytes of new chunks
    packs_added: int
    warnings: int
    skipped: list[str]
    elapsed_s: float
    trees_added: int = 0  # directory trees stored (directories whose entries changed)


class RestoreSummary(_Event, tag="restore_summary", frozen=True):
    exit_code: int
    files_restored: int
    files_skipped: int  # already in place (same size and mtime): a resumed restore
    bytes_total: int  # of the files restored or in place (not of those it could not restore)
    problems: list[str]
    elapsed_s: float


class VerifySummary(_Event, tag="verify_summary", frozen=True):
    exit_code: int
    quick: bool
    packs: int
    chunks: int
    bytes_read: int
    snapshots: int
    problems: list[str]  # "snapshot S file F chunk C: why", or a damaged pack
    elapsed_s: float


class PruneSummary(_Event, tag="prune_summary", frozen=True):
    exit_code: int
    snapshots_forgotten: list[str]
    packs_deleted: int
    packs_repacked: int
    packs_written: int
    bytes_freed: int
    chunks_dropped: int
    elapsed_s: float


Event = (Started | FileDone | Progress | Warning | Error | Summary | BackupSummary
         | RestoreSummary | VerifySummary | PruneSummary)  # fmt: skip

_json = msgspec.json.Encoder()


def encode_json(event: Event) -> bytes:
    return _json.encode(event)


def display_path(rel: str) -> str:
    """A path fit for JSON and terminals: undecodable bytes shown as \\xNN."""
    try:
        rel.encode("utf-8")
        return rel
    except UnicodeEncodeError:
        return os.fsencode(rel).decode("utf-8", "backslashreplace")


class Counters:
    """Totals of one run; the coordinator is their only writer."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.files_scanned = 0
        self.files_total = 0  # files planned for transfer
        self.files_done = 0
        self.files_copied = 0
        self.files_unchanged = 0
        self.files_deleted = 0
        self.files_meta = 0  # unchanged content, mode fixed
        self.dirs_created = 0
        self.links_created = 0
        self.bytes_total = 0
        self.bytes_done = 0  # copied + resumed
        self.bytes_copied = 0
        self.bytes_resumed = 0
        self.warnings = 0
        self.skipped: list[str] = []
        self.names_unlisted = 0
        self.temps_removed = 0
        self.deletes_withheld = 0
        self.files_backed_up = 0
        self.scan_done = False
        self._rate_t = self.t0
        self._rate_b = 0
        self.rate_bps = 0.0

    def progress(self, queue_depth: int) -> Progress:
        now = time.monotonic()
        dt = now - self._rate_t
        if dt >= 0.5:
            inst = (self.bytes_done - self._rate_b) / dt
            # Exponential smoothing: a steady rate for the ETA, still quick to follow changes.
            self.rate_bps = inst if self.rate_bps == 0 else 0.7 * self.rate_bps + 0.3 * inst
            self._rate_t, self._rate_b = now, self.bytes_done
        left = self.bytes_total - self.bytes_done
        eta = left / self.rate_bps if self.scan_done and self.rate_bps > 0 else None
        return Progress(
            files_done=self.files_done,
            files_total=self.files_total,
            bytes_done=self.bytes_done,
            bytes_total=self.bytes_total,
            scan_done=self.scan_done,
            rate_bps=round(self.rate_bps, 1),
            eta_s=None if eta is None else round(eta, 1),
            elapsed_s=round(now - self.t0, 3),
            queue_depth=queue_depth,
        )
