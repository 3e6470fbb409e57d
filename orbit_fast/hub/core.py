"""The hub as one object: it owns the engine handle (api.Engine: the state files' claims and
the worker pool), the store and the job runner, and answers the health question. The HTTP
layer (app.py, routes/) only translates requests into calls here.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import threading
import time
from typing import Any

from orbit_fast import api, environment
from orbit_fast._version import __version__
from orbit_fast.hub.auth import LoginThrottle
from orbit_fast.hub.runner import JobRunner
from orbit_fast.hub.settings import HubSettings
from orbit_fast.hub.store import HubStore

log = logging.getLogger("orbit_fast.hub")

HEALTH_EVERY_S = 2.0


class Hub:
    def __init__(self, settings: HubSettings, store: HubStore, runner: JobRunner) -> None:
        self.settings = settings
        self.store = store
        self.runner = runner
        self.engine = runner.engine
        self.throttle = LoginThrottle()
        self.bootstrap_token = ""
        self.started_at = time.time()
        self.starts = 0  # of the hub on this jobs DB, this one included (set at start)
        # Restores started from the API (routes/snapshots.py), by id: the last ones only.
        self.restores: dict[str, dict[str, Any]] = {}
        from orbit_fast.hub.metrics import HubMetrics

        self.metrics = HubMetrics(self)
        # From the last health check (every HEALTH_EVERY_S): (public text, text with paths).
        self._problems: list[tuple[str, str]] = []
        self.closing = threading.Event()  # SIGTERM: end event streams, do not wait on them

    @classmethod
    def open(cls, settings: HubSettings) -> Hub:
        """Claim jobs.db and the universe until close() (a second hub on the same files
        refuses to start: DatabaseBusy), refusing network filesystems; the engine's tables
        are made before the hub's (store.py: the engine owns the file's settings)."""
        # The workers get the env file's settings as their environment overlay, as this
        # process does below.
        engine = api.Engine(settings.db_path, settings.universe_path, workers=settings.workers,
                            worker_nice=settings.worker_nice, env=settings.job_env,
                            backup_dir=settings.state_backup_dir, db_setting="DATABASE_URL",
                            universe_setting="UNIVERSE_PATH",
                            bwlimit=settings.bwlimit).open()  # fmt: skip
        try:
            store = HubStore(settings.db_path)
        except BaseException:
            engine.close()
            raise
        runner = JobRunner(store, engine, settings.max_jobs, retry_base_s=settings.retry_base_s,
                           roots=settings.allowed_roots, protected=settings.protected_paths,
                           stall_s=settings.stall_s)  # fmt: skip
        hub = cls(settings, store, runner)
        # The env file's S3/SMB settings, for the stores this process opens for its jobs
        # (the workers get them from the pool): in an overlay, not os.environ, which belongs
        # to whoever embeds the hub. Removed in close().
        environment.install(hub, settings.job_env)
        hub._bootstrap()
        return hub

    def _bootstrap(self) -> None:
        """With no user yet: a one-time token for registering the first admin from elsewhere
        than the hub itself, printed and written to a file only the hub's user can read."""
        path = os.path.join(self.settings.data_dir, "bootstrap-token")
        if self.store.user_count():
            if os.path.exists(path):
                os.unlink(path)
            return
        self.bootstrap_token = secrets.token_urlsafe(24)
        fd = api.open_private(path)  # 0600 even over a looser file left from before
        with os.fdopen(fd, "w") as f:
            f.write(self.bootstrap_token + "\n")
        log.warning("no users yet: register the first admin with POST /api/auth/register from "
                    "the hub itself, or from anywhere with the one-time bootstrap token in %s "
                    "(%s)", path, self.bootstrap_token)  # fmt: skip

    def bootstrap_used(self) -> None:
        self.bootstrap_token = ""
        try:
            os.unlink(os.path.join(self.settings.data_dir, "bootstrap-token"))
        except FileNotFoundError:
            pass

    def begin_shutdown(self) -> None:
        """Called from the server's signal handler: open event streams end at once instead of
        holding the graceful shutdown for its whole timeout."""
        self.closing.set()
        for wake in list(self.store.listeners):
            wake()

    def start(self) -> None:
        self.starts = self.store.count_start()
        self.engine.start()  # the workers, before the runner resumes recovered jobs
        self.runner.start()
        self._check_health()
        threading.Thread(target=self._health_loop, name="orbit-hub-health", daemon=True).start()

    def close(self) -> None:
        self.closing.set()
        self.runner.stop()
        self.engine.close()
        self.store.close()
        environment.remove(self)

    def _health_loop(self) -> None:
        # Checked here, not in the request: the probe is a durable write (an fsync), which
        # must not sit in the path of a load balancer's polls.
        while not self.closing.wait(HEALTH_EVERY_S):
            try:
                self._check_health()
            except Exception as exc:  # a failed check is itself the news
                self._problems = [("the health check failed", f"health check failed: {exc}")]

    # ---- health ------------------------------------------------------------------------------

    def _check_health(self) -> None:
        # (what anyone may read, what a signed-in caller reads: the latter names paths)
        out: list[tuple[str, str]] = []
        if why := self.store.writable():
            out.append(("the jobs DB is not writable",
                        f"the jobs DB {self.settings.db_path} is not writable: {why}"))
        usage = shutil.disk_usage(self.settings.data_dir)
        if usage.free < (least := self.settings.min_free_bytes):
            out.append((f"the data disk has {usage.free >> 20} MiB free, under {least >> 20} MiB",
                        f"{self.settings.data_dir} has {usage.free >> 20} MiB free, under "
                        f"{least >> 20} MiB: free space before jobs fail"))  # fmt: skip
        self._problems = out

    def health(self, detailed: bool = False) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body). Only `detailed` answers (for a caller with a valid token)
        name the hub's paths: anonymous callers learn what is wrong, not where."""
        problems = self._problems
        if not problems:
            return 200, {"status": "healthy", "version": __version__}
        return 503, {"status": "unhealthy", "version": __version__,
                     "problems": [p[1] if detailed else p[0] for p in problems]}  # fmt: skip

    def directories(self) -> dict[str, str]:
        """The hub's directories whose disks /metrics reports: its data (jobs DB, universe)
        and its state backups."""
        out = {"data": self.settings.data_dir}
        if os.path.isdir(self.settings.state_backup_dir):
            out["state_backups"] = self.settings.state_backup_dir
        return out

    def db_sizes(self) -> dict[str, int]:
        out = {}
        for name, path in (("jobs", self.settings.db_path),
                           ("jobs_wal", self.settings.db_path + "-wal"),
                           ("universe", self.settings.universe_path),
                           ("universe_journal", self.settings.universe_path + "-journal")):
            try:
                out[name] = os.path.getsize(path)
            except OSError:
                out[name] = 0
        return out
