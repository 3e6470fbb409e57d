"""Merge-walk of a source tree against its destination, as a stream of entries.

One directory at a time: the `scan_pair` kernel (Cython, ext/scan.pyx; its twin in
_native/reference.py) lists the source directory and the matching destination directory,
stats both sides and merges them by name; then the walk descends. Memory is one directory
listing plus the stack of directories still to visit, never the whole tree. With
`fold_unchanged`, regular files equal on both sides (size, mtime, permission bits) never reach
Python: they are only counted (`on_folded`). Filters apply to both sides: an excluded name is
neither copied nor deleted, and an excluded directory is not descended into. Symlinks are
reported as links and never followed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import NamedTuple

from orbit_fast._native import kernels
from orbit_fast.filters import FilterRules

FILE, DIR, LINK, OTHER = "file", "dir", "link", "other"
KINDS = (FILE, DIR, LINK, OTHER)  # indexed by the kernel's kind codes


class Stat(NamedTuple):
    """The lstat fields the coordinator uses, named as in os.stat_result."""

    st_size: int
    st_mtime_ns: int
    st_atime_ns: int
    st_mode: int


class Entry(NamedTuple):
    rel: str  # "/"-joined path below the tree tops
    kind: str | None  # kind in the source; None: only in the destination
    src: Stat | None
    dst_kind: str | None  # kind in the destination; None: absent
    dst: Stat | None


def merge_walk(
    src_root: str,
    dst_root: str,
    rules: FilterRules,
    on_unreadable: Callable[[str, OSError], None],
    is_temp: Callable[[str], bool] = lambda name: False,
    on_temp: Callable[[str, str], None] = lambda rel, path: None,
    prune: set[str] | None = None,
    fold_unchanged: bool = False,
    on_folded: Callable[[int], None] = lambda n: None,
) -> Iterator[Entry]:
    """Yield entries below the two roots, directories before their contents.

    A source directory that cannot be listed is reported to `on_unreadable` and skipped whole,
    destination side included: nothing below it is copied or deleted. Destination names that
    `is_temp` recognises (our own temp files) go to `on_temp` instead of being yielded. A
    directory the consumer adds to `prune` after receiving its entry is not descended into.
    Folding needs every name unfiltered, so it is off while there are filter rules.
    """
    scan_pair = kernels().scan_pair
    fold = fold_unchanged and not rules
    stack = [""]
    prune = prune if prune is not None else set()
    while stack:
        rel_dir = stack.pop()
        if rel_dir in prune:
            prune.discard(rel_dir)
            continue
        src_dir = os.path.join(src_root, rel_dir) if rel_dir else src_root
        dst_dir = os.path.join(dst_root, rel_dir) if rel_dir else dst_root
        try:
            # Only the roots (named by the user) may be symlinks; below them a directory
            # swapped for a link after it was listed is refused, never followed.
            listing, folded = scan_pair(
                os.fsencode(src_dir), os.fsencode(dst_dir), fold, not rel_dir
            )
        except OSError as exc:
            if exc.filename == os.fsencode(dst_dir):
                raise  # the destination is unreadable: not a source problem to skip
            on_unreadable(rel_dir, exc)
            continue
        if folded:
            on_folded(folded)
        subdirs: list[str] = []
        for name_b, s, d in listing:
            name = os.fsdecode(name_b)
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if s is None and is_temp(name):
                on_temp(rel, os.path.join(dst_dir, name))
                continue
            skind = KINDS[s[0]] if s is not None else None
            dkind = KINDS[d[0]] if d is not None else None
            judged = skind if skind is not None else dkind
            if rules and not rules.included(rel, judged == DIR):
                continue
            yield Entry(rel, skind, Stat(*s[1:]) if s is not None else None, dkind,
                        Stat(*d[1:]) if d is not None else None)  # fmt: skip
            if skind == DIR:
                subdirs.append(rel)
        stack.extend(reversed(subdirs))
