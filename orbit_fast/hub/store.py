"""The hub's own tables in the jobs DB: jobs as users define them, their runs, users, tokens
and the event log that SSE clients replay from.

The hub process is their only writer. One connection, guarded by a lock, serves the HTTP
handlers and the job threads; every write is one short transaction with synchronous=FULL, so
a state change the API reported survives a power cut (the engine's per-file checkpoints in
the same file use NORMAL: losing the last of those only means re-verifying some blocks).

One owner per table: this module owns the hub_* tables and nothing else; the engine's tables
(jobs, runs, file_errors, meta, ...) and the file-wide settings (journal_mode=WAL) belong to
index/jobs_db.py, reached through api.Engine, which makes the file before the store opens it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from orbit_fast.errors import DatabaseError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS hub_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS hub_jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- a deleted job's id is never given to another
    name TEXT NOT NULL UNIQUE,
    mode TEXT NOT NULL,
    source TEXT NOT NULL,
    destination TEXT NOT NULL,
    config TEXT NOT NULL,
    schedule TEXT,
    state TEXT NOT NULL,
    warnings TEXT NOT NULL DEFAULT '[]',
    created_by TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    queued_at REAL,
    next_run_at REAL,
    retry_at REAL,
    attempt INTEGER NOT NULL DEFAULT 0,
    retries INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    progress TEXT
);
CREATE TABLE IF NOT EXISTS hub_runs (
    id INTEGER PRIMARY KEY,
    job_id INTEGER NOT NULL,
    trigger TEXT NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    state TEXT NOT NULL,
    stats TEXT,
    error TEXT,
    engine_run_id INTEGER
);
CREATE INDEX IF NOT EXISTS hub_runs_job ON hub_runs(job_id, id);
CREATE TABLE IF NOT EXISTS hub_users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: no stray token becomes another user's
    username TEXT NOT NULL UNIQUE,
    pw_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    generation INTEGER NOT NULL DEFAULT 1,  -- bumped by every password or role change
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS hub_tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    hash TEXT NOT NULL UNIQUE,
    user_id INTEGER NOT NULL REFERENCES hub_users(id) ON DELETE CASCADE,
    generation INTEGER NOT NULL,  -- the user's generation when it was issued
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS hub_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id INTEGER,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    at REAL NOT NULL
);
"""

JOB_COLUMNS = ("id", "name", "mode", "source", "destination", "config", "schedule", "state",
               "warnings", "created_by", "created_at", "updated_at", "queued_at",
               "next_run_at", "retry_at", "attempt", "retries", "last_error", "progress")
RUN_COLUMNS = ("id", "job_id", "trigger", "started_at", "finished_at", "state", "stats",
               "error", "engine_run_id")  # fmt: skip
KEEP_EVENTS = 200_000  # older events are dropped; a client that far behind reloads the lists


def _row(columns: tuple[str, ...], row: tuple[Any, ...]) -> dict[str, Any]:
    out = dict(zip(columns, row, strict=True))
    for k in ("config", "warnings", "progress", "stats"):
        if k in out and isinstance(out[k], str):
            out[k] = json.loads(out[k])
    if out.get("mode") == "mirror" and isinstance(out.get("config"), dict):
        # The limit the mirror guards apply (docs/sync.md, "Mirror safety"): the job's, or
        # the hub's default.
        from orbit_fast.hub.jobspec import DEFAULT_MAX_DELETE

        out["max_delete"] = str(out["config"].get("max_delete", DEFAULT_MAX_DELETE))
    if out.get("mode") == "backup" and isinstance(out.get("config"), dict):
        # What the API and the dashboard show of a backup's repository: encrypted or not
        # (the password file's path is config; the password is never read here).
        out["encryption"] = ("none" if out["config"].get("insecure_no_encryption")
                             else "aes-256-gcm")  # fmt: skip
    return out


