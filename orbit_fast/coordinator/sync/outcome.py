"""What the parts of a sync run hand up to the engine: the engine alone counts, emits and
records them.

A lister, the planner or a transfer kind returns a list of these instead of touching the run's
totals, its events or its ledger, so the same rules (what counts as skipped, when a copy leaves
the totals, how often a changing file is retried) live in one place, the engine.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from orbit_fast.errors import OrbitError


class Moved(NamedTuple):
    """Bytes of a copy now in place: sent this run (`copied`) or found there on resume."""

    copied: int = 0
    resumed: int = 0
    recorded: bool = False  # a block or part was checkpointed: counts for the cadence


class Done(NamedTuple):
    """A copy finished: the file or object is in place under its name."""

    rel: str
    action: str  # copy | update | resume
    size: int
    server_side: bool = False


class Same(NamedTuple):
    """Compared by content (--checksum) and found equal: nothing to copy. `meta`: its
    metadata alone was set (or, in a dry run, would be): an attributes-only update."""

    rel: str
    meta: bool = False


class Differs(NamedTuple):
    """Compared by content and found different: `item` is to be copied (an update)."""

    item: Any


class Changed(NamedTuple):
    """The source changed while `item` was copied; the copy was abandoned."""

    item: Any


class Dropped(NamedTuple):
    """A started copy that will not finish this run leaves the totals."""

    size: int
    done: int  # bytes of it already counted as done


class Warn(NamedTuple):
    msgid: str
    rel: str
    message: str
    skipped: bool = False  # the entry is missing from the destination after this run
    partial: bool = False  # not skipped, but the run is not all it should be: exit code 1


class Hidden(NamedTuple):
    """Names a listing found that are not files of the tree (never synced, never silent):
    `removed` of them were stale temp files and are gone; `why` says what they were."""

    names: int
    removed: int
    why: str


class Fatal(NamedTuple):
    """The run cannot go on (destination, remote, or worker failure)."""

    error: OrbitError


Outcome = Moved | Done | Same | Differs | Changed | Dropped | Warn | Hidden | Fatal
