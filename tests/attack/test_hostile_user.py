"""The hostile local user (issue #15): the engine runs as root, an attacker as `nobody` races it.

The attacker owns the source tree and swaps its files for symlinks to a root-only secret whose
target text has the file's length and whose own mtime is the file's, right after the run has
listed them; or it can write the parent of a destination (or restore target) directory and
swaps that directory for a symlink to a victim directory once the run writes in it. Each kind
runs RUNS times (sync and backup through the CLI, mirror through the CLI and as a hub job,
restore into a target). Runs may end in errors or with skipped files: what must hold is that
the secret's bytes never reach the destination or the repository, and that nothing in a victim
directory changes (listing, content, mode, owner, mtime).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orbit_fast import api
from orbit_fast.errors import OrbitError
from tests.attack.harness import (
    BLOCK_MB,
    RUNS,
    Arena,
    Attacker,
    Tally,
    changes,
    dest_group,
    give_to_nobody,
    make_files,
    make_victim,
    now,
    secret_holders,
    skip_reason,
    source_group,
    state_of,
)
from tests.conftest import ORBIT

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")]


@pytest.fixture
def arena() -> Iterator[Arena]:
    a = Arena()
    yield a
    a.close()


def cli(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ORBIT, *map(str, args)], capture_output=True, text=True,
                          timeout=180)  # fmt: skip


def sync_cli(src: Path, dst: Path, run: Path, *extra: str) -> int:
    return cli("sync", src, dst, "--db-path", run / "jobs.db", "--chunk-size-mb", BLOCK_MB,
               "-j", "2", "--json", "--no-progress", *extra).returncode  # fmt: skip


def victims(run: Path, rng: Any, n: int, names: list[str]) -> list[Path]:
    return [make_victim(run / "victims" / f"v{k}", rng, names) for k in range(n)]


def attacked(arena: Arena, run: Path, groups: list[dict[str, Any]], engine: Callable[..., Any],
             *args: Any) -> tuple[Any, float, list[dict[str, Any]]]:  # fmt: skip
    """Run `engine(*args)` while the attacker races it: (its result, when it ended, what the
    attacker did)."""
    atk = Attacker(arena, run, groups)
    try:
        result = engine(*args)
        ended = now()
        return result, ended, atk.finish()
    finally:
        atk.kill()


def test_sync_never_copies_a_source_file_swapped_for_a_link_to_a_secret(
        arena: Arena, rng: Any) -> None:  # fmt: skip
    tally = Tally("sync (CLI), source files swapped for links to the secret")
    for _ in range(RUNS):
        run = arena.run_dir()
        src, dst, stash = run / "src", run / "dst", run / "stash"
        files = make_files(src, rng, [f"f{i:03d}" for i in range(100)])
        dst.mkdir(mode=0o755)  # root's, and readable: the attacker waits for the first write
        stash.mkdir()
        give_to_nobody(src)
        give_to_nobody(stash)
        group = source_group(files, stash, arena.secret, {"new_entry": str(dst)})
        code, ended, report = attacked(arena, run, [group], sync_cli, src, dst, run)
        tally.record(code, ended, report, secret_holders(dst, arena.marker), [])
        shutil.rmtree(run)
    tally.check()


def test_sync_never_writes_through_a_destination_directory_swapped_for_a_link(
        arena: Arena, rng: Any) -> None:  # fmt: skip
    tally = Tally("sync (CLI), destination directories swapped for links to victims")
    for _ in range(RUNS):
        run = arena.run_dir()
        src, dst = run / "src", run / "dst"
        names = [f"a{i:03d}" for i in range(60)]
        for k in range(3):
            make_files(src / f"sub{k}", rng, names)
            (dst / f"sub{k}").mkdir(parents=True)  # the attacker's tree: it may rename in it
        give_to_nobody(dst)
        vs = victims(run, rng, 3, names[:5] + ["keep0", "keep1"])
        before = [state_of(v) for v in vs]
        group = dest_group([(dst / f"sub{k}", v) for k, v in enumerate(vs)])
        code, ended, report = attacked(arena, run, [group], sync_cli, src, dst, run)
        outside = [c for k, v in enumerate(vs) for c in changes(before[k], state_of(v), v.name)]
        tally.record(code, ended, report, [], outside)
        shutil.rmtree(run)
    tally.check()


class HubJobs:
    """A real orbit-server (tests/hub/conftest.py) as root, and one job per run through its API."""

    def __init__(self, root: Path) -> None:
        from tests.hub.conftest import HubProcess

        self.hub = HubProcess(root).start()
        self.client = self.hub.client(self.hub.admin_token())
        self.n = 0

    def run(self, mode: str, src: Path, dst: Path) -> str:
        self.n += 1
        c = self.client
        r = c.post("/api/jobs", json={"name": f"attacked-{self.n}", "mode": mode,
                                      "source": str(src), "destination": str(dst),
                                      "config": {"concurrency": 2, "chunk_size_mb": BLOCK_MB}})
        assert r.status_code == 201, r.text
        job = r.json()["id"]
        assert c.post(f"/api/jobs/{job}/run").status_code in (200, 202)
        got = self.hub.wait_state(c, job, ("completed", "partial", "failed", "retrying"),
                                  timeout=120)  # fmt: skip
        if got["state"] == "retrying":  # a failed run the hub would retry: one is enough here
            c.post(f"/api/jobs/{job}/cancel")
        return str(got["state"])

    def close(self) -> None:
        self.client.close()
        self.hub.stop()


@pytest.mark.parametrize("via", ["cli", "hub"])
def test_mirror_neither_leaks_nor_deletes_or_writes_outside_its_destination(
        arena: Arena, rng: Any, tmp_path: Path, via: str) -> None:  # fmt: skip
    """Both races in one run: top-level source files become links to the secret, and each
    destination subdirectory, holding names the mirror deletes, a link to a victim holding the
    same names (and some of the names it copies)."""
    tally = Tally(f"mirror ({via}), source files and destination directories swapped")
    hub = HubJobs(tmp_path) if via == "hub" else None
    try:
        for _ in range(RUNS):
            run = arena.run_dir()
            src, dst, stash = run / "src", run / "dst", run / "stash"
            files = make_files(src, rng, [f"f{i:03d}" for i in range(60)])
            names, extras = [f"a{i:03d}" for i in range(40)], [f"x{i:03d}" for i in range(30)]
            for k in range(2):
                # Single blocks: a block write failing in a swapped directory would end the run
                # before it reaches the deletes.
                make_files(src / f"sub{k}", rng, names, multi=0)
                make_files(dst / f"sub{k}", rng, extras)  # only there: the mirror deletes them
            stash.mkdir()
            for tree in (src, dst, stash):
                give_to_nobody(tree)
            vs = victims(run, rng, 2, extras + names[:5] + ["keep0"])
            before = [state_of(v) for v in vs]
            groups = [source_group(files, stash, arena.secret, {"new_entry": str(dst)}),
                      dest_group([(dst / f"sub{k}", v) for k, v in enumerate(vs)])]
            if hub is not None:
                code, ended, report = attacked(arena, run, groups, hub.run, "mirror", src, dst)
            else:
                code, ended, report = attacked(arena, run, groups, sync_cli, src, dst, run,
                                               "--mirror")  # fmt: skip
            outside = [c for k, v in enumerate(vs)
                       for c in changes(before[k], state_of(v), v.name)]  # fmt: skip
            tally.record(code, ended, report, secret_holders(dst, arena.marker), outside)
            shutil.rmtree(run)
    finally:
        if hub is not None:
            hub.close()
    tally.check()


def test_backup_never_stores_a_source_file_swapped_for_a_link_to_a_secret(
        arena: Arena, rng: Any) -> None:  # fmt: skip
    """The snapshot is restored (as root) and every restored file read; the repository is
    written uncompressed (--codec none), so its own files are searched too."""
    tally = Tally("backup (CLI), source files swapped for links to the secret")
    for _ in range(RUNS):
        run = arena.run_dir()
        src, repo, stash, out = run / "src", run / "repo", run / "stash", run / "restored"
        files = make_files(src, rng, [f"f{i:03d}" for i in range(80)])
        stash.mkdir()
        give_to_nobody(src)
        give_to_nobody(stash)
        # The attacker learns that the walk listed the tree from the directory's atime (it
        # never lists it itself): an old atime is updated by the first read (relatime).
        st = os.stat(src)
        os.utime(src, ns=(1_000_000_000_000_000_000, st.st_mtime_ns))
        group = source_group(files, stash, arena.secret, {"atime": str(src), "delay_s": 0.005})
        proc, ended, report = attacked(arena, run, [group], cli, "backup", src, repo, "--codec",
                                       "none", "-j", "2", "--json", "--no-progress",
                                       "--db-path", run / "jobs.db")  # fmt: skip
        code = proc.returncode
        leaks = secret_holders(repo, arena.marker)
        try:
            api.restore(str(repo), "latest", str(out), db_path=str(run / "jobs.db"))
        except OrbitError as exc:
            if code in (0, 1):  # a snapshot was written: it must restore
                raise AssertionError(f"the snapshot does not restore: {exc}") from exc
        else:
            leaks += [f"restored {x}" for x in secret_holders(out, arena.marker)]
        tally.record(code, ended, report, leaks, [])
        shutil.rmtree(run)
    tally.check()


def test_restore_never_writes_through_a_target_directory_swapped_for_a_link(
        arena: Arena, rng: Any) -> None:  # fmt: skip
    tally = Tally("restore (CLI), a target directory swapped for a link to a victim")
    setup = arena.run_dir()
    src, repo = setup / "src", setup / "repo"
    names = [f"a{i:03d}" for i in range(150)]
    make_files(src / "sub", rng, names, multi=0.5)
    make_files(src, rng, ["top0", "top1"])
    os.chmod(src / "sub", 0o755)
    done = cli("backup", src, repo, "-j", "2", "--no-progress", "--db-path", setup / "jobs.db")
    assert done.returncode == 0, done.stderr
    for _ in range(RUNS):
        run = arena.run_dir()
        target = run / "target"
        target.mkdir(mode=0o755)
        give_to_nobody(target)  # the attacker may rename in it (not in what it restores)
        (v,) = victims(run, rng, 1, names[:5] + ["keep0", "keep1"])
        before = state_of(v)
        # Swapped as soon as the restore creates it, before the first file in it is written.
        group = dest_group([(target / "sub", v)], watch_parent=True)
        proc, ended, report = attacked(arena, run, [group], cli, "restore", "-r", repo, "latest",
                                       "--target", target, "--db-path", run / "jobs.db",
                                       "--no-progress", "--json")  # fmt: skip
        code = proc.returncode
        tally.record(code, ended, report, [], changes(before, state_of(v), v.name))
        shutil.rmtree(run)
    tally.check()


def test_the_harness_sees_a_leak_and_a_write_outside() -> None:
    """The checks themselves, on a planted leak (a piece of the secret, mid-marker) and on a
    victim directory changed in mode and listing."""
    a = Arena()
    try:
        d = a.run_dir()
        (d / "copy").write_bytes(b"x" * 10 + a.secret.read_bytes()[5:200])
        (d / "clean").write_bytes(a.secret.read_bytes()[5:25])  # less than the whole marker
        (d / "link").symlink_to(a.secret)  # a link is no leak: it is never followed
        os.chmod(d / "copy", 0o644)
        assert secret_holders(d, a.marker) == ["copy (mode 0o644, uid 0)"]
        v = make_victim(d / "victims" / "v", random.Random(1), ["k"])
        before = state_of(v)
        assert changes(before, state_of(v), "v") == []
        os.chmod(v, 0o755)
        (v / "new").write_bytes(b"")
        got = changes(before, state_of(v), "v")
        assert "v/new created" in got and any(c.startswith("v/. changed") for c in got), got
    finally:
        a.close()
