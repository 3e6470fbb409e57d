"""Claiming a local state file (the jobs DB, the universe index) for one coordinator.

Both live on a local disk, are owned by one process at a time, and say who holds them: the
directory is created, a network filesystem is refused (SQLite and our journal both rely on
local locking and fsync semantics), and an exclusive flock is taken on "<path>.lock" with the
holder's pid written into it. The kernel drops the flock when the process dies, so a kill -9
never leaves a stale lock.

A hub process holds both files for its whole life (`hold`) and runs many engine calls inside
itself: their `claim` then borrows the hub's lock (a dup of its fd, so closing it releases
nothing) instead of failing against its own process. The jobs DB may be borrowed by several
runs at once (SQLite serialises their transactions); the universe by one at a time.
"""

from __future__ import annotations

import fcntl
import os
import threading

from orbit_fast import fsinfo
from orbit_fast.errors import DatabaseBusy, DatabaseError, NetworkFilesystemError

_held: dict[str, int] = {}  # path -> lock fd, held by this process until it exits
_borrowed: dict[int, str] = {}  # borrowed fd -> path, for `release`
_lent_once: set[str] = set()  # held paths that one borrower at a time may use
_guard = threading.Lock()


def hold(path: str, what: str, setting: str, network_why: str, single: bool = False) -> None:
    """Claim `path` for the rest of this process's life and lend it to later `claim`s in this
    process (one at a time if `single`)."""
    path = os.path.abspath(path)
    fd = claim(path, what, setting, network_why)
    with _guard:
        _held[path] = fd
        if single:
            _lent_once.add(path)


def is_held(path: str) -> bool:
    return os.path.abspath(path) in _held


def claim(path: str, what: str, setting: str, network_why: str) -> int:
    """Make `path` usable by this process alone; returns the lock fd (`release` it).

    `what` names the file in messages ("the jobs DB"), `setting` says how to choose another
    location ("--db-path"), `network_why` why a network filesystem is refused.
    """
    with _guard:
        held = _held.get(os.path.abspath(path))
        path = os.path.abspath(path) if held is not None else path
        if held is not None:
            if path in _lent_once and path in _borrowed.values():
                raise DatabaseBusy(f"{what} {path} is in use by another job of this hub; "
                                   "it runs when that one ends")  # fmt: skip
            fd = os.dup(held)
            _borrowed[fd] = path
            return fd
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


def release(fd: int) -> None:
    """Give up a claim (or a borrowed claim)."""
    with _guard:
        _borrowed.pop(fd, None)
    os.close(fd)
