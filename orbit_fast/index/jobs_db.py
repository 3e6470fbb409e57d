"""The jobs DB: jobs, runs, per-file state and block checkpoints (SQLite in WAL mode).

Only the coordinator opens it, and only one coordinator at a time: `JobsDB.open` takes an
exclusive flock on "<db>.lock" (released by the kernel if the process dies, so a kill -9 never
leaves a stale lock) and refuses databases on network filesystems; a hub's runs borrow the
hub's claim instead (state_file.StateClaims). Paths are stored as BLOBs (os.fsencode) so that
names that are not valid UTF-8 round-trip.

This module owns the engine's tables (_SCHEMA, `meta`'s schema_version) and the file-wide
settings of jobs.db (journal_mode=WAL): the hub keeps its own hub_* tables in the same file
(hub/store.py) and opens it only after `JobsDB.open` made it.

Durability: WAL with synchronous=NORMAL is always consistent; a power loss may roll back the
last checkpoints, which only means those blocks are verified or copied again on the rerun.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from collections.abc import Iterable
from typing import NamedTuple

from orbit_fast.errors import DatabaseError
from orbit_fast.index import state_file
from orbit_fast.index.state_file import StateClaims

# 2: one resume family (uploads + upload_parts) for block copies and object uploads alike,
# and one "unchanged" record (records) for every sync; version 1's files, partials, blocks and
# objects tables are gone.
SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    source TEXT NOT NULL,
    destination TEXT NOT NULL,
    options TEXT NOT NULL,
    token TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    last_error TEXT
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    job_id INTEGER NOT NULL REFERENCES jobs(id),
    started_at REAL NOT NULL,
    finished_at REAL,
    state TEXT NOT NULL,
    exit_code INTEGER,
    stats TEXT
);
CREATE TABLE IF NOT EXISTS records (
    job_id INTEGER NOT NULL,
    path BLOB NOT NULL,
    src_sig TEXT NOT NULL,
    dst_sig TEXT NOT NULL,
    PRIMARY KEY (job_id, path)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS uploads (
    job_id INTEGER NOT NULL,
    path BLOB NOT NULL,
    src_sig TEXT NOT NULL,
    part_bytes INTEGER NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (job_id, path)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS upload_parts (
    job_id INTEGER NOT NULL,
    path BLOB NOT NULL,
    part INTEGER NOT NULL,
    token TEXT NOT NULL,
    PRIMARY KEY (job_id, path, part)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS source_roots (
    job_id INTEGER PRIMARY KEY,
    identity TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS file_errors (
    run_id INTEGER NOT NULL,
    path BLOB NOT NULL,
    msgid TEXT NOT NULL,
    message TEXT NOT NULL
);
"""


_V1_TABLES_DROP = """
BEGIN;
DROP TABLE IF EXISTS files;
DROP TABLE IF EXISTS partials;
DROP TABLE IF EXISTS blocks;
CREATE TABLE IF NOT EXISTS objects (job_id, path, src_sig, dst_sig);
INSERT OR IGNORE INTO records SELECT job_id, path, src_sig, dst_sig FROM objects;
DROP TABLE IF EXISTS objects;
COMMIT;
"""


class Job(NamedTuple):
    id: int
    name: str
    token: str  # short random id, part of temp file names: ".<name>.orbit-<token>.tmp"


class UploadRecord(NamedTuple):
    """What a rerun needs to resume a copy in parts, whatever the ends."""

    src_sig: str  # the source as the copy began: S3 ETag, else "size:mtime_ns"
    part_bytes: int  # the block or part size the copy was cut into
    state: str  # the destination's resume handle: S3 upload id, or the temp file's name
    parts: dict[int, str]  # part number (from 1) -> token (ETag, or xxh3 hex) of parts stored


class FileError(NamedTuple):
    """A source entry a run skipped (a warning), as the run recorded it."""

    path: str
    msgid: str
    message: str


