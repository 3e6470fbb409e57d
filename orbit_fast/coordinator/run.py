"""The run ledger: one run of a job, in the jobs DB and in the events, for sync and backup alike.

It claims the jobs DB, finds or creates the job's row and opens a run, emits Started, keeps the
checkpoint cadence, records skipped entries, and closes the run the same way whatever the
engine: done or partial with its summary; interrupted (a cancel) or failed with the summary as
far as it got, an Error event and then the Summary. The engine owns what happens in a run; the
ledger owns how a run is recorded and reported. Nothing here calls back into an engine: the
body and the summary are handed in and their results come back.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from orbit_fast import progress as p
from orbit_fast.cancel import CancelToken
from orbit_fast.errors import ExitCode, Interrupted, OrbitError
from orbit_fast.index.jobs_db import Job, JobsDB
from orbit_fast.index.state_file import StateClaims

# 0.2 s: a crash loses at most this much finished work (plus blocks in flight); a commit of a
# few hundred rows in WAL mode without fsync costs well under a millisecond.
CHECKPOINT_INTERVAL_S = 0.2
CHECKPOINT_MAX_OPS = 5000
# Blocks (or parts) of large files written since the last checkpoint before the next one: with
# the blocks in flight this bounds what a crash makes a rerun copy again.
CHECKPOINT_BLOCKS = 16

S = TypeVar("S", p.Summary, p.BackupSummary)


class RunLedger:
    """The record of one run: its job and run rows, checkpoints, and lifecycle events.

    Parameters
    ----------
    kind
        "sync" or "backup" (the job row's kind).
    source, options
        What the job row shows; `options` is stored as JSON.
    db_path
        The jobs DB; "" with `dry_run` (a dry run records nothing).
    emit
        Where events go.
    claims
        The hub's claims on its state files (api.Engine); None: this run claims the jobs DB.
    """

    def __init__(self, *, kind: str, source: str, options: Any, db_path: str,
                 emit: Callable[[p.Event], None], dry_run: bool = False,
                 claims: StateClaims | None = None) -> None:  # fmt: skip
        self.kind = kind
        self.source, self.destination = source, ""
        self.options = options
        self.db_path = db_path
        self.emit = emit
        self.dry_run = dry_run
        self.claims = claims  # the hub's: the jobs DB is borrowed from it, not claimed again
        self.db: JobsDB | None = None
        self.job = Job(0, "", "dryrun0")
        self.run_id = 0
        self.opened = False  # Started was emitted: a Summary follows whatever happens
        self._last_ckpt = time.monotonic()
        self.blocks_since_ckpt = 0

    # ---- the run as a whole -----------------------------------------------------------------

    def run(self, body: Callable[[], S], summarize: Callable[[int], S]) -> S:
        """Run `body` (which calls `open()` once its own checks pass) and record its end.

        `body` returns the summary, or raises an OrbitError; `summarize(exit_code)` is the
        summary as far as the run got, recorded with a failure. The error is re-raised after
        an Error event (and the Summary, if the run had started)."""
        try:
            summary = body()
            self._close("done" if summary.exit_code == ExitCode.OK else "partial",
                        summary.exit_code, summary, None)  # fmt: skip
            self.emit(summary)
            return summary
        except OrbitError as err:
            summary = summarize(err.exit_code)
            state = "interrupted" if isinstance(err, Interrupted) else "failed"
            self._close(state, err.exit_code, summary, str(err))
            self.emit(p.Error(msgid=err.msgid, message=str(err), exit_code=int(err.exit_code)))
            if self.opened:
                self.emit(summary)
            raise
        except BaseException as exc:  # a bug, or a second Ctrl-C: the run still ends recorded
            code = ExitCode.WORKER if isinstance(exc, Exception) else ExitCode.INTERRUPTED
            self._close("failed", code, summarize(code), f"{type(exc).__name__}: {exc}")
            raise
        finally:
            if self.db is not None:
                self.db.close()
                self.db = None

    def open(self, name: str, destination: str) -> None:
        """Claim the jobs DB and open a run of the job `name` (runs of one name are one job
        and resume each other); nothing is recorded for a dry run."""
        self.destination = destination
        if not self.dry_run:
            self.db = JobsDB.open(self.db_path, claims=self.claims)
            self.job = self.db.get_or_create_job(name, self.kind, self.source, destination,
                                                 msgspec.json.encode(self.options).decode())
            self.run_id = self.db.start_run(self.job.id)

    def started(self, *, workers: int, block_bytes: int) -> None:
        self.opened = True
        self.emit(p.Started(job_id=self.job.id, run_id=self.run_id, source=self.source,
                            destination=self.destination, dry_run=self.dry_run,
                            workers=workers, block_bytes=block_bytes))  # fmt: skip

    def interrupted(self, cancel: CancelToken, message: str) -> Interrupted:
        """The error that ends a cancelled run (exit 130 / 143 by the signal)."""
        return Interrupted(message, cancel.exit_code or ExitCode.INTERRUPTED)

    def _close(self, state: str, code: int, summary: Any, error: str | None) -> None:
        if self.db is None:
            return
        try:
            self.db.checkpoint()
            self.db.finish_run(self.job.id, self.run_id, state, int(code),
                               msgspec.json.encode(summary).decode(), error)  # fmt: skip
        except Exception as exc:  # the run's own error is the one to report
            self.emit(p.Warning(msgid="db", path=self.db_path, message=str(exc)))

    # ---- during the run ---------------------------------------------------------------------

    def skipped(self, rel: str, msgid: str, message: str) -> None:
        """A source entry left out of this run: listed with the run (the hub shows them)."""
        if self.db is not None:
            self.db.queue_error(self.run_id, os.fsencode(rel), msgid, message)

    def tick(self, force: bool = False) -> None:
        """Checkpoint what is queued if it is due (or `force`)."""
        db = self.db
        if db is None:
            return
        now = time.monotonic()
        if (force or db.pending_ops >= CHECKPOINT_MAX_OPS
                or self.blocks_since_ckpt >= CHECKPOINT_BLOCKS
                or now - self._last_ckpt >= CHECKPOINT_INTERVAL_S):  # fmt: skip
            db.checkpoint()
            self._last_ckpt = now
            self.blocks_since_ckpt = 0
