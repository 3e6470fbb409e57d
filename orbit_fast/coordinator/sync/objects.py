"""Either end remote (S3, SMB): the store lister and object copies.

The destination is listed into memory, then the source is listed in a thread while the copies
of what it found already run; each source entry is paired with the destination's by name. A
file is unchanged when the jobs DB says this job copied it (or compared it equal) from the
source object that is there now to the destination object that is there now: the listing alone
decides, with no request per file (plan.plan_object).

Between two SMB ends both listings carry each file's creation time and DOS attributes, so a
change of only those is found without a request per file and set without a copy (plan.py,
ObjectCopies.compare).

Copies run in the worker pool (workers/objects.py), `concurrency` at a time. When both ends are
on one server with one login the server copies (S3 CopyObject up to 5 GiB, SMB server-side
copy) and no data comes to this machine. An object up to SINGLE_MAX (or one part) moves in one
read and one write. A larger one moves in parts read with ranged reads and written as an S3
multipart upload or into a temp file at offsets, all in parallel; the upload id or temp name
and every finished part are checkpointed, so a rerun after a crash confirms the recorded parts
with the server (ListParts, or re-reading the temp file) and sends only the others. An upload
whose source changed is aborted and started over.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

from orbit_fast.backends.base import TEMP_NAME, UNSAFE_NAME, ObjectInfo
from orbit_fast.config import SyncOptions, is_remote
from orbit_fast.errors import OrbitError, RemoteError, SourceError
from orbit_fast.filters import FilterRules

SINGLE_MAX = 8 << 20  # larger objects move in parts (the AWS CLI's multipart threshold)
DELETE_BATCH = 1000
LIST_BUDGET = 4096  # listed entries planned per loop turn


class Obj:
    """One object being compared or copied."""

    __slots__ = ("rel", "info", "action", "mtime_ns", "part_bytes", "nparts", "upload",
                 "tokens", "outstanding", "failed", "attempts", "digests", "want",
                 "started", "meta_only")  # fmt: skip

    def __init__(self, info: ObjectInfo, action: str, attempts: int = 0) -> None:
        self.rel = info.name
        self.info = info
        self.action = action
        self.mtime_ns = info.mtime_ns
        self.part_bytes = 0
        self.nparts = 0
        self.upload = ""
        self.tokens: dict[int, str] = {}
        self.outstanding = 0
        self.failed: str | None = None
        self.attempts = attempts
        self.digests: dict[str, str] = {}
        self.want: tuple[tuple[str, str], ...] = ()  # digest tasks: (side, style)
        self.started = False  # counted in the run's totals (not just compared)
        # Compared equal, but the destination's creation time or DOS attributes differ
        # from the source's: they are set alone (SetFileMeta), no copy.
        self.meta_only = False

    @property
    def size(self) -> int:
        return self.info.size

    def part_len(self, n: int) -> int:
        return min(self.part_bytes, self.info.size - (n - 1) * self.part_bytes)


class Pair:
    """A source object and the destination's of the same name (None: absent there)."""

    __slots__ = ("src", "dst")

    def __init__(self, src: ObjectInfo, dst: ObjectInfo | None) -> None:
        self.src, self.dst = src, dst

    @property
    def rel(self) -> str:
        return self.src.name


class Unlisted:
    """An entry the source listing could not read (or that is not a file): skipped."""

    __slots__ = ("rel", "msgid", "message")

    def __init__(self, rel: str, msgid: str, message: str) -> None:
        self.rel, self.msgid, self.message = rel, msgid, message


class ListingFailed:
    __slots__ = ("error",)

    def __init__(self, error: OrbitError) -> None:
        self.error = error


class Gone:
    """At the end of the listing: destination names the source no longer has (--mirror)."""

    __slots__ = ("names",)

    def __init__(self, names: list[str]) -> None:
        self.names = names


def _parents(name: str) -> list[str]:
    """"a/b/c" -> ["a", "a/b"]."""
    parts = name.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


