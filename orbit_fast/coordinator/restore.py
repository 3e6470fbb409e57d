"""Restore files of a snapshot into a target directory: byte-identical, with metadata, resumable,
and confined to the target by construction.

The snapshot's trees are read depth first, one directory at a time (repo/trees.py), and every
entry is made relative to its parent directory's descriptor, following no symlink: each name
was checked when its tree was decoded (repo/tree.py: one clean component, none twice), and
what is already in the target is never written through. Memory: the open directories on the
current path and their entries, not the snapshot's file count. A file is written to a temp file
created O_EXCL | O_NOFOLLOW beside its final name, every chunk checked against its id on the
way (a damaged chunk fails that file only, named in a warning), given its mode and times on
its descriptor, and renamed into place (renameat replaces a link at the name, never follows
it). A directory is made 0700 and kept so until its last entry is done; an entry of another
kind at its name (a symlink to elsewhere, say) is removed first. A directory's symlinks, then
its mode, owner and times, are applied once everything below it is done, deepest first, as
tar's delayed directory restore does: nothing is written into a directory after its final
mode, and no symlink exists in a directory while anything is written below it.

Owners and the setuid, setgid and sticky bits are applied only when running as root, and only
to entries this restore created (never to a directory that was already there); otherwise those
bits are dropped. Owners are restored by name where the snapshot has one that this system
knows (as tar and restic do), else by id; `numeric_ids` always by id. xattrs and POSIX ACLs
are set on the temp file's descriptor before its rename (on a directory's before its mode);
what the target or this user cannot take (trusted.* and security.* need root, device nodes
too) is reported once per kind, exit code 1. Names of one inode in the snapshot (hard links)
are restored as links to the first one restored; fifos and device nodes are made. A rerun
skips files already in place (a regular file of the same size and mtime), so an interrupted
restore resumes.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import stat
import time
from collections.abc import Callable, Iterator

from orbit_fast import progress as p
from orbit_fast.cancel import CancelToken
from orbit_fast.compression import CorruptBlob, decompress
from orbit_fast.confine import Tree
from orbit_fast.errors import (
    AuthenticationFailed,
    DestinationError,
    ExitCode,
    IntegrityError,
    Interrupted,
    UsageError,
)
from orbit_fast.fsmeta import set_xattrs
from orbit_fast.hashing import chunk_id
from orbit_fast.index.universe import Universe
from orbit_fast.messages import KEEP_ACLS, KEEP_XATTRS
from orbit_fast.names import shown
from orbit_fast.repo import snapshot as snapfmt
from orbit_fast.repo.repository import Repository
from orbit_fast.repo.tree import BLK, CHR, DIR, FIFO, LINK, SPECIALS, Entry, components, join
from orbit_fast.repo.trees import TreeReader
from orbit_fast.roots import Reached, check_run, open_end

TMP_SUFFIX = ".orbit-restore.tmp"
NAME_MAX = 255
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_TMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_PLAIN_BITS = 0o777  # what a restore that is not root, or did not create the entry, applies


# Which entries of a directory to restore: None is all of them; a dict maps the names wanted
# to what is wanted below each (None: the whole entry).
Want = dict[bytes, "Want"] | None


def select(reader: TreeReader, snap: snapfmt.Snapshot, paths: tuple[str, ...]) -> Want:
    """What `paths` (none: everything) ask for, each checked to be in the snapshot by reading
    only the trees on its path; UsageError naming the ones that are not."""
    if not paths:
        return None
    want: dict[bytes, Want] = {}
    missing = []
    for x in paths:
        parts = components(x)
        if not parts:
            return None
        if reader.find(snap.root, parts) is None:
            missing.append(x)
            continue
        node: dict[bytes, Want] = want
        for i, name in enumerate(parts):
            last = i == len(parts) - 1
            if name in node and node[name] is None:
                break  # an ancestor is wanted whole already
            if last:
                node[name] = None
            else:
                sub = node.setdefault(name, {})
                assert sub is not None
                node = sub
    if missing:
        raise UsageError(f"not in the snapshot: {', '.join(shown(x) for x in missing)}")
    return want


def open_target(target: str, reached: Reached | None = None) -> tuple[Tree, bool]:
    """The target directory, opened once (created with its parents if missing), and whether
    this call created it. The operator names it: its own path may go through links he made;
    with allowed roots, it is opened (and created) below what their check `reached`."""
    try:
        created = not os.path.lexists(target)
        return (open_end("restore target", target, reached, create=True, mode=0o700),
                created)  # fmt: skip
    except OSError as exc:
        raise DestinationError(
            f"cannot create the restore target {target}: {exc.strerror}"
        ) from exc


def restore(repo: Repository, universe: Universe, snap: snapfmt.Snapshot, target: str,
            paths: tuple[str, ...], on_event: Callable[[p.Event], None],
            cancel: CancelToken, allowed_roots: tuple[str, ...] = (),
            numeric_ids: bool = False) -> p.RestoreSummary:  # fmt: skip
    t0 = time.monotonic()
    target = os.path.abspath(target)
    reached = check_run((("restore target", target),), allowed_roots)
    repo.sync_index(universe)
    reader = TreeReader(repo, universe)
    want = select(reader, snap, paths)  # before anything is written
    run = _Restore(repo, universe, reader, on_event, numeric_ids)
    # The root's first entry is taken before the target is made: a root tree that is refused
    # makes no target (and is read once).
    root_todo = run.todo(b"", snap.root, want)
    first = next(root_todo, None)
    todo = root_todo if first is None else itertools.chain((first,), root_todo)
    tree, target_created = open_target(target, reached.get("restore target"))
    try:
        return run.run(tree, snap, want, todo, target_created, cancel, t0)
    finally:
        tree.close()


class _Frame:
    """A directory being restored: its descriptor, the entries still to do, its links (made
    when it is done) and whether this restore created it."""

    __slots__ = ("rel", "entry", "fd", "todo", "links", "created")

    def __init__(self, rel: bytes, entry: Entry, fd: int, todo: Iterator[tuple[Entry, Want]],
                 created: bool) -> None:  # fmt: skip
        self.rel, self.entry, self.fd, self.todo, self.created = rel, entry, fd, todo, created
        self.links: list[Entry] = []


class _Restore:
    """One restore into an opened target: its counters and problems."""

    tree: Tree  # the target, from run()

    def __init__(self, repo: Repository, universe: Universe, reader: TreeReader,
                 on_event: Callable[[p.Event], None],
                 numeric_ids: bool = False) -> None:  # fmt: skip
        self.repo, self.universe, self.reader = repo, universe, reader
        self.on_event = on_event
        self.numeric_ids = numeric_ids
        self.ids: dict[tuple[str, str], int] = {}  # ("u"|"g", name) -> this system's id
        # Files of several links restored so far: (dev, ino) -> path below the target.
        self.first_link: dict[tuple[int, int], bytes] = {}
        self.lost = 0  # messages.KEEP_* bits the target refused (said once each)
        self.no_devices = False
        self.key = repo.config.key_bytes
        self.as_root = os.geteuid() == 0
        self.counters = p.Counters()
        self.problems: list[str] = []
        self.auth_failed = False  # a problem was an object failing authentication
        # Each blob is opened into this, then decompressed out of it (into new bytes): sized
        # for the largest chunk at once, as views of it outlive a chunk's turn.
        self.blob_buf = bytearray(repo.config.max_size + 64) if repo.encrypted else None

    def todo(self, rel: bytes, d: Entry, want: Want) -> Iterator[tuple[Entry, Want]]:
        """The entries of directory `d` to restore, with what is wanted below each: all of
        them (in name order, a page at a time), or only the names asked for (the tree read
        once, and of a paged directory only the pages that hold them)."""
        if want is None:
            for e in self.reader.entries(d.subtree, rel):
                yield e, None
            return
        names = sorted(want)
        for name, found in zip(names, self.reader.lookup_many(d.subtree, names, rel),
                               strict=True):  # fmt: skip
            if found is not None and (want[name] is None or found.kind == DIR):
                yield found, want[name]

    def run(self, tree: Tree, snap: snapfmt.Snapshot, want: Want,
            todo: Iterator[tuple[Entry, Want]], target_created: bool, cancel: CancelToken,
            t0: float) -> p.RestoreSummary:  # fmt: skip
        """Restore into `tree`; `todo` is the root's (todo(b"", snap.root, want))."""
        self.tree = tree
        counters = self.counters
        if want is None:
            counters.bytes_total, counters.files_total = snap.bytes_total, snap.files_total
            counters.scan_done = True
        restored = skipped = 0
        placed = 0  # bytes of the files restored or already in place: what the summary says
        last = 0.0
        stack = [_Frame(b"", snap.root, tree.fd, todo, target_created)]
        try:
            while stack:
                if cancel.cancelled:
                    raise Interrupted("restore interrupted; rerun it to resume",
                                      cancel.exit_code or ExitCode.INTERRUPTED)  # fmt: skip
                top = stack[-1]
                try:
                    item = next(top.todo, None)
                except IntegrityError as exc:  # its tree (or a page): the rest is restored
                    where = shown(top.rel) or "/"
                    self.problems.append(f"{where}: {exc}")
                    self.auth_failed |= isinstance(exc, AuthenticationFailed)
                    self.on_event(p.Warning(msgid="integrity", path=where, message=str(exc)))
                    item = None
                if item is None:  # everything below it is done: its links, then its metadata
                    try:
                        for link in top.links:
                            self._link(top.fd, link)
                        self._dir_meta(top.fd, top.rel, top.entry, top.created)
                    except OSError as exc:
                        raise self._error(top.rel, exc) from exc
                    stack.pop()
                    if stack:
                        os.close(top.fd)
                    continue
                e, below = item
                rel = join(top.rel, e.name)
                try:
                    if e.kind == DIR:
                        fd, created = self._make_dir(top.fd, e.name)
                        stack.append(_Frame(rel, e, fd, self.todo(rel, e, below), created))
                    elif e.kind == LINK:
                        top.links.append(e)
                    elif e.kind in SPECIALS:
                        self._special(top.fd, rel, e)
                    elif e.links > 1 and (e.dev, e.ino) in self.first_link:
                        if want is not None:
                            counters.files_total += 1
                            counters.bytes_total += e.size
                        self._hard_link(top.fd, self.first_link[(e.dev, e.ino)], e)
                        counters.bytes_done += e.size
                        placed += e.size
                        restored += 1
                    else:
                        if want is not None:
                            counters.files_total += 1
                            counters.bytes_total += e.size
                        if self._in_place(top.fd, e):
                            skipped += 1
                            counters.bytes_done += e.size
                            placed += e.size
                        elif self._file(top.fd, rel, e):
                            restored += 1
                            placed += e.size
                        else:
                            continue
                        if e.links > 1:
                            self.first_link[(e.dev, e.ino)] = rel
                except OSError as exc:
                    raise self._error(rel, exc) from exc
                now = time.monotonic()
                if now - last >= 0.25:
                    last = now
                    counters.files_done = restored + skipped
                    self.on_event(counters.progress(0))
        finally:
            for frame in stack[1:]:
                os.close(frame.fd)
        counters.scan_done = True
        problems = self.problems
        summary = p.RestoreSummary(
            exit_code=int(ExitCode.AUTHENTICATION if self.auth_failed else
                          ExitCode.INTEGRITY if problems else
                          ExitCode.PARTIAL if self.lost or self.no_devices else ExitCode.OK),
            files_restored=restored, files_skipped=skipped, bytes_total=placed,
            problems=problems, elapsed_s=round(time.monotonic() - t0, 3),
        )  # fmt: skip
        self.on_event(summary)
        if problems:
            error = AuthenticationFailed if self.auth_failed else IntegrityError
            raise error(
                f"{len(problems)} {'entry' if len(problems) == 1 else 'files or directories'} "
                "could not be restored because chunks "
                f"or trees are missing, damaged or fail authentication (first: {problems[0]}); "
                "every other file was restored. Run `orbit-fast verify` to see what else is "
                "affected"
            )
        return summary

    def _error(self, rel: bytes, exc: OSError) -> DestinationError:
        return DestinationError(f"cannot restore {shown(self.tree.show(rel))}: "
                                f"{exc.strerror or exc}")  # fmt: skip

    def _mode(self, node: Entry, created: bool) -> int:
        return node.mode & (0o7777 if self.as_root and created else _PLAIN_BITS)

    # ---- first pass: directories and files ----------------------------------------------------

    def _make_dir(self, pfd: int, name: bytes) -> tuple[int, bool]:
        """The directory `name` in `pfd`, made 0700 unless one is there, and whether this
        made it; whatever else is at the name (a symlink to elsewhere, a file) is removed
        first, never followed."""
        created = False
        try:
            os.mkdir(name, 0o700, dir_fd=pfd)
            created = True
        except FileExistsError:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                os.unlink(name, dir_fd=pfd)
                os.mkdir(name, 0o700, dir_fd=pfd)
                created = True
        # O_NOFOLLOW: a link swapped in since the mkdir fails here (ELOOP), it is not entered.
        return os.open(name, _DIR_FLAGS, dir_fd=pfd), created

    @staticmethod
    def _in_place(pfd: int, node: Entry) -> bool:
        """A regular file of the entry's size and mtime is already at its name (resume)."""
        try:
            have = os.stat(node.name, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return (stat.S_ISREG(have.st_mode) and have.st_size == node.size
                and have.st_mtime_ns == node.mtime_ns)  # fmt: skip

    def _file(self, pfd: int, rel: bytes, node: Entry) -> bool:
        """Write one file; False (and a problem listed) if a chunk is missing or damaged."""
        bad = self._write(pfd, rel, node)
        if bad:
            where = shown(rel)
            self.problems.append(f"{where}: {bad}")
            self.on_event(p.Warning(msgid="integrity", path=where, message=bad))
        return not bad

    def _write(self, pfd: int, rel: bytes, node: Entry) -> str | None:
        name = node.name
        ids = node.chunk_ids()
        locs = self.universe.locate(self.repo.id, ids)
        for cid, loc in zip(ids, locs, strict=True):
            if loc is None:
                return f"chunk {cid.hex()[:16]} is missing from the repository"
        tmp = _tmp_name(name)
        try:
            fd = os.open(tmp, _TMP_FLAGS, 0o600, dir_fd=pfd)
        except FileExistsError:  # left by an interrupted restore (or anything else): not ours
            os.unlink(tmp, dir_fd=pfd)
            fd = os.open(tmp, _TMP_FLAGS, 0o600, dir_fd=pfd)
        done = False
        max_raw = self.repo.config.max_size
        try:
            written = 0
            for cid, loc in zip(ids, locs, strict=True):
                assert loc is not None
                try:
                    blob = self.repo.read_blob(cid, loc, into=self.blob_buf)
                    data = decompress(blob, max_bytes=max_raw)
                except AuthenticationFailed:
                    self.auth_failed = True
                    return f"chunk {cid.hex()[:16]} failed authentication (changed or moved)"
                except CorruptBlob as exc:
                    return f"chunk {cid.hex()[:16]} is damaged ({exc})"
                if chunk_id(self.key, data) != cid:
                    return f"chunk {cid.hex()[:16]} is damaged (its content does not match its id)"
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                written += len(data)
                self.counters.bytes_done += len(data)
            if written != node.size:
                return f"its chunks hold {written} bytes, the snapshot says {node.size}"
            self._meta(fd, rel, node, created=True)
            os.utime(fd, ns=(node.atime_ns, node.mtime_ns))
            os.rename(tmp, name, src_dir_fd=pfd, dst_dir_fd=pfd)
            done = True
        finally:
            os.close(fd)
            if not done:
                try:
                    os.unlink(tmp, dir_fd=pfd)
                except FileNotFoundError:
                    pass
        return None

    # ---- when a directory is done: its links, then its metadata ------------------------------

    def _link(self, pfd: int, node: Entry) -> None:
        name = node.name
        try:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            pass
        else:
            if stat.S_ISLNK(st.st_mode) and os.readlink(name, dir_fd=pfd) == node.target:
                return  # in place (resume)
            os.unlink(name, dir_fd=pfd)  # a directory there is an error, as it was
        os.symlink(node.target, name, dir_fd=pfd)
        if self.as_root:
            os.chown(name, *self._owner(node), dir_fd=pfd, follow_symlinks=False)
        os.utime(name, ns=(node.atime_ns, node.mtime_ns), dir_fd=pfd, follow_symlinks=False)

    def _dir_meta(self, fd: int, rel: bytes, node: Entry, created: bool) -> None:
        if created:
            self._meta(fd, rel, node, created)
        else:
            os.fchmod(fd, self._mode(node, created))
        os.utime(fd, ns=(node.atime_ns, node.mtime_ns))

    # ---- metadata beyond mode and times ------------------------------------------------------

    def _owner(self, node: Entry) -> tuple[int, int]:
        """The entry's owner on this system: by name where the snapshot has a name this
        system knows (tar's and restic's rule), else (and with numeric_ids) by id."""
        if self.numeric_ids:
            return node.uid, node.gid
        return (self._id("u", node.user, node.uid), self._id("g", node.group, node.gid))

    def _id(self, kind: str, name: str, default: int) -> int:
        if not name:
            return default
        got = self.ids.get((kind, name))
        if got is None:
            import grp
            import pwd

            try:
                got = pwd.getpwnam(name).pw_uid if kind == "u" else grp.getgrnam(name).gr_gid
            except KeyError:
                got = -1
            self.ids[(kind, name)] = got
        return default if got < 0 else got

    def _meta(self, at: int | str, rel: bytes, node: Entry, created: bool) -> None:
        """Owner (as root), xattrs and ACLs, then the mode, on an open fd (or a /proc/self/fd
        path): chown clears the setuid and setgid bits, and setting an ACL sets group bits."""
        if self.as_root:
            os.chown(at, *self._owner(node))
        if node.meta:
            self._xattrs(at, rel, node)
        os.chmod(at, self._mode(node, created))

    def _xattrs(self, at: int | str, rel: bytes, node: Entry) -> None:
        assert isinstance(node.meta, bytes)
        try:
            ms = self.reader.meta(node.meta)
        except IntegrityError as exc:
            where = shown(rel) or "."
            self.problems.append(f"{where}: {exc}")
            self.on_event(p.Warning(msgid="integrity", path=where, message=str(exc)))
            return
        xattrs = [(os.fsdecode(k), v) for k, v in ms.xattrs]
        if not self.as_root:  # what another user could never set: said once, not tried
            keep = [(k, v) for k, v in xattrs if k.startswith(("user.", "system.posix_acl_"))]
            if len(keep) != len(xattrs):
                self._lose(KEEP_XATTRS, rel)
            xattrs = keep
        self._lose(set_xattrs(at, xattrs), rel)

    def _lose(self, bits: int, rel: bytes) -> None:
        new = bits & ~self.lost
        if not new:
            return
        self.lost |= new
        what = " and ".join(name for bit, name in ((KEEP_XATTRS, "extended attributes"),
                                                   (KEEP_ACLS, "POSIX ACLs")) if new & bit)
        self.on_event(p.Warning(msgid="metadata", path=shown(rel) or ".", message=(
            f"the target does not take {what} (first at this entry; its filesystem lacks "
            "them, or this user may not set them: trusted.* and security.* need root): "
            "restored without them")))  # fmt: skip

    def _hard_link(self, pfd: int, first: bytes, node: Entry) -> None:
        """`node` made a link to `first` (restored earlier in this run), under a temp name
        and renamed into place; already one inode: left."""
        name = node.name
        with self.tree.parent(first) as (ffd, fname):
            src = os.stat(fname, dir_fd=ffd, follow_symlinks=False)
            try:
                have = os.stat(name, dir_fd=pfd, follow_symlinks=False)
                if (have.st_dev, have.st_ino) == (src.st_dev, src.st_ino):
                    return
            except FileNotFoundError:
                pass
            tmp = _fresh_tmp(pfd, name)
            os.link(fname, tmp, src_dir_fd=ffd, dst_dir_fd=pfd, follow_symlinks=False)
        os.rename(tmp, name, src_dir_fd=pfd, dst_dir_fd=pfd)

    def _special(self, pfd: int, rel: bytes, node: Entry) -> None:
        """A fifo or a device node (as root; otherwise said once and left out), made under a
        temp name with its metadata (through an O_PATH descriptor of it: never followed) and
        renamed into place; one already there alike is left."""
        name = node.name
        fmt = {FIFO: stat.S_IFIFO, CHR: stat.S_IFCHR, BLK: stat.S_IFBLK}[node.kind]
        try:
            have = os.stat(name, dir_fd=pfd, follow_symlinks=False)
            if stat.S_IFMT(have.st_mode) == fmt and have.st_rdev == node.rdev:
                return  # in place (resume)
        except FileNotFoundError:
            pass
        tmp = _fresh_tmp(pfd, name)
        try:
            os.mknod(tmp, fmt | 0o600, node.rdev, dir_fd=pfd)
        except PermissionError:
            if not self.no_devices:
                self.no_devices = True
                self.on_event(p.Warning(msgid="metadata", path=shown(rel) or ".", message=(
                    "a device node: only root may make one; left out (first of them)")))
            return
        fd = os.open(tmp, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
        try:
            self._meta(f"/proc/self/fd/{fd}", rel, node, created=True)
            os.utime(f"/proc/self/fd/{fd}", ns=(node.atime_ns, node.mtime_ns))
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=pfd, dst_dir_fd=pfd)


def _fresh_tmp(pfd: int, name: bytes) -> bytes:
    """The temp name beside `name` (_tmp_name), with whatever an interrupted restore left
    there removed (never followed)."""
    tmp = _tmp_name(name)
    try:
        os.unlink(tmp, dir_fd=pfd)
    except FileNotFoundError:
        pass
    return tmp


def _tmp_name(name: bytes) -> bytes:
    """The temp file beside `name`: ".<name>.orbit-restore.tmp", or for a name too long for
    that, one made from its hash (still one per name, so a rerun finds it)."""
    tmp = b"." + name + TMP_SUFFIX.encode()
    if len(tmp) <= NAME_MAX:
        return tmp
    return b"." + hashlib.blake2b(name, digest_size=16).hexdigest().encode() + TMP_SUFFIX.encode()