class JobsDB:
    def __init__(self, path: str, conn: sqlite3.Connection, lock_fd: int,
                 claims: StateClaims | None = None):  # fmt: skip
        self.path = path
        self._conn = conn
        self._lock_fd = lock_fd
        self._claims = claims
        self._ops: list[tuple[str, tuple[object, ...]]] = []

    @classmethod
    def open(cls, path: str, claims: StateClaims | None = None) -> JobsDB:
        """Open (create or migrate) the jobs DB; `claims`: the handle holding it (a hub),
        else it is claimed for this caller alone (DatabaseBusy if another has it)."""
        lock_fd = state_file.claim(path, "the jobs DB", "--db-path",
                                   "SQLite over SMB/NFS corrupts databases", claims)  # fmt: skip
        try:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            # A hub runs several jobs on one jobs DB, each on its own connection: wait for
            # another's write transaction instead of failing with "database is locked".
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            elif int(row[0]) > SCHEMA_VERSION:
                raise DatabaseError(
                    f"the jobs DB {path} has schema version {row[0]}, newer than this "
                    f"orbit-fast understands ({SCHEMA_VERSION}); upgrade orbit-fast"
                )
            elif int(row[0]) < SCHEMA_VERSION:
                # Version 1 kept block-copy resume state in other tables. Dropping it costs
                # a rerun copying its partial files again; jobs, runs, uploads and the
                # "unchanged" records (objects, now records) stay.
                conn.executescript(_V1_TABLES_DROP)
                conn.execute("UPDATE meta SET value=? WHERE key='schema_version'",
                             (str(SCHEMA_VERSION),))  # fmt: skip
        except DatabaseError:
            state_file.release(lock_fd, claims)
            raise
        except sqlite3.DatabaseError as exc:
            state_file.release(lock_fd, claims)
            raise DatabaseError(
                f"the jobs DB {path} is unreadable ({exc}); move it aside and rerun "
                "(the destination is intact: files already copied are skipped)"
            ) from exc
        return cls(path, conn, lock_fd, claims)

    def close(self) -> None:
        self._conn.close()
        state_file.release(self._lock_fd, self._claims)

    # -- jobs and runs ---------------------------------------------------------------------

    def get_or_create_job(
        self, name: str, kind: str, source: str, destination: str, options: str
    ) -> Job:
        now = time.time()
        row = self._conn.execute("SELECT id, token FROM jobs WHERE name=?", (name,)).fetchone()
        if row is None:
            token = secrets.token_hex(4)
            cur = self._conn.execute(
                "INSERT INTO jobs(name, kind, source, destination, options, token, created_at,"
                " updated_at) VALUES (?,?,?,?,?,?,?,?)",
                (name, kind, source, destination, options, token, now, now),
            )
            return Job(int(cur.lastrowid or 0), name, token)
        self._conn.execute(
            "UPDATE jobs SET options=?, updated_at=? WHERE id=?", (options, now, row[0])
        )
        return Job(int(row[0]), name, str(row[1]))

    def start_run(self, job_id: int) -> int:
        now = time.time()
        self._conn.execute("BEGIN IMMEDIATE")
        # A run left 'running' by a crash is over: it is what this run resumes.
        self._conn.execute(
            "UPDATE runs SET state='crashed', finished_at=? WHERE job_id=? AND state='running'",
            (now, job_id),
        )
        cur = self._conn.execute(
            "INSERT INTO runs(job_id, started_at, state) VALUES (?,?, 'running')", (job_id, now)
        )
        self._conn.execute(
            "UPDATE jobs SET state='running', updated_at=? WHERE id=?", (now, job_id)
        )
        self._conn.execute("COMMIT")
        return int(cur.lastrowid or 0)

    def finish_run(
        self, job_id: int, run_id: int, state: str, exit_code: int, stats: str, error: str | None
    ) -> None:
        now = time.time()
        self._conn.execute("BEGIN IMMEDIATE")
        self._conn.execute(
            "UPDATE runs SET state=?, finished_at=?, exit_code=?, stats=? WHERE id=?",
            (state, now, exit_code, stats, run_id),
        )
        self._conn.execute(
            "UPDATE jobs SET state=?, updated_at=?, last_error=? WHERE id=?",
            (state, now, error, job_id),
        )
        self._conn.execute("COMMIT")

    def runs(self, job_id: int) -> list[tuple[int, str, int | None]]:
        return [
            (int(r[0]), str(r[1]), r[2])
            for r in self._conn.execute(
                "SELECT id, state, exit_code FROM runs WHERE job_id=? ORDER BY id", (job_id,)
            )
        ]

    # -- resume state ----------------------------------------------------------------------

    # Writes are queued in order and applied by checkpoint() in one transaction.

    # -- "unchanged" records: what each entry was copied (or found equal) from and as -------
    # A listing that shows the same two signatures again needs no request to decide. Two local
    # trees write none: their merge-walk compares both sides' stat directly, in the kernel.

    def records(self, job_id: int) -> dict[str, tuple[str, str]]:
        """name -> (source sig, destination sig) as of the copy (or the last comparison)."""
        return {
            os.fsdecode(bytes(r[0])): (str(r[1]), str(r[2]))
            for r in self._conn.execute(
                "SELECT path, src_sig, dst_sig FROM records WHERE job_id=?", (job_id,)
            )
        }

    def queue_record(self, job_id: int, name: str, src_sig: str, dst_sig: str) -> None:
        self._ops.append(("INSERT OR REPLACE INTO records VALUES (?,?,?,?)",
                          (job_id, os.fsencode(name), src_sig, dst_sig)))  # fmt: skip

    def queue_record_deleted(self, job_id: int, name: str) -> None:
        self._ops.append(("DELETE FROM records WHERE job_id=? AND path=?",
                          (job_id, os.fsencode(name))))  # fmt: skip

    # -- resume records: copies in parts (blocks into a temp file, or an upload) -------------

    def uploads(self, job_id: int) -> dict[str, UploadRecord]:
        out: dict[str, UploadRecord] = {}
        for path, sig, part_bytes, state in self._conn.execute(
            "SELECT path, src_sig, part_bytes, state FROM uploads WHERE job_id=?", (job_id,)
        ):
            out[os.fsdecode(bytes(path))] = UploadRecord(str(sig), int(part_bytes), str(state), {})
        for path, part, token in self._conn.execute(
            "SELECT path, part, token FROM upload_parts WHERE job_id=?", (job_id,)
        ):
            rec = out.get(os.fsdecode(bytes(path)))
            if rec is not None:
                rec.parts[int(part)] = str(token)
        return out

    def upload_states(self) -> set[str]:
        """The resume handles (temp names, S3 upload ids) every job of this DB recorded: what a
        sweep of stale temp files must leave to their job (sync/object_copies.py)."""
        return {str(s) for (s,) in self._conn.execute("SELECT state FROM uploads")}

    def job_tokens(self) -> set[str]:
        """The tokens of every job of this DB (the ones temp names carry, fsinfo.temp_name)."""
        return {str(t) for (t,) in self._conn.execute("SELECT token FROM jobs")}

    def queue_upload(self, job_id: int, name: str, src_sig: str, part_bytes: int,
                     state: str) -> None:  # fmt: skip
        self.queue_drop_upload(job_id, name)
        self._ops.append(("INSERT INTO uploads VALUES (?,?,?,?,?)",
                          (job_id, os.fsencode(name), src_sig, part_bytes, state)))  # fmt: skip

    def queue_part(self, job_id: int, name: str, part: int, token: str) -> None:
        self._ops.append(("INSERT OR REPLACE INTO upload_parts VALUES (?,?,?,?)",
                          (job_id, os.fsencode(name), part, token)))  # fmt: skip

    def queue_drop_upload(self, job_id: int, name: str) -> None:
        key = (job_id, os.fsencode(name))
        self._ops.append(("DELETE FROM upload_parts WHERE job_id=? AND path=?", key))
        self._ops.append(("DELETE FROM uploads WHERE job_id=? AND path=?", key))

    def source_identity(self, job_id: int) -> dict[str, object] | None:
        """What the job's source root was at its last successful run (sync/guards.py)."""
        row = self._conn.execute("SELECT identity FROM source_roots WHERE job_id = ?",
                                 (job_id,)).fetchone()  # fmt: skip
        return json.loads(row[0]) if row else None

    def queue_source_identity(self, job_id: int, identity: dict[str, object]) -> None:
        self._ops.append(("INSERT OR REPLACE INTO source_roots (job_id, identity) VALUES (?, ?)",
                          (job_id, json.dumps(identity, sort_keys=True))))  # fmt: skip

    def queue_error(self, run_id: int, path: bytes, msgid: str, message: str) -> None:
        self._ops.append(
            ("INSERT INTO file_errors VALUES (?,?,?,?)", (run_id, path, msgid, message))
        )

    def file_errors(self, run_id: int, limit: int = 1000) -> list[FileError]:
        """The entries run `run_id` skipped, at most `limit`, in the order recorded."""
        rows = self._conn.execute("SELECT path, msgid, message FROM file_errors WHERE run_id=? "
                                  "ORDER BY rowid LIMIT ?", (run_id, limit))  # fmt: skip
        return [FileError(os.fsdecode(bytes(p)) if isinstance(p, bytes) else str(p), str(m),
                          str(t)) for p, m, t in rows]  # fmt: skip

    @property
    def pending_ops(self) -> int:
        return len(self._ops)

    def checkpoint(self) -> int:
        """Apply every queued write in one transaction; returns how many were applied."""
        ops, self._ops = self._ops, []
        if not ops:
            return 0
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            for sql, group in _grouped(ops):
                self._conn.executemany(sql, group)
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            self._ops = ops + self._ops
            raise
        return len(ops)

    def integrity_check(self) -> str:
        return str(self._conn.execute("PRAGMA integrity_check").fetchone()[0])

    def execute(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        """Read-only queries for tests and tools."""
        return list(self._conn.execute(sql, params))


def _grouped(
    ops: list[tuple[str, tuple[object, ...]]],
) -> Iterable[tuple[str, list[tuple[object, ...]]]]:
    """Consecutive runs of the same statement, for executemany (order is preserved)."""
    sql0, group = ops[0][0], [ops[0][1]]
    for sql, params in ops[1:]:
        if sql == sql0:
            group.append(params)
        else:
            yield sql0, group
            sql0, group = sql, [params]
    yield sql0, group