class StoreLister:
    """Lists the destination at start(), then the source in a thread, pairing names."""

    budget = LIST_BUDGET
    poll_s = 0.005  # while the listing runs, come back soon for what it found

    def __init__(self, opts: SyncOptions, rules: FilterRules, src: Any, dst: Any) -> None:
        self.opts, self.rules = opts, rules
        self.src_store, self.dst_store = src, dst
        # Both listings with each file's creation time and DOS attributes, where both ends
        # keep them (SMB): the planner compares them (plan.dos_meta_differs).
        self.meta = src.capabilities.dos_meta and dst.capabilities.dos_meta
        self.done = False
        self.dstl: dict[str, ObjectInfo] = {}
        self._dst_dirs: set[str] = set()  # directories the destination has (or will have)
        self.src_dirs: dict[str, int] = {}  # source directories' mtimes, where it lists them
        self.dst_dir_mtimes: dict[str, int] = {}  # the destination's, likewise
        self.touched: set[str] = set()  # directories this run writes or deletes in
        self.seen: set[str] = set()
        self.unlisted: list[str] = []  # source directories that could not be listed
        # Names the listings found that are not files of the tree: writers' temp files of
        # either end, and a destination's entries that are not files (a local destination's
        # symlinks, say). Never synced, never silent (ObjectCopies.sweep_temps, the summary).
        self.dst_temps: set[str] = set()
        self.src_temps: set[str] = set()
        self.dst_other: set[str] = set()
        self.dst_excluded: list[str] = []  # --delete-excluded: files the rules leave out
        self._dir_ok: dict[str, bool] = {}
        self._found: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._held: tuple[str, Any] | None = None  # taken by wait(), not yet by next()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def included(self, name: str) -> bool:
        return self.rules.included_name(name, self._dir_ok)

    def _descend(self, d: str) -> bool:
        ok = self._dir_ok.get(d)
        if ok is None:
            ok = self._dir_ok[d] = self.rules.included(d, True)
        return ok

    def start(self) -> None:
        """List the destination, then the source in a thread while copies already run: on an
        SMB share with many directories the listing is seconds of CPU in smbprotocol, which
        the transfers in the worker processes overlap."""
        def odd(rel: str, why: str) -> None:  # a destination name no source name can match
            if why.startswith(UNSAFE_NAME):
                self._found.put(("skip", (rel, f"{why} (in the destination; left as it is)")))
            elif why == TEMP_NAME:
                if self.included(rel):
                    self.dst_temps.add(rel)
            elif self.included(rel):
                self.dst_other.add(rel)

        purge = self.opts.mirror and self.opts.delete_excluded
        try:
            listed = self.dst_store.list_info("", None if purge else self._descend, odd,
                                              self.dst_dir_mtimes.__setitem__,
                                              self.meta)  # fmt: skip
            self.dstl = {}
            for i in listed:
                if self.included(i.name):
                    self.dstl[i.name] = i
                elif purge and not self.rules.protected(i.name):
                    self.dst_excluded.append(i.name)
        except FileNotFoundError:
            self.dstl = {}
        for name in (*self.dstl, *self.dst_temps, *self.dst_other):
            self._dst_dirs.update(_parents(name))
        for name in self.dst_temps:  # swept at the end, perhaps: their directories change
            self.touch(name)
        self._thread = threading.Thread(target=self._list_source, name="orbit-list",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _list_source(self) -> None:
        """The listing thread: hands every entry (and skip, and the end) to the loop."""
        put = self._found.put
        try:
            # Directory times only where the destination keeps them (a local source's cost
            # one lstat per directory).
            on_dir = (self.src_dirs.__setitem__ if self.dst_store.capabilities.dir_mtimes
                      else None)  # fmt: skip
            for info in self.src_store.list_info("", self._descend,
                                                 lambda rel, why: put(("skip", (rel, why))),
                                                 on_dir, self.meta):  # fmt: skip
                if self._stop.is_set():
                    break
                put(("file", info))
        except BaseException as exc:  # noqa: BLE001 - handed to the coordinator's thread
            put(("error", exc))
        put(("end", None))

    def wait(self, timeout_s: float) -> None:
        """Block up to `timeout_s` until the listing found something."""
        if not self.done and self._held is None:
            try:
                self._held = self._found.get(timeout=timeout_s)  # next() takes it first
            except queue.Empty:
                pass

    def next(self) -> Pair | Unlisted | ListingFailed | Gone | None:
        while True:
            if self._held is not None:
                (kind, item), self._held = self._held, None
            else:
                try:
                    kind, item = self._found.get_nowait()
                except queue.Empty:
                    return None
            if kind == "file":
                if self.included(item.name):
                    self.seen.add(item.name)
                    return Pair(item, self.dstl.get(item.name))
            elif kind == "skip":
                rel, why = item
                if why == TEMP_NAME:  # a writer's file before its rename: not the tree's
                    if self.included(rel):
                        self.src_temps.add(rel)
                    continue
                if why.startswith("cannot list"):
                    self.unlisted.append(rel)
                    return Unlisted(rel or ".", "unreadable_dir", f"{why}; skipped with "
                                    "everything below it (nothing there is deleted either)")
                if why.startswith(UNSAFE_NAME):  # a key like a//b, ./x, ../x: never mapped
                    return Unlisted(rel, "unsafe_name", f"{why}; skipped")
                return Unlisted(rel, "special", f"{why}; skipped")
            elif kind == "error":
                if isinstance(item, OSError) and not is_remote(self.opts.source):
                    item = SourceError(f"cannot list the source {self.opts.source}: {item}")
                return ListingFailed(item if isinstance(item, OrbitError)
                                     else RemoteError(str(item)))  # fmt: skip
            else:
                self.done = True
                if not self.opts.mirror:
                    return None
                return Gone(sorted(self.dst_excluded + [
                    n for n in self.dstl if n not in self.seen and not self._below_unlisted(n)]))

    def touch(self, name: str) -> None:
        """A copy to or deletion of `name` changes its directories' times (engine.py)."""
        self.touched.update(_parents(name))

    def new_dirs(self, name: str) -> int:
        """How many of `name`'s parent directories a copy to it creates: those no listed
        destination name lies in (counted once; an object store has none to create)."""
        if not self.dst_store.capabilities.dir_mtimes:
            return 0
        fresh = [d for d in _parents(name) if d not in self._dst_dirs]
        self._dst_dirs.update(fresh)
        return len(fresh)

    def _below_unlisted(self, name: str) -> bool:
        return any(not u or name.startswith(u + "/") for u in self.unlisted)
