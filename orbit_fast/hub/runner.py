"""Running hub jobs: a queue with a concurrency limit, one thread per running job with the
engine embedded, cancel / pause / resume, retries with backoff, schedules and crash recovery.

States: created -> pending (queued) -> running -> completed | partial | failed | cancelled;
running -> paused (asked) or retrying (a transient storage error; back to pending at retry_at);
after a crash, running and retrying jobs are pending again and resume from their checkpoints.

No job runs twice: only this thread starts runs, a job is started by a compare-and-set from
pending to running, and the hub's engine handle holds the jobs DB's lock while the hub is up
(a second hub refuses to start), so after a restart no run of the old process can still be
going. Every run goes through that handle (api.Engine): its worker pool and its claims.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import msgspec

from orbit_fast import progress as p
from orbit_fast.api import Engine
from orbit_fast.cancel import CancelToken
from orbit_fast.config import BackupOptions
from orbit_fast.errors import (
    DatabaseBusy,
    ExitCode,
    Interrupted,
    OrbitError,
    RemoteUnavailable,
    RepositoryLocked,
)
from orbit_fast.hub.jobspec import (
    DEFAULT_RETRY_ATTEMPTS,
    engine_options,
    keys_conflict,
    resource_keys,
)
from orbit_fast.hub.passes import CONTINUING, Pass
from orbit_fast.hub.store import HubStore

log = logging.getLogger("orbit_fast.hub")

RUNNABLE_FROM = ("created", "completed", "partial", "failed", "cancelled")
TRANSIENT = (RemoteUnavailable, RepositoryLocked, DatabaseBusy)
PROGRESS_EVERY_S = 1.0
MAX_WARNINGS_PER_RUN = 100


@dataclass
class Active:
    job: dict[str, Any]
    run_id: int
    keys: set[str]
    cancel: CancelToken = field(default_factory=CancelToken)
    intent: str = ""  # why it was stopped: cancel | pause | shutdown
    engine_run_id: int | None = None
    progress: dict[str, Any] = field(default_factory=dict)
    warnings: int = 0
    last_publish: float = 0.0
    thread: threading.Thread | None = None
    overrides: dict[str, Any] = field(default_factory=dict)  # this run's (RunRequest)
    # Stall detection: when the files or bytes done last moved, and why the run seems stuck
    # ("" while it moves): the last warning is the best reason known so far.
    moved_at: float = field(default_factory=time.monotonic)
    mark: tuple[int, int] = (0, 0)
    stalled: str = ""
    last_warning: str = ""
    pass_: Pass | None = None  # the job's progress over its pass (hub/passes.py)


class JobRunner:
    def __init__(self, store: HubStore, engine: Engine, max_jobs: int,
                 retry_base_s: float = 5.0, roots: tuple[str, ...] = (),
                 protected: tuple[str, ...] = (), stall_s: float = 120.0) -> None:  # fmt: skip
        self.store = store
        self.stall_s = stall_s  # ORBIT_STALL_S: no progress this long marks a run stalled
        # Passed with every run: the engine checks them when the run starts (roots.py), so a
        # link swapped in since the job was made, or roots narrowed since, fail the run.
        self.roots, self.protected = roots, protected
        self.engine = engine  # opened and closed by the Hub; the runner only runs on it
        self.max_jobs = max_jobs
        self.retry_base_s = retry_base_s
        self.active: dict[int, Active] = {}
        self.triggers: dict[int, str] = {}
        # Overrides asked for with a run (force_delete, max_delete): kept until that run
        # ends, retries of it included.
        self.overrides: dict[int, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="orbit-hub-scheduler",
                                        daemon=True)  # fmt: skip
        self.recovered: list[int] = []

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self.recovered = self.store.recover()
        for job_id in self.recovered:
            self.triggers[job_id] = "recovery"
            self.event(job_id, "recovered")
        if self.recovered:
            log.warning("sys_startup: %d job(s) were running when the hub stopped; they "
                        "resume from their checkpoints: %s", len(self.recovered),
                        self.recovered)  # fmt: skip
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the queue; running jobs checkpoint and go back to pending (they resume at the
        next start)."""
        self._stop.set()
        self._wake.set()
        with self._lock:
            actives = list(self.active.values())
        for a in actives:
            a.intent = a.intent or "shutdown"
            a.cancel.cancel(ExitCode.TERMINATED)
        deadline = time.monotonic() + timeout
        for a in actives:
            if a.thread is not None:
                a.thread.join(max(0.1, deadline - time.monotonic()))
        self._thread.join(5)

    def wake(self) -> None:
        self._wake.set()

    # ---- requests from the API ---------------------------------------------------------------

    def run(self, job_id: int, trigger: str = "manual",
            overrides: dict[str, Any] | None = None) -> bool:  # fmt: skip
        ok = self.store.transition(job_id, RUNNABLE_FROM, state="pending", queued_at=time.time(),
                                   retries=0, last_error=None)  # fmt: skip
        if ok:
            self.triggers[job_id] = trigger
            if overrides:
                self.overrides[job_id] = overrides
            else:
                self.overrides.pop(job_id, None)
            self.event(job_id, "queued", trigger=trigger)
            self.wake()
        return ok

    def cancel(self, job_id: int) -> bool:
        if self.store.transition(job_id, ("pending", "retrying", "paused"), state="cancelled",
                                 queued_at=None, retry_at=None):  # fmt: skip
            self.event(job_id, "cancelled")
            return True
        return self._stop_active(job_id, "cancel")

    def pause(self, job_id: int) -> bool:
        if self.store.transition(job_id, ("pending", "retrying"), state="paused"):
            self.event(job_id, "paused")
            return True
        return self._stop_active(job_id, "pause")

    def resume(self, job_id: int) -> bool:
        ok = self.store.transition(job_id, ("paused",), state="pending", queued_at=time.time())
        if ok:
            self.triggers.setdefault(job_id, "resume")
            self.event(job_id, "queued", trigger="resume")
            self.wake()
        return ok

    def _stop_active(self, job_id: int, intent: str) -> bool:
        with self._lock:
            a = self.active.get(job_id)
        if a is None:
            return False
        a.intent = intent
        a.cancel.cancel(ExitCode.TERMINATED)
        return True

    # ---- the scheduler thread ------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # the queue must outlive any one bad row
                log.exception("scheduler tick failed")
            self._wake.wait(1.0)
            self._wake.clear()

    def _stalls(self) -> None:
        """A running job whose files and bytes done have not moved for stall_s is marked
        stalled (API, events, dashboard, metrics) with the reason known so far."""
        now = time.monotonic()
        for a in list(self.active.values()):
            idle = now - a.moved_at
            if a.stalled or idle < self.stall_s or a.thread is None:
                continue
            why = f"no progress for {idle:.0f} s"
            a.stalled = why + (f"; last warning: {a.last_warning}" if a.last_warning else
                               "; the storage may be hanging (no error yet)")  # fmt: skip
            a.progress = {**a.progress, "stalled": a.stalled}
            self.store.update_job(a.job["id"], progress=a.progress)
            self.event(a.job["id"], "stalled", reason=a.stalled)
            log.warning("job %s stalled: %s", a.job["id"], a.stalled)

    def tick(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.engine.tick()  # the global bandwidth limit's timetable
        self._stalls()
        self._due_schedules(now)
        for (job_id,) in self.store.query(
            "SELECT id FROM hub_jobs WHERE state='retrying' AND retry_at <= ?", (now,)
        ):
            if self.store.transition(job_id, ("retrying",), state="pending", retry_at=None):
                self.triggers.setdefault(job_id, "retry")
                self.event(job_id, "queued", trigger="retry")
        with self._lock:
            busy = [a.keys for a in self.active.values()]
            free = self.max_jobs - len(self.active)
        if free <= 0 or self._stop.is_set():
            return
        for (job_id,) in self.store.query(
            "SELECT id FROM hub_jobs WHERE state='pending' ORDER BY queued_at, id"
        ):
            job = self.store.job(job_id)
            if job is None or job["state"] != "pending":
                continue
            keys = resource_keys(job)
            # An overlapping destination (equal, nested, or the same place spelled otherwise)
            # or the universe in use: it waits its turn.
            if any(keys_conflict(keys, held) for held in busy):
                continue
            if self._start(job, keys):
                busy.append(keys)
                free -= 1
                if free == 0:
                    return

    def _due_schedules(self, now: float) -> None:
        from orbit_fast.hub.schedule import next_after

        for job_id, schedule, _next_run, state in self.store.query(
            "SELECT id, schedule, next_run_at, state FROM hub_jobs WHERE schedule IS NOT NULL "
            "AND next_run_at IS NOT NULL AND next_run_at <= ?", (now,)
        ):
            # Missed runs (the hub was down) collapse into one, like systemd's Persistent=true.
            self.store.update_job(job_id, next_run_at=next_after(schedule, now))
            if state in RUNNABLE_FROM:
                self.run(job_id, trigger="schedule")

    def _start(self, job: dict[str, Any], keys: set[str]) -> bool:
        with self._lock:
            trigger = self.triggers.get(job["id"], "manual")
            run_id = self.store.start_run(job["id"], trigger)
            if not run_id:
                return False
            self.triggers.pop(job["id"], None)
            a = Active(job=self.store.job(job["id"]) or job, run_id=run_id, keys=keys,
                       overrides=self.overrides.get(job["id"], {}))  # fmt: skip
            carried = (a.job.get("progress") or {}).get("pass") if trigger in CONTINUING else None
            a.pass_ = Pass(carried, sync=a.job["mode"] != "backup")
            self.active[job["id"]] = a
        a.thread = threading.Thread(target=self._run, args=(a,), daemon=True,
                                    name=f"orbit-job-{job['id']}")  # fmt: skip
        self.event(job["id"], "started", run_id=run_id, attempt=a.job["attempt"])
        a.thread.start()
        return True

    # ---- one run -----------------------------------------------------------------------------

    def _run(self, a: Active) -> None:
        job = a.job
        job_id = job["id"]
        stats: dict[str, Any] | None = None
        error: str | None = None
        try:
            opts = engine_options(job, self.engine.db_path, self.engine.universe_path,
                                  self.roots, self.protected, a.overrides)  # fmt: skip
            on_event = self._on_event_for(a)
            if isinstance(opts, BackupOptions):  # mode backup
                summary: Any = self.engine.backup(opts, on_event, a.cancel)
            else:
                summary = self.engine.sync(opts, on_event, a.cancel)
            stats = msgspec.to_builtins(summary)
            state = "completed" if summary.exit_code == 0 else "partial"
            if state == "partial":
                error = f"{len(summary.skipped)} entries skipped (see the run's file errors)"
            self._finish(a, state, stats, error, retries=0, queued_at=None)
        except Interrupted as exc:
            state = {"cancel": "cancelled", "pause": "paused"}.get(a.intent, "pending")
            self._finish(a, state, stats, None if state != "cancelled" else "cancelled",
                         note=str(exc), queued_at=time.time() if state == "pending" else None)
        except TRANSIENT as exc:
            self._transient(a, exc)
        except OrbitError as exc:
            self._finish(a, "failed", stats, str(exc), queued_at=None)
        except Exception as exc:  # a bug: keep the hub up, fail the job, log the traceback
            log.error("job %s crashed: %s", job_id, traceback.format_exc())
            self._finish(a, "failed", stats, f"internal error: {type(exc).__name__}: {exc}",
                         queued_at=None)  # fmt: skip
        finally:
            with self._lock:
                self.active.pop(job_id, None)
            self.wake()

    def _transient(self, a: Active, exc: OrbitError) -> None:
        job = self.store.job(a.job["id"]) or a.job
        limit = int(job["config"].get("retry_attempts") or DEFAULT_RETRY_ATTEMPTS)
        k = int(job.get("retries") or 0) + 1
        if k > limit:
            said = str(exc).replace("; " + RemoteUnavailable.ADVICE, "")
            self._finish(a, "failed", None, f"{said}; the hub gave up after {limit} retries: "
                         "check the server, then run the job again",
                         queued_at=None)  # fmt: skip
            return
        delay = min(self.retry_base_s * 2 ** (k - 1), 600.0) * random.uniform(0.8, 1.2)
        # The engine's advice is the CLI user's ("then rerun"): here the hub reruns the job.
        said = str(exc).replace("; " + RemoteUnavailable.ADVICE, "")
        self._finish(a, "retrying", None,
                     f"{said}; retrying in {delay:.0f} s (attempt {k} of {limit})",
                     retries=k, retry_at=time.time() + delay,
                     note=f"retrying in {delay:.0f} s (attempt {k} of {limit})")  # fmt: skip

    def _finish(self, a: Active, state: str, stats: dict[str, Any] | None, error: str | None,
                note: str = "", **fields: Any) -> None:  # fmt: skip
        job_id = a.job["id"]
        run_state = {"retrying": "failed", "pending": "interrupted",
                     "paused": "paused"}.get(state, state)  # fmt: skip
        self.store.finish_run(a.run_id, run_state, stats, error, a.engine_run_id)
        if state not in ("retrying", "pending", "paused"):
            self.overrides.pop(job_id, None)
        progress = dict(a.progress)
        if a.pass_ is not None:
            if state in ("completed", "partial"):  # the pass is over: done is the total
                progress = a.pass_.completed(stats)
            else:  # the next run of this pass (a retry, a resume) starts from here
                progress["pass"] = a.pass_.carry()
        self.store.update_job(job_id, state=state, last_error=error, progress=progress, **fields)
        self.event(job_id, "finished", run_id=a.run_id, state=state, error=error, note=note,
                    stats=stats)  # fmt: skip
        log.info("job %s run %s: %s%s", job_id, a.run_id, state, f" ({error})" if error else "")

    def _on_event_for(self, a: Active) -> Any:
        job_id = a.job["id"]

        def on_event(ev: p.Event) -> None:
            if isinstance(ev, p.Started):
                a.engine_run_id = ev.run_id
            elif isinstance(ev, p.Progress):
                assert a.pass_ is not None
                a.progress = a.pass_.update(ev)
                now = time.monotonic()
                mark = (ev.files_done, ev.bytes_done)
                if mark != a.mark:
                    a.mark, a.moved_at = mark, now
                    if a.stalled:  # moving again: said at once
                        a.stalled = ""
                        a.last_publish = 0.0
                        self.event(job_id, "moving")
                if a.stalled:
                    a.progress["stalled"] = a.stalled
                if now - a.last_publish >= PROGRESS_EVERY_S:
                    a.last_publish = now
                    self.store.update_job(job_id, progress=a.progress)
                    self.store.add_event("progress", job_id, {"job_id": job_id, **a.progress})
            elif isinstance(ev, p.FileDone):
                if a.pass_ is not None:
                    a.pass_.file_done(ev)
            elif isinstance(ev, p.Warning):
                a.warnings += 1
                a.last_warning = f"{ev.path}: {ev.message}" if ev.path else ev.message
                if a.warnings <= MAX_WARNINGS_PER_RUN:
                    self.store.add_event("warning", job_id, {"job_id": job_id, "code": ev.msgid,
                                                             "path": ev.path,
                                                             "message": ev.message})  # fmt: skip

        return on_event

    def event(self, job_id: int, what: str, **data: Any) -> None:
        """A `job` event: what happened to the job, and its state now."""
        job = self.store.job(job_id)
        state = job["state"] if job else "deleted"
        self.store.add_event("job", job_id, {"job_id": job_id, "event": what, "state": state,
                                             **data})  # fmt: skip
