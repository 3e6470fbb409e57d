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
        run = db.start_run(job.id)
        db.queue_partial(job.id, b"big", 100, 5, 10, b"/d/.big.tmp")
        db.queue_block(job.id, b"big", 0, b"d0")
        db.queue_block(job.id, b"big", 3, b"d3")
        assert db.partial(job.id, b"big") is None  # queued, not yet committed
        assert db.checkpoint() == 4
        part = db.partial(job.id, b"big")
        assert part is not None and part.blocks == {0: b"d0", 3: b"d3"}
        db.queue_file_done(job.id, run, b"big", 100, 5, b"D", had_partial=True)
        db.checkpoint()
        assert db.partial(job.id, b"big") is None
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
