"""One sync engine for every pair of ends (engine.SyncEngine); see engine.py for the shape."""

from orbit_fast.coordinator.sync.engine import SyncEngine, job_name

__all__ = ["SyncEngine", "job_name"]
