"""A job's progress over its current pass: what the API, the event stream, the dashboard and
`job run --wait` show, true across the runs one pass may take.

A pass starts when a job is run (by hand or by its schedule) and ends when a run of it
completes; a crash, a retry or a pause ends a run but not the pass, and the next run resumes it
(trigger recovery, retry or resume). The engine reports each run on its own: a sync that
resumes counts only what is left (the files the earlier runs finished are "unchanged" to it),
and a backup reads everything again. So the pass adds the files (and their bytes) the earlier
runs of the pass finished to a sync run's numbers, and never lets what it shows go back: done
and total only grow, and a completed pass shows done equal to total. The carried numbers are
kept in the job's stored progress (`pass`), so a hub that was killed resumes them; at most the
files finished in the last second before such a kill are not counted again (they are then in
neither the earlier carry nor the rerun's work), which only lowers the total, never moves done
back.
"""

from __future__ import annotations

import time
from typing import Any

from orbit_fast import progress as p

CONTINUING = ("recovery", "retry", "resume")  # triggers of a run that resumes the pass


class Pass:
    """The pass of one running job."""

    def __init__(self, carried: dict[str, Any] | None, sync: bool) -> None:
        c = carried or {}
        self.sync = sync
        # Finished in earlier runs of this pass (sync: they are not in this run's numbers).
        self.base_files = int(c.get("files", 0)) if sync else 0
        self.base_bytes = int(c.get("bytes", 0)) if sync else 0
        # What was shown last: nothing below it is ever shown again.
        self.shown = {k: int(c.get("shown_" + k, 0))
                      for k in ("files_done", "files_total", "bytes_done", "bytes_total")}
        self.elapsed = float(c.get("elapsed_s", 0.0))  # of the earlier runs
        self.started = float(c.get("started", time.time()))
        self.run_files = self.run_bytes = 0  # finished in this run (FileDone)
        self.run_elapsed = 0.0
        self.view: dict[str, Any] = {}

    def file_done(self, ev: p.FileDone) -> None:
        if self.sync and ev.action in ("copy", "update", "resume"):
            self.run_files += 1
            self.run_bytes += ev.size

    def update(self, ev: p.Progress) -> dict[str, Any]:
        """The job's progress for this engine Progress event."""
        now = {"files_done": self.base_files + ev.files_done,
               "files_total": self.base_files + ev.files_total,
               "bytes_done": self.base_bytes + ev.bytes_done,
               "bytes_total": self.base_bytes + ev.bytes_total}  # fmt: skip
        for k, v in now.items():
            self.shown[k] = max(self.shown[k], v)
        for k in ("files", "bytes"):  # a total is never below what is done
            self.shown[f"{k}_total"] = max(self.shown[f"{k}_total"], self.shown[f"{k}_done"])
        self.run_elapsed = ev.elapsed_s
        self.view = {**self.shown, "percent": self._percent(), "scan_done": ev.scan_done,
                     "rate_bps": ev.rate_bps, "eta_s": ev.eta_s,
                     "elapsed_s": round(self.elapsed + ev.elapsed_s, 3),
                     "queue_depth": ev.queue_depth, "pass": self.carry()}  # fmt: skip
        return self.view

    def _percent(self) -> float:
        s = self.shown
        if s["bytes_total"]:
            return round(100.0 * s["bytes_done"] / s["bytes_total"], 1)
        if s["files_total"]:
            return round(100.0 * s["files_done"] / s["files_total"], 1)
        return 0.0

    def carry(self) -> dict[str, Any]:
        """What the next run of this pass starts from (stored with the job's progress)."""
        return {"files": self.base_files + self.run_files,
                "bytes": self.base_bytes + self.run_bytes,
                "elapsed_s": round(self.elapsed + self.run_elapsed, 3), "started": self.started,
                **{"shown_" + k: v for k, v in self.shown.items()}}  # fmt: skip

    def completed(self, stats: dict[str, Any] | None) -> dict[str, Any]:
        """The pass's end: done equals total; the rate is the pass's average; a pass with
        nothing to do says so."""
        s = self.shown
        files, nbytes = max(s["files_total"], s["files_done"]), max(s["bytes_total"],
                                                                    s["bytes_done"])  # fmt: skip
        elapsed = self.elapsed + self.run_elapsed
        if stats and "elapsed_s" in stats:
            elapsed = self.elapsed + float(stats["elapsed_s"])
        unchanged = int((stats or {}).get("files_unchanged", 0))
        out: dict[str, Any] = {
            "files_done": files, "files_total": files, "bytes_done": nbytes,
            "bytes_total": nbytes, "percent": 100.0, "scan_done": True, "eta_s": 0.0,
            "rate_bps": round(nbytes / elapsed, 1) if elapsed > 0 else 0.0,
            "elapsed_s": round(elapsed, 3), "queue_depth": 0, "files_unchanged": unchanged,
        }  # fmt: skip
        if not files:
            out["note"] = f"nothing to do, {unchanged} files unchanged"
        return out
