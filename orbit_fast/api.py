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
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from orbit_fast.cancel import CancelToken
from orbit_fast.config import BackupOptions, SyncOptions, validate, validate_backup

# The repository commands live below api (they are most of its surface); api re-exports them.
from orbit_fast.coordinator.repo_commands import (
    Entry,
    KeyInfo,
    RepoInfo,
    SnapshotInfo,
    add_key,
    change_password,
    describe_repository,
    diff_snapshots,
    forget,
    init_repository,
    list_dir,
    list_entries,
    list_keys,
    list_snapshots,
    prune,
    rebuild_index,
    remove_key,
    restore,
    unlock,
    verify,
)
from orbit_fast.passwords import PasswordSource
from orbit_fast.progress import BackupSummary, Event, RestoreSummary, Summary

if TYPE_CHECKING:
    from orbit_fast.index.jobs_db import FileError, JobsDB
    from orbit_fast.index.state_file import StateClaims
    from orbit_fast.workers.pool import WorkerPool

__all__ = ["BackupOptions", "CancelToken", "Engine", "Entry", "KeyInfo", "PasswordSource",
           "RepoInfo", "SnapshotInfo", "SyncOptions", "WorkerStats", "add_key", "backup",
           "backup_state", "change_password", "describe_repository", "diff_snapshots", "forget",
           "init_repository", "list_dir", "list_entries", "list_keys", "list_snapshots",
           "open_private", "prune", "rebuild_index", "remove_key", "restore", "restore_state",
           "sync", "unlock", "verify"]  # fmt: skip


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
        concurrency, codec, tags, db_path, universe_path, s3_endpoint, password_file,
        password_command, insecure_no_encryption). An encrypted repository's password comes
        from password_file or password_command, else ORBIT_PASSWORD_FILE,
        ORBIT_PASSWORD_COMMAND or ORBIT_PASSWORD (passwords.py).
    on_event, cancel, workers, claims
        As for `sync()` (`claims` then cover the universe index too).

    Returns
    -------
    BackupSummary
        With the new snapshot's id; `exit_code` 1 when some files were skipped.

    Raises
    ------
    OrbitError
        SourceError, RepositoryError, RepositoryLocked, DiskFull, Interrupted,
        PasswordMissing, WrongPassword, KeyDamaged, AuthenticationFailed, ...
    """
    from orbit_fast.coordinator.backup import Backup

    if options is None:
        if source is None or repository is None:
            raise TypeError("backup() needs source and repository, or options")
        options = BackupOptions(source=source, repository=repository, **fields)
    options = validate_backup(options)
    return Backup(options, on_event or (lambda ev: None), cancel or CancelToken(),
                  workers, claims=claims).run()  # fmt: skip


def backup_state(db_path: str, universe_path: str, directory: str) -> dict[str, Any]:
    """Consistent copies of the jobs DB and the universe index into `directory`, safe while a
    hub runs on them (`orbit-fast state backup`).

    Parameters
    ----------
    db_path, universe_path
        The state files.
    directory
        Where the copies and their manifest go (created 0700; the files are 0600).

    Returns
    -------
    dict
        The manifest (also written beside the copies): its path, the copies' names, sizes
        and SHA-256, the universe's chunk count.

    Raises
    ------
    UsageError
        There is no jobs DB at `db_path`.
    OrbitError
        The copies could not be written (DiskFull, DestinationError, ...).
    """
    from orbit_fast.index.state_backup import backup as backup_files

    return backup_files(db_path, universe_path, directory)


def restore_state(backup_file: str, db_path: str, universe_path: str,
                  universe_file: str = "") -> dict[str, Any]:  # fmt: skip
    """Check a backup of the state files, then swap it in for the current ones, keeping those
    as `<file>.before-restore-<time>` (`orbit-fast state restore`). The hub must be stopped.

    Parameters
    ----------
    backup_file
        A manifest written by `backup_state`, or a bare jobs DB copy.
    db_path, universe_path
        The state files to replace.
    universe_file
        With a bare jobs DB copy: the universe copy that goes with it ("": none).

    Returns
    -------
    dict
        What was restored and where the replaced files were kept.

    Raises
    ------
    DatabaseBusy
        A process still holds the state files.
    OrbitError
        The backup is missing, damaged or does not match its manifest.
    """
    from orbit_fast.index.state_backup import restore as restore_files

    return restore_files(backup_file, db_path, universe_path, universe_file)


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
                 universe_setting: str = "--universe-path", bwlimit: str = "") -> None:  # fmt: skip
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
        # One limit for every run together (the hub's ORBIT_BWLIMIT), on top of each run's.
        from orbit_fast.units import parse_bwlimit

        self._bandwidth = parse_bwlimit(bwlimit, "ORBIT_BWLIMIT")
        self._throttle: Any = None
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
            from orbit_fast.index.universe import Universe

            Universe.ensure(self.universe_path, self._claims)
            if self.backup_dir:
                tighten_backups(self.backup_dir)
            self._db = JobsDB.open(self.db_path, claims=self._claims)
        except BaseException:
            self._claims.close()
            raise
        return self

    def start(self) -> None:
        """Start the worker processes (before the first run)."""
        if self._bandwidth and self._throttle is None:
            from orbit_fast.workers.throttle import Throttle

            self._throttle = Throttle.create(self._bandwidth.at())
            self._pool.global_throttle = self._throttle.name
        self._pool.start()
        self._started = True

    def tick(self) -> None:
        """Follow the global limit's timetable (called about once a second by the hub)."""
        if self._throttle is not None and len(self._bandwidth.table) > 1:
            self._throttle.set_rate(self._bandwidth.at())

    def close(self) -> None:
        """Stop the workers (runs are to have ended) and give the state files up."""
        if self._started:
            self._pool.shutdown()
            self._started = False
        if self._throttle is not None:
            self._throttle.close()
            self._throttle = None
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

    # ---- a backup job's snapshots, for the dashboard (the hub's claims on the universe) ----

    def snapshots(self, repository: str, password: PasswordSource) -> list[SnapshotInfo]:
        return list_snapshots(repository, password=password)

    def list_dir(self, repository: str, snapshot: str, path: str, password: PasswordSource,
                 limit: int = 1000) -> tuple[Entry, list[Entry], bool]:  # fmt: skip
        return list_dir(repository, snapshot, path, limit, universe_path=self.universe_path,
                        db_path=self.db_path, password=password, claims=self._claims)

    def restore(self, repository: str, snapshot: str, target: str, paths: tuple[str, ...],
                password: PasswordSource, allowed_roots: tuple[str, ...],
                on_event: Callable[[Event], None] | None = None,
                cancel: CancelToken | None = None) -> RestoreSummary:  # fmt: skip
        return restore(repository, snapshot, target, paths, on_event=on_event, cancel=cancel,
                       universe_path=self.universe_path, db_path=self.db_path,
                       allowed_roots=allowed_roots, password=password,
                       claims=self._claims)  # fmt: skip

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
