"""Merge-walk of a source tree against its destination, as a stream of entries.

One directory at a time: list the source directory and the matching destination directory,
yield every name in sorted order with what each side holds, then descend. Memory is one
directory listing plus the stack of directories still to visit, never the whole tree. Filters
apply to both sides: an excluded name is neither copied nor deleted, and an excluded directory
is not descended into. Symlinks are reported as links and never followed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import NamedTuple

from orbit_fast.filters import FilterRules

FILE, DIR, LINK, OTHER = "file", "dir", "link", "other"


class Entry(NamedTuple):
    rel: str  # "/"-joined path below the tree tops
    kind: str | None  # kind in the source; None: only in the destination
    src: os.DirEntry[str] | None
    dst_kind: str | None  # kind in the destination; None: absent
    dst: os.DirEntry[str] | None


def kind_of(e: os.DirEntry[str]) -> str:
    # Regular files first: they are most entries. DirEntry answers from d_type, no syscall.
    if e.is_file(follow_symlinks=False):
        return FILE
    if e.is_dir(follow_symlinks=False):
        return DIR
    if e.is_symlink():
        return LINK
    return OTHER


def _listing(path: str) -> dict[str, os.DirEntry[str]]:
    with os.scandir(path) as it:
        return {e.name: e for e in it}


def merge_walk(
    src_root: str,
    dst_root: str,
    rules: FilterRules,
    on_unreadable: Callable[[str, OSError], None],
    is_temp: Callable[[str], bool] = lambda name: False,
    on_temp: Callable[[str, str], None] = lambda rel, path: None,
    prune: set[str] | None = None,
) -> Iterator[Entry]:
    """Yield entries below the two roots, directories before their contents.

    A source directory that cannot be listed is reported to `on_unreadable` and skipped whole,
    destination side included: nothing below it is copied or deleted. Destination names that
    `is_temp` recognises (our own temp files) go to `on_temp` instead of being yielded. A
    directory the consumer adds to `prune` after receiving its entry is not descended into.
    """
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
            src = _listing(src_dir)
        except OSError as exc:
            on_unreadable(rel_dir, exc)
            continue
        try:
            dst = _listing(dst_dir)
        except FileNotFoundError:
            dst = {}
        except NotADirectoryError:
            dst = {}
        subdirs: list[str] = []
        for name in sorted(src.keys() | dst.keys()):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            s = src.get(name)
            d = dst.get(name)
            if d is not None and s is None and is_temp(name):
                on_temp(rel, d.path)
                continue
            skind = kind_of(s) if s is not None else None
            dkind = kind_of(d) if d is not None else None
            judged = skind if skind is not None else dkind
            if rules and not rules.included(rel, judged == DIR):
                continue
            yield Entry(rel, skind, s, dkind, d)
            if skind == DIR:
                subdirs.append(rel)
        stack.extend(reversed(subdirs))
