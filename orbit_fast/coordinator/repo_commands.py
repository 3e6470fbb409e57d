"""The repository commands (docs/backup.md): init, snapshots, ls, diff, restore, verify, forget,
prune, unlock and index rebuild, as the CLI and embedders reach them through `orbit_fast.api`.

Each call opens the repository for itself (an s3:// one through `s3_endpoint`, else
ORBIT_S3_ENDPOINT) and closes it before it returns; the ones that change it or read chunk
locations hold its lock meanwhile. Results are plain data or the summary events of
orbit_fast.progress. The engine modules are imported by each call, so that importing api (the
CLI's start-up) stays cheap.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NamedTuple

from orbit_fast.cancel import CancelToken
from orbit_fast.config import resolve_state_paths
from orbit_fast.errors import OrbitError, UsageError
from orbit_fast.passwords import PasswordSource
from orbit_fast.progress import Event, PruneSummary, RestoreSummary, VerifySummary

if TYPE_CHECKING:
    from orbit_fast.index.state_file import StateClaims
    from orbit_fast.index.universe import Universe
    from orbit_fast.repo.repository import Repository
    from orbit_fast.repo.tree import Entry as TreeEntry
    from orbit_fast.repo.trees import TreeReader


class SnapshotInfo(NamedTuple):
    """One snapshot as `list_snapshots` lists it (its header: no file list)."""

    id: str  # 64 hex digits; commands take any unique prefix
    time_ns: int
    hostname: str
    source: str
    tags: list[str]
    parent: str | None  # the snapshot this one was made against
    files_total: int
    bytes_total: int
    bytes_added: int  # stored (compressed) bytes of the chunks this backup added


class Entry(NamedTuple):
    """One file, directory or link of a snapshot, as `list_entries` lists it."""

    path: bytes  # relative to the backup root, "/"-joined; b"" is the root itself
    kind: str  # "f" file, "d" directory, "l" link, "p" fifo, "c" / "b" device
    mode: int
    size: int
    mtime_ns: int
    target: bytes  # a link's target, else b""
    chunks: int  # how many chunks the file's content is stored in
    uid: int = 0
    gid: int = 0
    user: str = ""  # the owner's name when the backup could resolve it
    group: str = ""
    links: int = 1  # names of this inode in the backup's source (hard links)
    xattrs: tuple[str, ...] = ()  # names of its xattrs, POSIX ACLs among them
    rdev: int = 0  # devices

    @property
    def acl(self) -> bool:
        """It has a POSIX ACL (access or default): `ls -l` shows "+", as GNU ls does."""
        return any(x.startswith("system.posix_acl_") for x in self.xattrs)


def warn(message: str) -> None:
    """A warning from opening a repository (a password file others can read): to stderr,
    where the CLI's and the hub's messages go."""
    import sys

    print(f"orbit-fast: warning: {message}", file=sys.stderr, flush=True)


def _quiet(ev: Event) -> None:
    pass


def init_repository(url: str, codec: str = "zstd:3", *, s3_endpoint: str = "",
                    password: PasswordSource | None = None,
                    insecure_no_encryption: bool = False) -> str:  # fmt: skip
    """Create an empty repository at `url`.

    Parameters
    ----------
    url
        A path, s3://bucket/prefix or smb://host/share/path; nothing may be there yet.
    codec
        The default compression of new chunks: none, lz4, zstd or zstd:N (1-19).
    s3_endpoint
        An S3-compatible server for an s3:// URL; "" is ORBIT_S3_ENDPOINT, else AWS.

    Returns
    -------
    str
        The new repository's id (32 hex digits).

    Raises
    ------
    UsageError
        `url` is already a repository, not empty, or `codec` is not a codec.
    DestinationError, DiskFull, RemoteError
        The config could not be written.
    """
    from orbit_fast.repo.repository import Repository

    repo = Repository.init(url, codec, s3_endpoint=s3_endpoint, password=password,
                           encrypt=not insecure_no_encryption, warn=warn)  # fmt: skip
    repo.close()
    return repo.id


@contextmanager
def locked_repository(url: str, operation: str, universe_path: str = "", db_path: str = "",
                      s3_endpoint: str = "", password: PasswordSource | None = None,
                      claims: StateClaims | None = None
                      ) -> Iterator[tuple[Repository, Universe]]:  # fmt: skip
    """The repository, locked, and the universe index (the operations that read chunk
    locations reconcile it with the repository themselves, once)."""
    from orbit_fast.index.universe import Universe
    from orbit_fast.repo.repository import Repository

    _, upath = resolve_state_paths(db_path, universe_path)
    with Repository.open(url, s3_endpoint, password=password, warn=warn) as repo:
        repo.lock(operation)
        with Universe.open(upath, claims) as universe:
            yield repo, universe


def list_snapshots(repository: str, *, s3_endpoint: str = "",
                   password: PasswordSource | None = None) -> list[SnapshotInfo]:  # fmt: skip
    """The snapshots of `repository`, oldest first (headers only: one small read each).

    Parameters
    ----------
    repository
        The repository's URL or path.
    s3_endpoint
        As for `init_repository`.

    Returns
    -------
    list of SnapshotInfo

    Raises
    ------
    RepositoryError
        Not a repository, or a snapshot header is damaged.
    """
    from orbit_fast.repo.repository import Repository

    with Repository.open(repository, s3_endpoint, password=password, warn=warn) as repo:
        snaps = repo.snapshots()
    return [SnapshotInfo(name, s.time_ns, s.hostname, s.source, s.tags, s.parent, s.files_total,
                         s.bytes_total, s.bytes_added) for name, s in snaps]  # fmt: skip


@contextmanager
def reading_repository(
    url: str, universe_path: str = "", db_path: str = "", s3_endpoint: str = "",
    password: PasswordSource | None = None, claims: StateClaims | None = None,
) -> Iterator[tuple[Repository, TreeReader]]:
    """The repository, not locked (reading trees while a backup adds packs is safe: packs
    are written whole), the universe reconciled with it, and a reader of its trees."""
    from orbit_fast.index.universe import Universe
    from orbit_fast.repo.repository import Repository
    from orbit_fast.repo.trees import TreeReader

    _, upath = resolve_state_paths(db_path, universe_path)
    with (Repository.open(url, s3_endpoint, password=password, warn=warn) as repo,
          Universe.open(upath, claims) as universe):  # fmt: skip
        repo.sync_index(universe)
        yield repo, TreeReader(repo, universe)


def list_dir(repository: str, snapshot: str, path: str = "", limit: int = 1000, *,
             universe_path: str = "", db_path: str = "", s3_endpoint: str = "",
             password: PasswordSource | None = None, claims: StateClaims | None = None
             ) -> tuple[Entry, list[Entry], bool]:  # fmt: skip
    """One directory of `snapshot` (a browser's view): its own entry, its first `limit`
    entries in name order, and whether there are more. Reads the trees on `path` and that
    directory's, nothing else."""
    from orbit_fast.repo.tree import DIR, join

    with reading_repository(repository, universe_path, db_path, s3_endpoint, password,
                            claims) as (repo, reader):  # fmt: skip
        at, top = _find(repo, reader, snapshot, path)
        if top.kind != DIR:
            return _listed(at, top, reader), [], False
        out: list[Entry] = []
        for e in reader.entries(top.subtree, at):
            if len(out) == limit:
                return _listed(at, top, reader), out, True
            out.append(_listed(join(at, e.name), e, reader))
        return _listed(at, top, reader), out, False


def list_entries(repository: str, snapshot: str, path: str = "", *, universe_path: str = "",
                 db_path: str = "", s3_endpoint: str = "",
                 password: PasswordSource | None = None) -> Iterator[Entry]:  # fmt: skip
    """What `snapshot` holds at or below `path` ("" or "/": everything), depth first: each
    directory before its entries, names in byte order. Streams: one directory's tree is held
    at a time, and only the trees on `path` and below it are read.

    Parameters
    ----------
    repository
        The repository's URL or path.
    snapshot
        "latest" or a unique prefix of a snapshot id.
    path
        A path relative to the backup root.
    universe_path, db_path
        The state files ("": the defaults): trees are found through the universe index.
    s3_endpoint
        As for `init_repository`.

    Yields
    ------
    Entry

    Raises
    ------
    UsageError
        No snapshot (or several) match `snapshot`, or `path` is not in it.
    RepositoryError, IntegrityError
        Not a repository, or a snapshot or tree is damaged (raised when it is reached).
    """
    from orbit_fast.repo.tree import DIR

    with reading_repository(repository, universe_path, db_path, s3_endpoint,
                            password) as (repo, reader):  # fmt: skip
        start, top = _find(repo, reader, snapshot, path)
        yield _listed(start, top, reader)
        if top.kind == DIR:
            for rel, e in _below(reader, start, top):
                yield _listed(rel, e, reader)


def _find(repo: Repository, reader: TreeReader, snapshot: str,
          path: str) -> tuple[bytes, TreeEntry]:  # fmt: skip
    """`path` of `snapshot`: ("/"-joined path, its entry); UsageError if it is not there."""
    from orbit_fast.names import shown
    from orbit_fast.repo.tree import components

    _, snap = repo.resolve(snapshot)
    parts = components(path)
    top = reader.find(snap.root, parts)
    if top is None:
        raise UsageError(f"not in the snapshot: {shown(path)}")
    return b"/".join(parts), top


def _listed(path: bytes, e: TreeEntry, reader: TreeReader) -> Entry:
    names: tuple[str, ...] = ()
    if e.meta:
        assert isinstance(e.meta, bytes)
        names = tuple(os.fsdecode(k) for k, _ in reader.meta(e.meta).xattrs)
    return Entry(path, e.kind, e.mode, e.size, e.mtime_ns, e.target, e.chunk_count, e.uid,
                 e.gid, e.user, e.group, e.links, names, e.rdev)  # fmt: skip


def _below(reader: TreeReader, rel: bytes, d: TreeEntry) -> Iterator[tuple[bytes, TreeEntry]]:
    """(path, entry) of everything below directory entry `d` at `rel`, depth first, each
    directory before its entries; one directory (a page of it) held per level."""
    from orbit_fast.repo.tree import DIR, join

    stack = [(rel, reader.entries(d.subtree, rel))]
    while stack:
        at, entries = stack[-1]
        e = next(entries, None)
        if e is None:
            stack.pop()
            continue
        child = join(at, e.name)
        yield child, e
        if e.kind == DIR:
            stack.append((child, reader.entries(e.subtree, child)))


def diff_snapshots(
    repository: str, snap1: str, snap2: str, *, universe_path: str = "", db_path: str = "",
    s3_endpoint: str = "", password: PasswordSource | None = None,
) -> Iterator[tuple[str, bytes]]:
    """What changed from `snap1` to `snap2` ("latest" or id prefixes). Streams, depth first;
    a subdirectory whose tree is the same in both is skipped without being read.

    Parameters
    ----------
    repository
        The repository's URL or path.
    snap1, snap2
        The older and the newer snapshot.
    universe_path, db_path, s3_endpoint
        As for `list_entries`.

    Yields
    ------
    (change, path)
        Each directory before its entries, names in byte order; change is "+" added, "-"
        removed (everything below an added or removed directory too), "M" content (or kind or
        link target) changed, "T" metadata only (mode, owner, mtime, xattrs and ACLs, hard
        links).

    Raises
    ------
    UsageError, RepositoryError, IntegrityError
        As for `list_entries`.
    """
    from orbit_fast.repo.snapshot import Snapshot
    from orbit_fast.repo.tree import DIR

    with reading_repository(repository, universe_path, db_path, s3_endpoint,
                            password) as (repo, reader):  # fmt: skip
        a: Snapshot = repo.resolve(snap1)[1]
        b: Snapshot = repo.resolve(snap2)[1]

        def below(sign: str, rel: bytes, e: TreeEntry) -> Iterator[tuple[str, bytes]]:
            """`sign` for everything below directory entry `e`."""
            for path, _ in _below(reader, rel, e):
                yield sign, path

        def changed(rel: bytes, x: TreeEntry, y: TreeEntry) -> Iterator[tuple[str, bytes]]:
            if (x.kind, x.chunks, x.target, x.rdev) != (y.kind, y.chunks, y.target, y.rdev):
                yield "M", rel
            elif (x.mode, x.uid, x.gid, x.mtime_ns, x.meta, x.links, x.user, x.group) != (
                    y.mode, y.uid, y.gid, y.mtime_ns, y.meta, y.links, y.user, y.group):
                yield "T", rel  # fmt: skip
            if x.kind == DIR and y.kind == DIR:
                if x.subtree != y.subtree:
                    yield from merge(rel, x, y)
            elif x.kind == DIR:
                yield from below("-", rel, x)
            elif y.kind == DIR:
                yield from below("+", rel, y)

        def merge(rel: bytes, x: TreeEntry, y: TreeEntry) -> Iterator[tuple[str, bytes]]:
            old, new = reader.entries(x.subtree, rel), reader.entries(y.subtree, rel)
            o, n = next(old, None), next(new, None)
            while o is not None or n is not None:
                if n is None or (o is not None and o.name < n.name):
                    assert o is not None
                    child = rel + b"/" + o.name if rel else o.name
                    yield "-", child
                    if o.kind == DIR:
                        yield from below("-", child, o)
                    o = next(old, None)
                elif o is None or n.name < o.name:
                    child = rel + b"/" + n.name if rel else n.name
                    yield "+", child
                    if n.kind == DIR:
                        yield from below("+", child, n)
                    n = next(new, None)
                else:
                    yield from changed(rel + b"/" + o.name if rel else o.name, o, n)
                    o, n = next(old, None), next(new, None)

        yield from changed(b"", a.root, b.root)


def restore(
    repository: str,
    snapshot: str,
    target: str,
    paths: tuple[str, ...] = (),
    *,
    on_event: Callable[[Event], None] | None = None,
    cancel: CancelToken | None = None,
    universe_path: str = "",
    db_path: str = "",
    s3_endpoint: str = "",
    allowed_roots: tuple[str, ...] = (),
    password: PasswordSource | None = None,
    claims: StateClaims | None = None,
    numeric_ids: bool = False,
) -> RestoreSummary:
    """Restore `paths` (default: everything) of `snapshot` into `target`.

    Parameters
    ----------
    repository
        The repository's URL or path.
    snapshot
        "latest" or a unique prefix of a snapshot id.
    target
        A local directory (created if missing). Files already in place (same size and mtime)
        are skipped, so a rerun resumes. Nothing is written outside it, whatever the snapshot
        holds (docs/backup.md, Confinement).
    paths
        Paths relative to the backup root; their parents are restored too.
    on_event, cancel
        As for `sync()`.
    universe_path, db_path
        The state files ("": the defaults).
    s3_endpoint
        As for `init_repository`.
    allowed_roots
        When given, `target` must be reached from one of them through directories only
        when the restore starts (roots.check_roots), else OutsideRoots and nothing is written.
    numeric_ids
        As root, owners by the ids in the snapshot; by default by name where the snapshot
        holds a name this system knows (tar and restic do the same), else by id.

    Returns
    -------
    RestoreSummary

    Raises
    ------
    IntegrityError
        After restoring every file it can, if chunks are missing or damaged; before writing
        anything, if the snapshot's nodes are unsafe or expand beyond the output limits.
    UsageError, OutsideRoots, RepositoryError, RepositoryLocked, DestinationError, Interrupted
    """
    from orbit_fast.coordinator.restore import restore as run

    with locked_repository(repository, "restore", universe_path, db_path,
                           s3_endpoint, password, claims) as (repo, universe):  # fmt: skip
        _, snap = repo.resolve(snapshot)
        return run(repo, universe, snap, target, paths, on_event or _quiet,
                   cancel or CancelToken(), allowed_roots, numeric_ids)  # fmt: skip


def verify(repository: str, quick: bool = False, *, on_event: Callable[[Event], None] | None = None,
           universe_path: str = "", db_path: str = "", s3_endpoint: str = "",
           password: PasswordSource | None = None) -> VerifySummary:  # fmt: skip
    """Check every pack and chunk against its id, or (`quick`) the structure only.

    Parameters
    ----------
    repository
        The repository's URL or path.
    quick
        Only check that pack indexes parse and list every chunk a snapshot needs.
    on_event
        As for `sync()`.
    universe_path, db_path
        The state files ("": the defaults): trees are found through the universe index.
    s3_endpoint
        As for `init_repository`.

    Returns
    -------
    VerifySummary
        `exit_code` 13 and `problems` naming each damaged snapshot, file and chunk.

    Raises
    ------
    RepositoryError, RepositoryLocked
    """
    from orbit_fast.coordinator.check import verify as run

    with locked_repository(repository, "verify", universe_path, db_path,
                           s3_endpoint, password) as (repo, universe):  # fmt: skip
        return run(repo, universe, quick, on_event or _quiet)


def forget(
    repository: str,
    *,
    keep_last: int = 0,
    keep_daily: int = 0,
    keep_weekly: int = 0,
    keep_monthly: int = 0,
    prune: bool = False,
    dry_run: bool = False,
    on_event: Callable[[Event], None] | None = None,
    universe_path: str = "",
    db_path: str = "",
    s3_endpoint: str = "",
    password: PasswordSource | None = None,
) -> list[str]:
    """Delete the snapshots the retention policy does not keep (per host and source).

    Parameters
    ----------
    repository
        The repository's URL or path.
    keep_last, keep_daily, keep_weekly, keep_monthly
        Keep the N newest; the newest of each of the last N days, weeks, months.
    prune
        Prune afterwards (their data is otherwise deleted by the next `prune`).
    dry_run
        Only say which snapshots would be deleted.
    on_event
        As for `sync()` (prune's events).
    universe_path, db_path, s3_endpoint
        As for `restore`.

    Returns
    -------
    list of str
        The ids of the snapshots deleted (or, dry run, to be deleted).

    Raises
    ------
    UsageError
        No keep policy given.
    RepositoryError, RepositoryLocked
    """
    from orbit_fast.coordinator.prune import plan_forget
    from orbit_fast.coordinator.prune import prune as run_prune

    with locked_repository(repository, "forget", universe_path, db_path,
                           s3_endpoint, password) as (repo, universe):  # fmt: skip
        drop = plan_forget(repo.snapshots(), keep_last, keep_daily, keep_weekly, keep_monthly)
        if dry_run:
            return drop
        for name in drop:
            repo.delete_snapshot(name)
        if prune:
            run_prune(repo, universe, on_event or _quiet, drop)
        return drop


def prune(repository: str, *, on_event: Callable[[Event], None] | None = None,
          universe_path: str = "", db_path: str = "", s3_endpoint: str = "",
          password: PasswordSource | None = None) -> PruneSummary:  # fmt: skip
    """Delete chunks no snapshot references; rewrite packs that are mostly dead (crash-safe).

    Parameters
    ----------
    repository
        The repository's URL or path.
    on_event
        As for `sync()`.
    universe_path, db_path, s3_endpoint
        As for `restore`.

    Returns
    -------
    PruneSummary

    Raises
    ------
    RepositoryError, RepositoryLocked, DestinationError, DiskFull
    """
    from orbit_fast.coordinator.prune import prune as run

    with locked_repository(repository, "prune", universe_path, db_path,
                           s3_endpoint, password) as (repo, universe):  # fmt: skip
        return run(repo, universe, on_event or _quiet)


def unlock(repository: str, *, s3_endpoint: str = "",
           password: PasswordSource | None = None) -> dict[str, Any] | None:  # fmt: skip
    """Remove the repository's lock whoever holds it, then delete what a dead holder left.

    Only for a lock whose process is gone: a lock of a dead process on this host is cleared
    by the next command anyway.

    Parameters
    ----------
    repository
        The repository's URL or path.
    s3_endpoint
        As for `init_repository`.

    Returns
    -------
    dict or None
        The removed lock's holder ("host", "pid", "operation", "time_ns"; empty if the lock was
        unreadable), or None if no lock was held.

    Raises
    ------
    RepositoryError, RepositoryLocked
    """
    from orbit_fast.repo.repository import Repository

    with Repository.open(repository, s3_endpoint, password=password, warn=warn) as repo:
        return repo.force_unlock()


def rebuild_index(repository: str, *, universe_path: str = "", db_path: str = "",
                  s3_endpoint: str = "",
                  password: PasswordSource | None = None) -> int:  # fmt: skip
    """Forget everything the universe knows about the repository and index its packs again
    from the pack files.

    Parameters
    ----------
    repository
        The repository's URL or path.
    universe_path, db_path, s3_endpoint
        As for `restore`.

    Returns
    -------
    int
        The number of packs indexed.

    Raises
    ------
    RepositoryError, RepositoryLocked
    """
    with locked_repository(repository, "index rebuild", universe_path, db_path,
                           s3_endpoint, password) as (repo, u):  # fmt: skip
        u.drop_packs(repo.id, list(u.packs_of(repo.id)))
        added, _ = repo.sync_index(u)
        return added


class RepoInfo(NamedTuple):
    """What `describe_repository` says of a repository (its config)."""

    id: str
    format: int
    encryption: str  # "aes-256-gcm", or "none" (made with --insecure-no-encryption)
    codec: str
    keys: int  # key files (0 when not encrypted)


def describe_repository(repository: str, *, s3_endpoint: str = "",
                        password: PasswordSource | None = None
                        ) -> tuple[RepoInfo, list[SnapshotInfo]]:  # fmt: skip
    """The repository's config and its snapshots (one open, so one password read).

    Raises
    ------
    RepositoryError, WrongPassword, PasswordMissing, KeyDamaged, AuthenticationFailed
    """
    from orbit_fast.repo.repository import Repository

    with Repository.open(repository, s3_endpoint, password=password, warn=warn) as repo:
        cfg = repo.config
        keys = len(repo.list_keys()) if repo.encrypted else 0
        info = RepoInfo(cfg.id, cfg.format, cfg.encryption, cfg.codec, keys)
        bad: list[tuple[str, OrbitError]] = []
        snaps = repo.snapshots(bad)
        for _name, exc in bad:  # listed by verify too; the others are still usable
            warn(f"{exc}; it is left out")
    return info, [SnapshotInfo(name, s.time_ns, s.hostname, s.source, s.tags, s.parent,
                               s.files_total, s.bytes_total, s.bytes_added)
                  for name, s in snaps]  # fmt: skip


class KeyInfo(NamedTuple):
    name: str  # 64 hex digits; `key remove` takes a unique prefix
    created: str
    hostname: str
    username: str
    kdf_memory_kib: int
    kdf_time: int
    current: bool  # the key the password given opened


def list_keys(repository: str, *, s3_endpoint: str = "",
              password: PasswordSource | None = None) -> list[KeyInfo]:  # fmt: skip
    """The key files of an encrypted repository; `current` marks the one `password` opens."""
    from orbit_fast.repo.repository import Repository

    with Repository.open(repository, s3_endpoint, password=password, warn=warn) as repo:
        return [KeyInfo(k.name, k.created, k.hostname, k.username, k.kdf.memory_kib,
                        k.kdf.time, k.current) for k in repo.list_keys()]  # fmt: skip


def add_key(repository: str, new_password: PasswordSource, *, s3_endpoint: str = "",
            password: PasswordSource | None = None, kdf_memory_mib: int | None = None,
            kdf_time: int | None = None) -> str:  # fmt: skip
    """Add a key that opens the repository with the password from `new_password` (a file or
    command; empty: asked twice on the terminal). Returns the new key's name."""
    return _new_key(repository, new_password, False, s3_endpoint, password, kdf_memory_mib,
                    kdf_time)  # fmt: skip


def change_password(repository: str, new_password: PasswordSource, *, s3_endpoint: str = "",
                    password: PasswordSource | None = None, kdf_memory_mib: int | None = None,
                    kdf_time: int | None = None) -> str:  # fmt: skip
    """Replace the key `password` opens with one for `new_password`: the new key is written
    before the old is removed, so a crash leaves a repository that opens with either."""
    return _new_key(repository, new_password, True, s3_endpoint, password, kdf_memory_mib,
                    kdf_time)  # fmt: skip


def _new_key(repository: str, new_password: PasswordSource, replace: bool, s3_endpoint: str,
             password: PasswordSource | None, kdf_memory_mib: int | None,
             kdf_time: int | None) -> str:  # fmt: skip
    from orbit_fast.passwords import read_new_password
    from orbit_fast.repo.keys import kdf_from_env
    from orbit_fast.repo.repository import Repository

    kdf = kdf_from_env(kdf_memory_mib, kdf_time)
    with Repository.open(repository, s3_endpoint, password=password, warn=warn) as repo:
        pw = read_new_password(new_password, warn)
        return repo.change_password(pw, kdf) if replace else repo.add_key(pw, kdf)


def remove_key(repository: str, name: str, *, s3_endpoint: str = "",
               password: PasswordSource | None = None) -> None:
    """Delete the key whose name starts with `name`: not the last one, nor the one
    `password` opens."""
    from orbit_fast.repo.repository import Repository

    with Repository.open(repository, s3_endpoint, password=password, warn=warn) as repo:
        repo.remove_key(name)
