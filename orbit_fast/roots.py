"""The allowed roots (ORBIT_ALLOWED_ROOTS) and the protected state paths, enforced when a run
starts: before the engine touches anything, every end of the run must be reached now from an
allowed root through directories only, and no end may be, lie inside or contain a protected
path (the hub's state directory, the universe's directory, the state backups, the env file).

The hub checks the same when a job is created (hub/jobspec.py); the check here is the one that
holds, since links under a root can change between creation and run. Called by the sync engine,
backup and restore at the start of a run; see docs/threat-model.md, "Roots".
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from typing import NamedTuple

from orbit_fast import confine, locations
from orbit_fast.errors import DestinationError, OutsideRoots, UsageError
from orbit_fast.locations import Location


class Reached(NamedTuple):
    """A local end as the check found it: the directory reached (the deepest existing one for
    an end that does not exist yet) and its identity, for Tree.reopen."""

    path: str
    dev: int
    ino: int


def parse_roots(roots: Sequence[str]) -> list[Location]:
    return [locations.parse(r) for r in roots]


def _outside(what: str, url: str, roots: Sequence[str], why: str) -> OutsideRoots:
    return OutsideRoots(f"{what} {url} is outside the allowed roots ({why}; "
                        f"ORBIT_ALLOWED_ROOTS={','.join(roots)}); nothing was touched. Ask an "
                        "admin to add it, or point the job at a path below a root",
                        what)  # fmt: skip


def reach(path: str, root: str) -> Reached:
    """Open `root` (as the operator wrote it, links in it followed) and `path` below it with no
    symlink in any component; for a `path` that does not exist, its deepest existing ancestor.
    OSError (ELOOP, ENOTDIR, EXDEV...) where a link or a non-directory stands in the way."""
    rel_parts = locations.parse(path).parts[len(locations.parse(root).parts):]
    with confine.Tree.open(root) as tree:
        for n in range(len(rel_parts), -1, -1):
            try:
                with tree.beneath("/".join(rel_parts[:n])) as t:
                    return Reached(t.path, t.dev, t.ino)
            except FileNotFoundError:
                continue  # not there (yet): the parent must be reachable
    raise FileNotFoundError(errno.ENOENT, "the allowed root does not exist", root)


def check_roots(what: str, url: str, roots: Sequence[str]) -> Reached | None:
    """Raise OutsideRoots unless `url` (normalised) lies under one of `roots` and, for a local
    path, is reached from that root through directories only, now. No roots: anywhere."""
    if not roots:
        return None
    loc = locations.parse(url)
    under = [r for r, rl in zip(roots, parse_roots(roots), strict=True)
             if locations.within(loc.place(), rl.place())]  # fmt: skip
    if not under:
        raise _outside(what, url, roots, "not below any of them")
    if loc.remote:
        return None
    problems = []
    for root in sorted(under, key=len, reverse=True):  # the nearest root first
        try:
            return reach(locations.format(loc), root)
        except OSError as exc:
            problems.append(f"from {root}: {_why(exc)}")
    raise _outside(what, url, roots, "; ".join(problems))


def _why(exc: OSError) -> str:
    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EXDEV):
        return "a symbolic link (or a non-directory) stands in its path"
    return exc.strerror or str(exc)


def _forms(path: str) -> list[Location]:
    """A local path as written and as its links resolve now."""
    out = [locations.parse(os.path.normpath(path))]
    real = os.path.realpath(path)
    if real != path:
        out.append(locations.parse(real))
    return out


def check_protected(what: str, url: str, protected: Sequence[str]) -> None:
    """Raise DestinationError if the local end `url` is, lies inside or contains one of the
    `protected` paths (a mirror of "/" would delete them), as written or as links lead."""
    if not protected or locations.parse(url).remote:
        return
    ends = _forms(url)
    for p in protected:
        if any(locations.overlap(e, q) for e in ends for q in _forms(p)):
            raise DestinationError(f"{what} {url} overlaps {p}, which holds the hub's own "
                                   "state; a job may not read, write or contain it. Choose a "
                                   "path beside it")  # fmt: skip


def check_run(ends: Sequence[tuple[str, str]], roots: Sequence[str] = (),
              protected: Sequence[str] = ()) -> dict[str, Reached | None]:
    """The run-start check of every (what, location) end; returns what each local end
    reached (for Tree.reopen). Raises OutsideRoots, DestinationError or UsageError."""
    out = {}
    for what, url in ends:
        try:
            check_protected(what, url, protected)
            out[what] = check_roots(what, url, roots)
        except UsageError as exc:
            if isinstance(exc, OutsideRoots):
                raise
            raise UsageError(f"{what}: {exc}", what) from None
    return out


def open_end(what: str, path: str, reached: Reached | None, create: bool = False,
             mode: int = 0o777) -> confine.Tree:  # fmt: skip
    """The local end `path` as a Tree, opened from what the run-start check reached: that
    directory again (Tree.reopen: the same dev and inode, else the run stops) and the rest of
    the path below it without following a link (created with `create`). Without a check
    (no roots), the path as the operator wrote it. `mode`: of the directories created."""
    if reached is None:
        if create:
            os.makedirs(path, mode, exist_ok=True)
        return confine.Tree.open(path)
    try:
        top = confine.Tree.reopen(reached.path, reached.dev, reached.ino)
    except OSError as exc:
        raise OutsideRoots(f"{what} {path} changed since the run's check of the allowed roots "
                           f"({_why(exc)}); nothing was touched, run it again", what) from exc
    with top:
        rest = os.path.relpath(os.path.normpath(path), os.path.normpath(reached.path))
        if rest == ".":
            return confine.Tree(os.dup(top.fd), path)
        try:
            if create:
                top.makedirs(rest, mode)
            return top.beneath(rest)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise OutsideRoots(f"{what} {path} is no longer reached from an allowed root "
                               f"({_why(exc)}); nothing was touched", what) from exc
