"""GET /metrics through prometheus-client: one collector over the hub's state, and a histogram
of API request durations by route template.

Nothing here scans the runs on a scrape: the finished runs' totals (runs by outcome, bytes,
files, the duration histogram) are read from the jobs DB once when the hub starts and then
kept up to date as each run ends (RunTotals.add, called by the store), so a scrape costs the
same with ten runs or a million. Running jobs add their live progress. The hub's starts are
counted in the jobs DB (hub_meta), so `increase(orbit_fast_hub_starts_total[1h])` is the
guide's "restarts in an hour" whatever restarted it.

Names follow Prometheus conventions: `orbit_fast_` prefix, base units, `_total` counters, no
job ids or paths as labels (unbounded cardinality).
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from orbit_fast._version import __version__

if TYPE_CHECKING:
    from orbit_fast.hub.core import Hub
    from orbit_fast.hub.store import HubStore

STATES = ("created", "pending", "running", "retrying", "paused", "completed", "partial",
          "failed", "cancelled")  # fmt: skip
DURATION_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86400)
# API answers: the guide alerts above 5 s.
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class RunTotals:
    """The finished runs, summed: loaded once, then added to as runs end."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.by_state: dict[str, int] = {}
        self.bytes = 0
        self.files = 0
        self.buckets = [0] * len(DURATION_BUCKETS)
        self.count = 0
        self.seconds = 0.0

    def load(self, store: HubStore) -> None:
        """One pass over hub_runs, at start."""
        cases = ", ".join(f"sum(CASE WHEN d <= {b} THEN 1 ELSE 0 END)" for b in DURATION_BUCKETS)
        rows = store.query(
            "SELECT state, count(*), coalesce(sum(b), 0), coalesce(sum(f), 0), "
            f"coalesce(sum(d), 0), {cases} FROM (SELECT state, finished_at - started_at AS d, "
            "coalesce(json_extract(stats, '$.bytes_copied'), json_extract(stats, "
            "'$.bytes_read'), 0) AS b, coalesce(json_extract(stats, '$.files_copied'), "
            "json_extract(stats, '$.files_new') + json_extract(stats, '$.files_changed'), 0) "
            "AS f FROM hub_runs WHERE finished_at IS NOT NULL) GROUP BY state")  # fmt: skip
        with self._lock:
            for state, n, nbytes, nfiles, secs, *below in rows:
                self.by_state[str(state)] = int(n)
                self.bytes += int(nbytes)
                self.files += int(nfiles)
                self.count += int(n)
                self.seconds += float(secs)
                for i, k in enumerate(below):
                    self.buckets[i] += int(k or 0)

    def add(self, state: str, stats: dict[str, Any] | None, seconds: float) -> None:
        s = stats or {}
        with self._lock:
            self.by_state[state] = self.by_state.get(state, 0) + 1
            self.bytes += int(s.get("bytes_copied", s.get("bytes_read", 0)) or 0)
            self.files += int(s.get("files_copied", (s.get("files_new") or 0)
                                    + (s.get("files_changed") or 0)) or 0)  # fmt: skip
            self.count += 1
            self.seconds += seconds
            for i, b in enumerate(DURATION_BUCKETS):
                if seconds <= b:
                    self.buckets[i] += 1

    def snapshot(self) -> tuple[dict[str, int], int, int, list[int], int, float]:
        with self._lock:
            return (dict(self.by_state), self.bytes, self.files, list(self.buckets),
                    self.count, self.seconds)  # fmt: skip


