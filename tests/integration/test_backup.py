"""Backup, restore, verify, forget, prune and friends through the real CLI on real trees."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from orbit_fast.errors import ExitCode
from tests.conftest import (
    ORBIT,
    assert_same_tree,
    json_events,
    make_tree,
    run_cli,
    sealed_lock,
    write,
)

pytestmark = pytest.mark.integration
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounts tmpfs / drops capabilities")


def backup(src: Path, repo: Path, *extra: str, check: int = 0) -> dict:
    proc = run_cli("backup", str(src), str(repo), "--json", "-j", "2", *extra, check=check)
    (summary,) = [e for e in json_events(proc.stdout) if e["event"] == "backup_summary"]
    return summary


def restore(repo: Path, target: Path, *args: str, check: int = 0):
    return run_cli("restore", "-r", str(repo), *(args or ("latest",)), "--target", str(target),
                   check=check)  # fmt: skip


def packs(repo: Path) -> list[Path]:
    return sorted(p for p in (repo / "packs").rglob("*") if p.is_file())


def test_roundtrip_incremental_and_dedup(tmp_path: Path, rng) -> None:
    src, repo = make_tree(tmp_path / "src", rng, files=80, max_size=300_000), tmp_path / "repo"
    weird = src / os.fsdecode(b"caf\xe9-\xff.bin")  # not UTF-8: bytes must round-trip
    write(weird, rng.randbytes(5000))
    big = rng.randbytes(3 << 20)
    write(src / "big.bin", big)
    write(src / "copy-of-big.bin", big)  # stored once
    first = backup(src, repo)
    assert first["files_new"] == first["files_total"] and first["exit_code"] == 0
    assert first["bytes_read"] == first["bytes_total"]
    # Random data does not compress; the duplicate 3 MiB must not be stored twice.
    assert first["bytes_added"] < first["bytes_total"] - (3 << 20) + (1 << 20)
    restore(repo, tmp_path / "out")
    assert_same_tree(src, tmp_path / "out")

    again = backup(src, repo)
    assert again["files_unchanged"] == first["files_total"]
    assert again["bytes_read"] == 0 and again["chunks_added"] == 0 and again["packs_added"] == 0
    assert again["parent"] == first["snapshot"]

    # A byte inserted near the start of the big file: only the chunks around it are new.
    write(src / "big.bin", big[:1000] + b"!" + big[1000:])
    write(src / "new.txt", b"hello\n" * 1000)
    third = backup(src, repo)
    assert (third["files_new"], third["files_changed"]) == (1, 1)
    assert third["bytes_read"] == len(big) + 1 + 6000
    assert third["bytes_added"] < (2 << 20)  # at most two 1 MiB-average chunks, compressed
    restore(repo, tmp_path / "out3")
    assert_same_tree(src, tmp_path / "out3")
    restore(repo, tmp_path / "out1", first["snapshot"][:8])
    assert (tmp_path / "out1" / "big.bin").read_bytes() == big

    snaps = [json.loads(x) for x in run_cli("snapshots", "-r", str(repo), "--json").stdout.split(
        "\n") if x]  # fmt: skip
    assert [s["id"] for s in snaps] == [first["snapshot"], again["snapshot"], third["snapshot"]]
    diff = run_cli("diff", "-r", str(repo), first["snapshot"][:10], third["snapshot"][:10])
    assert "+ new.txt" in diff.stdout and "M big.bin" in diff.stdout
    assert "1 added, 0 removed, 1 modified" in diff.stdout
    ls = run_cli("ls", "-r", str(repo), "latest", "d1", "--json").stdout
    paths = [json.loads(x)["path"] for x in ls.splitlines()]
    assert paths and all(p == "d1" or p.startswith("d1/") for p in paths)
    run_cli("verify", "-r", str(repo))
    run_cli("verify", "-r", str(repo), "--quick")


def test_restore_subset_and_resume(tmp_path: Path, rng) -> None:
    src, repo = make_tree(tmp_path / "src", rng, files=40), tmp_path / "repo"
    backup(src, repo)
    # A top-level directory the random tree has (one named d2 is missing for ~0.2% of seeds).
    top = sorted(p.name for p in src.iterdir() if p.is_dir() and p.name.startswith("d"))[0]
    restore(repo, tmp_path / "part", "latest", top)
    got = {p.relative_to(tmp_path / "part").parts[0] for p in (tmp_path / "part").rglob("*")}
    assert got <= {top}
    out = tmp_path / "out"
    restore(repo, out)
    victims = [p for p in out.rglob("*.bin") if p.is_file() and p.stat().st_size > 10][:3]
    for v in victims:  # an interrupted restore: files missing or cut short
        v.unlink() if v.name < "f3" else v.write_bytes(b"x")
    proc = restore(repo, out)
    assert_same_tree(src, out)
    assert "already in place" in proc.stdout
    restore(repo, out, "latest", "no/such/path", check=ExitCode.USAGE)


@pytest.mark.parametrize("encrypted", [True, False])
def test_bit_flip_is_named_and_other_files_restore(tmp_path: Path, rng, encrypted: bool) -> None:
    # Encrypted, the blob fails authentication (21); in a repository made with
    # --insecure-no-encryption, its content no longer matches its id (13).
    code = ExitCode.AUTHENTICATION if encrypted else ExitCode.INTEGRITY
    src, repo = tmp_path / "src", tmp_path / "repo"
    write(src / "a.bin", rng.randbytes(200_000))
    write(src / "b.bin", rng.randbytes(200_000))
    snap = backup(src, repo, *(() if encrypted else ("--insecure-no-encryption",)))["snapshot"]
    (pack,) = packs(repo)
    data = bytearray(pack.read_bytes())
    data[100] ^= 0x10  # inside the first blob (each file is one chunk)
    pack.write_bytes(bytes(data))
    proc = run_cli("verify", "-r", str(repo), check=code)
    hit = [f for f in ("a.bin", "b.bin") if f"snapshot {snap[:8]} file {f} chunk" in proc.stdout]
    assert len(hit) == 1, proc.stdout
    assert f"pack {pack.name[:12]}" in proc.stdout
    (bad,) = hit
    (good,) = {"a.bin", "b.bin"} - {bad}
    out = tmp_path / "out"
    proc = restore(repo, out, check=code)
    assert bad in proc.stderr
    assert (out / good).read_bytes() == (src / good).read_bytes()
    assert not (out / bad).exists() and not list(out.glob(".*tmp"))


def test_not_a_repository_and_newer_format(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "x").write_text("x")
    proc = run_cli("snapshots", "-r", str(tmp_path / "plain"), check=ExitCode.REPOSITORY)
    assert "not an orbit-fast repository" in proc.stderr and "orbit-fast init" in proc.stderr
    src = tmp_path / "src"
    write(src / "f", b"data")
    run_cli("backup", str(src), str(tmp_path / "plain"), check=ExitCode.REPOSITORY)
    repo = tmp_path / "repo"
    run_cli("init", str(repo), "--codec", "lz4")
    cfg = json.loads((repo / "config").read_text())
    cfg["format"] = 99
    (repo / "config").write_text(json.dumps(cfg))
    proc = run_cli("backup", str(src), str(repo), check=ExitCode.REPOSITORY)
    assert "format 99" in proc.stderr and "Upgrade orbit-fast" in proc.stderr
    run_cli("init", str(tmp_path / "x"), "--codec", "gzip", check=ExitCode.USAGE)
    proc = run_cli("backup", str(src), str(src / "repo"), check=ExitCode.USAGE)
    assert "inside the source" in proc.stderr


def test_init_keeps_the_config_private_and_wants_an_empty_place(tmp_path: Path) -> None:
    import stat

    repo = tmp_path / "repo"
    run_cli("init", str(repo))
    assert stat.S_IMODE((repo / "config").stat().st_mode) == 0o600  # it holds the chunk-id key
    (tmp_path / "used" / "empty-dir").mkdir(parents=True)  # no file, yet something lives here
    proc = run_cli("init", str(tmp_path / "used"), check=ExitCode.USAGE)
    assert "is not empty and not a repository" in proc.stderr
    proc = run_cli("init", str(repo), check=ExitCode.USAGE)
    assert "already a repository" in proc.stderr


def test_lock_held_by_a_live_process_and_stale_lock(tmp_path: Path) -> None:
    src, repo = tmp_path / "src", tmp_path / "repo"
    write(src / "f", b"data")
    backup(src, repo)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        from orbit_fast.repo.repository import _start_time

        lock = {"host": os.uname().nodename, "pid": sleeper.pid,
                "start": _start_time(sleeper.pid), "operation": "backup", "time_ns": 0}  # fmt: skip
        (repo / "locks").mkdir(exist_ok=True)
        (repo / "locks" / "exclusive").write_bytes(sealed_lock(repo, lock))
        proc = run_cli("backup", str(src), str(repo), check=ExitCode.LOCKED)
        assert f"pid {sleeper.pid}" in proc.stderr and "orbit-fast unlock" in proc.stderr
    finally:
        sleeper.kill()
        sleeper.wait()
    backup(src, repo)  # the holder is dead: its lock is stale and taken over
    assert not (repo / "locks" / "exclusive").exists()
    (repo / "locks" / "exclusive").write_bytes(sealed_lock(repo, {**lock, "host": "elsewhere"}))
    run_cli("backup", str(src), str(repo), check=ExitCode.LOCKED)
    assert "removed the lock" in run_cli("unlock", "-r", str(repo)).stdout
    backup(src, repo)


def test_two_backups_at_once_one_waits_out(tmp_path: Path, rng) -> None:
    src, repo = tmp_path / "src", tmp_path / "repo"
    for i in range(40):
        write(src / f"f{i}", rng.randbytes(1 << 20))
    run_cli("init", str(repo))
    env = {**os.environ, "UNIVERSE_PATH": str(tmp_path / "u2.db")}
    first = subprocess.Popen([*ORBIT, "backup", str(src), str(repo), "--json",
                              "--db-path", str(tmp_path / "j1.db")],
                             stdout=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    try:
        for line in first.stdout:  # wait until it holds the lock and works
            if '"event":"start"' in line:
                break
        os.killpg(first.pid, signal.SIGSTOP)  # frozen while holding the lock
        proc = run_cli("backup", str(src), str(repo), "--db-path", str(tmp_path / "j2.db"),
                       env=env, check=ExitCode.LOCKED)  # fmt: skip
        assert "is locked by backup" in proc.stderr
    finally:
        os.killpg(first.pid, signal.SIGCONT)
        out, _ = first.communicate(timeout=120)
    assert first.returncode == 0, out
    restore(repo, tmp_path / "out")
    assert_same_tree(src, tmp_path / "out")


def test_forget_and_prune(tmp_path: Path, rng) -> None:
    src, repo = tmp_path / "src", tmp_path / "repo"
    keep = rng.randbytes(2 << 20)
    write(src / "keep.bin", keep)
    ids = []
    for _ in range(4):
        write(src / "churn.bin", rng.randbytes(3 << 20))
        ids.append(backup(src, repo)["snapshot"])
    size_before = sum(p.stat().st_size for p in packs(repo))
    proc = run_cli("forget", "-r", str(repo), "--keep-last", "2", "--dry-run")
    assert "would forget 2" in proc.stdout
    run_cli("forget", "-r", str(repo), check=ExitCode.USAGE)  # no policy: refused
    run_cli("forget", "-r", str(repo), "--keep-last", "2")
    names = [json.loads(x)["id"] for x in
             run_cli("snapshots", "-r", str(repo), "--json").stdout.splitlines()]  # fmt: skip
    assert names == ids[2:]
    proc = run_cli("prune", "-r", str(repo), "--json")
    (summary,) = [e for e in json_events(proc.stdout) if e["event"] == "prune_summary"]
    assert summary["chunks_dropped"] >= 4  # two 3 MiB versions of churn.bin, ~1 MiB chunks
    size_after = sum(p.stat().st_size for p in packs(repo))
    assert size_after <= size_before - (5 << 20)
    run_cli("verify", "-r", str(repo))
    for name in names:
        out = tmp_path / f"out-{name[:6]}"
        restore(repo, out, name[:8])
        assert (out / "keep.bin").read_bytes() == keep
    run_cli("forget", "-r", str(repo), "--keep-daily", "1", "--prune")  # same day: 1 kept
    assert len(run_cli("snapshots", "-r", str(repo), "--json").stdout.splitlines()) == 1
    run_cli("verify", "-r", str(repo))
    restore(repo, tmp_path / "last")
    assert_same_tree(src, tmp_path / "last")


def test_lost_universe_is_rebuilt_from_the_repository(tmp_path: Path, rng) -> None:
    src, repo = make_tree(tmp_path / "src", rng, files=30), tmp_path / "repo"
    universe = tmp_path / "state" / "universe.db"
    env = {**os.environ, "UNIVERSE_PATH": str(universe)}
    run_cli("backup", str(src), str(repo), env=env)
    for f in tmp_path.joinpath("state").iterdir():
        f.unlink()  # the index and its journal are gone
    restore_env = subprocess.run([*ORBIT, "restore", "-r", str(repo), "latest", "--target",
                                  str(tmp_path / "out")], env=env, capture_output=True,
                                 text=True)  # fmt: skip
    assert restore_env.returncode == 0, restore_env.stderr
    assert_same_tree(src, tmp_path / "out")
    proc = subprocess.run([*ORBIT, "index", "rebuild", "-r", str(repo)], env=env,
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0 and "indexed 1 packs" in proc.stdout
    s = subprocess.run([*ORBIT, "backup", str(src), str(repo), "--json"], env=env,
                       capture_output=True, text=True)  # fmt: skip
    (summary,) = [e for e in json_events(s.stdout) if e["event"] == "backup_summary"]
    assert summary["chunks_added"] == 0


@needs_root
def test_unreadable_entries_are_skipped_with_exit_1(tmp_path: Path, rng) -> None:
    from tests.integration.test_bad_input import NO_DAC

    src, repo = make_tree(tmp_path / "src", rng, files=10), tmp_path / "repo"
    write(src / "secret", b"hidden").chmod(0)
    (src / "closed").mkdir()
    write(src / "closed" / "x", b"x")
    (src / "closed").chmod(0)
    proc = subprocess.run([*NO_DAC, *ORBIT, "backup", str(src), str(repo), "--json"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == ExitCode.PARTIAL, proc.stderr
    (summary,) = [e for e in json_events(proc.stdout) if e["event"] == "backup_summary"]
    assert sorted(summary["skipped"]) == ["closed", "secret"]
    (src / "secret").chmod(0o644)
    (src / "closed").chmod(0o755)
    backup(src, repo)
    restore(repo, tmp_path / "out")
    assert_same_tree(src, tmp_path / "out")


@needs_root
def test_disk_full_then_resume_without_storing_again(tmp_path: Path, rng) -> None:
    src, repo = tmp_path / "src", tmp_path / "small"
    for i in range(12):
        write(src / f"f{i:02d}", rng.randbytes(1 << 20))
    repo.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(repo)], check=True)
    try:
        # Unencrypted, so that the test can set small packs in the config: some are then
        # complete before the disk fills.
        run_cli("init", str(repo), "--codec", "none", "--insecure-no-encryption")
        cfg = json.loads((repo / "config").read_text())
        (repo / "config").write_text(json.dumps({**cfg, "pack_bytes": 2 << 20}))
        proc = run_cli("backup", str(src), str(repo), check=ExitCode.DISK_FULL)
        assert "no space left" in proc.stderr and "rerun" in proc.stderr
        stored = sum(p.stat().st_size for p in packs(repo))
        assert stored >= 2 << 20
        assert not list(repo.rglob(".tmp-*"))
        subprocess.run(["mount", "-o", "remount,size=64m", str(repo)], check=True)
        summary = backup(src, repo)
        assert summary["bytes_added"] <= (12 << 20) - stored + (1 << 20)
        restore(repo, tmp_path / "out")
        assert_same_tree(src, tmp_path / "out")
    finally:
        subprocess.run(["umount", str(repo)], check=True)


def test_prune_killed_between_forgetting_and_deleting_packs(tmp_path: Path, rng) -> None:
    """The old packs of a prune come back (it died before deleting them): the next prune must
    not delete the only copy of a live chunk, even where it repacks the same chunks again."""
    src, repo = tmp_path / "src", tmp_path / "repo"
    write(src / "keep.bin", rng.randbytes(2 << 20))
    write(src / "churn.bin", rng.randbytes(3 << 20))
    backup(src, repo)
    write(src / "churn.bin", rng.randbytes(3 << 20))
    backup(src, repo)
    run_cli("forget", "-r", str(repo), "--keep-last", "1")
    saved = {p: p.read_bytes() for p in packs(repo)}
    run_cli("prune", "-r", str(repo))
    for p, data in saved.items():
        if not p.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)  # as if the deletes never happened
    for _ in range(2):
        run_cli("prune", "-r", str(repo))
        run_cli("verify", "-r", str(repo))
    restore(repo, tmp_path / "out")
    assert_same_tree(src, tmp_path / "out")


def test_temp_files_of_a_dead_writer_are_swept_with_its_lock(tmp_path: Path) -> None:
    src, repo = tmp_path / "src", tmp_path / "repo"
    write(src / "f", b"data")
    backup(src, repo)
    leftover = repo / "packs" / "00" / ".tmp-deadbeef0000"
    write(leftover, b"half a pack")
    # A writer killed while taking the lock, before its link: no lock is left to break, but the
    # next holder sweeps locks/ every time (only a dead writer's temp object can be there).
    half_lock = repo / "locks" / ".tmp-deadbeef0001"
    write(half_lock, b"{")
    backup(src, repo)  # no stale lock: nothing tells us a writer died, no pack is swept
    assert leftover.exists() and not half_lock.exists()
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that is gone
    (repo / "locks").mkdir(exist_ok=True)
    (repo / "locks" / "exclusive").write_text(json.dumps(
        {"host": os.uname().nodename, "pid": dead.pid, "start": 1, "operation": "backup",
         "time_ns": 0}))  # fmt: skip
    backup(src, repo)
    assert not leftover.exists()


def test_lock_taker_whose_temp_object_was_swept_sees_the_holder(tmp_path: Path) -> None:
    """The holder sweeps locks/ after it takes the lock; a process that was taking the lock at
    that instant loses its temp object before its link. It must report the holder, not fail
    with an I/O error."""
    from orbit_fast.errors import RepositoryLocked
    from orbit_fast.repo.repository import LOCK, Repository

    src, repo = tmp_path / "src", tmp_path / "repo"
    write(src / "f", b"data")
    backup(src, repo)
    with Repository.open(str(repo)) as holder, Repository.open(str(repo)) as taker:
        real_write = taker.store.write
        calls = []

        def raced(name: str, data: bytes, exclusive: bool = False) -> None:
            calls.append(name)
            if name == LOCK and len(calls) == 1:
                holder.lock("backup")  # won the race, and its sweep took our temp object
                raise FileNotFoundError(2, "No such file or directory")
            real_write(name, data, exclusive=exclusive)

        taker.store.write = raced  # type: ignore[method-assign]
        with pytest.raises(RepositoryLocked, match="locked by backup"):
            taker.lock("backup")
        assert holder.locked and not taker.locked and calls == [LOCK, LOCK]


def test_a_stopped_backup_says_no_snapshot_was_saved(tmp_path: Path, rng) -> None:
    """Ctrl-C in the middle: the text summary says what was kept, never "snapshot saved", and
    the run is recorded interrupted with what it read."""
    src, repo, db = tmp_path / "src", tmp_path / "repo", tmp_path / "jobs.db"
    for i in range(12):
        write(src / f"f{i}", rng.randbytes(24 << 20))
    run_cli("init", str(repo))
    proc = subprocess.Popen([*ORBIT, "backup", str(src), str(repo), "--no-progress", "-j", "1",
                             "--db-path", str(db)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    while not packs(repo):  # it is storing chunks: well inside the run
        assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == ExitCode.INTERRUPTED, (out, err)
    assert not [line for line in out.splitlines() if line.startswith("snapshot ")]  # saved
    assert "backup stopped before a snapshot was saved" in out
    assert "interrupted" in err
    import sqlite3

    con = sqlite3.connect(db)
    ((state, stats),) = con.execute("SELECT state, stats FROM runs").fetchall()
    con.close()
    assert state == "interrupted" and json.loads(stats)["bytes_read"] > 0
