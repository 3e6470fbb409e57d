"""Sync semantics end to end: coordinator + worker pool + local files, through the API and CLI."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

import orbit_fast
from orbit_fast.progress import FileDone, Summary
from tests.conftest import (
    assert_same_tree,
    json_events,
    make_tree,
    run_cli,
    summary_of,
    temp_files,
    write,
)

pytestmark = pytest.mark.integration


def sync(src: Path, dst: Path, db: Path, events: list | None = None, **kw) -> Summary:
    kw.setdefault("concurrency", 2)
    return orbit_fast.sync(
        str(src),
        str(dst),
        db_path=str(db),
        on_event=events.append if events is not None else None,
        **kw,
    )


def test_copy_then_unchanged_then_update(tmp_path: Path, rng) -> None:
    src, dst, db = make_tree(tmp_path / "src", rng), tmp_path / "dst", tmp_path / "jobs.db"
    first = sync(src, dst, db)
    assert first.exit_code == 0 and first.files_copied == first.files_scanned > 50
    assert_same_tree(src, dst)
    assert temp_files(dst) == []

    again = sync(src, dst, db)
    assert again.files_copied == 0 and again.bytes_copied == 0
    assert again.files_unchanged == first.files_scanned

    write(src / "f1.bin", b"new content", mtime=1_700_000_000)
    (src / "f0.bin").chmod(0o611)  # mode-only change: fixed without a copy
    ev: list = []
    third = sync(src, dst, db, ev)
    assert third.files_copied == 1
    assert {(e.path, e.action) for e in ev if isinstance(e, FileDone)} == {
        ("f1.bin", "update"),
        ("f0.bin", "meta"),
    }
    assert_same_tree(src, dst)
    rows = sqlite3.connect(db).execute("SELECT state, exit_code FROM runs").fetchall()
    assert rows == [("done", 0)] * 3


def test_large_sparse_and_odd_files(tmp_path: Path, rng) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    big = rng.randbytes(3 << 20) + bytes(5 << 20) + rng.randbytes(123457)  # zeros in the middle
    write(src / "big.bin", big, mtime=1_650_000_000.123456789)
    write(src / "tail_zeros.bin", rng.randbytes(1000) + bytes(3 << 20))
    write(src / "empty", b"")
    write(src / "sub" / "ünïcødé ☃ name.txt", b"x")
    write(src / "sub" / "spaces and 'quotes' \"too\"", b"y")
    bad = os.fsencode(str(src / "sub")) + b"/latin1-\xe9\xff.bin"
    with open(bad, "wb") as f:
        f.write(b"not utf-8 name")
    s = sync(src, dst, tmp_path / "j.db", chunk_size_mb=1)
    assert s.exit_code == 0
    assert_same_tree(src, dst)
    # The 5 MiB of zeros became holes (sparse) yet read back as zeros.
    assert os.stat(dst / "big.bin").st_blocks * 512 < len(big) - (4 << 20)
    assert (dst / "tail_zeros.bin").stat().st_size == 1000 + (3 << 20)


def test_mirror_deletes_but_never_excluded_or_outside(tmp_path: Path, rng) -> None:
    src, dst, db = tmp_path / "src", tmp_path / "dst", tmp_path / "j.db"
    write(src / "keep.txt", b"k")
    write(dst / "stale.txt", b"s")
    write(dst / "old_dir" / "deep" / "x", b"x")
    write(dst / "cache.tmp", b"excluded: must survive")
    outside = write(tmp_path / "outside" / "precious", b"p")
    (dst / "link_out").symlink_to(tmp_path / "outside")  # a link pointing out of the tree
    s = sync(src, dst, db, mirror=True, filters=(("exclude", "*.tmp"),))
    assert s.files_deleted == 3
    assert sorted(p.name for p in dst.iterdir()) == ["cache.tmp", "keep.txt"]
    assert outside.read_bytes() == b"p"


def test_dry_run_changes_nothing(tmp_path: Path, rng) -> None:
    src, dst, db = make_tree(tmp_path / "src", rng, files=10), tmp_path / "dst", tmp_path / "j.db"
    write(dst / "stale", b"s")
    before = sorted(os.listdir(dst))
    proc = run_cli("sync", str(src), str(dst), "--db-path", str(db), "--mirror", "--dry-run")
    plan = {tuple(line.split(None, 1)) for line in proc.stdout.splitlines()[:-1]}
    assert ("copy", "f0.bin") in plan and ("delete", "stale") in plan
    assert sorted(os.listdir(dst)) == before
    assert not db.exists()


def test_checksum_finds_same_size_same_mtime_change(tmp_path: Path) -> None:
    src, dst, db = tmp_path / "src", tmp_path / "dst", tmp_path / "j.db"
    write(src / "a", b"AAAA", mtime=1_600_000_000)
    write(src / "b", b"BBBB", mtime=1_600_000_000)
    sync(src, dst, db)
    write(dst / "a", b"ZZZZ", mtime=1_600_000_000)  # same size and mtime, other bytes
    assert sync(src, dst, db).files_copied == 0  # size+mtime cannot see it
    s = sync(src, dst, db, checksum=True)
    assert s.files_copied == 1 and s.files_unchanged == 1
    assert (dst / "a").read_bytes() == b"AAAA"


def test_filters_first_match_wins(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    for rel in ["a.txt", "b.log", "keep/important.log", "skip/x.txt", "deep/er/c.txt"]:
        write(src / rel, b"1")
    proc = run_cli(
        "sync",
        str(src),
        str(dst),
        "--db-path",
        str(tmp_path / "j.db"),
        "--include",
        "keep/**",
        "--exclude",
        "*.log",
        "--exclude",
        "skip/",
    )
    assert proc.returncode == 0
    got = sorted(str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file())
    assert got == ["a.txt", "deep/er/c.txt", "keep/important.log"]


def test_symlinks_are_links_and_never_followed(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    secret = write(tmp_path / "outside" / "secret", b"s")
    write(src / "real", b"r")
    (src / "to_outside_dir").symlink_to(secret.parent)
    (src / "to_real").symlink_to("real")
    sync(src, dst, tmp_path / "j.db")
    assert os.readlink(dst / "to_outside_dir") == str(secret.parent)
    assert (dst / "to_outside_dir").is_symlink() and not (dst / "secret").exists()
    # A destination directory replaced by a link in the source is not written through.
    assert_same_tree(src, dst)


def test_type_conflict_without_mirror_is_skipped_with_exit_1(tmp_path: Path) -> None:
    src, dst, db = tmp_path / "src", tmp_path / "dst", tmp_path / "j.db"
    write(src / "x" / "inner", b"1")
    write(dst / "x", b"a file where the source has a dir")
    s = sync(src, dst, db)
    assert s.exit_code == 1 and s.skipped == ["x"]
    assert (dst / "x").read_bytes().startswith(b"a file")
    s = sync(src, dst, db, mirror=True)
    assert s.exit_code == 0 and (dst / "x" / "inner").read_bytes() == b"1"


def test_guide_form_and_json_events(tmp_path: Path, rng) -> None:
    src = make_tree(tmp_path / "src", rng, files=20)
    dst, db = tmp_path / "dst", tmp_path / "orbit-local.db"
    proc = run_cli(
        "sync", "--source", str(src), "--destination", str(dst), "--db-path", str(db), "--json"
    )
    kinds = [e["event"] for e in json_events(proc.stdout)]
    assert kinds[0] == "start" and kinds[-1] == "summary" and "file_done" in kinds
    assert "progress" in kinds
    assert summary_of(proc.stdout)["files_copied"] == 20
    assert db.exists()


def test_default_db_path_is_under_state_dir(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "a", b"1")
    run_cli("sync", str(src), str(dst))
    assert (Path(os.environ["XDG_STATE_HOME"]) / "orbit-fast" / "jobs.db").exists()


def test_source_changing_during_copy_is_never_recorded_mixed(tmp_path: Path) -> None:
    """A writer keeps appending to a file while it is copied: the copy is redone or skipped,
    and whatever lands at the destination is a consistent prefix-free snapshot."""
    import threading

    src, dst = tmp_path / "src", tmp_path / "dst"
    path = write(src / "growing.log", os.urandom(6 << 20))
    stop = threading.Event()

    def grow() -> None:
        with open(path, "ab") as f:
            while not stop.is_set():
                f.write(os.urandom(4096))
                f.flush()

    t = threading.Thread(target=grow)
    t.start()
    try:
        s = sync(src, dst, tmp_path / "j.db", chunk_size_mb=0.25, concurrency=1)
    finally:
        stop.set()
        t.join()
    if s.exit_code == 1:
        assert s.skipped == ["growing.log"] and not (dst / "growing.log").exists()
    else:  # the writer happened to pause long enough: then the copy must be exact
        copied = (dst / "growing.log").read_bytes()
        assert path.read_bytes()[: len(copied)] == copied
    assert temp_files(dst) == []


def test_a_stale_resume_record_under_a_replaced_directory_ends_quietly(tmp_path: Path) -> None:
    """A large file's copy was interrupted (its resume record is in the jobs DB), then its
    directory became a file in the source: --mirror replaces it, and the record whose temp
    file can no longer exist is dropped without failing the run, now or later."""
    from orbit_fast.coordinator.sync import job_name
    from orbit_fast.index.jobs_db import JobsDB

    src, dst, db = tmp_path / "src", tmp_path / "dst", tmp_path / "jobs.db"
    write(src / "a", b"now a file")
    opts = orbit_fast.SyncOptions(source=str(src), destination=str(dst), mirror=True,
                                  db_path=str(db))  # fmt: skip
    jobs = JobsDB.open(str(db))
    job = jobs.get_or_create_job(job_name(opts), "sync", str(src), str(dst), "{}")
    jobs.queue_upload(job.id, "a/big", "9000000:1", 4 << 20, ".big.orbit-x.tmp")
    jobs.checkpoint()
    jobs.close()
    write(dst / "a" / "big", b"an old copy")  # "a" is a directory at the destination
    for _ in range(2):
        s = orbit_fast.sync(options=opts)
        assert s.exit_code == 0 and s.warnings == 0, s
    assert (dst / "a").read_bytes() == b"now a file"
    jobs = JobsDB.open(str(db))
    assert jobs.uploads(job.id) == {}
    jobs.close()
