"""Checks of a sync's two ends before anything is recorded, and the error for a failed write.

The same checks and messages whatever the ends: a local source must be a readable directory;
two local trees must not contain each other; a local destination must be a directory we can
write (created if missing, except in a dry run). Remote ends are checked by opening them.
"""

from __future__ import annotations

import errno
import os

from orbit_fast.config import SyncOptions, is_remote
from orbit_fast.errors import DestinationError, DiskFull, OrbitError, SourceError


def check_ends(opts: SyncOptions) -> None:
    """Raise SourceError or DestinationError naming what is wrong and what to do."""
    src, dst = opts.source, opts.destination
    if not is_remote(src):
        if not os.path.exists(src):
            raise SourceError(f"source {src} does not exist; check the path")
        if not os.path.isdir(src):
            raise SourceError(f"source {src} is not a directory; give the directory to copy")
        if not os.access(src, os.R_OK | os.X_OK):
            raise SourceError(f"source {src} is not readable by this user; check permissions")
    if is_remote(dst):
        return
    if not is_remote(src):
        rs, rd = os.path.realpath(src), os.path.realpath(dst)
        if rs == rd or rd.startswith(rs.rstrip("/") + "/"):
            raise DestinationError(
                f"destination {dst} is inside the source {src}; the copy would copy itself. "
                "Choose a destination outside the source tree"
            )
        if rs.startswith(rd.rstrip("/") + "/"):
            raise DestinationError(
                f"source {src} is inside the destination {dst}; "
                + ("--mirror would delete the source. " if opts.mirror else "")
                + "Choose a destination that does not contain the source"
            )
    if os.path.lexists(dst) and not os.path.isdir(dst):
        raise DestinationError(f"destination {dst} exists and is not a directory")
    if opts.dry_run:
        return
    if opts.allowed_roots and not os.path.lexists(dst):
        return  # created below what the roots check reached, never through a link (Trees)
    try:
        os.makedirs(dst, exist_ok=True)
    except OSError as exc:
        raise dest_error(exc, dst) from exc
    if not os.access(dst, os.W_OK | os.X_OK):
        raise DestinationError(
            f"destination {dst} is not writable (read-only filesystem or permissions); "
            "nothing was changed"
        )


def dest_error(exc: OSError, path: str) -> OrbitError:
    """The run-ending error for a failed write to the destination at `path`."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(
            f"no space left on the destination ({path}); free some space and run the "
            "same command again: finished files and checkpointed blocks are kept"
        )
    return DestinationError(f"cannot write the destination: {exc.strerror or exc}: {path}")
