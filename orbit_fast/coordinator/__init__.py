"""The coordinator: scans, plans, dispatches to the worker pool and owns the jobs DB."""
