"""GET /metrics in Prometheus text format, computed from the jobs DB on each scrape (so the
counters survive restarts) plus the live progress of running jobs.

Names follow Prometheus conventions: `orbit_fast_` prefix, base units, `_total` counters, no
job ids or paths as labels (unbounded cardinality).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from orbit_fast._version import __version__

if TYPE_CHECKING:
    from orbit_fast.hub.core import Hub

STATES = ("created", "pending", "running", "retrying", "paused", "completed", "partial",
          "failed", "cancelled")  # fmt: skip
DURATION_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86400)


def render_metrics(hub: Hub) -> str:
    store = hub.store
    out: list[str] = []

    def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            out.append(f"{name}{labels} {value:g}" if isinstance(value, float)
                       else f"{name}{labels} {value}")  # fmt: skip

    metric("orbit_fast_build_info", "gauge", "Version of the running hub.",
           [(f'{{version="{__version__}"}}', 1)])
    by_state = store.count_by_state()
    metric("orbit_fast_jobs", "gauge", "Jobs by state.",
           [(f'{{state="{s}"}}', by_state.get(s, 0)) for s in STATES])
    metric("orbit_fast_queue_depth", "gauge", "Jobs waiting to run (pending).",
           [("", by_state.get("pending", 0))])
    # Finished runs, from the stored summaries (sync: bytes_copied; backup: bytes_read).
    rows = store.query(
        "SELECT state, count(*), coalesce(sum(coalesce(json_extract(stats, '$.bytes_copied'),"
        " json_extract(stats, '$.bytes_read'), 0)), 0), coalesce(sum(coalesce("
        "json_extract(stats, '$.files_copied'), json_extract(stats, '$.files_new') + "
        "json_extract(stats, '$.files_changed'), 0)), 0) FROM hub_runs "
        "WHERE finished_at IS NOT NULL GROUP BY state"
    )
    live_bytes = sum(int((a.progress or {}).get("bytes_done", 0))
                     for a in list(hub.runner.active.values()))  # fmt: skip
    live_files = sum(int((a.progress or {}).get("files_done", 0))
                     for a in list(hub.runner.active.values()))  # fmt: skip
    metric("orbit_fast_bytes_transferred_total", "counter",
           "Bytes copied (sync, mirror) or read into repositories (backup), running jobs "
           "included.", [("", int(sum(r[2] for r in rows)) + live_bytes)])
    metric("orbit_fast_files_transferred_total", "counter",
           "Files copied or backed up, running jobs included.",
           [("", int(sum(r[3] for r in rows)) + live_files)])
    metric("orbit_fast_runs_total", "counter", "Finished runs by outcome.",
           [(f'{{state="{r[0]}"}}', int(r[1])) for r in rows])
    failed = sum(int(r[1]) for r in rows if r[0] in ("failed", "crashed"))
    metric("orbit_fast_errors_total", "counter", "Runs that failed or were cut by a crash.",
           [("", failed)])
    durations = [float(d) for (d,) in store.query(
        "SELECT finished_at - started_at FROM hub_runs WHERE finished_at IS NOT NULL")]  # fmt: skip
    samples: list[tuple[str, float]] = [
        (f'_bucket{{le="{b}"}}', sum(1 for d in durations if d <= b)) for b in DURATION_BUCKETS]
    samples += [('_bucket{le="+Inf"}', len(durations)), ("_sum", round(sum(durations), 3)),
                ("_count", len(durations))]  # fmt: skip
    out.append("# HELP orbit_fast_run_duration_seconds Wall time of finished runs.")
    out.append("# TYPE orbit_fast_run_duration_seconds histogram")
    out.extend(f"orbit_fast_run_duration_seconds{s} {v}" for s, v in samples)
    metric("orbit_fast_recovery_rewound_jobs_total", "counter",
           "Jobs found running at start and resumed (since this process started).",
           [("", len(hub.runner.recovered))])
    pool = hub.engine.worker_stats()
    metric("orbit_fast_workers", "gauge", "Worker processes of the pool every job shares.",
           [("", pool.workers)])
    metric("orbit_fast_worker_tasks", "gauge", "Tasks out to the workers, all jobs together.",
           [("", pool.tasks)])
    metric("orbit_fast_worker_restarts_total", "counter",
           "Worker processes that died and were replaced (since this process started).",
           [("", pool.restarts)])
    metric("orbit_fast_db_bytes", "gauge", "Sizes of the hub's state files.",
           [(f'{{file="{k}"}}', v) for k, v in hub.db_sizes().items()])
    return "\n".join(out) + "\n"