class HubCollector(Collector):
    """Everything but the request histogram, read from the hub's state at each scrape."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def collect(self) -> Iterator[Metric]:
        hub, store = self.hub, self.hub.store
        g = GaugeMetricFamily("orbit_fast_build_info", "Version of the running hub.",
                              labels=["version"])  # fmt: skip
        g.add_metric([__version__], 1)
        yield g
        by_state = store.count_by_state()
        g = GaugeMetricFamily("orbit_fast_jobs", "Jobs by state.", labels=["state"])
        for s in STATES:
            g.add_metric([s], by_state.get(s, 0))
        yield g
        yield GaugeMetricFamily("orbit_fast_queue_depth", "Jobs waiting to run (pending).",
                                value=by_state.get("pending", 0))  # fmt: skip
        runs, nbytes, nfiles, buckets, count, seconds = store.totals.snapshot()
        live = [a.progress or {} for a in list(hub.runner.active.values())]
        yield CounterMetricFamily(
            "orbit_fast_bytes_transferred", "Bytes copied (sync, mirror) or read into "
            "repositories (backup), running jobs included.",
            value=nbytes + sum(int(p.get("bytes_done", 0)) for p in live))  # fmt: skip
        yield CounterMetricFamily(
            "orbit_fast_files_transferred", "Files copied or backed up, running jobs included.",
            value=nfiles + sum(int(p.get("files_done", 0)) for p in live))  # fmt: skip
        c = CounterMetricFamily("orbit_fast_runs", "Finished runs by outcome.", labels=["state"])
        for state, n in sorted(runs.items()):
            c.add_metric([state], n)
        yield c
        yield CounterMetricFamily("orbit_fast_errors", "Runs that failed or were cut by a crash.",
                                  value=sum(n for s, n in runs.items()
                                            if s in ("failed", "crashed")))  # fmt: skip
        h = HistogramMetricFamily("orbit_fast_run_duration_seconds", "Wall time of finished runs.")
        h.add_metric([], [(str(b), float(k)) for b, k in zip(DURATION_BUCKETS, buckets,
                                                             strict=True)]
                     + [("+Inf", float(count))], sum_value=seconds)  # fmt: skip
        yield h
        yield GaugeMetricFamily("orbit_fast_stalled_jobs", "Running jobs with no progress for "
                                "ORBIT_STALL_S seconds (the job says why, as far as known).",
                                value=sum(1 for a in list(hub.runner.active.values())
                                          if a.stalled))  # fmt: skip
        yield CounterMetricFamily(
            "orbit_fast_recovery_rewound_jobs", "Jobs found running at start and resumed "
            "(since this process started).", value=len(hub.runner.recovered))  # fmt: skip
        pool = hub.engine.worker_stats()
        yield GaugeMetricFamily("orbit_fast_workers", "Worker processes of the pool every job "
                                "shares.", value=pool.workers)  # fmt: skip
        yield GaugeMetricFamily("orbit_fast_worker_tasks", "Tasks out to the workers, all jobs "
                                "together.", value=pool.tasks)  # fmt: skip
        yield CounterMetricFamily("orbit_fast_worker_restarts", "Worker processes that died and "
                                  "were replaced (since this process started).",
                                  value=pool.restarts)  # fmt: skip
        g = GaugeMetricFamily("orbit_fast_db_bytes", "Sizes of the hub's state files.",
                              labels=["file"])  # fmt: skip
        for k, v in hub.db_sizes().items():
            g.add_metric([k], v)
        yield g
        free = GaugeMetricFamily("orbit_fast_disk_free_bytes", "Free space for the hub's "
                                 "files, by directory.", labels=["dir"])  # fmt: skip
        size = GaugeMetricFamily("orbit_fast_disk_size_bytes", "Size of the filesystem of "
                                 "each of the hub's directories.", labels=["dir"])  # fmt: skip
        for label, path in hub.directories().items():
            try:
                usage = shutil.disk_usage(path)
            except OSError:
                continue
            free.add_metric([label], usage.free)
            size.add_metric([label], usage.total)
        yield free
        yield size
        yield GaugeMetricFamily("orbit_fast_hub_start_time_seconds", "When this hub process "
                                "started (Unix time).", value=hub.started_at)  # fmt: skip
        yield CounterMetricFamily("orbit_fast_hub_starts", "Starts of the hub on this jobs DB, "
                                  "restarts included.", value=hub.starts)  # fmt: skip


class HubMetrics:
    """The hub's registry: its collector and the request-duration histogram."""

    def __init__(self, hub: Hub) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(HubCollector(hub))
        self.requests = Histogram(
            "orbit_fast_http_request_duration_seconds",
            "Time to answer an API request, by route template and method (an event stream "
            "counts until it ends).", ["route", "method"], buckets=REQUEST_BUCKETS,
            registry=self.registry)  # fmt: skip

    def observe(self, route: str, method: str, seconds: float) -> None:
        self.requests.labels(route, method).observe(seconds)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


def since(t0: float) -> float:
    return time.perf_counter() - t0


# Event streams last as long as a client watches: their time is no answer time.
_UNTIMED = ("/api/events", "/api/jobs/{job_id}/events")


class TimedRequests:
    """ASGI middleware: each HTTP request's time into the request histogram, labelled by the
    route template the router matched ("unmatched" for none: no raw paths as labels)."""

    def __init__(self, app: Any, metrics: HubMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            if route not in _UNTIMED:
                self.metrics.observe(route, scope.get("method", ""), since(t0))
