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

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from orbit_fast.cancel import CancelToken
from orbit_fast.config import (
    BackupOptions,
    SyncOptions,
    resolve_state_paths,
    validate,
    validate_backup,
)
from orbit_fast.progress import (
    BackupSummary,
    Event,
    PruneSummary,
    RestoreSummary,
    Summary,
    VerifySummary,
)

if TYPE_CHECKING:
    from orbit_fast.index.universe import Universe
    from orbit_fast.repo.repository import Repository
    from orbit_fast.workers.pool import WorkerPool

__all__ = ["BackupOptions", "CancelToken", "SyncOptions", "backup", "forget", "init_repository",
           "prune", "rebuild_index", "restore", "sync", "verify"]  # fmt: skip


def sync(
    source: str | None = None,
    destination: str | None = None,
    *,
    options: SyncOptions | None = None,
    on_event: Callable[[Event], None] | None = None,
    cancel: CancelToken | None = None,
    workers: WorkerPool | None = None,
    **fields: Any,
) -> Summary:
    """Copy new and changed files from `source` to `destination`; resume if interrupted.

    Parameters
    ----------
    source, destination
        Directory paths, or s3://bucket/prefix and smb://host/share/path URLs (either side
        or both). Ignored when `options` is given.
    options
        A complete `SyncOptions`; otherwise one is built from `source`, `destination` and
        `fields` (any SyncOptions field: mirror, checksum, dry_run, filters, concurrency,
        chunk_size_mb, fsync, db_path, sparse, retry_attempts, s3_endpoint).
    on_event
        Called in the caller's thread with every progress event (start, file_done, progress,
        warning, error, summary).
    cancel
        A CancelToken to stop the run early.
    workers
        A started `orbit_fast.workers.pool.WorkerPool` to run on, shared with other runs of
        this process (the hub's); by default the run starts worker processes of its own.

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
    from orbit_fast.coordinator.sync import SyncEngine

    options = validate(options)
    return SyncEngine(options, on_event or (lambda ev: None), cancel or CancelToken(),
                      workers).run()  # fmt: skip


# ---- backup repositories (docs/backup.md) -------------------------------------------------


def backup(
    source: str | None = None,
    repository: str | None = None,
    *,
    options: BackupOptions | None = None,
    on_event: Callable[[Event], None] | None = None,
    cancel: CancelToken | None = None,
    workers: WorkerPool | None = None,
    **fields: Any,
) -> BackupSummary:
    """Back up `source` into the repository (created on first use) as a new snapshot.

    Parameters
    ----------
    source, repository
        A directory, and a repository path. Ignored when `options` is given.
    options
        A complete `BackupOptions`; otherwise built from the arguments and `fields` (filters,
        concurrency, codec, tags, db_path, universe_path).
    on_event, cancel, workers
        As for `sync()`.

    Returns
    -------
    BackupSummary
        With the new snapshot's id; `exit_code` 1 when some files were skipped.

    Raises
    ------
    OrbitError
        SourceError, RepositoryError, RepositoryLocked, DiskFull, Interrupted, ...
    """
    from orbit_fast.coordinator.backup import Backup

    if options is None:
        if source is None or repository is None:
            raise TypeError("backup() needs source and repository, or options")
        options = BackupOptions(source=source, repository=repository, **fields)
    options = validate_backup(options)
    return Backup(options, on_event or (lambda ev: None), cancel or CancelToken(),
                  workers).run()  # fmt: skip


def init_repository(url: str, codec: str = "zstd:3") -> str:
    """Create an empty repository at `url`; returns its id."""
    from orbit_fast.repo.repository import Repository

    repo = Repository.init(url, codec)
    repo.close()
    return repo.id


@contextmanager
def locked_repository(
    url: str, operation: str, universe_path: str = "", db_path: str = ""
) -> Iterator[tuple[Repository, Universe]]:
    """The repository, locked, and the universe index (the operations that read chunk
    locations reconcile it with the repository themselves, once)."""
    from orbit_fast.index.universe import Universe
    from orbit_fast.repo.repository import Repository

    _, upath = resolve_state_paths(db_path, universe_path)
    with Repository.open(url) as repo:
        repo.lock(operation)
        with Universe.open(upath) as universe:
            yield repo, universe


def restore(
    repository: str,
    snapshot: str,
    target: str,
    paths: tuple[str, ...] = (),
    *,
    on_event: Callable[[Event], None] | None = None,
    cancel: CancelToken | None = None,
    universe_path: str = "",
    db_path: str = "",
) -> RestoreSummary:
    """Restore `paths` (default: everything) of `snapshot` ("latest" or an id prefix) into
    `target`. Raises IntegrityError, after restoring every file it can, if chunks are missing
    or damaged."""
    from orbit_fast.coordinator.restore import restore as run

    with locked_repository(repository, "restore", universe_path, db_path) as (repo, universe):
        _, snap = repo.resolve(snapshot)
        return run(repo, universe, snap, target, paths, on_event or (lambda ev: None),
                   cancel or CancelToken())  # fmt: skip


def verify(
    repository: str, quick: bool = False, *, on_event: Callable[[Event], None] | None = None
) -> VerifySummary:
    """Check every pack and chunk (or, quick, the structure only); `exit_code` 13 and
    `problems` name what is damaged."""
    from orbit_fast.coordinator.check import verify as run
    from orbit_fast.repo.repository import Repository

    with Repository.open(repository) as repo:
        repo.lock("verify")
        return run(repo, quick, on_event or (lambda ev: None))


def forget(
    repository: str,
    *,
    keep_last: int = 0,
    keep_daily: int = 0,
    keep_weekly: int = 0,
    keep_monthly: int = 0,
    prune: bool = False,
    dry_run: bool = False,
    on_event: Callable[[Event], None] | None = None,
    universe_path: str = "",
    db_path: str = "",
) -> list[str]:
    """Delete the snapshots the retention policy does not keep (and prune if asked); returns
    their ids."""
    from orbit_fast.coordinator.prune import plan_forget
    from orbit_fast.coordinator.prune import prune as run_prune

    with locked_repository(repository, "forget", universe_path, db_path) as (repo, universe):
        drop = plan_forget(repo.snapshots(), keep_last, keep_daily, keep_weekly, keep_monthly)
        if dry_run:
            return drop
        for name in drop:
            repo.delete_snapshot(name)
        if prune:
            run_prune(repo, universe, on_event or (lambda ev: None), drop)
        return drop


def prune(
    repository: str,
    *,
    on_event: Callable[[Event], None] | None = None,
    universe_path: str = "",
    db_path: str = "",
) -> PruneSummary:
    """Delete chunks no snapshot references; rewrite packs that are mostly dead."""
    from orbit_fast.coordinator.prune import prune as run

    with locked_repository(repository, "prune", universe_path, db_path) as (repo, universe):
        return run(repo, universe, on_event or (lambda ev: None))


def rebuild_index(repository: str, *, universe_path: str = "", db_path: str = "") -> int:
    """Forget everything the universe knows about the repository and index its packs again
    from the pack files; returns the number of packs indexed."""
    with locked_repository(repository, "index rebuild", universe_path, db_path) as (repo, u):
        u.drop_packs(repo.id, list(u.packs_of(repo.id)))
        added, _ = repo.sync_index(u)
        return added
