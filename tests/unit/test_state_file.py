"""StateClaims: the state files one handle (a hub's api.Engine) holds, and how its runs borrow
them; and the Engine that owns them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orbit_fast import fsinfo
from orbit_fast.api import Engine
from orbit_fast.errors import DatabaseBusy, NetworkFilesystemError
from orbit_fast.index import state_file
from orbit_fast.index.jobs_db import JobsDB
from orbit_fast.index.state_file import StateClaims
from orbit_fast.index.universe import Universe

ARGS = ("the test file", "--test-path", "tests need it local")


def test_a_second_holder_is_refused_until_the_first_closes(tmp_path: Path) -> None:
    path = str(tmp_path / "f.db")
    first, second = StateClaims(), StateClaims()
    first.hold(path, *ARGS)
    with pytest.raises(DatabaseBusy, match=f"another orbit-fast process \\(pid {os.getpid()}\\)"):
        second.hold(path, *ARGS)
    with pytest.raises(DatabaseBusy, match="another orbit-fast process"):
        state_file.claim(path, *ARGS)  # a claim of its own (claims=None) is refused too
    assert first.is_held(path) and not second.is_held(path)
    first.close()
    assert not first.is_held(path)
    second.hold(path, *ARGS)  # the lock went with the first holder
    second.close()


def test_a_held_file_is_lent_to_several_borrowers(tmp_path: Path) -> None:
    claims = StateClaims()
    path = str(tmp_path / "jobs.db")
    claims.hold(path, *ARGS)
    a = claims.claim(path, *ARGS)
    b = state_file.claim(os.path.relpath(path), *ARGS, claims=claims)  # the same file
    assert a != b
    claims.release(a)
    state_file.release(b, claims)
    with pytest.raises(DatabaseBusy):  # releasing the borrowed fds released nothing
        StateClaims().hold(path, *ARGS)
    claims.close()


def test_a_single_file_is_lent_to_one_borrower_at_a_time(tmp_path: Path) -> None:
    claims = StateClaims()
    path = str(tmp_path / "u.db")
    claims.hold(path, *ARGS, single=True)
    fd = claims.claim(path, *ARGS)
    with pytest.raises(DatabaseBusy, match="in use by another job of this hub; it runs when "
                                           "that one ends"):  # fmt: skip
        claims.claim(path, *ARGS)
    claims.release(fd)
    claims.release(claims.claim(path, *ARGS))  # free again once the first gave it back
    claims.close()


def test_claims_are_per_holder_not_per_process(tmp_path: Path) -> None:
    """A file held by one StateClaims is not lent to another's borrowers (nor to callers
    without claims): each handle's runs see only its own files."""
    path = str(tmp_path / "jobs.db")
    holder = StateClaims()
    holder.hold(path, *ARGS)
    with pytest.raises(DatabaseBusy, match="another orbit-fast process"):
        StateClaims().claim(path, *ARGS)
    with pytest.raises(DatabaseBusy, match="another orbit-fast process"):
        JobsDB.open(path)
    JobsDB.open(path, claims=holder).close()
    holder.close()


def test_a_network_filesystem_is_refused(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(fsinfo, "network_fs_name", lambda d: "cifs")
    with pytest.raises(NetworkFilesystemError, match="--test-path on a local disk"):
        StateClaims().hold(str(tmp_path / "f.db"), *ARGS)


def test_the_engine_holds_its_files_and_lends_them_to_its_runs(tmp_path: Path) -> None:
    db, universe = str(tmp_path / "data" / "jobs.db"), str(tmp_path / "data" / "u.db")
    with Engine(db, universe, db_setting="DATABASE_URL") as engine:
        assert os.stat(tmp_path / "data").st_mode & 0o777 == 0o700
        assert os.stat(db).st_mode & 0o777 == 0o600
        with pytest.raises(DatabaseBusy, match="give this run its own DATABASE_URL"):
            Engine(db, universe, db_setting="DATABASE_URL").open()  # a second hub
        with pytest.raises(DatabaseBusy, match="another orbit-fast process"):
            Universe.open(universe)  # not through the engine: refused
        run = JobsDB.open(db, claims=engine._claims)
        job = run.get_or_create_job("n", "sync", "/s", "/d", "{}")
        run_id = run.start_run(job.id)
        run.queue_error(run_id, os.fsencode("a/\udcff.bin"), "source_vanished", "gone")
        run.queue_error(run_id, b"b", "source_unreadable", "denied")
        run.checkpoint()
        run.close()
        assert [tuple(e) for e in engine.file_errors(run_id)] == [
            ("a/\udcff.bin", "source_vanished", "gone"), ("b", "source_unreadable", "denied")]
        assert len(engine.file_errors(run_id, limit=1)) == 1
        with Universe.open(universe, claims=engine._claims):
            with pytest.raises(DatabaseBusy, match="another job of this hub"):
                Universe.open(universe, claims=engine._claims)
    JobsDB.open(db).close()  # closed: the files are free again
    Universe.open(universe).close()
