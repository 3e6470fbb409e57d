"""Claiming a local state file (the jobs DB, the universe index) for one coordinator.

Both live on a local disk, are owned by one process at a time, and say who holds them: the
directory is created, a network filesystem is refused (SQLite and our journal both rely on
local locking and fsync semantics), and an exclusive flock is taken on "<path>.lock" with the
holder's pid written into it. The kernel drops the flock when the process dies, so a kill -9
never leaves a stale lock.

A process that runs many engine calls inside itself (the hub, through `api.Engine`) holds both
files for its life in a `StateClaims` and passes it down to `JobsDB.open` and `Universe.open`:
their claim then borrows the held lock (a dup of its fd, so closing it releases nothing)
instead of failing against its own process. The jobs DB may be borrowed by several runs at
once (SQLite serialises their transactions); the universe by one at a time. Without a
`StateClaims` (claims=None: the CLI, embedders) a claim is this process's alone.
"""

from __future__ import annotations

import fcntl
import os
import threading

from orbit_fast import fsinfo
from orbit_fast.errors import DatabaseBusy, DatabaseError, NetworkFilesystemError


class StateClaims:
    """The state files one handle holds for its life, lent to the runs it starts.

    Thread-safe: the hub's job threads claim and release at once. `close` gives the held
    files up (a borrower still open keeps the flock until it releases its dup)."""

    def __init__(self) -> None:
        self._held: dict[str, int] = {}  # abspath -> lock fd, until close()
        self._borrowed: dict[int, str] = {}  # borrowed fd -> abspath, for `release`
        self._single: set[str] = set()  # held paths that one borrower at a time may use
        self._guard = threading.Lock()

    def hold(self, path: str, what: str, setting: str, network_why: str,
             single: bool = False) -> None:  # fmt: skip
        """Claim `path` until `close` and lend it to later `claim`s (one at a time if
        `single`). Raises DatabaseBusy if another holder (another hub) has it."""
        path = os.path.abspath(path)
        fd = _lock(path, what, setting, network_why)
        with self._guard:
            self._held[path] = fd
            if single:
                self._single.add(path)

    def is_held(self, path: str) -> bool:
        return os.path.abspath(path) in self._held

    def claim(self, path: str, what: str, setting: str, network_why: str) -> int:
        """A lock fd for `path` (give it back with `release`): a borrowed one if `path` is
        held, else a claim of its own. A `single` path lent already: DatabaseBusy."""
        with self._guard:
            held = self._held.get(os.path.abspath(path))
            if held is not None:
                path = os.path.abspath(path)
                if path in self._single and path in self._borrowed.values():
                    raise DatabaseBusy(f"{what} {path} is in use by another job of this hub; "
                                       "it runs when that one ends")  # fmt: skip
                fd = os.dup(held)
                self._borrowed[fd] = path
                return fd
        return _lock(path, what, setting, network_why)

    def release(self, fd: int) -> None:
        """Give back a claim or a borrowed claim."""
        with self._guard:
            self._borrowed.pop(fd, None)
        os.close(fd)

    def close(self) -> None:
        """Give up every held file."""
        with self._guard:
            held, self._held = self._held, {}
            self._single.clear()
        for fd in held.values():
            os.close(fd)


def claim(path: str, what: str, setting: str, network_why: str,
          claims: StateClaims | None = None) -> int:  # fmt: skip
    """Make `path` usable by this caller; returns the lock fd (`release` it).

    `what` names the file in messages ("the jobs DB"), `setting` says how to choose another
    location ("--db-path"), `network_why` why a network filesystem is refused. With `claims`,
    a file they hold is borrowed (StateClaims.claim); without, it is claimed alone.
    """
    if claims is not None:
        return claims.claim(path, what, setting, network_why)
    return _lock(path, what, setting, network_why)


def release(fd: int, claims: StateClaims | None = None) -> None:
    """Give up a claim made by `claim` with the same `claims`."""
    if claims is not None:
        claims.release(fd)
    else:
        os.close(fd)


def _lock(path: str, what: str, setting: str, network_why: str) -> int:
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
