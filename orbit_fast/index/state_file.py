"""Claiming a local state file (the jobs DB, the universe index) for one coordinator.

Both live on a local disk, are owned by one process at a time, and say who holds them: the
directory is created, a network filesystem is refused (SQLite and our journal both rely on
local locking and fsync semantics), and an exclusive flock is taken on "<path>.lock" with the
holder's pid written into it. The kernel drops the flock when the process dies, so a kill -9
never leaves a stale lock.
"""

from __future__ import annotations

import fcntl
import os

from orbit_fast import fsinfo
from orbit_fast.errors import DatabaseBusy, DatabaseError, NetworkFilesystemError


def claim(path: str, what: str, setting: str, network_why: str) -> int:
    """Make `path` usable by this process alone; returns the lock fd (close it to release).

    `what` names the file in messages ("the jobs DB"), `setting` says how to choose another
    location ("--db-path"), `network_why` why a network filesystem is refused.
    """
    directory = os.path.dirname(path) or "."
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise DatabaseError(
            f"cannot create the directory of {what} {path}: {exc.strerror}; choose another "
            f"{setting}"
        ) from exc
    fs = fsinfo.network_fs_name(directory)  # via the module: tests stand in for statfs there
    if fs:
        raise NetworkFilesystemError(
            f"{what} {path} would live on a network filesystem ({fs}); {network_why}. Put "
            f"{setting} on a local disk (the deployment guide's first rule)"
        )
    lock_fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(lock_fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(lock_fd)
        raise DatabaseBusy(
            f"{what} {path} is in use by another orbit-fast process (pid {holder}); wait for "
            f"it to finish, or give this run its own {setting}"
        ) from None
    os.ftruncate(lock_fd, 0)
    os.pwrite(lock_fd, f"{os.getpid()}\n".encode(), 0)
    return lock_fd
