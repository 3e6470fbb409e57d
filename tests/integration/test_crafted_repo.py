"""Crafted repositories: what someone who can write to a repository (a directory, a bucket, a
share) can make `verify`, `ls` and `restore` do. Snapshots are written with the repository's
own encoder, bypassing backup, and reuse chunks a real backup stored; their nodes try to leave
the target (`..`, absolute paths, a link and then a file below it, NUL and empty components,
duplicates), carry setuid-root files, or expand without bound (zstd bombs, in the snapshot and
in a chunk). `verify` names each one, and `restore`, as root, whole or a subtree, writes
nothing outside --target: a sibling directory keeps its listing, content, modes and owners.
docs/backup.md (Confinement) states what these tests show.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import blake3
import msgspec
import pytest
import zstandard

from orbit_fast.compression import BLOB_FORMAT, LZ4, ZSTD
from orbit_fast.compression import HEADER as BLOB_HEADER
from orbit_fast.errors import ExitCode
from orbit_fast.hashing import chunk_id
from orbit_fast.repo import pack as packfmt
from orbit_fast.repo import snapshot as snapfmt
from orbit_fast.repo.repository import Repository
from orbit_fast.repo.snapshot import LINK, Node, Snapshot
from tests.conftest import json_events, run_cli, snapshot, write

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="restores as root, and as nobody"),
]

T0 = 1_700_000_000_000_000_000
BOMB_BYTES = 200 << 20
# A CLI process that reads a small repository peaks at 26-38 MiB; a 200 MiB bomb would not.
MAX_RSS_MIB = 100


class Place:
    """A real backup of a small tree, beside a sibling directory that nothing may touch."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.work = root / "work"  # holds the target and the sibling
        self.sibling = self.work / "sibling"
        self.target = self.work / "target"
        self.repo = root / "repo"
        src = root / "src"
        write(src / "a.txt", b"payload\n", mtime=1_600_000_000)
        write(src / "tool", b"#!/bin/sh\necho hi\n", mtime=1_600_000_000, mode=0o755)
        write(src / "d" / "inner.txt", b"inner\n", mtime=1_600_000_000)
        run_cli("backup", str(src), str(self.repo), "--json", "-j", "1")
        write(self.sibling / "keep.txt", b"the victim's file\n", mode=0o640)
        (self.sibling / "sub").mkdir()
        write(self.sibling / "sub" / "deep.txt", b"deep\n", mode=0o600)
        with Repository.open(str(self.repo)) as repo:
            (_, snap) = repo.resolve("latest")
        self.nodes = {n.path: n for n in snap.nodes}
        self.before = self.outside()

    def file(self, path: bytes | str, **kw: object) -> Node:
        """A file node with a.txt's stored content."""
        return msgspec.structs.replace(self.nodes[b"a.txt"], path=os.fsencode(path), **kw)

    def dir(self, path: bytes | str, **kw: object) -> Node:
        return msgspec.structs.replace(self.nodes[b"d"], path=os.fsencode(path), **kw)

    def link(self, path: bytes | str, target: str | bytes) -> Node:
        return Node(path=os.fsencode(path), kind=LINK, mode=0o777, uid=0, gid=0, mtime_ns=T0,
                    atime_ns=T0, ctime_ns=T0, ino=0, size=0, target=os.fsencode(target))

    @property
    def root_node(self) -> Node:
        return self.nodes[b""]

    def craft(self, nodes: list[Node]) -> str:
        """A snapshot of `nodes`, written as backup writes one (the newest)."""
        snap = Snapshot(time_ns=time.time_ns(), hostname="attacker", source="/src", nodes=nodes,
                        files_total=len(nodes))  # fmt: skip
        with Repository.open(str(self.repo)) as repo:
            return repo.write_snapshot(snap)

    def outside(self) -> dict:
        """Everything around the target: the sibling (content, modes, owners), the listing of
        the work directory and of the root, and the sibling's own metadata."""
        tree = snapshot(self.sibling)
        owners = {str(p.relative_to(self.sibling)): (p.lstat().st_uid, p.lstat().st_gid)
                  for p in self.sibling.rglob("*")}  # fmt: skip
        st = self.sibling.lstat()
        return {"tree": tree, "owners": owners, "self": (st.st_mode, st.st_uid, st.st_mtime_ns),
                "work": sorted(os.listdir(self.work)),
                "root": sorted(os.listdir(self.root))}  # fmt: skip

    def assert_outside_untouched(self) -> None:
        now = self.outside()
        now["work"] = [x for x in now["work"] if x != "target"]
        assert now == self.before

    def restore(self, name: str, *paths: str, check: int | None = None,
                target: Path | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
        return run_cli("restore", "-r", str(self.repo), name[:12], *paths, "--target",
                       str(target or self.target), check=check)  # fmt: skip


@pytest.fixture
def place(tmp_path: Path) -> Place:
    return Place(tmp_path)


# The CLI, reporting its peak memory as it exits: VmHWM of its own address space (ru_maxrss
# would count the forking test process's pages too, which hold the bombs being built).
WITH_PEAK = """
import atexit, sys
path = sys.argv[1]
def report():
    with open("/proc/self/status") as f:
        peak = [line.split()[1] for line in f if line.startswith("VmHWM:")][0]
    with open(path, "w") as out:
        out.write(peak)
atexit.register(report)
from orbit_fast.cli import main
sys.argv = ["orbit-fast", *sys.argv[2:]]
main()
"""


def rss_run(*args: str) -> tuple[int, str, int]:
    """(exit code, stderr, peak RSS in MiB) of one CLI run."""
    peak = Path(os.environ.get("TMPDIR", "/tmp")) / f"orbit-peak-{os.getpid()}"
    try:
        proc = subprocess.run([sys.executable, "-c", WITH_PEAK, str(peak), *args],
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        return proc.returncode, proc.stderr, int(peak.read_text()) // 1024
    finally:
        peak.unlink(missing_ok=True)


# ---- snapshots whose nodes leave the target ---------------------------------------------------

ESCAPES: dict[str, tuple[Callable[[Place], list[Node]], str]] = {
    # name: (nodes, the path verify and restore must name)
    "dotdot": (lambda p: [p.root_node, p.file("../sibling/evil")], "../sibling/evil"),
    "dotdot-inside": (lambda p: [p.root_node, p.dir("d"), p.file("d/../../sibling/evil")],
                      "d/../../sibling/evil"),
    "absolute": (lambda p: [p.root_node, p.file(str(p.sibling / "evil"))],
                 "/sibling/evil"),
    "link-then-file": (lambda p: [p.root_node, p.link("l", p.sibling), p.file("l/evil")],
                       "l/evil"),
    "link-then-dir": (lambda p: [p.root_node, p.link("l", p.sibling), p.dir("l/x"),
                                 p.file("l/x/evil")], "l/x"),
    "file-then-file": (lambda p: [p.root_node, p.file("f"), p.file("f/evil")], "f/evil"),
    "setuid-root": (lambda p: [p.root_node, p.file("../sibling/suid", mode=0o4755, uid=0,
                                                   gid=0)], "../sibling/suid"),
    "empty-component": (lambda p: [p.root_node, p.dir("d"), p.file("d//evil")], "d//evil"),
    "trailing-slash": (lambda p: [p.root_node, p.dir("d"), p.file("d/")], "d/"),
    "leading-slash": (lambda p: [p.root_node, p.file("/evil")], "/evil"),
    "dot": (lambda p: [p.root_node, p.file("./evil")], "./evil"),
    "empty-name": (lambda p: [p.file("")], "''"),
    "nul": (lambda p: [p.root_node, p.file(b"evil\0/../../sibling/x")], "evil\\x00"),
    "duplicate-file": (lambda p: [p.root_node, p.file("x"), p.file("x", mode=0o4755)], "'x'"),
    "duplicate-dir-link": (lambda p: [p.root_node, p.dir("x"), p.link("x", p.sibling),
                                      p.file("x/evil")], "'x'"),
    "parent-missing": (lambda p: [p.root_node, p.file("nodir/evil")], "nodir/evil"),
    "child-before-parent": (lambda p: [p.root_node, p.file("d/evil"), p.dir("d")], "d/evil"),
    "root-is-a-link": (lambda p: [p.link("", p.sibling), p.file("evil")], "''"),
}


@pytest.mark.parametrize("variant", ESCAPES)
def test_verify_names_the_snapshot_and_the_path(place: Place, variant: str) -> None:
    nodes, shown = ESCAPES[variant]
    name = place.craft(nodes(place))
    proc = run_cli("verify", "-r", str(place.repo), check=ExitCode.INTEGRITY)
    problems = [line for line in proc.stdout.splitlines() if name[:8] in line]
    assert problems and shown in problems[0], proc.stdout
    assert "damaged or hostile" in problems[0]
    quick = run_cli("verify", "-r", str(place.repo), "--quick", check=ExitCode.INTEGRITY)
    assert name[:8] in quick.stdout
    place.assert_outside_untouched()


@pytest.mark.parametrize("variant", ESCAPES)
def test_restore_refuses_before_writing_anything(place: Place, variant: str) -> None:
    nodes, shown = ESCAPES[variant]
    built = nodes(place)
    name = place.craft(built)
    # the subtree of the bad node's first component (argv holds no NUL: what precedes it)
    top = next((n.path.split(b"/")[0].split(b"\0")[0].decode() for n in built if n.path), "d")
    for paths in ((), (top,), ("d",)):
        proc = place.restore(name, *paths, check=ExitCode.INTEGRITY)
        assert name[:8] in proc.stderr and shown in proc.stderr, proc.stderr
        assert not place.target.exists()  # refused when decoded: not even the target made
        place.assert_outside_untouched()
    ls = run_cli("ls", "-r", str(place.repo), name[:12], check=ExitCode.INTEGRITY)
    assert name[:8] in ls.stderr


def test_a_legitimate_snapshot_still_restores_next_to_crafted_ones(place: Place) -> None:
    place.craft([place.root_node, place.file("../sibling/evil")])
    with Repository.open(str(place.repo)) as repo:
        good = [n for n, s in repo.snapshots() if s.hostname != "attacker"][0]
    place.restore(good, check=0)
    assert (place.target / "a.txt").read_bytes() == b"payload\n"
    assert (place.target / "d" / "inner.txt").read_bytes() == b"inner\n"
    place.assert_outside_untouched()


# ---- a legitimate snapshot into a target that already holds links ----------------------------


def test_links_already_in_the_target_are_replaced_never_written_through(place: Place) -> None:
    victim = place.sibling
    place.target.mkdir()
    (place.target / "d").symlink_to(victim)  # the snapshot's directory d
    (place.target / "a.txt").symlink_to(victim / "keep.txt")  # the snapshot's file a.txt
    (place.target / "tool").symlink_to(victim / "sub")  # a file's name, a link to a directory
    with Repository.open(str(place.repo)) as repo:
        (good, _), = [(n, s) for n, s in repo.snapshots()]
    place.restore(good, check=0)
    place.assert_outside_untouched()
    for name in ("d", "a.txt", "tool"):
        assert not (place.target / name).is_symlink()
    assert (place.target / "d" / "inner.txt").read_bytes() == b"inner\n"
    assert (place.target / "a.txt").read_bytes() == b"payload\n"
    assert (place.target / "tool").read_bytes() == b"#!/bin/sh\necho hi\n"
    # and a subtree restore into a target whose d is (again) a link
    (place.target / "d" / "inner.txt").unlink()
    (place.target / "d").rmdir()
    (place.target / "d").symlink_to(victim)
    place.restore(good, "d", check=0)
    place.assert_outside_untouched()
    assert (place.target / "d" / "inner.txt").read_bytes() == b"inner\n"


def test_a_link_in_the_snapshot_is_made_last_and_never_entered(place: Place) -> None:
    # Legitimate: a link to the sibling, and files beside it; the restore must not follow it
    # (nothing below a link can be in a snapshot: decoding refuses it, tested above).
    name = place.craft([place.root_node, place.link("l", place.sibling), place.file("z")])
    place.restore(name, check=0)
    assert os.readlink(place.target / "l") == str(place.sibling)
    assert (place.target / "z").read_bytes() == b"payload\n"
    place.assert_outside_untouched()


# ---- setuid, setgid and owners ---------------------------------------------------------------


def special_nodes(p: Place) -> list[Node]:
    return [p.root_node, p.file("suid", mode=0o4755, uid=0, gid=0),
            p.dir("sgid", mode=0o2775, uid=0, gid=0),
            p.file("sgid/x", mode=0o2755, uid=0, gid=0),
            p.dir("existing", mode=0o6777, uid=0, gid=0)]  # fmt: skip


def test_setuid_and_owners_as_root_only_for_entries_this_restore_created(place: Place) -> None:
    name = place.craft(special_nodes(place))
    place.target.mkdir()
    (place.target / "existing").mkdir(mode=0o755)
    os.chown(place.target / "existing", 4321, 4321)
    place.restore(name, check=0)
    st = (place.target / "suid").stat()
    assert stat.S_IMODE(st.st_mode) == 0o4755 and st.st_uid == 0
    assert stat.S_IMODE((place.target / "sgid").stat().st_mode) == 0o2775
    assert stat.S_IMODE((place.target / "sgid" / "x").stat().st_mode) == 0o2755
    ex = (place.target / "existing").stat()  # there before: no owner, no special bits
    assert (ex.st_uid, ex.st_gid) == (4321, 4321)
    assert stat.S_IMODE(ex.st_mode) == 0o777
    place.assert_outside_untouched()


NOBODY = 65534
# Run as nobody: the interpreter lives under /root, which nobody cannot read, so the CLI
# starts as root, imports what a restore uses, then drops to nobody for good (setuid from
# root clears every capability) before it parses its arguments.
AS_NOBODY = """
import os, sys
import orbit_fast.cli, orbit_fast.api, orbit_fast.cli.render, orbit_fast.cli.runner
import orbit_fast.coordinator.repo_commands, orbit_fast.coordinator.restore
import orbit_fast.index.universe, orbit_fast.repo.repository, orbit_fast.backends.local
import orbit_fast.compression, lz4.block, zstandard, numpy, sqlite3, errno, json, socket
import tqdm, hashlib, secrets, shutil, tempfile, ctypes, ctypes.util, unicodedata, difflib
os.setgroups([]); os.setgid({uid}); os.setuid({uid})
assert os.geteuid() == {uid}
from orbit_fast.cli import main
sys.argv = ["orbit-fast", *sys.argv[1:]]
main()
"""


def test_setuid_bits_dropped_when_restoring_as_nobody(place: Place, tmp_path: Path) -> None:
    name = place.craft(special_nodes(place)[:4])
    # nobody needs the repository (it takes the lock), a state directory and the target
    base = Path(os.environ.get("TMPDIR", "/tmp")) / f"orbit-nobody-{os.getpid()}"
    base.mkdir(mode=0o755)
    try:
        subprocess.run(["cp", "-a", str(place.repo), str(base / "repo")], check=True)
        for d in ("repo", "state"):
            (base / d).mkdir(exist_ok=True)
        subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(base)], check=True)
        env = {**os.environ, "XDG_STATE_HOME": str(base / "state"),
               "PYTHONPATH": os.pathsep.join(sys.path)}  # fmt: skip
        proc = subprocess.run(
            [sys.executable, "-c", AS_NOBODY.format(uid=NOBODY), "restore", "-r",
             str(base / "repo"), name[:12], "--target", str(base / "out")],
            capture_output=True, text=True, env=env, cwd=base, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        st = (base / "out" / "suid").stat()
        assert st.st_uid == NOBODY
        assert stat.S_IMODE(st.st_mode) == 0o755  # no setuid
        assert stat.S_IMODE((base / "out" / "sgid").stat().st_mode) == 0o775  # no setgid
        assert stat.S_IMODE((base / "out" / "sgid" / "x").stat().st_mode) == 0o755
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=True)


