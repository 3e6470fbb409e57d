"""Backups of the hub's state (the jobs DB and the universe index) that are consistent while
the hub runs, and a restore that checks a backup before it swaps anything in.

- jobs.db: SQLite's online backup API (what the guide's `sqlite3 ... ".backup"` does), read
  through its own connection; the copy is checked with PRAGMA integrity_check.
- the universe: its checkpoint is only ever replaced whole (rename) and its journal only grows
  until the next checkpoint, so a copy of the checkpoint plus a copy of a journal of the same
  generation is consistent (a torn journal tail is dropped on open, and the packs it named are
  re-indexed by the next reconcile). The copy is opened to prove it.

Each backup writes `jobs-<stamp>.db`, `universe-<stamp>.db` (+ `-journal`) and a manifest
`orbit-state-<stamp>.json` with their SHA-256 sums. They are copies of private state (password
hashes, job URLs): every file is 0600 and the directory 0700, whatever the umask.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import sqlite3
import struct
import time
from typing import IO, TYPE_CHECKING, Any

from orbit_fast._version import __version__
from orbit_fast.errors import DatabaseError, UsageError
from orbit_fast.fsinfo import fsync_path
from orbit_fast.index import private

if TYPE_CHECKING:
    from orbit_fast.index.state_file import StateClaims

log = logging.getLogger("orbit_fast.state")

_GEN = struct.Struct("<8sIQ")  # magic, version, generation: the start of a universe checkpoint
_JGEN = struct.Struct("<8sQ")  # magic, generation: the start of its journal


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _create(path: str, mode: str) -> IO[Any]:
    """open(path, mode) for writing a new file, 0600 whatever the umask."""
    return os.fdopen(private.open_private(path), mode)


def copy_jobs_db(src: str, dst: str) -> None:
    """An online, consistent copy of a SQLite DB (readers and the writer go on meanwhile)."""
    if not os.path.exists(src):
        raise UsageError(f"no jobs DB at {src}; check DATABASE_URL / --db-path")
    tmp = dst + ".part"
    # Made 0600 before SQLite opens it: SQLite creates a new file 0644 less the umask, and
    # gives its journal the database file's mode.
    os.close(private.open_private(tmp))
    source = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
    try:
        target = sqlite3.connect(tmp)
        try:
            source.backup(target, pages=4096, sleep=0.001)
            ok = target.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            target.close()
    finally:
        source.close()
    if ok != "ok":
        os.unlink(tmp)
        raise DatabaseError(f"the copy of {src} failed its integrity check: {ok}")
    fsync_path(tmp)
    os.replace(tmp, dst)


def copy_universe(src: str, dst: str, tries: int = 20) -> bool:
    """Copy the checkpoint and a journal of the same generation; False if there is none."""
    for _ in range(tries):
        try:
            f = open(src, "rb")
        except FileNotFoundError:
            return False
        with f:
            head = f.read(_GEN.size)
            gen = _GEN.unpack(head)[2] if len(head) == _GEN.size else -1
            f.seek(0)
            with _create(dst + ".part", "wb") as out:
                shutil.copyfileobj(f, out, 1 << 20)
        try:
            with open(src + "-journal", "rb") as j:
                journal = j.read()
        except FileNotFoundError:
            journal = b""
        jgen = _JGEN.unpack_from(journal)[1] if len(journal) >= _JGEN.size else gen
        if jgen != gen:  # a checkpoint happened while we copied: take the new one
            time.sleep(0.05)
            continue
        with _create(dst + "-journal.part", "wb") as out:
            out.write(journal)
        for p in (dst + ".part", dst + "-journal.part"):
            fsync_path(p)
        os.replace(dst + "-journal.part", dst + "-journal")
        os.replace(dst + ".part", dst)
        return True
    raise DatabaseError(f"the universe {src} kept changing its checkpoint; try again")


def check_universe(path: str, claims: StateClaims | None = None) -> int:
    """Open a universe copy (replays its journal) and return its chunk count; its lock file
    goes with it unless `claims` (the caller's handle) hold that path."""
    from orbit_fast.index.universe import Universe

    u = Universe.open(path, claims=claims)
    try:
        return u.count
    finally:
        u.close(checkpoint=False)
        if claims is None or not claims.is_held(path):
            try:
                os.unlink(path + ".lock")
            except OSError:
                pass


def backup(db_path: str, universe_path: str, directory: str,
           claims: StateClaims | None = None) -> dict[str, Any]:  # fmt: skip
    """Write a consistent backup into `directory`; returns the manifest. `claims`: those of
    the handle (a hub) that holds the state files, if one does."""
    os.makedirs(directory, mode=private.DIR_MODE, exist_ok=True)
    private.tighten_dir(directory)  # makedirs leaves an existing directory as it was
    stamp = time.strftime("%Y%m%d_%H%M%S", time.gmtime()) + f"_{os.getpid()}"
    jobs = os.path.join(directory, f"jobs-{stamp}.db")
    copy_jobs_db(db_path, jobs)
    universe = os.path.join(directory, f"universe-{stamp}.db")
    files = {"jobs": os.path.basename(jobs)}
    chunks = None
    if copy_universe(universe_path, universe):
        chunks = check_universe(universe, claims)
        files["universe"] = os.path.basename(universe)
        files["universe_journal"] = os.path.basename(universe) + "-journal"
    manifest = {
        "format": 1, "created": time.time(), "host": socket.gethostname(),
        "orbit_fast": __version__, "db_path": db_path, "universe_path": universe_path,
        "universe_chunks": chunks, "files": files,
        "sha256": {k: _sha256(os.path.join(directory, v)) for k, v in files.items()},
    }  # fmt: skip
    mpath = os.path.join(directory, f"orbit-state-{stamp}.json")
    with _create(mpath + ".part", "w") as f:
        json.dump(manifest, f, indent=1)
    fsync_path(mpath + ".part")
    os.replace(mpath + ".part", mpath)
    fsync_path(directory)  # the renames above are durable once their directory is
    manifest["manifest"] = mpath
    return manifest


def tighten_backups(directory: str) -> None:
    """Make the backups in `directory` (ours by their names) 0600 and it 0700: those written
    before the modes were enforced, or copied back in with looser ones."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    except OSError as exc:
        log.warning("cannot check the modes of the state backups in %s: %s", directory,
                    exc.strerror)  # fmt: skip
        return
    private.tighten_dir(directory)
    for name in names:
        if name.startswith(("jobs-", "universe-", "orbit-state-")):
            private.tighten(os.path.join(directory, name))


def restore(backup_file: str, db_path: str, universe_path: str,
            universe_file: str = "") -> dict[str, Any]:  # fmt: skip
    """Check a backup, then swap it in for the current state files, keeping those as
    `<file>.before-restore-<stamp>`. `backup_file` is one of our manifests, or a jobs DB
    copy (the guide's `sqlite3 .backup` script) with an optional universe copy. The hub
    must be stopped: the state files' locks are taken for the swap."""
    from orbit_fast.index import state_file

    jobs_src, uni_src = backup_file, universe_file
    if backup_file.endswith(".json"):
        with open(backup_file) as f:
            manifest = json.load(f)
        base = os.path.dirname(os.path.abspath(backup_file))
        for key, name in manifest["files"].items():
            if _sha256(os.path.join(base, name)) != manifest["sha256"][key]:
                raise DatabaseError(f"{name} does not match its checksum in {backup_file}; "
                                    "the backup is damaged: pick another")  # fmt: skip
        jobs_src = os.path.join(base, manifest["files"]["jobs"])
        uni_src = os.path.join(base, manifest["files"].get("universe", "")) \
            if "universe" in manifest["files"] else ""  # fmt: skip
    # Check before touching anything.
    try:
        con = sqlite3.connect(f"file:{jobs_src}?mode=ro", uri=True)
        try:
            ok = con.execute("PRAGMA integrity_check").fetchone()[0]
            con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        raise DatabaseError(f"{jobs_src} is not a usable jobs DB ({exc}); nothing was "
                            "changed") from None  # fmt: skip
    if ok != "ok":
        raise DatabaseError(f"{jobs_src} failed its integrity check ({ok}); nothing was changed")
    if uni_src:
        check_universe(uni_src)
    stamp = time.strftime("%Y%m%d_%H%M%S", time.gmtime())
    fds = [state_file.claim(db_path, "the jobs DB", "DATABASE_URL (stop the hub first)",
                            "SQLite over SMB/NFS corrupts databases")]  # fmt: skip
    try:
        if uni_src:
            fds.append(state_file.claim(universe_path, "the universe index", "UNIVERSE_PATH "
                                        "(stop the hub first)", "it needs local locking"))
        moved = []
        pairs: list[tuple[str, str, tuple[str, ...]]] = [(jobs_src, db_path, ("", "-wal", "-shm"))]
        if uni_src:
            pairs.append((uni_src, universe_path, ("", "-journal")))
        for src, dst, suffixes in pairs:
            for sfx in suffixes:  # a stale WAL must never meet the restored DB
                if os.path.exists(dst + sfx):
                    aside = f"{dst}{sfx}.before-restore-{stamp}"
                    os.replace(dst + sfx, aside)
                    private.tighten(aside)  # the old state: no less private than the new
                    moved.append(aside)
            for sfx in suffixes[:2] if src == uni_src else ("",):
                if os.path.exists(src + sfx):
                    with open(src + sfx, "rb") as f, _create(dst + sfx + ".part", "wb") as out:
                        shutil.copyfileobj(f, out, 1 << 20)
                    fsync_path(dst + sfx + ".part")
                    os.replace(dst + sfx + ".part", dst + sfx)
            fsync_path(os.path.dirname(os.path.abspath(dst)))  # the swap survives a power cut
        return {"restored": [db_path] + ([universe_path] if uni_src else []), "kept": moved}
    finally:
        for fd in fds:
            state_file.release(fd)
