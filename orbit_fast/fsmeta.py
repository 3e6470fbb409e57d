"""Metadata a copy keeps beyond data, mode and times: owner and group, xattrs and POSIX ACLs
(the system.posix_acl_* xattrs), read from one open fd and set on another, so neither end is
reached by path (docs/sync.md, "What is copied"). Used by the workers for files and by the
coordinator for directories and for files whose metadata alone changed.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import NamedTuple

from orbit_fast.messages import KEEP_ACLS, KEEP_GROUP, KEEP_OWNER, KEEP_XATTRS


class Meta(NamedTuple):
    """What a copy keeps of its source beyond data, mode and times (Finalize.keep)."""

    uid: int  # -1: leave
    gid: int
    xattrs: list[tuple[str, bytes]]


_ACL_XATTRS = ("system.posix_acl_access", "system.posix_acl_default")


def read_xattrs(at: int | str, keep: int) -> list[tuple[str, bytes]]:
    """The xattrs of an open fd, or a path (followed), that `keep` asks for (ACLs are xattrs:
    system.posix_acl_*). An xattr that vanishes between the list and the read is left out."""
    xattrs: list[tuple[str, bytes]] = []
    if not keep & (KEEP_XATTRS | KEEP_ACLS):
        return xattrs
    try:
        names = os.listxattr(at)
    except OSError:  # a filesystem without xattrs
        return xattrs
    root = os.geteuid() == 0
    for name in names:
        acl = name in _ACL_XATTRS
        if not (keep & (KEEP_ACLS if acl else KEEP_XATTRS)):
            continue
        if not (acl or root or name.startswith("user.")):
            # Other namespaces (security.selinux, ...) only as root, as rsync -X: another
            # user could never set them, and every run would warn.
            continue
        try:
            xattrs.append((name, os.getxattr(at, name)))
        except OSError:
            continue
    return xattrs


def xattrs_beneath(open_path: Callable[[int], int], keep: int) -> list[tuple[str, bytes]]:
    """read_xattrs of an entry of any kind but a symlink, opened by `open_path(flags)` with
    O_PATH (no link followed, no device or fifo opened for I/O) and read through its
    /proc/self/fd name, which is that very inode."""
    fd = open_path(os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        return read_xattrs(f"/proc/self/fd/{fd}", keep)
    finally:
        os.close(fd)


def read_meta(fd: int, st: os.stat_result, keep: int) -> Meta:
    """The source's owner and xattrs, read through its open fd."""
    return Meta(st.st_uid if keep & KEEP_OWNER else -1,
                st.st_gid if keep & KEEP_GROUP else -1, read_xattrs(fd, keep))  # fmt: skip


def set_owner(fd: int, meta: Meta, keep: int) -> int:
    if meta.uid < 0 and meta.gid < 0:
        return 0
    try:
        os.fchown(fd, meta.uid, meta.gid)
    except PermissionError:  # not root: the files stay the running user's, as rsync leaves them
        return keep & (KEEP_OWNER | KEEP_GROUP)
    return 0


def set_xattrs(fd: int | str, xattrs: list[tuple[str, bytes]]) -> int:
    """Set each xattr; the KEEP_* bits of those the destination refused (no support, or a
    namespace this process may not write)."""
    lost = 0
    for name, value in xattrs:
        try:
            os.setxattr(fd, name, value)
        except OSError as exc:
            if exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.EACCES,
                                 errno.EINVAL, errno.E2BIG, errno.ENOSPC):  # fmt: skip
                raise
            lost |= KEEP_ACLS if name in _ACL_XATTRS else KEEP_XATTRS
    return lost


def sync_meta(sfd: int, dfd: int, keep: int) -> int:
    """A destination file's or directory's owner, xattrs and ACLs (a directory's default ACL
    included) made the source's, each only where it differs (a no-change run writes
    nothing); the KEEP_* bits the destination refused."""
    sst, dst = os.fstat(sfd), os.fstat(dfd)
    want = read_meta(sfd, sst, keep)
    lost = 0
    if (want.uid >= 0 and want.uid != dst.st_uid) or (want.gid >= 0 and want.gid != dst.st_gid):
        lost |= set_owner(dfd, want, keep)
    if keep & (KEEP_XATTRS | KEEP_ACLS):
        have = dict(read_meta(dfd, dst, keep & (KEEP_XATTRS | KEEP_ACLS)).xattrs)
        wanted = dict(want.xattrs)
        changed = [(k, v) for k, v in want.xattrs if have.get(k) != v]
        lost |= set_xattrs(dfd, changed)
        for name in set(have) - set(wanted):  # gone from the source: gone here too
            try:
                os.removexattr(dfd, name)
            except OSError:
                lost |= KEEP_ACLS if name in _ACL_XATTRS else KEEP_XATTRS
    return lost