# ---- bombs -----------------------------------------------------------------------------------


def write_raw_snapshot(repo: Path, body: bytes) -> str:
    """A snapshot file whose node list is `body` (a zstd frame), named as the repository
    names them; the header is the encoder's own."""
    info = Snapshot(time_ns=time.time_ns(), hostname="attacker", source="/src")
    header = msgspec.msgpack.encode(info)
    data = snapfmt.HEADER.pack(snapfmt.MAGIC, 0, len(header)) + header + body
    name = blake3.blake3(data).hexdigest()
    (repo / "snapshots" / name).write_bytes(data)
    return name


def test_a_zstd_bomb_snapshot_fails_with_an_integrity_error_in_bounded_memory(
        place: Place) -> None:  # fmt: skip
    body = zstandard.ZstdCompressor(level=19).compress(bytes(BOMB_BYTES))
    assert len(body) < 8 << 10  # a 6 KB frame of 200 MiB
    name = write_raw_snapshot(place.repo, body)
    for args in (("ls", "-r", str(place.repo), name[:12]),
                 ("restore", "-r", str(place.repo), name[:12], "--target", str(place.target)),
                 ("verify", "-r", str(place.repo))):  # fmt: skip
        code, err, rss = rss_run(*args)
        assert code == ExitCode.INTEGRITY, err
        assert rss < MAX_RSS_MIB, f"{args[0]}: peak RSS {rss} MiB"
        if args[0] != "verify":
            assert name[:8] in err and "expands beyond the limit" in err, err
    proc = run_cli("verify", "-r", str(place.repo), check=ExitCode.INTEGRITY)
    assert f"snapshot {name[:8]}" in proc.stdout and "expands beyond the limit" in proc.stdout
    assert not place.target.exists()
    place.assert_outside_untouched()


