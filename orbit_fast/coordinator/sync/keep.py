"""--backup-dir: what a run replaces or deletes is kept there, under its own relative path (and
--suffix), so a mistaken run can be undone (rsync --backup --backup-dir, rclone --backup-dir).

Between local trees nothing is copied and nothing is ever missing: a file about to be replaced is
hard-linked into the backup directory before the copy's rename replaces it (the old inode lives
on there), and a deleted entry is renamed there (a directory whole). A kill -9 at any point
leaves each file at the destination, in the backup directory, or both; never neither. So the
backup directory must be on the destination's filesystem (checked when the run starts). A
previous backup of the same path in the same directory is replaced, as rsync does.

For S3 and SMB destinations the store copies the object on the server (CopyObject,
FSCTL_SRV_COPYCHUNK) before it is overwritten or deleted (sync/object_copies.py).
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
import time

from orbit_fast.confine import Tree
from orbit_fast.coordinator.scan import DIR
from orbit_fast.errors import UsageError

_PLACEHOLDERS = {"date": "%Y-%m-%d", "time": "%H%M%S", "datetime": "%Y-%m-%dT%H%M%S"}


def expand(template: str, when: float | None = None) -> str:
    """{date}, {time} and {datetime} of the run's start (local time) filled in."""
    t = time.localtime(time.time() if when is None else when)

    def sub(m: re.Match[str]) -> str:
        fmt = _PLACEHOLDERS.get(m.group(1))
        if fmt is None:
            raise UsageError(f"backup_dir {template!r}: unknown placeholder {{{m.group(1)}}}; "
                             "use {date}, {time} or {datetime}", "backup_dir")  # fmt: skip
        return time.strftime(fmt, t)

    return re.sub(r"\{([^{}]*)\}", sub, template)


def fixed_part(path: str) -> str:
    """The directories of a backup path before its first placeholder: what a mirror must
    never delete (yesterday's {date} directory lies there too)."""
    parts = path.split("/")
    for i, part in enumerate(parts):
        if "{" in part:
            return "/".join(parts[:i])
    return path


def inside(path: str, root: str) -> str | None:
    """`path` relative to `root` when it lies below it ("" for root itself), else None."""
    root = root.rstrip("/")
    if path == root:
        return ""
    return path[len(root) + 1 :] if path.startswith(root + "/") else None


class TreeKeeper:
    """The backup directory of a run between local trees, opened once below the destination
    or on its own (on the destination's filesystem either way)."""

    def __init__(self, dst: Tree, dest_path: str, path: str, suffix: str) -> None:
        self.dst, self.suffix, self.path = dst, suffix, path
        self._rel = inside(path, dest_path)
        self._tree: Tree | None = None  # made and opened when the first entry is kept
        # Checked now, made later: the nearest directory of the path that exists tells
        # which filesystem the backup directory will be on.
        probe = path
        while not os.path.isdir(probe) and os.path.dirname(probe) != probe:
            probe = os.path.dirname(probe)
        if self._rel is None and os.stat(probe).st_dev != dst.dev:
            raise UsageError(f"--backup-dir {path} is on another filesystem than the "
                             f"destination {dest_path}: put it on the same one (each file is "
                             "kept by a rename or a hard link, never a copy)",
                             "backup_dir")  # fmt: skip

    @property
    def tree(self) -> Tree:
        if self._tree is None:
            if self._rel is not None:
                self.dst.makedirs(self._rel, 0o700)
                self._tree = self.dst.beneath(self._rel)
            else:
                os.makedirs(self.path, 0o700, exist_ok=True)
                self._tree = Tree.open(self.path)
            if self._tree.dev != self.dst.dev:  # a mount appeared on the way meanwhile
                raise OSError(errno.EXDEV, "the backup directory is on another filesystem "
                              "than the destination", self.path)  # fmt: skip
        return self._tree

    def close(self) -> None:
        if self._tree is not None:
            self._tree.close()

    def _target(self, rel: str, kind: str | None) -> str:
        target = rel if kind == DIR else rel + self.suffix
        parent = os.path.dirname(target)
        if parent:
            self.tree.makedirs(parent, 0o700)
        return target

    def replaced(self, rel: str) -> bool:
        """Keep the file at `rel` before a copy replaces it: a hard link in the backup
        directory (the destination keeps it until the copy's rename). False: nothing there."""
        target = self._target(rel, None)
        tmp = os.path.join(os.path.dirname(target),
                           f".orbit-keep-{secrets.token_hex(4)}.tmp")  # fmt: skip
        try:
            with self.dst.parent(rel) as (sfd, sname), self.tree.parent(tmp) as (dfd, dname):
                os.link(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        self._replace_into(tmp, target)
        return True

    def deleted(self, rel: str, kind: str | None) -> None:
        """Move the entry at `rel` (a directory whole) into the backup directory."""
        target = self._target(rel, kind)
        with self.dst.parent(rel) as (sfd, sname), self.tree.parent(target) as (dfd, dname):
            try:
                os.rename(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd)
                return
            except OSError as exc:
                if exc.errno not in (errno.EISDIR, errno.ENOTDIR, errno.ENOTEMPTY,
                                     errno.EEXIST):  # fmt: skip
                    raise
            self._remove(target)  # an older backup of another kind, or a full directory
            os.rename(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd)

    def _replace_into(self, tmp: str, target: str) -> None:
        try:
            self.tree.rename(tmp, target)
        except OSError as exc:
            if exc.errno not in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
                raise
            self._remove(target)
            self.tree.rename(tmp, target)

    def _remove(self, target: str) -> None:
        st = self.tree.lstat(target)
        if stat.S_ISDIR(st.st_mode):
            self.tree.rmtree(target)
        else:
            self.tree.unlink(target)
