"""Filesystem facts the engine must not guess: network filesystems (statfs), syncfs, and the
temp names a sync writes under (one convention for every destination that has files).

The deployment guide's first rule is that jobs.db and universe.db never live on SMB/NFS; the
coordinator asks `network_fs_name()` before it opens a database there.
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
from typing import NamedTuple

# f_type magic numbers from linux/magic.h and the filesystems' own headers.
NETWORK_FS_MAGIC = {
    0xFF534D42: "cifs",
    0xFE534D42: "smb2/smb3",
    0x517B: "smbfs",
    0x6969: "nfs",
    0x5346414F: "afs",
    0x6B414653: "afs (kafs)",
    0x73757245: "coda",
    0x00C36400: "ceph",
    0x01021997: "9p",
    0x47504653: "gpfs",
    0x0BD00BD0: "lustre",
    0x7461636F: "ocfs2",
}
_FUSE_MAGIC = 0x65735546
# FUSE filesystems that reach over the network (from /proc/self/mountinfo's fstype field).
_NETWORK_FUSE = ("fuse.sshfs", "fuse.rclone", "fuse.s3fs", "fuse.glusterfs", "fuse.smbnetfs")


@functools.cache
def _libc() -> ctypes.CDLL:
    # The interpreter is linked against libc already: CDLL(None) finds statfs and syncfs
    # without ctypes.util.find_library, which runs ldconfig in a subprocess.
    return ctypes.CDLL(None, use_errno=True)


def fs_type(path: str) -> int:
    """statfs(2) f_type of the filesystem holding `path` (which must exist)."""

    class _Statfs(ctypes.Structure):
        # struct statfs on 64-bit Linux: f_type comes first; the rest is room for the others.
        _fields_ = [("f_type", ctypes.c_long), ("_rest", ctypes.c_byte * 256)]
        f_type: int  # for mypy: ctypes makes the field from _fields_

    buf = _Statfs()
    if _libc().statfs(os.fsencode(path), ctypes.byref(buf)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return buf.f_type & 0xFFFFFFFF


class Mount(NamedTuple):
    """The mount a path lies on, from /proc/self/mountinfo."""

    point: str  # where it is mounted ("/mnt/smb_source")
    fstype: str  # "cifs", "ext4", "tmpfs", ...
    device: str  # what is mounted ("//server/share", "/dev/sdb1", "tmpfs")


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mount_of(path: str, dev: int | None = None) -> Mount | None:
    """The mount holding `path`: the last-mounted of the longest mount points containing it
    (a mount over another hides it), preferring one whose device numbers are `dev` (the
    st_dev of the path as opened) when any is. None: mountinfo is unreadable."""
    real = os.path.realpath(path)
    best: tuple[int, int, int] | None = None
    found: Mount | None = None
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            lines = f.readlines()
    except OSError:
        return None
    for order, line in enumerate(lines):
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 2:
            continue
        mnt = _unescape(fields[4])
        if not (real == mnt or real.startswith(mnt.rstrip("/") + "/")):
            continue
        major, _, minor = fields[2].partition(":")
        same_dev = dev is not None and os.makedev(int(major), int(minor)) == dev
        rank = (len(mnt), int(same_dev), order)
        if best is None or rank > best:
            best, found = rank, Mount(mnt, tail[0], _unescape(tail[1]))
    return found


def _mount_fstype(path: str) -> str | None:
    """fstype of the longest mount point containing `path`, from /proc/self/mountinfo."""
    mount = mount_of(path)
    return mount.fstype if mount is not None else None


def network_fs_name(path: str) -> str | None:
    """The network filesystem `path` lives on ("cifs", "nfs", ...), or None when it is local."""
    magic = fs_type(path)
    if magic in NETWORK_FS_MAGIC:
        return NETWORK_FS_MAGIC[magic]
    if magic == _FUSE_MAGIC:
        kind = _mount_fstype(path)
        if kind and kind.startswith(_NETWORK_FUSE):
            return kind
    return None


def syncfs(path: str) -> None:
    """Flush every dirty page of the filesystem holding `path` (syncfs(2))."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if _libc().syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), path)
    finally:
        os.close(fd)


def fsync_path(path: str | bytes) -> None:
    """fsync a file or a directory by name (a directory: so a rename in it is durable)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# A sync's temp files, whatever the ends: ".<name>.orbit-<token>.tmp" beside the file, or for a
# name too long for that ".orbit-<token>-<digest>.tmp"; the token is the job's (jobs_db).
_SYNC_TEMP_RE = re.compile(r"\..+\.orbit-[0-9a-f]{8}\.tmp\Z"
                           r"|\.orbit-[0-9a-f]{8}-[0-9a-f]{24}\.tmp\Z", re.S)  # fmt: skip
_NAME_MAX = 255


def temp_name(name: str, token: str) -> str:
    """The temp name beside `name` (a basename) under which a sync writes it: deterministic
    for a job, so an interrupted copy resumes, or a stale temp file is found and replaced."""
    tmp = f".{name}.orbit-{token}.tmp"
    if len(os.fsencode(tmp)) <= _NAME_MAX:
        return tmp
    import hashlib  # only for names too long to take the suffix

    digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:24]
    return f".orbit-{token}-{digest}.tmp"


def is_temp_name(name: str, token: str) -> bool:
    """Whether `name` is a temp name of the job with `token` (temp_name)."""
    return name.startswith(".") and (
        name.endswith(f".orbit-{token}.tmp") or name.startswith(f".orbit-{token}-")
    )


def is_sync_temp(basename: str) -> bool:
    """A temp name of any sync job (temp_name)."""
    return basename.startswith(".") and _SYNC_TEMP_RE.match(basename) is not None


_TOKEN_RE = re.compile(r".*\.orbit-([0-9a-f]{8})\.tmp\Z"
                       r"|\.orbit-([0-9a-f]{8})-[0-9a-f]{24}\.tmp\Z", re.S)  # fmt: skip


def temp_token(basename: str) -> str | None:
    """The job token a sync temp name carries (temp_name), or None for any other name."""
    if not is_sync_temp(basename):
        return None
    m = _TOKEN_RE.match(basename)
    return (m.group(1) or m.group(2)) if m else None