def bomb_pack(place: Place, blob: bytes, cid: bytes, raw_len: int) -> None:
    builder = packfmt.PackBuilder()
    builder.add(cid, blob, raw_len)
    with Repository.open(str(place.repo)) as repo:
        repo.write_pack(builder)


@pytest.mark.parametrize("kind", ["lz4-claims-200MiB", "zstd-frame-declares-200MiB"])
def test_a_chunk_bomb_is_a_damaged_chunk_in_bounded_memory(place: Place, kind: str) -> None:
    import lz4.block

    with Repository.open(str(place.repo)) as repo:
        key = repo.config.key_bytes
    zeros = bytes(BOMB_BYTES)
    cid = chunk_id(key, zeros)  # the id is right: only the size gives it away
    if kind.startswith("lz4"):
        body = lz4.block.compress(zeros, store_size=False)
        blob = BLOB_HEADER.pack(BLOB_FORMAT, LZ4, 0, BOMB_BYTES, len(body)) + body
        size = BOMB_BYTES
    else:  # the blob's header says 1000 bytes; the frame inside says 200 MiB
        body = zstandard.ZstdCompressor(level=19).compress(zeros)
        blob = BLOB_HEADER.pack(BLOB_FORMAT, ZSTD, 0, 1000, len(body)) + body
        size = 1000
    del zeros
    bomb_pack(place, blob, cid, size)
    node = place.file("big", size=size, chunks=cid)
    name = place.craft([place.root_node, node])
    code, err, rss = rss_run("restore", "-r", str(place.repo), name[:12], "--target",
                             str(place.target))  # fmt: skip
    assert code == ExitCode.INTEGRITY, err
    assert "big" in err and "damaged" in err
    assert rss < MAX_RSS_MIB, f"restore: peak RSS {rss} MiB"
    assert not (place.target / "big").exists()
    code, err, rss = rss_run("verify", "-r", str(place.repo))
    assert code == ExitCode.INTEGRITY and rss < MAX_RSS_MIB, (err, rss)
    proc = run_cli("verify", "-r", str(place.repo), check=ExitCode.INTEGRITY)
    assert f"snapshot {name[:8]} file big chunk {cid.hex()[:16]}" in proc.stdout, proc.stdout
    place.assert_outside_untouched()


