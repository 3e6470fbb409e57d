"""Restore files of a snapshot into a target directory: byte-identical, with metadata, resumable,
and confined to the target by construction.

The target is opened once (orbit_fast.confine.Tree) and every entry is made relative to its
parent directory's descriptor, following no symlink: the snapshot's paths were checked when it
was decoded (repo/snapshot.py: clean, unique, each below a directory listed before it), and
what is already in the target is never written through. A file is written to a temp file
created O_EXCL | O_NOFOLLOW beside its final name, every chunk checked against its id on the
way (a damaged chunk fails that file only, named in a warning), given its mode and times on
its descriptor, and renamed into place (renameat replaces a link at the name, never follows
it). A directory is made 0700 and kept so until the end; an entry of another kind at its name
(a symlink to elsewhere, say) is removed first. Symlinks, then directory modes, owners and
times, are applied last, deepest first, as tar's delayed directory restore does: nothing is
written into a directory after its final mode, and no symlink exists while files are written.

Owners and the setuid, setgid and sticky bits are applied only when running as root, and only
to entries this restore created (never to a directory that was already there); otherwise those
bits are dropped. A rerun skips files already in place (a regular file of the same size and
mtime), so an interrupted restore resumes.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections.abc import Callable

from orbit_fast import progress as p
from orbit_fast.cancel import CancelToken
from orbit_fast.compression import CorruptBlob, decompress
from orbit_fast.confine import Tree
from orbit_fast.errors import DestinationError, ExitCode, IntegrityError, Interrupted, UsageError
from orbit_fast.hashing import chunk_id
from orbit_fast.index.universe import Universe
from orbit_fast.names import shown
from orbit_fast.repo import snapshot as snapfmt
from orbit_fast.repo.repository import Repository
from orbit_fast.repo.snapshot import Node
from orbit_fast.roots import Reached, check_run, open_end

TMP_SUFFIX = ".orbit-restore.tmp"
NAME_MAX = 255
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_TMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_PLAIN_BITS = 0o777  # what a restore that is not root, or did not create the entry, applies


def select(nodes: list[Node], paths: tuple[str, ...], parents: bool = True) -> list[Node]:
    """The nodes at or below any of `paths` (all of them when none is given), plus (with
    `parents`) the directories above them, so that they are created with their metadata."""
    if not paths:
        return nodes
    want = [os.fsencode(x.strip("/")) for x in paths]
    keep: set[bytes] = set()
    for n in nodes:
        if any(w == b"" or n.path == w or n.path.startswith(w + b"/") for w in want):
            keep.add(n.path)
            if parents:
                parts = n.path.split(b"/")
                keep.update(b"/".join(parts[:i]) for i in range(len(parts)))
    missing = [x for x, w in zip(paths, want, strict=True) if w and w not in keep]
    if missing:
        raise UsageError(f"not in the snapshot: {', '.join(shown(x) for x in missing)}")
    return [n for n in nodes if n.path in keep]


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


class _Chain:
    """Open descriptors of the directories from the target down to the one last used: nodes
    come parents first, so a node's directory is on the chain or a descendant of its end. At
    most one descriptor per level is open."""

    def __init__(self, tree: Tree) -> None:
        self.tree = tree
        self.dirs: list[tuple[bytes, int]] = [(b"", tree.fd)]

    def fd(self, rel: bytes) -> int:
        """A descriptor of the directory `rel` (b"": the target), opened without following."""
        dirs = self.dirs
        while len(dirs) > 1 and not (rel == dirs[-1][0] or rel.startswith(dirs[-1][0] + b"/")):
            os.close(dirs.pop()[1])
        if dirs[-1][0] != rel:
            self.push(rel, self.tree.open_dir(rel))
        return dirs[-1][1]

    def push(self, rel: bytes, fd: int) -> None:
        self.dirs.append((rel, fd))

    def close(self) -> None:
        while len(self.dirs) > 1:
            os.close(self.dirs.pop()[1])


def restore(repo: Repository, universe: Universe, snap: snapfmt.Snapshot, target: str,
            paths: tuple[str, ...], on_event: Callable[[p.Event], None],
            cancel: CancelToken,
            allowed_roots: tuple[str, ...] = ()) -> p.RestoreSummary:  # fmt: skip
    t0 = time.monotonic()
    target = os.path.abspath(target)
    reached = check_run((("restore target", target),), allowed_roots)
    repo.sync_index(universe)
    nodes = select(snap.nodes, paths)
    tree, target_created = open_target(target, reached.get("restore target"))
    try:
        return _Restore(repo, universe, tree, target_created, on_event).run(nodes, cancel, t0)
    finally:
        tree.close()


class _Restore:
    """One restore into an opened target: what it created, its counters and problems."""

    def __init__(self, repo: Repository, universe: Universe, tree: Tree, target_created: bool,
                 on_event: Callable[[p.Event], None]) -> None:  # fmt: skip
        self.repo, self.universe, self.tree, self.on_event = repo, universe, tree, on_event
        self.key = repo.config.key_bytes
        self.as_root = os.geteuid() == 0
        self.created: set[bytes] = {b""} if target_created else set()  # directories
        self.counters = p.Counters()
        self.problems: list[str] = []

    def run(self, nodes: list[Node], cancel: CancelToken, t0: float) -> p.RestoreSummary:
        counters = self.counters
        counters.bytes_total = sum(n.size for n in nodes if n.kind == snapfmt.FILE)
        counters.files_total = sum(1 for n in nodes if n.kind == snapfmt.FILE)
        counters.scan_done = True
        restored = skipped = 0
        last = 0.0
        chain = _Chain(self.tree)
        try:
            for node in nodes:  # files and directories; links and metadata come after
                if cancel.cancelled:
                    raise Interrupted("restore interrupted; rerun it to resume",
                                      cancel.exit_code or ExitCode.INTERRUPTED)  # fmt: skip
                if node.kind == snapfmt.LINK or not node.path:
                    continue
                parent, _, name = node.path.rpartition(b"/")
                try:
                    pfd = chain.fd(parent)
                    if node.kind == snapfmt.DIR:
                        chain.push(node.path, self._make_dir(pfd, name, node.path))
                    elif self._in_place(pfd, name, node):
                        skipped += 1
                        counters.bytes_done += node.size
                    elif self._file(pfd, name, node):
                        restored += 1
                except OSError as exc:
                    raise self._error(node.path, exc) from exc
                now = time.monotonic()
                if now - last >= 0.25:
                    last = now
                    counters.files_done = restored + skipped
                    self.on_event(counters.progress(0))
        finally:
            chain.close()
        self._finish(nodes)
        problems = self.problems
        summary = p.RestoreSummary(
            exit_code=int(ExitCode.INTEGRITY if problems else ExitCode.OK),
            files_restored=restored, files_skipped=skipped, bytes_total=counters.bytes_total,
            problems=problems, elapsed_s=round(time.monotonic() - t0, 3),
        )  # fmt: skip
        self.on_event(summary)
        if problems:
            raise IntegrityError(
                f"{len(problems)} files could not be restored because chunks are missing or "
                f"damaged (first: {problems[0]}); every other file was restored. Run "
                "`orbit-fast verify` to see what else is affected"
            )
        return summary

    def _error(self, rel: bytes, exc: OSError) -> DestinationError:
        return DestinationError(f"cannot restore {shown(self.tree.show(rel))}: "
                                f"{exc.strerror or exc}")  # fmt: skip

    def _mode(self, node: Node, created: bool) -> int:
        return node.mode & (0o7777 if self.as_root and created else _PLAIN_BITS)

    # ---- first pass: directories and files ----------------------------------------------------

    def _make_dir(self, pfd: int, name: bytes, rel: bytes) -> int:
        """The directory `name` in `pfd`, made 0700 unless one is there; whatever else is at
        the name (a symlink to elsewhere, a file) is removed first, never followed."""
        try:
            os.mkdir(name, 0o700, dir_fd=pfd)
            self.created.add(rel)
        except FileExistsError:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                os.unlink(name, dir_fd=pfd)
                os.mkdir(name, 0o700, dir_fd=pfd)
                self.created.add(rel)
        # O_NOFOLLOW: a link swapped in since the mkdir fails here (ELOOP), it is not entered.
        return os.open(name, _DIR_FLAGS, dir_fd=pfd)

    @staticmethod
    def _in_place(pfd: int, name: bytes, node: Node) -> bool:
        """A regular file of the node's size and mtime is already at the name (resume)."""
        try:
            have = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return (stat.S_ISREG(have.st_mode) and have.st_size == node.size
                and have.st_mtime_ns == node.mtime_ns)  # fmt: skip

    def _file(self, pfd: int, name: bytes, node: Node) -> bool:
        """Write one file; False (and a problem listed) if a chunk is missing or damaged."""
        bad = self._write(pfd, name, node)
        if bad:
            where = shown(node.path)
            self.problems.append(f"{where}: {bad}")
            self.on_event(p.Warning(msgid="integrity", path=where, message=bad))
        return not bad

    def _write(self, pfd: int, name: bytes, node: Node) -> str | None:
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
                    data = decompress(self.repo.read_blob(loc), max_bytes=max_raw)
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
            if self.as_root:  # before the mode: chown clears the setuid and setgid bits
                os.fchown(fd, node.uid, node.gid)
            os.fchmod(fd, self._mode(node, created=True))
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

    # ---- last pass: links, then directory metadata, deepest first -----------------------------

    def _finish(self, nodes: list[Node]) -> None:
        chain = _Chain(self.tree)
        try:
            # Reversed parents-first order: every entry of a directory before the directory.
            for node in reversed(nodes):
                if node.kind == snapfmt.FILE:
                    continue
                try:
                    if node.kind == snapfmt.LINK:
                        parent, _, name = node.path.rpartition(b"/")
                        self._link(chain.fd(parent), name, node)
                    else:
                        self._dir_meta(chain.fd(node.path), node)
                except OSError as exc:
                    raise self._error(node.path, exc) from exc
        finally:
            chain.close()

    def _link(self, pfd: int, name: bytes, node: Node) -> None:
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
            os.chown(name, node.uid, node.gid, dir_fd=pfd, follow_symlinks=False)
        os.utime(name, ns=(node.atime_ns, node.mtime_ns), dir_fd=pfd, follow_symlinks=False)

    def _dir_meta(self, fd: int, node: Node) -> None:
        created = node.path in self.created
        if self.as_root and created:
            os.fchown(fd, node.uid, node.gid)
        os.fchmod(fd, self._mode(node, created))
        os.utime(fd, ns=(node.atime_ns, node.mtime_ns))


def _tmp_name(name: bytes) -> bytes:
    """The temp file beside `name`: ".<name>.orbit-restore.tmp", or for a name too long for
    that, one made from its hash (still one per name, so a rerun finds it)."""
    tmp = b"." + name + TMP_SUFFIX.encode()
    if len(tmp) <= NAME_MAX:
        return tmp
    return b"." + hashlib.blake2b(name, digest_size=16).hexdigest().encode() + TMP_SUFFIX.encode()

