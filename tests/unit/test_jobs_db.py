from __future__ import annotations

import pytest

from orbit_fast.errors import DatabaseBusy, DatabaseError
from orbit_fast.index.jobs_db import JobsDB


def test_wal_checkpoint_and_resume_records(tmp_path) -> None:
    db = JobsDB.open(str(tmp_path / "j.db"))
    try:
        assert db.execute("PRAGMA journal_mode")[0][0] == "wal"
        job = db.get_or_create_job("n", "sync", "/s", "/d", "{}")
        assert db.get_or_create_job("n", "sync", "/s", "/d", "{}") == job
        db.start_run(job.id)
        db.queue_upload(job.id, "big", "100:5", 10, ".big.orbit-t.tmp")
        db.queue_part(job.id, "big", 1, "d0")
        db.queue_part(job.id, "big", 4, "d3")
        assert db.uploads(job.id) == {}  # queued, not yet committed
        assert db.checkpoint() == 5  # the stale parts' delete, the stale row's, then 3 rows
        rec = db.uploads(job.id)["big"]
        assert (rec.src_sig, rec.part_bytes, rec.state) == ("100:5", 10, ".big.orbit-t.tmp")
        assert rec.parts == {1: "d0", 4: "d3"}
        db.queue_upload(job.id, "big", "100:6", 10, ".big.orbit-t.tmp")  # source changed
        db.checkpoint()
        assert db.uploads(job.id)["big"].parts == {}  # an earlier attempt's parts are stale
        db.queue_drop_upload(job.id, "big")
        db.checkpoint()
        assert db.uploads(job.id) == {}
        assert db.integrity_check() == "ok"
    finally:
        db.close()


def test_one_writer(tmp_path) -> None:
    first = JobsDB.open(str(tmp_path / "j.db"))
    try:
        with pytest.raises(DatabaseBusy, match="another orbit-fast process"):
            JobsDB.open(str(tmp_path / "j.db"))
    finally:
        first.close()
    JobsDB.open(str(tmp_path / "j.db")).close()  # the lock went with the holder


def test_a_crashed_run_is_marked_when_the_next_starts(tmp_path) -> None:
    db = JobsDB.open(str(tmp_path / "j.db"))
    job = db.get_or_create_job("n", "sync", "/s", "/d", "{}")
    db.start_run(job.id)
    db.close()  # as if the process died: run left 'running'
    db = JobsDB.open(str(tmp_path / "j.db"))
    db.start_run(job.id)
    assert [state for _, state, _ in db.runs(job.id)] == ["crashed", "running"]
    db.close()


def test_garbage_file_is_a_clear_error(tmp_path) -> None:
    (tmp_path / "j.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(DatabaseError, match="move it aside"):
        JobsDB.open(str(tmp_path / "j.db"))


def test_a_version_1_db_is_upgraded_keeping_jobs_uploads_and_records(tmp_path) -> None:
    import sqlite3

    path = str(tmp_path / "j.db")
    JobsDB.open(path).close()
    con = sqlite3.connect(path)
    con.executescript("""
        UPDATE meta SET value='1' WHERE key='schema_version';
        CREATE TABLE partials (job_id INTEGER, path BLOB);
        CREATE TABLE objects (job_id INTEGER, path BLOB, src_sig TEXT, dst_sig TEXT);
        INSERT INTO objects VALUES (1, CAST('a/b' AS BLOB), 'etag1', '10:5');
        INSERT INTO jobs(name, kind, source, destination, options, token, created_at, updated_at)
            VALUES ('j', 'sync', '/s', 's3://b/p', '{}', 'tok', 0, 0);
        INSERT INTO uploads VALUES (1, CAST('big' AS BLOB), 'etag', 8, 'upload-id');
    """)
    con.close()
    db = JobsDB.open(path)
    try:
        assert db.execute("SELECT value FROM meta WHERE key='schema_version'") == [("2",)]
        assert not db.execute("SELECT name FROM sqlite_master WHERE name='partials'")
        assert db.get_or_create_job("j", "sync", "/s", "s3://b/p", "{}").token == "tok"
        assert db.uploads(1)["big"].state == "upload-id"  # its parts on S3 stay resumable
        assert db.records(1) == {"a/b": ("etag1", "10:5")}  # no request per object to rebuild
        assert not db.execute("SELECT name FROM sqlite_master WHERE name='objects'")
    finally:
        db.close()