class HubStore:
    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._conn = self._connect()
            self._refuse_without_engine()
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.executescript(_SCHEMA)
            self._refuse_old_format()
            # Reads go through their own connection: in WAL mode they never wait for a
            # writer, so a request is not held up behind another thread's fsync.
            self._rconn = self._connect()
        except sqlite3.DatabaseError as exc:
            raise DatabaseError(f"the jobs DB {path} is unusable ({exc}); restore it from a "
                                "state backup (orbit-fast state restore)") from exc  # fmt: skip
        self._lock = threading.RLock()  # the write connection
        self._rlock = threading.Lock()  # the read connection
        self._mem = threading.Lock()  # the in-memory caches below
        self._recent: deque[tuple[int, int | None, str, str]] = deque(maxlen=4096)
        self.listeners: list[Callable[[], None]] = []
        self._jobs_json = b""  # GET /api/list_jobs, rebuilt after each change of hub_jobs
        self._refresh_jobs()
        # The finished runs, summed for /metrics once here and then as each run ends.
        from orbit_fast.hub.metrics import RunTotals

        self.totals = RunTotals()
        self.totals.load(self)
        self._db_last_id = int(self.query("SELECT coalesce(max(id), 0) FROM hub_events")[0][0])

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA foreign_keys=ON")  # a deleted user's tokens go with the row
        return conn

    def _refuse_without_engine(self) -> None:
        """The file is the engine's first (api.Engine.open sets its WAL mode): a store on a
        file in another journal mode would make readers wait for writers."""
        mode = self._conn.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() != "wal":
            raise DatabaseError(f"the jobs DB {self.path} is in journal mode {mode}, not WAL: "
                                "open the engine on it first (api.Engine.open)")  # fmt: skip

    def _refuse_old_format(self) -> None:
        """Hub tables from before tokens were bound to their user's generation cannot be
        made safe in place (SQLite cannot add AUTOINCREMENT to a table): say so."""
        cols = {str(r[1]) for r in self._conn.execute("PRAGMA table_info(hub_tokens)")}
        jobs_sql = self._conn.execute("SELECT sql FROM sqlite_master WHERE name='hub_jobs'"
                                      ).fetchone()  # fmt: skip
        if "generation" not in cols or "AUTOINCREMENT" not in str(jobs_sql[0] if jobs_sql else ""):
            raise DatabaseError(f"the jobs DB {self.path} was made by an earlier orbit-fast hub "
                                "whose job, user and token tables reuse ids; start the hub on a "
                                "new DATABASE_URL and create its users again")  # fmt: skip

    def close(self) -> None:
        with self._lock, self._rlock:
            self._conn.close()
            self._rconn.close()

    @contextmanager
    def tx(self, jobs: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction; `jobs`: it changes hub_jobs, so the cached list is rebuilt
        (still under the write lock, so the cache follows the commits in order)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:  # a failed COMMIT (disk error) leaves it open
                    self._conn.execute("ROLLBACK")
                raise
            if jobs:
                self._refresh_jobs()

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._rlock:
            return list(self._rconn.execute(sql, params))

    def _refresh_jobs(self) -> None:
        jobs, _ = self.jobs(limit=-1)  # every job: SQLite reads LIMIT -1 as none
        data = json.dumps({"jobs": jobs}, separators=(",", ":")).encode()
        with self._mem:
            self._jobs_json = data

    def jobs_json(self) -> bytes:
        """{"jobs": [...]} as the last change left it (no DB access)."""
        with self._mem:
            return self._jobs_json

    def writable(self) -> str | None:
        """None if a write transaction commits; else why not."""
        try:
            with self.tx() as c:
                c.execute("INSERT INTO hub_meta(key, value) VALUES ('probe', ?) ON CONFLICT(key) "
                          "DO UPDATE SET value=excluded.value", (str(time.time()),))  # fmt: skip
            return None
        except sqlite3.Error as exc:
            return str(exc)

    # ---- jobs --------------------------------------------------------------------------

    def create_job(self, fields: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        row = {**fields, "created_at": now, "updated_at": now}
        for k in ("config", "warnings"):
            row[k] = json.dumps(row[k])
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self.tx(jobs=True) as c:
            cur = c.execute(f"INSERT INTO hub_jobs({cols}) VALUES ({marks})", tuple(row.values()))
            job_id = int(cur.lastrowid or 0)
        job = self.job(job_id)
        assert job is not None
        return job

    def job(self, job_id: int) -> dict[str, Any] | None:
        rows = self.query(f"SELECT {', '.join(JOB_COLUMNS)} FROM hub_jobs WHERE id=?", (job_id,))
        return _row(JOB_COLUMNS, rows[0]) if rows else None

    def job_by_name(self, name: str) -> dict[str, Any] | None:
        rows = self.query("SELECT id FROM hub_jobs WHERE name=?", (name,))
        return self.job(int(rows[0][0])) if rows else None

    def jobs(self, state: str | None = None, mode: str | None = None, q: str | None = None,
             limit: int = 1000, offset: int = 0) -> tuple[list[dict[str, Any]], int]:  # fmt: skip
        where, params = [], []
        if state:
            where.append("state=?")
            params.append(state)
        if mode:
            where.append("mode=?")
            params.append(mode)
        if q:
            where.append("instr(lower(name), lower(?)) > 0")
            params.append(q)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        total = int(self.query(f"SELECT count(*) FROM hub_jobs {clause}", tuple(params))[0][0])
        rows = self.query(f"SELECT {', '.join(JOB_COLUMNS)} FROM hub_jobs {clause} "
                          "ORDER BY id LIMIT ? OFFSET ?", (*params, limit, offset))  # fmt: skip
        return [_row(JOB_COLUMNS, r) for r in rows], total

    def update_job(self, job_id: int, **fields: Any) -> None:
        for k in ("config", "warnings", "progress"):
            if k in fields and not isinstance(fields[k], str | None):
                fields[k] = json.dumps(fields[k])
        fields["updated_at"] = time.time()
        sets = ", ".join(f"{k}=?" for k in fields)
        with self.tx(jobs=True) as c:
            c.execute(f"UPDATE hub_jobs SET {sets} WHERE id=?", (*fields.values(), job_id))

    def transition(self, job_id: int, allowed: tuple[str, ...], **fields: Any) -> bool:
        """Set `fields` only if the job is in one of the `allowed` states (compare-and-set)."""
        fields["updated_at"] = time.time()
        sets = ", ".join(f"{k}=?" for k in fields)
        marks = ", ".join("?" for _ in allowed)
        with self.tx(jobs=True) as c:
            cur = c.execute(f"UPDATE hub_jobs SET {sets} WHERE id=? AND state IN ({marks})",
                            (*fields.values(), job_id, *allowed))  # fmt: skip
            return cur.rowcount == 1

    def delete_job(self, job_id: int) -> None:
        with self.tx(jobs=True) as c:
            c.execute("DELETE FROM hub_runs WHERE job_id=?", (job_id,))
            c.execute("DELETE FROM hub_jobs WHERE id=?", (job_id,))

    def count_by_state(self) -> dict[str, int]:
        return {str(s): int(n) for s, n in
                self.query("SELECT state, count(*) FROM hub_jobs GROUP BY state")}  # fmt: skip

    # ---- runs --------------------------------------------------------------------------

    def start_run(self, job_id: int, trigger: str) -> int:
        """Move a pending job to running and record its run, in one transaction; 0 if the
        job was no longer pending."""
        now = time.time()
        with self.tx(jobs=True) as c:
            if c.execute("UPDATE hub_jobs SET state='running', attempt=attempt+1, updated_at=?, "
                         "retry_at=NULL WHERE id=? AND state='pending'",
                         (now, job_id)).rowcount != 1:  # fmt: skip
                return 0
            cur = c.execute("INSERT INTO hub_runs(job_id, trigger, started_at, state) "
                            "VALUES (?,?,?, 'running')", (job_id, trigger, now))  # fmt: skip
            return int(cur.lastrowid or 0)

    def finish_run(self, run_id: int, state: str, stats: dict[str, Any] | None,
                   error: str | None, engine_run_id: int | None) -> None:  # fmt: skip
        now = time.time()
        with self.tx() as c:
            c.execute("UPDATE hub_runs SET state=?, finished_at=?, stats=?, error=?, "
                      "engine_run_id=? WHERE id=?",
                      (state, now, json.dumps(stats) if stats is not None else None,
                       error, engine_run_id, run_id))  # fmt: skip
        started = self.query("SELECT started_at FROM hub_runs WHERE id=?", (run_id,))
        self.totals.add(state, stats, now - float(started[0][0]) if started else 0.0)

    def count_start(self) -> int:
        """This start of the hub, counted in the jobs DB: the number of starts so far."""
        with self.tx() as c:
            c.execute("INSERT INTO hub_meta(key, value) VALUES ('starts', '1') ON CONFLICT(key) "
                      "DO UPDATE SET value = CAST(value AS INTEGER) + 1")  # fmt: skip
        return int(self.query("SELECT value FROM hub_meta WHERE key='starts'")[0][0])

    def runs(self, job_id: int, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        rows = self.query(f"SELECT {', '.join(RUN_COLUMNS)} FROM hub_runs WHERE job_id=? "
                          "ORDER BY id DESC LIMIT ? OFFSET ?", (job_id, limit, offset))  # fmt: skip
        return [_row(RUN_COLUMNS, r) for r in rows]

    def run(self, run_id: int) -> dict[str, Any] | None:
        rows = self.query(f"SELECT {', '.join(RUN_COLUMNS)} FROM hub_runs WHERE id=?", (run_id,))
        return _row(RUN_COLUMNS, rows[0]) if rows else None

    def recover(self) -> list[int]:
        """After a crash: runs left 'running' are over ('crashed'); their jobs, and jobs that
        were waiting to retry, go back to 'pending' and resume from their checkpoints."""
        now = time.time()
        with self.tx(jobs=True) as c:
            ids = [int(r[0]) for r in
                   c.execute("SELECT id FROM hub_jobs WHERE state IN ('running', 'retrying')")]
            c.execute("UPDATE hub_runs SET state='crashed', finished_at=? WHERE state='running'",
                      (now,))  # fmt: skip
            c.execute("UPDATE hub_jobs SET state='pending', queued_at=coalesce(queued_at, ?), "
                      "updated_at=? WHERE state='running'", (now, now))  # fmt: skip
        return ids

    # ---- users and tokens ----------------------------------------------------------------

    def user_count(self) -> int:
        return int(self.query("SELECT count(*) FROM hub_users")[0][0])

    def add_user(self, username: str, pw_hash: str, role: str, only_if_none: bool = False) -> int:
        with self.tx() as c:
            if only_if_none and c.execute("SELECT count(*) FROM hub_users").fetchone()[0]:
                return 0
            cur = c.execute("INSERT INTO hub_users(username, pw_hash, role, created_at) "
                            "VALUES (?,?,?,?)", (username, pw_hash, role, time.time()))  # fmt: skip
            return int(cur.lastrowid or 0)

    def user(self, username: str) -> tuple[int, str, str, str, int] | None:
        """(id, username, pw_hash, role, generation) or None."""
        rows = self.query("SELECT id, username, pw_hash, role, generation FROM hub_users "
                          "WHERE username=?", (username,))  # fmt: skip
        return tuple(rows[0]) if rows else None

    def username(self, user_id: int) -> str | None:
        rows = self.query("SELECT username FROM hub_users WHERE id=?", (user_id,))
        return str(rows[0][0]) if rows else None

    def users(self) -> list[dict[str, Any]]:
        return [{"id": i, "username": u, "role": r, "created_at": t} for i, u, r, t in
                self.query("SELECT id, username, role, created_at FROM hub_users ORDER BY id")]

    def set_user(self, user_id: int, **fields: Any) -> bool:
        """Change a user's role and/or password hash. Either one is a change of credentials:
        the generation moves on, so every token issued before (or during: a login whose
        argon2 check overlapped this call) stops authenticating."""
        sets = ", ".join(f"{k}=?" for k in fields)
        with self.tx() as c:
            cur = c.execute(f"UPDATE hub_users SET {sets}, generation=generation+1 WHERE id=?",
                            (*fields.values(), user_id))  # fmt: skip
            c.execute("UPDATE hub_tokens SET revoked=1 WHERE user_id=?", (user_id,))
            return cur.rowcount == 1

    def rehash(self, user_id: int, old_hash: str, new_hash: str) -> None:
        """Store a hash with newer argon2 parameters for the same password: no change of
        credentials, so sessions stay (and nothing happens if the password changed since)."""
        with self.tx() as c:
            c.execute("UPDATE hub_users SET pw_hash=? WHERE id=? AND pw_hash=?",
                      (new_hash, user_id, old_hash))  # fmt: skip

    def delete_user(self, user_id: int) -> bool:
        with self.tx() as c:  # its tokens go with it (ON DELETE CASCADE)
            return c.execute("DELETE FROM hub_users WHERE id=?", (user_id,)).rowcount == 1

    def add_token(self, token_hash: str, user_id: int, generation: int, kind: str, name: str,
                  csrf: str, expires_at: float) -> int:  # fmt: skip
        """Store a token for the user as they were when their credentials were checked; 0 if
        the user was deleted or changed since (the caller refuses the login). The re-read
        and the insert are one statement, so no deletion or reset can fall between them."""
        with self.tx() as c:
            cur = c.execute("INSERT INTO hub_tokens(hash, user_id, generation, kind, name, csrf,"
                            " created_at, expires_at) SELECT ?, id, generation, ?, ?, ?, ?, ? "
                            "FROM hub_users WHERE id=? AND generation=?",
                            (token_hash, kind, name, csrf, time.time(), expires_at, user_id,
                             generation))  # fmt: skip
            return int(cur.lastrowid or 0) if cur.rowcount == 1 else 0

    def token(self, token_hash: str) -> tuple[Any, ...] | None:
        """(id, kind, csrf, expires_at, revoked, user id, username, role, generation). A token
        from an earlier generation of its user reads as revoked."""
        rows = self.query(
            "SELECT t.id, t.kind, t.csrf, t.expires_at, t.revoked OR t.generation != u.generation,"
            " u.id, u.username, u.role, u.generation "
            "FROM hub_tokens t JOIN hub_users u ON u.id = t.user_id WHERE t.hash=?",
            (token_hash,),
        )
        return tuple(rows[0]) if rows else None

    def tokens(self, user_id: int) -> list[dict[str, Any]]:
        return [{"id": i, "kind": k, "name": n, "created_at": c, "expires_at": e,
                 "revoked": bool(r)} for i, k, n, c, e, r in
                self.query("SELECT t.id, t.kind, t.name, t.created_at, t.expires_at, "
                           "t.revoked OR t.generation != u.generation FROM hub_tokens t "
                           "JOIN hub_users u ON u.id = t.user_id WHERE t.user_id=? "
                           "ORDER BY t.id", (user_id,))]  # fmt: skip

    def revoke_token(self, token_id: int, user_id: int | None = None) -> bool:
        with self.tx() as c:
            if user_id is None:
                cur = c.execute("UPDATE hub_tokens SET revoked=1 WHERE id=?", (token_id,))
            else:
                cur = c.execute("UPDATE hub_tokens SET revoked=1 WHERE id=? AND user_id=?",
                                (token_id, user_id))  # fmt: skip
            return cur.rowcount == 1

    # ---- events: stored with increasing ids, replayed to SSE clients ----------------------

    def add_event(self, kind: str, job_id: int | None, data: dict[str, Any]) -> int:
        text = json.dumps(data, separators=(",", ":"))
        with self.tx() as c:
            cur = c.execute("INSERT INTO hub_events(job_id, kind, data, at) VALUES (?,?,?,?)",
                            (job_id, kind, text, time.time()))  # fmt: skip
            event_id = int(cur.lastrowid or 0)
            if event_id % 1000 == 0:
                c.execute("DELETE FROM hub_events WHERE id <= ?", (event_id - KEEP_EVENTS,))
            with self._mem:
                self._recent.append((event_id, job_id, kind, text))
        for wake in list(self.listeners):
            wake()
        return event_id

    def recent_after(self, after: int, job_id: int | None = None,
                     limit: int = 500) -> list[tuple[int, int | None, str, str]] | None:
        """Events with id > after from memory, or None if memory does not reach back that
        far (then `events_after` reads the table)."""
        with self._mem:
            recent = self._recent
            if not recent or recent[0][0] > after + 1:
                return None if after < self._last_id() else []
            return [e for e in recent if e[0] > after and (job_id is None or e[1] == job_id)
                    ][:limit]  # fmt: skip

    def _last_id(self) -> int:
        return self._recent[-1][0] if self._recent else self._db_last_id

    def events_after(self, after: int, job_id: int | None = None,
                     limit: int = 500) -> list[tuple[int, int | None, str, str]]:  # fmt: skip
        """Events with id > after (for one job, or all), oldest first."""
        got = self.recent_after(after, job_id, limit)
        if got is not None:
            return got
        if job_id is None:
            rows = self.query("SELECT id, job_id, kind, data FROM hub_events WHERE id > ? "
                              "ORDER BY id LIMIT ?", (after, limit))  # fmt: skip
        else:
            rows = self.query("SELECT id, job_id, kind, data FROM hub_events WHERE id > ? AND "
                              "job_id=? ORDER BY id LIMIT ?", (after, job_id, limit))  # fmt: skip
        return [(int(i), j, str(k), str(d)) for i, j, k, d in rows]

    def last_event_id(self) -> int:
        with self._mem:
            return self._last_id()
