"""Merge-walk of a source tree against its destination, as a stream of entries.

One directory at a time: each directory is opened below its tree's root without following a
symlink in any component (confine.Tree.open_dir), then the `scan_pair` kernel (Cython,
ext/scan.pyx; its twin in _native/reference.py) lists the source directory and the matching
destination directory through those fds, stats both sides and merges them by name; then the
walk descends. A directory swapped for a symlink after it was listed is refused, never entered.
Memory is one directory listing plus the stack of directories still to visit, never the whole
tree. With `fold_unchanged`, regular files equal on both sides (size, mtime, permission bits)
never reach Python: they are only counted (`on_folded`). Filters apply to both sides: an
excluded name is neither copied nor deleted, and an excluded directory is not descended into.
Symlinks are reported as links and never followed.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from typing import NamedTuple

from orbit_fast._native import kernels
from orbit_fast.confine import Tree
from orbit_fast.filters import FilterRules

FILE, DIR, LINK, OTHER = "file", "dir", "link", "other"
KINDS = (FILE, DIR, LINK, OTHER)  # indexed by the kernel's kind codes


class Stat(NamedTuple):
    """The lstat fields the coordinator uses, named as in os.stat_result."""

    st_size: int
    st_mtime_ns: int
    st_atime_ns: int
    st_mode: int
    st_ino: int
    st_dev: int
    st_uid: int
    st_gid: int
    st_ctime_ns: int
    st_nlink: int


class Entry(NamedTuple):
    rel: str  # "/"-joined path below the tree tops
    kind: str | None  # kind in the source; None: only in the destination
    src: Stat | None
    dst_kind: str | None  # kind in the destination; None: absent
    dst: Stat | None


def merge_walk(
    src: Tree,
    dst: Tree | None,
    rules: FilterRules,
    on_unreadable: Callable[[str, OSError], None],
    is_temp: Callable[[str], bool] = lambda name: False,
    on_temp: Callable[[str], None] = lambda rel: None,
    prune: set[str] | None = None,
    fold_unchanged: bool = False,
    on_folded: Callable[[int], None] = lambda n: None,
    delete_excluded: bool = False,
    owners: bool = False,
    hard_links: bool = False,
    xmeta: bool = False,
) -> Iterator[Entry]:
    """Yield entries below the two roots, directories before their contents (`dst` None: a
    destination that does not exist yet, as in a dry run).

    A source directory that cannot be listed (or is no longer a directory reached without a
    symlink) is reported to `on_unreadable` and skipped whole, destination side included:
    nothing below it is copied or deleted. A destination directory that is missing, or is a
    symlink or a file now, lists as empty. Destination names that `is_temp` recognises (our
    own temp files) go to `on_temp` instead of being yielded. A directory the consumer adds to
    `prune` after receiving its entry is not descended into. Folding needs every name
    unfiltered, so it is off while there are filter rules. With `delete_excluded` (rsync's
    --delete-excluded) a destination entry the rules leave out is yielded as absent from the
    source, whatever the source has: a mirror deletes it. With `xmeta` (a sync that keeps
    xattrs or ACLs) a file whose source ctime is not before the destination's is not folded: its
    xattrs or ACLs may have changed, and the ctime is the only cheap sign of it.
    """
    scan_pair = kernels().scan_pair
    # Bits for the kernel: 1 fold; 2 a file whose owner or group differs is not unchanged (a
    # sync that keeps them); 4 a file with several links is never folded when hard links are
    # kept: each of its names is seen; 8 a file whose source ctime is not before the
    # destination's is not unchanged (xattrs and ACLs kept).
    fold = (1 | (2 if owners else 0) | (4 if hard_links else 0) | (8 if xmeta else 0)) if (
        fold_unchanged and not rules) else 0  # fmt: skip
    protecting = rules.protecting
    stack = [""]
    prune = prune if prune is not None else set()
    while stack:
        rel_dir = stack.pop()
        if rel_dir in prune:
            prune.discard(rel_dir)
            continue
        try:
            sfd = src.open_dir(rel_dir)
        except OSError as exc:
            on_unreadable(rel_dir, exc)
            continue
        dfd = -1
        try:
            if dst is not None:
                try:
                    dfd = dst.open_dir(rel_dir)
                except (FileNotFoundError, NotADirectoryError):
                    pass
                except OSError as exc:
                    if exc.errno != errno.ELOOP:
                        raise OSError(exc.errno, exc.strerror, dst.show(rel_dir)) from exc
            try:
                listing, folded = scan_pair(sfd, dfd, fold)
            except OSError as exc:
                if exc.filename == b"dst":  # the destination is unreadable: not to skip
                    assert dst is not None
                    raise OSError(exc.errno, exc.strerror, dst.show(rel_dir)) from exc
                on_unreadable(rel_dir, exc)
                continue
        finally:
            os.close(sfd)
            if dfd >= 0:
                os.close(dfd)
        if folded:
            on_folded(folded)
        subdirs: list[str] = []
        for name_b, s, d in listing:
            name = os.fsdecode(name_b)
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if s is None and is_temp(name):
                on_temp(rel)
                continue
            if protecting and rules.protected(rel):  # a --backup-dir in the destination
                continue
            skind = KINDS[s[0]] if s is not None else None
            dkind = KINDS[d[0]] if d is not None else None
            judged = skind if skind is not None else dkind
            if rules and not rules.included(rel, judged == DIR):
                if delete_excluded and d is not None and not rules.protected(rel):
                    yield Entry(rel, None, None, dkind, Stat(*d[1:]))
                continue
            yield Entry(rel, skind, Stat(*s[1:]) if s is not None else None, dkind,
                        Stat(*d[1:]) if d is not None else None)  # fmt: skip
            if skind == DIR:
                subdirs.append(rel)
        stack.extend(reversed(subdirs))
