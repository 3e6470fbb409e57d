"""Programmatic entry points; the CLI and the hub call these.

Example::

    import orbit_fast
    summary = orbit_fast.sync("/data", "/backup/data", mirror=True,
                              on_event=lambda ev: print(ev))
    assert summary.exit_code == 0

`sync()` blocks until the run ends. Cancel it from another thread or a signal handler with a
`CancelToken`: the engine stops new work, lets in-flight blocks finish, checkpoints and raises
`Interrupted`; the same call later resumes.

A long-lived process that runs many jobs (the hub) opens one `Engine` instead: it holds the
state files and a pool of worker processes for its life, and its runs share both.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NamedTuple

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
    from orbit_fast.index.jobs_db import FileError, JobsDB
    from orbit_fast.index.state_file import StateClaims
    from orbit_fast.index.universe import Universe
    from orbit_fast.repo.repository import Repository
    from orbit_fast.workers.pool import WorkerPool

__all__ = ["BackupOptions", "CancelToken", "Engine", "SyncOptions", "WorkerStats", "backup",
           "forget", "init_repository", "open_private", "prune",
           "rebuild_index", "restore", "sync", "verify"]  # fmt: skip


def sync(
    source: str | None = None,
    destination: str | None = None,
    *,
    options: SyncOptions | None = None,
    on_event: Callable[[Event], None] | None = None,
    cancel: CancelToken | None = None,
    workers: WorkerPool | None = None,
    claims: StateClaims | None = None,
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
    claims
        The `StateClaims` of the handle that holds the jobs DB for this process (an
        `Engine`'s); by default the run claims it for itself (DatabaseBusy if taken).

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
                      workers, claims=claims).run()  # fmt: skip


# ---- backup repositories (docs/backup.md) -------------------------------------------------


def backup(
    source: str | None = None,
    repository: str | None = None,
    *,
    options: BackupOptions | None = None,
    on_event: Callable[[Event], None] | None = None,
    cancel: CancelToken | None = None,
    workers: WorkerPool | None = None,
    claims: StateClaims | None = None,
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
    on_event, cancel, workers, claims
        As for `sync()` (`claims` then cover the universe index too).

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
                  workers, claims=claims).run()  # fmt: skip


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


# ---- one handle for a process that runs many jobs (the hub) --------------------------------


class WorkerStats(NamedTuple):
    """The shared pool as `Engine.worker_stats` reads it."""

    workers: int  # processes in the pool
    tasks: int  # tasks out to them now, all runs together
    restarts: int  # workers that died and were replaced since the pool started


class Engine:
    """The engine for a long-lived process (the hub): it holds the state files and one pool
    of worker processes for its life, and every run it starts shares both.

    `open` claims the jobs DB and the universe (a second holder, here or in another process,
    gets DatabaseBusy), makes them 0600 (the jobs DB's directory 0700) and creates or
    migrates the engine's tables. Runs borrow the claims: the jobs DB several at once, the
    universe one backup at a time (else DatabaseBusy "... in use by another job of this hub;
    it runs when that one ends").
    `start` starts the workers; `close` stops them and gives the files up. A context manager
    does open and close.

    Parameters
    ----------
    db_path, universe_path
        The state files, on a local disk; runs name the same files in their options.
    workers, worker_nice
        Processes in the pool (at least 1), and what is added to their CPU priority.
    env
        The environment overlay each worker installs (orbit_fast.environment); None: this
        process's overlay now.
    backup_dir
        Where `backup_state` writes; the modes of the backups in it are tightened at `open`.
    db_setting, universe_setting
        How a user chooses other locations, for error messages ("DATABASE_URL").
    """

    def __init__(self, db_path: str, universe_path: str, *, workers: int = 1,
                 worker_nice: int = 0, env: Mapping[str, str] | None = None,
                 backup_dir: str = "", db_setting: str = "--db-path",
                 universe_setting: str = "--universe-path") -> None:  # fmt: skip
        from orbit_fast.index.state_file import StateClaims
        from orbit_fast.workers.pool import SHARED_THREADS, WorkerPool

        self.db_path, self.universe_path, self.backup_dir = db_path, universe_path, backup_dir
        self._settings = (db_setting, universe_setting)
        self._claims = StateClaims()
        # Concurrent runs share the cores (each leases the pool for its run) instead of each
        # starting processes of its own; SHARED_THREADS lets one worker serve several runs.
        self._pool = WorkerPool(workers, SHARED_THREADS, nice=worker_nice, env=env)
        self._started = False
        self._db: JobsDB | None = None  # for reading the runs' file errors
        self._db_lock = threading.Lock()

    def open(self) -> Engine:
        """Claim the state files; create or migrate the engine's tables in the jobs DB.

        Raises
        ------
        DatabaseBusy, NetworkFilesystemError, DatabaseError
            A file is held by another, on a network filesystem, or unreadable or too new.
        """
        from orbit_fast.index import private
        from orbit_fast.index.jobs_db import JobsDB
        from orbit_fast.index.state_backup import tighten_backups

        db_setting, universe_setting = self._settings
        directory = os.path.dirname(self.db_path)
        os.makedirs(directory, mode=private.DIR_MODE, exist_ok=True)
        # makedirs leaves an existing directory as it is (the guide's `mkdir -p` makes it
        # 0755), and an embedder's umask can be anything: the modes are set, not assumed.
        private.tighten_dir(directory)
        try:
            self._claims.hold(self.db_path, "the jobs DB", db_setting,
                              "SQLite over SMB/NFS corrupts databases")  # fmt: skip
            self._claims.hold(self.universe_path, "the universe index", universe_setting,
                              "its journal relies on local locking and fsync",
                              single=True)  # fmt: skip
            private.tighten_state(self.db_path, self.universe_path)  # before SQLite opens it
            if self.backup_dir:
                tighten_backups(self.backup_dir)
            self._db = JobsDB.open(self.db_path, claims=self._claims)
        except BaseException:
            self._claims.close()
            raise
        return self

    def start(self) -> None:
        """Start the worker processes (before the first run)."""
        self._pool.start()
        self._started = True

    def close(self) -> None:
        """Stop the workers (runs are to have ended) and give the state files up."""
        if self._started:
            self._pool.shutdown()
            self._started = False
        with self._db_lock:
            if self._db is not None:
                self._db.close()
                self._db = None
        self._claims.close()

    def __enter__(self) -> Engine:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def sync(self, options: SyncOptions, on_event: Callable[[Event], None] | None = None,
             cancel: CancelToken | None = None) -> Summary:  # fmt: skip
        """`sync(options=options, ...)` on the shared pool and state files; see `sync()`."""
        return sync(options=options, on_event=on_event, cancel=cancel, workers=self._pool,
                    claims=self._claims)  # fmt: skip

    def backup(self, options: BackupOptions, on_event: Callable[[Event], None] | None = None,
               cancel: CancelToken | None = None) -> BackupSummary:  # fmt: skip
        """`backup(options=options, ...)` on the shared pool and state files; see `backup()`.
        A second backup while one runs raises DatabaseBusy (the universe is lent once)."""
        return backup(options=options, on_event=on_event, cancel=cancel, workers=self._pool,
                      claims=self._claims)  # fmt: skip

    def file_errors(self, engine_run_id: int, limit: int = 1000) -> list[FileError]:
        """The source entries run `engine_run_id` (`Started.run_id`) skipped, at most
        `limit`: each a FileError(path, msgid, message)."""
        with self._db_lock:
            assert self._db is not None, "Engine.file_errors between open() and close()"
            return self._db.file_errors(engine_run_id, limit)

    def backup_state(self) -> dict[str, Any]:
        """Consistent copies of the jobs DB and the universe into `backup_dir`, while runs go
        on; returns the manifest (index.state_backup.backup). Raises OrbitError (the disk)."""
        from orbit_fast.index.state_backup import backup as backup_files

        return backup_files(self.db_path, self.universe_path, self.backup_dir, self._claims)

    def worker_stats(self) -> WorkerStats:
        return WorkerStats(self._pool.size, self._pool.busy(), self._pool.deaths)


def open_private(path: str) -> int:
    """os.open(path) for writing a new private file: 0600 even over a looser file left from
    before; a symbolic link in its place is refused (OSError)."""
    from orbit_fast.index import private

    return private.open_private(path)
