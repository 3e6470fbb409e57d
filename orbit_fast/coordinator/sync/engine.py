"""The sync engine: one loop for every pair of ends, from listing to summary.

Two local trees are merge-walked and copied a block at a time through ring slots (tree.py);
when either end is remote the stores are listed and objects copied whole, server-side or in
parts (objects.py, object_copies.py). Either way the loop is this one: plan what the lister
found (plan.py), send what the transfers have ready to the dispatch board, apply the results
the board brings back, checkpoint on the ledger's cadence. Only the engine counts, emits and
decides what a result means for the run; the lister, the planner and the transfers hand up
outcomes (outcome.py). Cancellation and the first fatal error stop new work, let in-flight
tasks finish, checkpoint, and end the run.
"""

from __future__ import annotations

import errno
import os
import time
from typing import TYPE_CHECKING, Any

from orbit_fast import progress as p
from orbit_fast.cancel import CancelToken
from orbit_fast.config import FsyncPolicy, SyncOptions, is_remote, url_scheme
from orbit_fast.coordinator.dispatch import WorkerDeath
from orbit_fast.coordinator.run import RunLedger
from orbit_fast.coordinator.scan import DIR, FILE, LINK, OTHER, Entry, Stat
from orbit_fast.coordinator.sync import guards, keep
from orbit_fast.coordinator.sync import plan as pl
from orbit_fast.coordinator.sync.outcome import (
    Changed,
    Differs,
    Done,
    Dropped,
    Fatal,
    Hidden,
    Moved,
    Outcome,
    Same,
    Warn,
)
from orbit_fast.coordinator.sync.paths import check_ends, dest_error
from orbit_fast.coordinator.sync.tree import (
    MADE,
    SAME,
    BlockCopies,
    Folded,
    Skipped,
    TreeLister,
    TreeOps,
    Trees,
)
from orbit_fast.errors import (
    DeletionsWithheld,
    ExitCode,
    OrbitError,
    UsageError,
    WorkerFailed,
)
from orbit_fast.filters import FilterRules, Selection
from orbit_fast.fsinfo import syncfs
from orbit_fast.roots import check_run
from orbit_fast.units import parse_bwlimit, parse_max_delete
from orbit_fast.workers.ring import reap_stale_segments

if TYPE_CHECKING:
    from orbit_fast.coordinator.sync.objects import Pair
    from orbit_fast.index.state_file import StateClaims
    from orbit_fast.workers.pool import WorkerPool
    from orbit_fast.workers.throttle import Throttle

PROGRESS_INTERVAL_S = 0.25
ARCHIVED = ("GLACIER", "DEEP_ARCHIVE")  # S3 storage classes whose objects cannot be read
MAX_SOURCE_CHANGES = 3  # copies of a file that keeps changing before it is skipped


def job_name(opts: SyncOptions) -> str:
    return f"sync:{opts.source} -> {opts.destination}"