# ---- names that would drive a terminal -------------------------------------------------------


def test_ls_diff_and_verify_escape_control_characters(place: Place) -> None:
    evil = b"evil\x1b]0;owned\x07\x1b[2J\rname\x9b\xff\x7f"
    nodes = [place.root_node, place.file(evil, chunks=b"\x01" * 32),
             place.link(b"l\x1b[1m", b"target\x1b[5m")]  # fmt: skip
    name = place.craft(nodes)
    with Repository.open(str(place.repo)) as repo:
        good = [n for n, s in repo.snapshots() if s.hostname != "attacker"][0]
    outs = [run_cli("ls", "-r", str(place.repo), name[:12]).stdout,
            run_cli("diff", "-r", str(place.repo), good[:12], name[:12]).stdout,
            run_cli("verify", "-r", str(place.repo), check=ExitCode.INTEGRITY).stdout]
    for out in outs:
        for bad in ("\x1b", "\x07", "\r", "\x9b", "\x7f", "\udcff"):
            assert bad not in out
        assert "evil\\x1b]0;owned\\x07\\x1b[2J\\x0dname\\x9b\\xff\\x7f" in out, out
    assert "l\\x1b[1m -> target\\x1b[5m" in outs[0]
    # JSON output stays JSON (its encoder escapes them)
    js = json_events(run_cli("ls", "-r", str(place.repo), name[:12], "--json").stdout)
    assert any(e["path"].startswith("evil\x1b") for e in js)


def test_a_crafted_parent_does_not_stop_the_next_backup(place: Place) -> None:
    # A hostile snapshot posing as the newest of this source on this host: the next backup
    # warns, backs up without it (reading every file again) and stores a good snapshot.
    src = str(place.root / "src")
    snap = Snapshot(time_ns=time.time_ns(), hostname=socket.gethostname(), source=src,
                    nodes=[place.root_node, place.file("../sibling/evil")],
                    files_total=1)  # fmt: skip
    with Repository.open(str(place.repo)) as repo:
        bad = repo.write_snapshot(snap)
    proc = run_cli("backup", src, str(place.repo), "--json", "-j", "1", check=ExitCode.PARTIAL)
    assert bad[:8] in proc.stdout + proc.stderr and "bad_parent" in proc.stdout
    with Repository.open(str(place.repo)) as repo:
        (name, latest) = repo.resolve("latest")
    assert name != bad and latest.parent != bad
    assert sorted(n.path for n in latest.nodes) == [b"", b"a.txt", b"d", b"d/inner.txt", b"tool"]
    place.assert_outside_untouched()
