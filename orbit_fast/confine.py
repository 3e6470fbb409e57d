"""Confined file operations: every path below a tree's root is resolved by the kernel without
following a symlink in any component and without leaving the tree.

A `Tree` is a directory opened once (O_DIRECTORY | O_NOFOLLOW); everything below it is reached
relative to that descriptor: openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) where the kernel
has it (Linux 5.6+), else a walk that opens one component at a time with O_NOFOLLOW. The last
component is never followed either: a symlink there is an entry of its own (lstat, readlink,
unlink, rename see the link) and opening it fails with ELOOP. Relative paths are checked
before any system call: "/"-joined single components, none empty, ".", ".." or holding NUL
(`check_rel`). This is rsync's receiver after CVE-2024-12087/12088 and what
openat2(2) was made for: resolve nothing by path.

Who relies on it: the sync engine's lister and destination operations (coordinator/sync/tree.py),
the workers' reads and writes (workers/worker.py), backup's reads, restore, and the local store.
The tree's own root is named by the operator (its parents may be links he made); its identity
(dev, ino) is what a worker checks when it opens the same root again (`Tree.reopen`).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager

from orbit_fast._native import kernels

_AT_SYMLINK_NOFOLLOW = 0x100

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Escape(OSError):
    """A relative path that would leave its tree (absolute, "..", ".", empty, NUL)."""

    def __init__(self, rel: str | bytes, why: str) -> None:
        super().__init__(errno.EINVAL, f"unsafe path ({why})", rel)


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fchmodat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint, ctypes.c_int]
    return libc


@functools.cache
def have_openat2() -> bool:
    """Whether this kernel has openat2 (ORBIT_NO_OPENAT2=1 forces the component walk: tests)."""
    if os.environ.get("ORBIT_NO_OPENAT2") == "1":
        return False
    fd = os.open("/", _DIR_FLAGS)
    try:
        os.close(kernels().open_beneath(fd, b"", _DIR_FLAGS, 0, True))
        return True
    except OSError as exc:
        if exc.errno in (errno.ENOSYS, errno.EPERM):  # EPERM: a seccomp filter that denies it
            return False
        raise
    finally:
        os.close(fd)


def check_rel(rel: str | bytes) -> bytes:
    """`rel` as bytes if it is a clean relative path below a root; else Escape. "" is the root."""
    b = os.fsencode(rel)
    if not b:
        return b
    if b"\0" in b:
        raise Escape(rel, "NUL byte")
    if b.startswith(b"/"):
        raise Escape(rel, "absolute")
    for part in b.split(b"/"):
        if part in (b"", b".", b".."):
            raise Escape(rel, f"component {part.decode()!r}" if part else "empty component")
    return b


def open_beneath(dirfd: int, rel: bytes, flags: int, mode: int = 0o600) -> int:
    """openat below `dirfd`, following no symlink in any component, never leaving `dirfd`'s
    tree. `rel` must already be clean (check_rel); b"" opens `dirfd`'s directory again. The
    resolution is the scan kernel's (one openat2 call, or the O_NOFOLLOW walk): it is paid
    per file by every copy, so it runs in C."""
    return kernels().open_beneath(dirfd, rel, flags, mode, have_openat2())


def _dirname(rel: bytes) -> tuple[bytes, bytes]:
    parent, _, name = rel.rpartition(b"/")
    return parent, name


class Tree:
    """A directory tree opened once; every operation below it is relative to its descriptor.

    Paths are "/"-joined relative paths (str or bytes); "" is the root itself. Every method
    raises OSError as the system call does: ELOOP or ENOTDIR where a symlink stands in a
    component (or ELOOP, when opening, in the last one), EXDEV when a path would leave the
    tree (openat2 only), Escape for a path that is not clean.
    """

    __slots__ = ("fd", "path", "dev", "ino", "_open", "_openat2")

    def __init__(self, fd: int, path: str) -> None:
        st = os.fstat(fd)
        if not stat.S_ISDIR(st.st_mode):
            os.close(fd)
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
        self.fd, self.path, self.dev, self.ino = fd, path, st.st_dev, st.st_ino
        # Looked up once: open_file is on every copy's path (a lookup is ~1 us a call).
        self._open = kernels().open_beneath
        self._openat2 = have_openat2()

    @classmethod
    def open(cls, path: str | bytes, *, follow: bool = True) -> Tree:
        """Open the root `path`. Its parents are resolved as the operator wrote them; with
        `follow` False the root itself may not be a symlink (ELOOP)."""
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
        return cls(os.open(path, flags), os.fsdecode(path))

    @classmethod
    def reopen(cls, path: str | bytes, dev: int, ino: int) -> Tree:
        """Open the root `path` and check that it is still the directory (dev, ino) another
        process opened: a worker's view of the coordinator's tree."""
        t = cls.open(path)
        if (t.dev, t.ino) != (dev, ino):
            t.close()
            raise OSError(errno.ESTALE, "the tree's root was replaced while the run went on",
                          os.fsdecode(path))  # fmt: skip
        return t

    def beneath(self, rel: str | bytes) -> Tree:
        """The directory `rel` below this root, as a tree of its own."""
        b = check_rel(rel)
        return Tree(self.open_dir(b), os.path.join(self.path, os.fsdecode(b)))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Tree:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def show(self, rel: str | bytes) -> str:
        """The path as a user reads it (messages only: never opened)."""
        r = os.fsdecode(rel)
        return os.path.join(self.path, r) if r else self.path

    # ---- opening ------------------------------------------------------------------------------

    def open_file(self, rel: str | bytes, flags: int, mode: int = 0o600) -> int:
        """An fd for `rel` (O_NOFOLLOW in every component). With O_CREAT | O_EXCL nothing that
        is already there, link or not, is ever opened. An unclean `rel` fails with EINVAL (the
        kernel checks it as check_rel does)."""
        return self._open(self.fd, rel if isinstance(rel, bytes) else os.fsencode(rel), flags,
                          mode, self._openat2)  # fmt: skip

    def create_fresh(self, rel: str | bytes, mode: int = 0o600) -> int:
        """A new, empty file at `rel`, open for writing (create_fresh_at in its directory)."""
        with self.parent(rel) as (fd, name):
            return create_fresh_at(fd, name, mode)

    def open_dir(self, rel: str | bytes) -> int:
        """A read-only fd of the directory `rel` (for listing, fchmod, futimens, *at calls)."""
        return self._open(self.fd, rel if isinstance(rel, bytes) else os.fsencode(rel),
                          _DIR_FLAGS, 0, self._openat2)  # fmt: skip

    @contextmanager
    def parent(self, rel: str | bytes) -> Iterator[tuple[int, bytes]]:
        """(fd of rel's directory, rel's last component): for the *at calls on an entry."""
        b = check_rel(rel)
        if not b:
            raise Escape(rel, "the root has no parent here")
        d, name = _dirname(b)
        fd = self.fd if not d else self.open_dir(d)
        try:
            yield fd, name
        finally:
            if fd != self.fd:
                os.close(fd)

    # ---- entries ------------------------------------------------------------------------------

    def lstat(self, rel: str | bytes) -> os.stat_result:
        b = check_rel(rel)
        if not b:
            return os.fstat(self.fd)
        with self.parent(b) as (fd, name):
            return os.stat(name, dir_fd=fd, follow_symlinks=False)

    def exists(self, rel: str | bytes) -> bool:
        try:
            self.lstat(rel)
        except (FileNotFoundError, NotADirectoryError):
            return False
        return True

    def readlink(self, rel: str | bytes) -> str:
        with self.parent(rel) as (fd, name):
            return os.fsdecode(os.readlink(name, dir_fd=fd))

    def mkdir(self, rel: str | bytes, mode: int = 0o700) -> None:
        with self.parent(rel) as (fd, name):
            os.mkdir(name, mode, dir_fd=fd)

    def symlink(self, target: str | bytes, rel: str | bytes) -> None:
        with self.parent(rel) as (fd, name):
            os.symlink(target, name, dir_fd=fd)

    def unlink(self, rel: str | bytes) -> None:
        """Remove a non-directory (a symlink is removed, not followed)."""
        with self.parent(rel) as (fd, name):
            os.unlink(name, dir_fd=fd)

    def rmtree(self, rel: str | bytes) -> None:
        """Remove the directory `rel` and everything in it, entering no symlink (shutil's
        fd-based rmtree, relative to rel's parent)."""
        with self.parent(rel) as (fd, name):
            shutil.rmtree(os.fsdecode(name), dir_fd=fd)

    def rename(self, src: str | bytes, dst: str | bytes) -> None:
        """renameat: replaces whatever non-directory is at `dst` (a link there is replaced,
        not written through)."""
        with self.parent(src) as (sfd, sname), self.parent(dst) as (dfd, dname):
            os.rename(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd)

    def chmod(self, rel: str | bytes, mode: int) -> None:
        """Permission bits of `rel` itself; a symlink (which has none on Linux) is left."""
        b = check_rel(rel)
        if not b:
            os.fchmod(self.fd, mode)
            return
        with self.parent(b) as (fd, name):
            if _libc().fchmodat(fd, name, mode, _AT_SYMLINK_NOFOLLOW) != 0:
                err = ctypes.get_errno()
                if err not in (errno.EOPNOTSUPP, errno.ENOTSUP):  # a symlink
                    raise OSError(err, os.strerror(err), self.show(b))

    def utime(self, rel: str | bytes, ns: tuple[int, int]) -> None:
        """atime and mtime (ns) of `rel` itself, a symlink included."""
        b = check_rel(rel)
        if not b:
            os.utime(self.fd, ns=ns)
            return
        with self.parent(b) as (fd, name):
            os.utime(name, ns=ns, dir_fd=fd, follow_symlinks=False)

    def chown(self, rel: str | bytes, uid: int, gid: int) -> None:
        b = check_rel(rel)
        if not b:
            os.fchown(self.fd, uid, gid)
            return
        with self.parent(b) as (fd, name):
            os.chown(name, uid, gid, dir_fd=fd, follow_symlinks=False)

    def makedirs(self, rel: str | bytes, mode: int = 0o777) -> None:
        """mkdir -p below the root: each missing component created, none followed."""
        b = check_rel(rel)
        if not b:
            return
        fd = os.dup(self.fd)
        try:
            for part in b.split(b"/"):
                try:
                    os.mkdir(part, mode, dir_fd=fd)
                except FileExistsError:
                    pass
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = nxt
        finally:
            os.close(fd)


def create_fresh_at(dirfd: int, name: bytes, mode: int = 0o600) -> int:
    """A new, empty file `name` in `dirfd`, open for writing: whatever is at that name (a stale
    temp file, or a link someone planted at a predictable name) is removed, never followed;
    O_EXCL | O_NOFOLLOW then refuse anything that reappears there meanwhile."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(name, flags, mode, dir_fd=dirfd)
    except FileExistsError:
        os.unlink(name, dir_fd=dirfd)
        return os.open(name, flags, mode, dir_fd=dirfd)


def same_file(st: os.stat_result, dev: int, ino: int, size: int, mtime_ns: int) -> bool:
    """Whether an fstat is the regular file a listing saw (what a copy or a backup accepts)."""
    return (stat.S_ISREG(st.st_mode) and st.st_ino == ino and st.st_dev == dev
            and st.st_size == size and st.st_mtime_ns == mtime_ns)  # fmt: skip
