"""Mirror safety: whether a run's deletions may go ahead, as pure functions of what it found.

A mirror deletes what the source no longer has, so a source that looks empty because its share
is not mounted would wipe the replica. Three guards stand before every deletion of a --mirror
run (docs/sync.md, "Mirror safety"):

- the source root moved to another filesystem since the job's last successful run (the mount
  point, filesystem type or mounted device differ: the share is not mounted and the directory
  now lies on the root filesystem);
- the source has no files while the destination has entries to delete;
- the deletions exceed --max-delete (a count, or a percentage of the destination's entries).

A run stopped by a guard has copied what it could and deletes nothing: all of its deletions are
withheld (never some of them), it says why and how many, and it ends with exit code 22.
--force-delete lifts the first two for one run; --max-delete off lifts the third.
"""

from __future__ import annotations

from typing import Any

from orbit_fast.fsinfo import mount_of
from orbit_fast.units import MaxDelete

Identity = dict[str, Any]


def local_identity(path: str, dev: int) -> Identity:
    """A local source root's filesystem: its mount (from mountinfo) and device number. The
    device number alone is not compared: a network filesystem gets a new one at each mount."""
    mount = mount_of(path, dev)
    if mount is None:
        return {"dev": dev}
    return {"mount": mount.point, "fstype": mount.fstype, "device": mount.device, "dev": dev}


def remote_identity(files: int) -> Identity:
    """A remote source (S3, SMB URL): what its listing held."""
    return {"remote": True, "files": files}


def describe(ident: Identity) -> str:
    if ident.get("remote"):
        return f"a listing of {ident.get('files', 0)} files"
    return f"{ident.get('mount')} ({ident.get('fstype')} {ident.get('device')})"


def moved(then: Identity | None, now: Identity | None) -> bool:
    """Whether a local source root lies on another mount than at the last successful run."""
    if not then or not now or then.get("remote") or now.get("remote") or "mount" not in then:
        return False
    return any(then.get(k) != now.get(k) for k in ("mount", "fstype", "device"))


def judge(*, source: str, deletions: int, destination_entries: int, source_files: int,
          then: Identity | None, now: Identity | None, limit: MaxDelete,
          force: bool) -> str | None:  # fmt: skip
    """Why this run's `deletions` must be withheld (the message to show), or None to go ahead.

    `destination_entries`: what the destination held (the base of a percentage limit);
    `then`: the source's identity at the job's last successful run (None: never, or a dry
    run); `now`: this run's."""
    if deletions <= 0:
        return None
    n = f"{deletions} {'entry' if deletions == 1 else 'entries'}"
    if not force and moved(then, now):
        assert then is not None and now is not None
        return (f"deletions withheld: the source {source} now lies on {describe(now)}, not on "
                f"{describe(then)} as at this job's last successful run. Is the share "
                f"unmounted? {n} of the destination would have been deleted; nothing was. "
                "Mount the source and run again; if it moved on purpose, run once with "
                "--force-delete.")  # fmt: skip
    if not force and source_files == 0:
        return (f"deletions withheld: the source {source} has no files, and the destination "
                f"has {n} to delete. Is it unmounted or emptied by mistake? Nothing was "
                "deleted. Check the source; if it is meant to be empty, run once with "
                "--force-delete.")  # fmt: skip
    if limit.exceeded(deletions, destination_entries):
        share = (f" ({100.0 * deletions / destination_entries:.0f}% of its "
                 f"{destination_entries})" if destination_entries else "")  # fmt: skip
        return (f"deletions withheld: {n} of the destination{share} would be deleted, more "
                f"than --max-delete {limit} allows; nothing was deleted. Check the source; "
                "to delete them, run once with a higher --max-delete (or off).")  # fmt: skip
    return None
