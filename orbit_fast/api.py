"""Programmatic entry points; the CLI and the hub call these.

Example::

    import orbit_fast
    summary = orbit_fast.sync("/data", "/backup/data", mirror=True,
                              on_event=lambda ev: print(ev))
    assert summary.exit_code == 0

`sync()` blocks until the run ends. Cancel it from another thread or a signal handler with a
`CancelToken`: the engine stops new work, lets in-flight blocks finish, checkpoints and raises
`Interrupted`; the same call later resumes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from orbit_fast.config import SyncOptions, validate
from orbit_fast.coordinator.coordinator import CancelToken, Coordinator
from orbit_fast.progress import Event, Summary

__all__ = ["CancelToken", "SyncOptions", "sync"]


def sync(
    source: str | None = None,
    destination: str | None = None,
    *,
    options: SyncOptions | None = None,
    on_event: Callable[[Event], None] | None = None,
    cancel: CancelToken | None = None,
    **fields: Any,
) -> Summary:
    """Copy new and changed files from `source` to `destination`; resume if interrupted.

    Parameters
    ----------
    source, destination
        Directory paths. Ignored when `options` is given.
    options
        A complete `SyncOptions`; otherwise one is built from `source`, `destination` and
        `fields` (any SyncOptions field: mirror, checksum, dry_run, filters, concurrency,
        chunk_size_mb, fsync, db_path, sparse).
    on_event
        Called in the caller's thread with every progress event (start, file_done, progress,
        warning, error, summary).
    cancel
        A CancelToken to stop the run early.

    Returns
    -------
    Summary
        Totals of the run; `exit_code` is 0, or 1 when some source entries were skipped.

    Raises
    ------
    OrbitError
        A subclass naming the problem (SourceError, DestinationError, DiskFull, DatabaseBusy,
        NetworkFilesystemError, WorkerFailed, Interrupted, UsageError); its `exit_code` is
        the CLI's exit code.
    """
    if options is None:
        if source is None or destination is None:
            raise TypeError("sync() needs source and destination, or options")
        options = SyncOptions(source=source, destination=destination, **fields)
    options = validate(options)
    return Coordinator(options, on_event or (lambda ev: None), cancel or CancelToken()).run()