class SyncEngine:
    """One run of a sync, whatever its ends.

    Parameters
    ----------
    opts
        Validated options (config.validate).
    emit
        Receives every event, in the caller's thread.
    cancel
        Stops the run at a safe point (Interrupted, checkpointed).
    workers
        The hub's pool, leased for this run; else the run starts a pool of its own.
    claims
        The hub's claims on its state files; else the run claims the jobs DB itself.
    """

    def __init__(self, opts: SyncOptions, emit: Any, cancel: CancelToken,
                 workers: WorkerPool | None = None,
                 claims: StateClaims | None = None) -> None:  # fmt: skip
        self.opts = opts
        self.emit = emit
        self.cancel = cancel
        self.shared_pool = workers
        self.rules = FilterRules(opts.filters, opts.files_from, opts.from0)
        self.selection: Selection | None = Selection(opts.min_size, opts.max_size, opts.min_age,
                                                     opts.max_age) or None  # fmt: skip
        self.c = p.Counters()
        self.ledger = RunLedger(kind="sync", source=opts.source, options=opts,
                                db_path=opts.db_path, emit=emit, dry_run=opts.dry_run,
                                claims=claims)  # fmt: skip
        self.fatal: OrbitError | None = None
        self.server_copies = 0
        # --mirror: what the source no longer has, deleted after the copies once the guards
        # let them (guards.py): names of a store, or a tree's (rel, kind) of each top entry.
        self.gone: list[str] = []
        self.doomed: list[tuple[str, str | None]] = []
        self.dst_entries = 0  # entries the destination showed: the base of --max-delete N%
        self.identity: guards.Identity | None = None  # the local source root's filesystem
        self.withheld: DeletionsWithheld | None = None
        self.partial = False  # exit code 1 with nothing skipped (metadata a destination lacks)
        # Symlinks and special files of a local source that a store cannot hold: each one is
        # a skipped entry, and the run says so once per kind, with the count (_not_files).
        self.not_files: dict[str, int] = {}
        # Hard links (rsync -H): the first name seen of each multi-link source inode, and the
        # other names, linked to it once the copies are done. Only multi-link files are held.
        self.link_first: dict[tuple[int, int], str] = {}
        self.link_later: list[tuple[str, str]] = []
        # Destination files with several links that this run leaves in place, by inode: the
        # names and their source inodes (and link counts). Names the source no longer links
        # together are split apart once the walk is done (_split_links).
        self.dst_links: dict[tuple[int, int], list[tuple[str, tuple[int, int], int, Stat]]] = {}
        self.bandwidth = parse_bwlimit(opts.bwlimit)
        self.throttle: Throttle | None = None  # --bwlimit, shared by the run's workers
        # --backup-dir as this run fills it in, and where it keeps files between trees
        self.backup_dir = keep.expand(opts.backup_dir) if opts.backup_dir else ""
        self.keeper: keep.TreeKeeper | None = None
        # ... and with a store at either end: the store it is kept in, and its prefix there
        self.keep_store: Any = None
        self.keep_prefix = ""
        self._last_progress = 0.0
        self.stores: tuple[Any, Any] | None = None
        self.tree: TreeOps | None = None
        self.trees: Trees | None = None
        self.lister: Any = None
        self.copies: Any = None
        self._objects: Any = None  # the sync.objects module, once a store is an end

    # ---- the run ------------------------------------------------------------------------

    def run(self) -> p.Summary:
        return self.ledger.run(self._body, self._summary)

    def _body(self) -> p.Summary:
        o = self.opts
        # Before anything is touched: both ends below an allowed root now, neither the state.
        reached = check_run((("source", o.source), ("destination", o.destination)),
                            o.allowed_roots, o.protected_paths)  # fmt: skip
        check_ends(o)
        if o.remote:
            from orbit_fast.backends.registry import open_store

            s3 = {"storage_class": o.s3_storage_class, "sse": o.s3_sse,
                  "sse_kms_key_id": o.s3_sse_kms_key_id, "region": o.s3_region}
            src = open_store(o.source, o.retry_attempts, o.s3_endpoint, s3)
            try:
                dst = open_store(o.destination, o.retry_attempts, o.s3_endpoint, s3)
            except BaseException:
                src.close()
                raise
            self.stores = (src, dst)
            if self.backup_dir:
                self._open_keep_store()
        else:
            try:
                # Every local path below is reached through these, opened from what the
                # roots check reached.
                self.trees = Trees(o, reached.get("source"), reached.get("destination"))
            except OSError as exc:
                raise dest_error(exc, o.destination) from exc
            self.identity = guards.local_identity(self.trees.src.path, self.trees.src.dev)
            if self.backup_dir:
                self._open_keeper()
        try:
            reap_stale_segments()  # rings of coordinators that died with SIGKILL
            if self.bandwidth:
                from orbit_fast.workers.throttle import Throttle

                self.throttle = Throttle.create(self.bandwidth.at())
            self.ledger.open(job_name(o), o.destination)
            self._bind()
            self.ledger.started(workers=o.workers, block_bytes=o.block_bytes)
            try:
                self._loop()
                if not self.stopping:
                    self._finish()
            except OSError as exc:
                self._fail(dest_error(exc, o.destination))
            finally:
                self.copies.board.close()
        finally:
            if self.throttle is not None:
                self.throttle.close()
            if self.keeper is not None:
                self.keeper.close()
            if self.keep_store is not None and self.keep_prefix == "":  # its own store
                self.keep_store.close()
            if self.stores is not None:
                for store in self.stores:
                    store.close()
            if self.trees is not None:
                self.trees.close()
        if self.fatal is not None:
            raise self.fatal
        if self.cancel.cancelled:
            raise self.ledger.interrupted(self.cancel, "stopped by signal; progress is "
                                          f"checkpointed in {o.db_path}: run the same command "
                                          "again to resume")  # fmt: skip
        if self.withheld is not None:
            raise self.withheld
        if self.ledger.db is not None:  # what the guards compare the next run with
            self.ledger.db.queue_source_identity(
                self.ledger.job.id, self.identity or guards.remote_identity(self.c.files_scanned))
        return self._summary(ExitCode.PARTIAL if self.c.skipped or self.partial else ExitCode.OK)

    def _bind(self) -> None:
        """The lister and the transfer kind for these ends, with this job's records."""
        o, db, job = self.opts, self.ledger.db, self.ledger.job
        if self.stores is None:
            assert self.trees is not None
            self.tree = TreeOps(self.trees, job, o.keep)
            copies = BlockCopies(o, self.trees, db, job, self.shared_pool, self._throttles())
            self.copies = copies
            self.lister = TreeLister(o, self.trees, self.rules, job.token,
                                     copies.resumable_temps())  # fmt: skip
        else:
            # Imported only here: a no-change rerun of two trees (0.2 s) never needs them.
            from orbit_fast.coordinator.sync import objects
            from orbit_fast.coordinator.sync.object_copies import ObjectCopies

            src, dst = self.stores
            self.copies = ObjectCopies(o, src, dst, db, job, self.shared_pool, self._throttles())
            self.lister = objects.StoreLister(o, self.rules, src, dst)
            self._objects = objects

    def _open_keeper(self) -> None:
        """--backup-dir between local trees: never inside the source; inside the destination
        it takes no part in the run (its fixed part: yesterday's {date} too)."""
        o, bdir = self.opts, self.backup_dir
        if keep.inside(bdir, o.source) is not None:
            raise UsageError(f"--backup-dir {bdir} is inside the source {o.source}; put it "
                             "elsewhere", "backup_dir")  # fmt: skip
        rel = keep.inside(keep.fixed_part(o.backup_dir) or bdir, o.destination)
        if rel == "":
            raise UsageError(f"--backup-dir {bdir} is the destination itself; name a "
                             "directory below it or elsewhere", "backup_dir")  # fmt: skip
        if rel is not None:
            self.rules.protect(rel)
        if not o.dry_run:
            assert self.trees is not None and self.trees.dst is not None
            self.keeper = keep.TreeKeeper(self.trees.dst, o.destination, bdir, o.suffix)

    def _open_keep_store(self) -> None:
        """--backup-dir with a store at either end: a path relative to the destination (kept
        in the destination's store, below that path, which takes no part in the run), or a
        URL or absolute path on the destination's server (S3 bucket, SMB server, local
        filesystem), its own store."""
        from orbit_fast import locations
        from orbit_fast.backends.registry import open_store

        o, bdir = self.opts, self.backup_dir
        assert self.stores is not None
        absolute = "://" in bdir or os.path.isabs(bdir)
        where = locations.normalise(bdir) if "://" in bdir else bdir
        fixed = keep.fixed_part(o.backup_dir) or bdir
        if absolute:
            fixed = locations.normalise(fixed) if "://" in fixed else fixed
            rel = keep.inside(fixed, o.destination)
        else:
            rel = fixed
            where = o.destination.rstrip("/") + "/" + bdir
        if keep.inside(where, o.source) is not None:
            raise UsageError(f"--backup-dir {bdir} is inside the source {o.source}; put it "
                             "elsewhere", "backup_dir")  # fmt: skip
        if rel == "":
            raise UsageError(f"--backup-dir {bdir} is the destination itself; name a "
                             "directory below it or elsewhere", "backup_dir")  # fmt: skip
        if rel is not None:
            self.rules.protect(rel)
        if absolute:
            self.keep_store = open_store(where, o.retry_attempts, o.s3_endpoint)
        else:
            self.keep_store, self.keep_prefix = self.stores[1], bdir.strip("/") + "/"

    def _keep_object(self, name: str) -> None:
        """--backup-dir with a store: a server-side copy of `name` before it is overwritten
        or deleted (a dry run lists it)."""
        if self.opts.dry_run:
            self.emit(p.FileDone(path=p.display_path(name), action="plan-backup", size=0))
            return
        assert self.stores is not None
        try:
            self.keep_store.keep_from(self.stores[1], name,
                                      self.keep_prefix + name + self.opts.suffix)  # fmt: skip
        except FileNotFoundError:
            return  # gone meanwhile: nothing to keep
        self.c.files_backed_up += 1

    def _keep(self, rel: str, kind: str | None, replaced: bool) -> None:
        """--backup-dir: keep what is about to be replaced or deleted (a dry run lists it)."""
        if self.opts.dry_run:
            self.emit(p.FileDone(path=p.display_path(rel), action="plan-backup", size=0))
            return
        if self.keeper is not None:
            if replaced:
                kept = self.keeper.replaced(rel)
            else:
                self.keeper.deleted(rel, kind)
                kept = True
            self.c.files_backed_up += int(kept)

    def _throttles(self) -> list[str]:
        return [self.throttle.name] if self.throttle is not None else []

    def _fail(self, err: OrbitError) -> None:
        if self.fatal is None:
            self.fatal = err

    @property
    def stopping(self) -> bool:
        return self.fatal is not None or self.cancel.cancelled

    def _loop(self) -> None:
        lister, copies = self.lister, self.copies
        board = copies.board
        lister.start()
        try:
            while True:
                if not self.stopping:
                    self._plan_some()
                    if lister.done and self.dst_links:
                        self._split_links()
                    self._apply(copies.fill(lambda: self.stopping))
                if not board.tasks:
                    if self.stopping or (lister.done and not copies.busy()):
                        break
                    if copies.busy():
                        raise AssertionError(f"transfers without tasks: {copies.describe()}")
                    lister.wait(PROGRESS_INTERVAL_S)
                    self._tick()
                    continue
                results, deaths = board.wait(PROGRESS_INTERVAL_S if lister.done
                                             else lister.poll_s)  # fmt: skip
                for rec, res in results:
                    self._apply(copies.on_result(rec, res))
                for death in deaths:
                    self._on_death(death)
                self._tick()
        finally:
            lister.stop()
        self._tick(force=True)

    def _tick(self, force: bool = False) -> None:
        self.ledger.tick(force)
        now = time.monotonic()
        if force or now - self._last_progress >= PROGRESS_INTERVAL_S:
            self._last_progress = now
            if self.throttle is not None:
                if self.stopping:  # in-flight tasks finish now, not at their booked times
                    self.throttle.release()
                elif len(self.bandwidth.table) > 1:  # a timetable: the rate of this moment
                    self.throttle.set_rate(self.bandwidth.at())
            self.c.scan_done = self.lister.done
            self.emit(self.c.progress(len(self.copies.board.tasks)))

    def _finish(self) -> None:
        o, c = self.opts, self.c
        if o.mirror:
            self._settle_deletions()
        if self.link_later and not self.stopping:
            self._hard_links()
        if self.tree is not None and not o.dry_run and not self.stopping:
            lost = self.tree.finish_dirs()
            if lost:
                self._apply(self.copies.lost_meta(lost, "."))
        if not self.stopping:
            self._apply(self.copies.abort_stale_uploads())
        if not self.stopping and self._objects is not None:
            self._apply(self.copies.left_out())
            self._not_files()
            self._apply(self._unlisted())
            if not o.dry_run:
                self._dir_mtimes()
        changed = bool(c.dirs_created or c.links_created or c.files_total or c.files_deleted
                       or c.files_meta)  # fmt: skip
        if (not self.stopping and changed and not o.dry_run and not is_remote(o.destination)
                and o.fsync != FsyncPolicy.NONE):  # fmt: skip
            syncfs(o.destination)

    def _dir_mtimes(self) -> None:
        """Directories get the source's times once every copy into them is done, deepest
        first (setting a child's time leaves its parent's alone), between local directories
        and SMB shares in any direction; S3 has no directories. One the destination listed
        with that time already (at its precision) is left alone: a no-change run sets none."""
        dirs = self.lister.src_dirs
        if not dirs or self.stores is None or not self.stores[1].capabilities.dir_mtimes:
            return
        dst = self.stores[1]
        had, touched = self.lister.dst_dir_mtimes, self.lister.touched
        prec = max(1, dst.capabilities.mtime_ns_precision)
        for rel in sorted(dirs, key=lambda r: r.count("/"), reverse=True):
            if rel not in touched and had.get(rel, -1) == dirs[rel] - dirs[rel] % prec:
                continue
            try:
                dst.set_dir_mtime(rel, dirs[rel])
            except FileNotFoundError:  # no file was copied into it (filters, failures)
                continue
            except OSError as exc:
                self._warn("io", rel, f"could not set the directory's time: {exc}")

    def _not_files(self) -> None:
        """One warning per kind of the source's entries a store cannot hold, with the count."""
        where = "S3" if url_scheme(self.opts.destination) == "s3" else "the destination"
        for kind, n in sorted(self.not_files.items()):
            self._warn("special", "", f"{kind}: {n} in the source, not copied: {where} keeps "
                       "only files (each is in the summary's skipped list)")  # fmt: skip

    def _unlisted(self) -> list[Outcome]:
        """What the store listings found that is not a file of the tree: the destination's
        stale temp files are removed (ObjectCopies.sweep_temps), and everything else is
        counted and said in a warning, so no name a user sees there is passed over silently."""
        lister = self.lister
        out: list[Outcome] = self.copies.sweep_temps(lister.dst_temps, self.opts.dry_run)
        if lister.src_temps:
            out.append(Hidden(len(lister.src_temps), 0, f"{len(lister.src_temps)} writers' "
                              "temp files in the source: not copied (a file is copied under "
                              "its own name once its writer has renamed it)"))  # fmt: skip
        if lister.dst_other:
            out.append(Hidden(len(lister.dst_other), 0, f"{len(lister.dst_other)} entries in "
                              "the destination that are not files (symlinks, special files, "
                              "unreadable directories): left as they are"))  # fmt: skip
        return out

    # ---- planning -----------------------------------------------------------------------

    def _plan_some(self) -> None:
        lister, copies = self.lister, self.copies
        for _ in range(lister.budget):
            if copies.full():
                return
            item = lister.next()
            if item is None:
                return
            try:
                self._plan(item)
            except FileNotFoundError:  # listed, then gone before a stat of it: as in a copy
                self._warn("vanished", getattr(item, "rel", ""),
                           "vanished from the source before it was copied")
            except OSError as exc:
                rel = getattr(item, "rel", "")
                if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
                    self._fail(dest_error(exc, os.path.join(self.opts.destination, rel)))
                    return
                self._warn("io", rel, f"{exc.strerror or exc}: {exc.filename or rel}",
                           skipped=True)  # fmt: skip
            if self.stopping:
                return

    def _plan(self, item: object) -> None:
        if isinstance(item, Entry):
            self._plan_tree(item)
        elif self._objects is not None:
            self._plan_listed(item)
        elif isinstance(item, Folded):
            self.c.files_scanned += item.n
            self.c.files_unchanged += item.n
            self.dst_entries += item.n
        elif isinstance(item, Skipped):
            self._warn("unreadable_dir", item.rel or ".", f"cannot list source directory "
                       f"({item.message}); skipped with everything below it (nothing there "
                       "is deleted either)", skipped=True)  # fmt: skip

    def _plan_listed(self, item: object) -> None:
        """An item of a store listing (sync/objects.py)."""
        ob = self._objects
        if isinstance(item, ob.Pair):
            self._plan_pair(item)
        elif isinstance(item, ob.Unlisted) and item.msgid == "special":
            self._skipped(item.rel, item.msgid, item.message)
            kind = ("symlinks" if item.message.startswith("a symlink")
                    else "special files (fifos, sockets, devices)")  # fmt: skip
            self.not_files[kind] = self.not_files.get(kind, 0) + 1
        elif isinstance(item, ob.Unlisted):
            self._warn(item.msgid, item.rel, item.message, skipped=True)
        elif isinstance(item, ob.ListingFailed):
            self._fail(item.error)
        elif isinstance(item, ob.Gone):
            self.gone = item.names

    def _plan_tree(self, e: Entry) -> None:
        o, c, tree = self.opts, self.c, self.tree
        assert tree is not None
        if e.dst_kind is not None:
            self.dst_entries += 1
        if e.kind == FILE:
            c.files_scanned += 1
            if (self.selection is not None and e.src is not None
                    and self.selection.leaves_out(e.src.st_size, e.src.st_mtime_ns)):  # fmt: skip
                return  # neither copied nor, being in the source, deleted
            if (e.src is not None and e.src.st_nlink > 1 and not o.no_hard_links
                    and e.dst_kind in (None, FILE)):  # fmt: skip
                key = (e.src.st_dev, e.src.st_ino)
                first = self.link_first.setdefault(key, e.rel)
                if first != e.rel:
                    self.link_later.append((first, e.rel))
                    return  # linked to the first name once its copy is in place
        target = ""
        same_link = False
        if e.kind == LINK:
            target = tree.read_link(e.rel)
            same_link = e.dst_kind == LINK and tree.dst_link(e.rel) == target
        st = e.src
        for d in pl.plan_entry(e.kind, e.dst_kind, e.src, e.dst, mirror=o.mirror,
                               checksum=o.checksum, same_link=same_link,
                               size_only=o.size_only, ignore_existing=o.ignore_existing,
                               update=o.update, owners=tree.owners,
                               xmeta=tree.xmeta):  # fmt: skip
            if d == pl.DELETE and e.kind is None:
                self.doomed.append((e.rel, e.dst_kind))  # after the copies, if the guards let
            elif d == pl.DELETE:  # in the way of the source's entry: replaced now
                self._deleted(e.rel)
                if self.backup_dir:
                    self._keep(e.rel, e.dst_kind, replaced=False)
                elif not o.dry_run:
                    tree.delete(e.rel, e.dst_kind)
            elif d == pl.CONFLICT:
                self._warn("type_conflict", e.rel, f"is a {e.kind} in the source but a "
                           f"{e.dst_kind} in the destination; skipped (use --mirror to "
                           "replace it)", skipped=True)  # fmt: skip
                if e.kind == DIR:
                    self.lister.prune(e.rel)
            elif d == pl.SPECIAL:
                self._special(e)
            elif d in (pl.MKDIR, pl.DIR_SEEN):
                assert st is not None
                if d == pl.MKDIR:
                    c.dirs_created += 1
                    if not o.dry_run:
                        tree.mkdir(e.rel)
                    self.emit(p.FileDone(path=p.display_path(e.rel), action="mkdir", size=0))
                if not o.dry_run:
                    tree.note_dir(e.rel, st, made=d == pl.MKDIR)
            elif d == pl.LINK_NEW:
                assert st is not None
                c.links_created += 1
                self.emit(p.FileDone(path=p.display_path(e.rel), action="link", size=0))
                if not o.dry_run:
                    tree.make_link(e.rel, target, st)
            elif d == pl.SKIP:
                c.files_unchanged += 1
                self._note_dst_link(e)
            elif d == pl.META:
                assert st is not None and e.dst is not None
                self._note_dst_link(e)
                c.files_unchanged += 1
                lost = 0 if o.dry_run else tree.fix_meta(e.rel, st, e.dst)
                if lost:
                    self._apply(self.copies.lost_meta(lost, e.rel))
                c.files_meta += 1
                self.emit(p.FileDone(path=p.display_path(e.rel), action="meta", size=0))
            elif d in (pl.COPY, pl.UPDATE):
                assert st is not None
                self._start_copy(self.copies.transfer(e.rel, st, d))
            elif d == pl.COMPARE:
                assert st is not None
                self._apply(self.copies.compare(self.copies.transfer(e.rel, st, pl.UPDATE)))

    def _note_dst_link(self, e: Entry) -> None:
        d, s = e.dst, e.src
        if d is not None and s is not None and d.st_nlink > 1 and not self.opts.no_hard_links:
            self.dst_links.setdefault((d.st_dev, d.st_ino), []).append(
                (e.rel, (s.st_dev, s.st_ino), s.st_nlink, s))

    def _split_links(self) -> None:
        """Destination names linked together whose source files are no longer one inode (a
        name taken out of a hard-link set): the names of the source's largest set stay, each
        other one is copied anew, so a later change to one never shows through the other."""
        groups, self.dst_links = self.dst_links, {}
        for names in groups.values():
            by_src: dict[tuple[int, int], list[tuple[str, int, Stat]]] = {}
            for rel, key, nlink, st in names:
                by_src.setdefault(key, []).append((rel, nlink, st))
            if len(by_src) < 2:
                continue
            keep = max(by_src, key=lambda k: (by_src[k][0][1], len(by_src[k]), k))
            for key, members in by_src.items():
                if key != keep:
                    for rel, _, st in members:
                        self._start_copy(self.copies.transfer(rel, st, pl.UPDATE))

    def _hard_links(self) -> None:
        """The other names of each multi-link file, linked to its first name's copy."""
        assert self.tree is not None
        for first, rel in self.link_later:
            if self.opts.dry_run:
                self.emit(p.FileDone(path=p.display_path(rel), action="plan-hardlink", size=0))
                continue
            why = self.tree.hard_link(first, rel)
            if why == MADE:
                self.c.links_created += 1
                self.emit(p.FileDone(path=p.display_path(rel), action="hardlink", size=0))
            elif why == SAME:
                self.c.files_unchanged += 1
            else:
                self._warn("hardlink", rel, why, skipped=True)
        self.link_later.clear()

    def _special(self, e: Entry) -> None:
        """A fifo or device in the source: made alike at the destination (rsync -D)."""
        assert self.tree is not None
        if e.dst_kind not in (None, OTHER):
            if not self.opts.mirror:
                self._warn("type_conflict", e.rel, f"is a special file in the source but a "
                           f"{e.dst_kind} in the destination; skipped (use --mirror to "
                           "replace it)", skipped=True)  # fmt: skip
                return
            self._deleted(e.rel)
            if not self.opts.dry_run:
                self.tree.delete(e.rel, e.dst_kind)
        if self.opts.dry_run:
            self.emit(p.FileDone(path=p.display_path(e.rel), action="plan-special", size=0))
            return
        why = self.tree.make_special(e.rel, e.dst_kind)
        if why == MADE:
            self.emit(p.FileDone(path=p.display_path(e.rel), action="special", size=0))
        elif why != SAME:
            self._warn("special", e.rel, why)

    def _plan_pair(self, pair: Pair) -> None:
        s, d, copies = pair.src, pair.dst, self.copies
        self.c.files_scanned += 1
        o = self.opts
        if self.selection is not None and self.selection.leaves_out(s.size, self._src_mtime(s)):
            return  # neither copied nor, being in the source, deleted
        decision = pl.plan_object(s, d, copies.records.get(s.name), checksum=o.checksum,
                                  size_only=o.size_only,
                                  ignore_existing=o.ignore_existing)  # fmt: skip
        if o.update and d is not None and decision in (pl.UPDATE, pl.MTIME):
            src_ns, dst_ns = copies.mtimes(s, d)
            if src_ns is not None and dst_ns is not None and dst_ns > src_ns:
                decision = pl.SKIP  # newer on the destination: kept (--update)
        if decision == pl.SKIP:
            self.c.files_unchanged += 1
        elif decision in (pl.COPY, pl.UPDATE):
            if d is None:  # the directories a new file's copy makes, as a tree sync counts
                self.c.dirs_created += self.lister.new_dirs(s.name)
            self.lister.touch(s.name)
            self._start_copy(copies.item(s, decision))
        elif decision == pl.COMPARE and s.storage_class in ARCHIVED and not (s.etag and d
                                                                              and d.etag):
            # Only ETags could compare it without reading it, and the other side has none.
            self._archived(s.name, s.storage_class, "to compare it")
        elif decision == pl.COMPARE:
            self.lister.touch(s.name)  # it may copy
            assert d is not None
            self._apply(copies.compare(s, d))
        else:
            assert d is not None and decision == pl.MTIME
            src_ns, dst_ns = copies.mtimes(s, d)
            if pl.same_mtime(src_ns, dst_ns, copies.precision_ns):
                self.c.files_unchanged += 1
                copies.record(s.name, s.sig, d.sig)
            else:
                self._start_copy(copies.item(s, pl.UPDATE))

    def _start_copy(self, item: Any) -> None:
        c = self.c
        if self._objects is not None and item.info.storage_class in ARCHIVED:
            self._archived(item.rel, item.info.storage_class, "to copy it")
            return
        if self.backup_dir and item.action == "update":
            if self.tree is not None:
                self._keep(item.rel, None, replaced=True)
            else:
                try:
                    self._keep_object(item.rel)
                except OSError as exc:
                    self._fail(dest_error(exc, item.rel))
                    return
        item.started = True
        c.files_total += 1
        c.bytes_total += item.size
        if self.opts.dry_run:
            c.files_done += 1
            self.emit(p.FileDone(path=p.display_path(item.rel), action="plan-" + item.action,
                                 size=item.size))  # fmt: skip
            return
        self._apply(self.copies.begin(item))

    def _archived(self, name: str, storage_class: str, why: str) -> None:
        """A source object S3 keeps in an archive class: reported and skipped, never read."""
        self._warn("archived", name, f"stored in S3's {storage_class} class: not read {why}; "
                   "restore it in S3 first (aws s3api restore-object), then run again",
                   skipped=True)  # fmt: skip

    def _deleted(self, rel: str) -> None:
        self.c.files_deleted += 1
        self.emit(p.FileDone(path=p.display_path(rel),
                             action="plan-delete" if self.opts.dry_run else "delete", size=0))

    def _src_mtime(self, s: Any) -> int:
        """A source object's mtime for --min-age / --max-age (one HEAD where the listing
        lacks it, as S3's does)."""
        if s.mtime_ns is not None:
            return int(s.mtime_ns)
        assert self.stores is not None
        return int(self.stores[0].stat_info(s.name).mtime_ns or 0)

    def _settle_deletions(self) -> None:
        """--mirror: delete what the source no longer has, unless a guard withholds it all."""
        o = self.opts
        if self.tree is not None:
            doomed = self.doomed
            count, total = len(doomed), self.dst_entries
            if parse_max_delete(o.max_delete) != (None, None) and not o.dry_run:
                # Each entry below a doomed directory counts, as rsync's --max-delete does.
                below = sum(self.tree.count_below(rel) for rel, kind in doomed if kind == DIR)
                count, total = count + below, total + below
        else:
            count = len(self.gone)
            total = len(self.lister.dstl) + len(self.lister.dst_excluded)
        if not count:
            return
        then = None
        if self.ledger.db is not None:
            then = self.ledger.db.source_identity(self.ledger.job.id)
        now = self.identity or guards.remote_identity(self.c.files_scanned)
        why = guards.judge(source=o.source, deletions=count, destination_entries=total,
                           source_files=self.c.files_scanned, then=then, now=now,
                           limit=parse_max_delete(o.max_delete),
                           force=o.force_delete)  # fmt: skip
        if why is not None:
            self.c.deletes_withheld = count
            self.withheld = DeletionsWithheld(why)
            return
        if self.tree is None:
            self._delete_gone()
            return
        for rel, kind in self.doomed:
            if self.stopping:
                return
            self._deleted(rel)
            try:
                if self.backup_dir:
                    self._keep(rel, kind, replaced=False)
                elif not o.dry_run:
                    self.tree.delete(rel, kind)
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno in (errno.EROFS, errno.EIO):
                    self._fail(dest_error(exc, self.tree.dst_path(rel)))
                    return
                self._warn("io", rel, f"could not delete: {exc.strerror or exc}")
        self.doomed.clear()

    def _delete_gone(self) -> None:
        """--mirror with a remote destination: what the source no longer has, in batches."""
        names, step = self.gone, self._objects.DELETE_BATCH
        for i in range(0, len(names), step):
            batch = names[i : i + step]
            if not self.opts.dry_run or self.backup_dir:
                try:
                    if self.backup_dir:
                        for name in batch:
                            self._keep_object(name)
                    if not self.opts.dry_run:
                        self.copies.delete_many(batch)
                except OSError as exc:
                    self._fail(dest_error(exc, batch[0]))
                    return
            for name in batch:
                self.lister.touch(name)
                self._deleted(name)

    # ---- outcomes -----------------------------------------------------------------------

    def _apply(self, outcomes: list[Outcome]) -> None:
        c = self.c
        for out in outcomes:
            if isinstance(out, Moved):
                c.bytes_done += out.copied + out.resumed
                c.bytes_copied += out.copied
                c.bytes_resumed += out.resumed
                self.ledger.blocks_since_ckpt += out.recorded
            elif isinstance(out, Done):
                c.files_done += 1
                c.files_copied += 1
                self.server_copies += out.server_side
                self.emit(p.FileDone(path=p.display_path(out.rel), action=out.action,
                                     size=out.size))  # fmt: skip
            elif isinstance(out, Same):
                c.files_unchanged += 1
                if out.meta:  # an attributes-only update, as between trees (META)
                    c.files_meta += 1
                    self.emit(p.FileDone(path=p.display_path(out.rel), action="meta", size=0))
            elif isinstance(out, Differs):
                self._start_copy(out.item)
            elif isinstance(out, Dropped):
                c.files_total -= 1
                c.bytes_total -= out.size
                c.bytes_done -= out.done
            elif isinstance(out, Changed):
                self._again(out.item)
            elif isinstance(out, Warn):
                self._warn(out.msgid, out.rel, out.message, out.skipped)
                self.partial |= out.partial
            elif isinstance(out, Hidden):
                c.names_unlisted += out.names
                c.temps_removed += out.removed
                if out.names:
                    self._warn("unlisted", "", out.why)
            elif isinstance(out, Fatal):
                self._fail(out.error)

    def _again(self, item: Any) -> None:
        """The source changed while copied: copy it again, up to MAX_SOURCE_CHANGES times."""
        if item.attempts + 1 >= MAX_SOURCE_CHANGES or self.stopping:
            self._warn("changed", item.rel, f"changed while being copied {item.attempts + 1} "
                       "times; skipped, run again once it is stable", skipped=True)  # fmt: skip
            return
        fresh = self.copies.again(item)
        if fresh is None:
            self._warn("vanished", item.rel, "vanished from the source while being copied")
            return
        self._start_copy(fresh)

    def _warn(self, msgid: str, rel: str, message: str, skipped: bool = False) -> None:
        self.c.warnings += 1
        if skipped:
            self._skipped(rel, msgid, message)
        self.emit(p.Warning(msgid=msgid, path=p.display_path(rel), message=message))

    def _skipped(self, rel: str, msgid: str, message: str) -> None:
        """An entry missing from the destination after this run (exit code 1)."""
        self.c.skipped.append(p.display_path(rel))
        self.ledger.skipped(rel, msgid, message)

    def _on_death(self, death: WorkerDeath[Any]) -> None:
        self.emit(p.Warning(msgid="worker_died", path="",
                            message=f"worker {death.worker} exited with code {death.exitcode}; "
                            f"requeued {death.lost} task(s) on a new worker"))  # fmt: skip
        for rec in death.given_up:
            self._fail(WorkerFailed(
                f"worker processes died {rec.deaths} times on {rec.kind} of "
                f"{p.display_path(rec.owner.rel)} (last exit code {death.exitcode}); the run "
                "stopped with progress checkpointed; check memory limits and the file"
            ))  # fmt: skip
            self._apply(self.copies.lost(rec))

    def _summary(self, code: int) -> p.Summary:
        c = self.c
        return p.Summary(
            job_id=self.ledger.job.id, run_id=self.ledger.run_id, exit_code=int(code),
            files_scanned=c.files_scanned, files_copied=c.files_copied,
            files_unchanged=c.files_unchanged, files_deleted=c.files_deleted,
            dirs_created=c.dirs_created, links_created=c.links_created,
            bytes_copied=c.bytes_copied, bytes_resumed=c.bytes_resumed,
            bytes_total=c.bytes_total, warnings=c.warnings, skipped=c.skipped[:1000],
            elapsed_s=round(time.monotonic() - c.t0, 3), dry_run=self.opts.dry_run,
            files_server_side=self.server_copies, names_unlisted=c.names_unlisted,
            temps_removed=c.temps_removed, deletes_withheld=c.deletes_withheld,
            files_backed_up=c.files_backed_up,
        )  # fmt: skip
