"""Private state files: 0600 in 0700 directories, whatever the umask and whatever was there.

The jobs DB holds argon2 hashes, token digests and job URLs; the universe maps every chunk of
every repository; state backups copy both. The umask of whoever runs us (an embedder, a CLI
user, the guide's `mkdir -p /var/lib/orbit` before the first start) decides nothing here: new
files get their mode from an explicit fchmod, and existing ones are tightened on open.

Symbolic links are not followed where a file is opened here (O_NOFOLLOW): a link planted in
place of a state file does not make us chmod what it points to. A file we cannot chmod (owned
by another user) is warned about, not fatal: the hub still works, only less privately.
"""

from __future__ import annotations

import errno
import glob
import logging
import os
import stat

FILE_MODE = 0o600
DIR_MODE = 0o700

log = logging.getLogger("orbit_fast.state")


def _chmod_fd(fd: int, path: str, mode: int) -> None:
    st = os.fstat(fd)
    if stat.S_IMODE(st.st_mode) == mode:
        return  # the usual case: one fstat, no metadata write
    try:
        os.fchmod(fd, mode)
    except PermissionError as exc:
        log.warning("cannot make %s mode %o (%s): it belongs to uid %d, not to this process's "
                    "uid %d; chown it to the hub's user so only that user can read it", path,
                    mode, exc.strerror, st.st_uid, os.geteuid())  # fmt: skip


def open_private(path: str, flags: int = os.O_WRONLY | os.O_CREAT | os.O_TRUNC) -> int:
    """os.open for a state file: mode 0600 whether it is new or was there with another mode;
    a symbolic link in its place is refused (OSError ELOOP)."""
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    try:
        _chmod_fd(fd, path, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def tighten(path: str, create: bool = False) -> None:
    """Make the file `path` mode 0600 if it exists (or, with `create`, as a new empty file).
    Never fails the caller: what cannot be done is logged."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC  # NONBLOCK: a FIFO
    try:
        fd = os.open(path, flags | (os.O_CREAT if create else 0), FILE_MODE)
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            log.warning("%s is a symbolic link: not changing the mode of what it points to; "
                        "make sure that file is mode 600", path)  # fmt: skip
        else:
            log.warning("cannot check the mode of %s: %s", path, exc.strerror)
        return
    try:
        _chmod_fd(fd, path, FILE_MODE)
    finally:
        os.close(fd)


def tighten_dir(path: str) -> None:
    """Make the directory `path` mode 0700. A link to it is followed (an admin may well put
    the data directory elsewhere); a shared directory (/tmp: sticky or writable by others)
    or / is left alone with a warning: its other users need it as it is."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        log.warning("cannot check the mode of the directory %s: %s", path, exc.strerror)
        return
    try:
        st = os.fstat(fd)
        if st.st_mode & (stat.S_ISVTX | stat.S_IWOTH) or os.path.realpath(path) == "/":
            log.warning("%s is a shared directory: leaving its mode as it is; give the hub's "
                        "state a directory of its own", path)  # fmt: skip
            return
        _chmod_fd(fd, path, DIR_MODE)
    finally:
        os.close(fd)


def tighten_state(db_path: str, universe_path: str) -> None:
    """The hub's state files 0600, whatever made them (an older release, a restore, a `cp`).
    The jobs DB is created here if missing: SQLite would make it 0644 less the umask, and it
    gives the DB's -wal and -shm the DB's own mode."""
    tighten(db_path, create=True)
    for path in (db_path + "-wal", db_path + "-shm", db_path + "-journal", db_path + ".lock",
                 universe_path, universe_path + "-journal", universe_path + ".lock",
                 *glob.glob(glob.escape(db_path) + "*.before-restore-*"),
                 *glob.glob(glob.escape(universe_path) + "*.before-restore-*")):  # fmt: skip
        tighten(path)
