"""Crafted repositories: what someone who can write to a repository (a directory, a bucket, a
share) and read its key (it is not encrypted yet) can make `verify`, `ls` and `restore` do.
Trees and snapshots are written with the repository's own encoder and key, bypassing backup and
its checks, and reuse chunks a real backup stored; their entries try to leave the target (`..`,
names holding "/" or NUL, empty names, duplicates, a link that names a tree), carry setuid-root
files, point at trees that are missing or were altered, or expand without bound (bombs, in a
tree and in a chunk). `verify` names each one, and `restore`, as root, whole or a subtree,
writes nothing outside --target: a sibling directory keeps its listing, content, modes and
owners. docs/backup.md (Confinement) states what these tests show.
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

import msgspec
import pytest
import zstandard

from orbit_fast.compression import BLOB_FORMAT, LZ4, ZSTD, compress, parse_codec
from orbit_fast.compression import HEADER as BLOB_HEADER
from orbit_fast.errors import ExitCode
from orbit_fast.hashing import chunk_id
from orbit_fast.repo import tree as treefmt
from orbit_fast.repo.repository import Repository
from orbit_fast.repo.snapshot import Snapshot
from orbit_fast.repo.tree import LINK, Entry, Page, TreeBlob
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
            self.key = repo.config.key_bytes
        self.root_entry = snap.root
        self.a = next(e for e in self._entries(snap) if e.name == b"a.txt")
        self.d = next(e for e in self._entries(snap) if e.name == b"d")
        self.before = self.outside()

    def _entries(self, snap: Snapshot) -> list[Entry]:
        import orbit_fast.index.universe as universe
        from orbit_fast.repo.trees import TreeReader

        with Repository.open(str(self.repo)) as repo, \
                universe.Universe.open(str(self.root / "u.db")) as u:  # fmt: skip
            repo.sync_index(u)
            return list(TreeReader(repo, u).entries(snap.tree))

    def file(self, name: bytes | str, **kw: object) -> Entry:
        """A file entry with a.txt's stored content."""
        return msgspec.structs.replace(self.a, name=os.fsencode(name), **kw)

    def dir(self, name: bytes | str, entries: list[Entry] | None = None, **kw: object) -> Entry:
        """A directory entry whose tree holds `entries` (written as they are, unchecked)."""
        tid = self.tree(entries or [])
        return msgspec.structs.replace(self.d, name=os.fsencode(name), subtree=tid, **kw)

    def link(self, name: bytes | str, target: str | bytes, **kw: object) -> Entry:
        return Entry(name=os.fsencode(name), kind=LINK, mode=0o777, uid=0, gid=0, mtime_ns=T0,
                     atime_ns=T0, ctime_ns=T0, ino=0, size=0, target=os.fsencode(target), **kw)

    def store(self, raw: bytes, tid: bytes | None = None) -> bytes:
        """Put `raw` in a pack of its own as the blob `tid` (default: its real id)."""
        tid = chunk_id(self.key, raw) if tid is None else tid
        with Repository.open(str(self.repo)) as repo:  # crafted with the key: sealed
            builder = repo.new_builder(bytearray(1 << 16))
            builder.add(tid, repo.seal_blob(tid, compress(parse_codec("zstd:3"), raw)), len(raw))
            repo.write_pack(builder)
        return tid

    def tree(self, entries: list[Entry], pages: list[Page] | None = None) -> bytes:
        """A tree of `entries` as they are (no order, no checks), stored under its id."""
        return self.store(msgspec.msgpack.encode(TreeBlob(entries=entries, pages=pages or [])))

    def craft(self, entries: list[Entry], root: Entry | None = None) -> str:
        """A snapshot whose root directory holds `entries` (the newest)."""
        root = root or msgspec.structs.replace(self.root_entry, subtree=self.tree(entries))
        snap = Snapshot(time_ns=time.time_ns(), hostname="attacker", source="/src", root=root,
                        files_total=len(entries))  # fmt: skip
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


# ---- trees whose entries leave the target ----------------------------------------------------

# name: (the root directory's entries, the text verify and restore must name, whether the
# problem is in the root's own tree: then restore refuses before it makes the target)
ESCAPES: dict[str, tuple[Callable[[Place], list[Entry]], str, bool]] = {
    "dotdot": (lambda p: [p.file("..")], "entry '..' is '..'", True),
    "slash": (lambda p: [p.file("../sibling/evil")], "'../sibling/evil' holds '/'", True),
    "absolute": (lambda p: [p.file(str(p.sibling / "evil"))], "holds '/'", True),
    "dot": (lambda p: [p.file(".")], "entry '.' is '.'", True),
    "empty-name": (lambda p: [p.file("")], "entry '' is empty", True),
    "nul": (lambda p: [p.file(b"evil\0/../../sibling/x")], "evil\\x00", True),
    "setuid-root": (lambda p: [p.file("../sibling/suid", mode=0o4755, uid=0, gid=0)],
                    "'../sibling/suid' holds '/'", True),
    "duplicate-file": (lambda p: [p.file("x"), p.file("x", mode=0o4755)],
                       "'x' is listed twice", True),
    "duplicate-dir-link": (lambda p: [p.dir("x", [p.file("evil")]), p.link("x", p.sibling)],
                           "'x' is listed twice", True),
    "out-of-order": (lambda p: [p.file("b"), p.file("a")], "'a' is out of order", True),
    "link-with-tree": (lambda p: [p.link("l", p.sibling, subtree=p.tree([p.file("evil")]))],
                       "'l' is not a directory but names a tree", True),
    "dir-without-tree": (lambda p: [msgspec.structs.replace(p.d, name=b"x", subtree=b"")],
                         "'x' is a directory without a tree id", True),
    "deep-dotdot": (lambda p: [p.dir("d", [p.dir("e", [p.file("..")])])],
                    "of 'd/e' is damaged or hostile: entry '..'", False),
    "missing-tree": (lambda p: [msgspec.structs.replace(p.d, subtree=b"\xee" * 32)],
                     "tree eeeeeeee of 'd' is missing", False),
    "altered-tree": (lambda p: [msgspec.structs.replace(p.d, subtree=p.store(
        msgspec.msgpack.encode(TreeBlob(entries=[p.file("..")])), b"\xaa" * 32))],
        "tree aaaaaaaa of 'd' is damaged (its content does not match its id)", False),
}


def paged(p: Place) -> list[Entry]:
    """A paged directory whose page holds a name before the index's first: a page moved
    under another index to smuggle a name in."""
    page = p.tree([p.file("a-smuggled"), p.file("z")])
    index = p.tree([], [Page(b"m", page, 2)])
    return [msgspec.structs.replace(p.d, name=b"big", subtree=index)]


ESCAPES["page-mismatch"] = (paged, "is not the page its directory lists", False)


@pytest.mark.parametrize("variant", ESCAPES)
def test_verify_names_the_snapshot_and_the_tree(place: Place, variant: str) -> None:
    entries, shown, _ = ESCAPES[variant]
    name = place.craft(entries(place))
    proc = run_cli("verify", "-r", str(place.repo), check=ExitCode.INTEGRITY)
    problems = [line for line in proc.stdout.splitlines() if name[:8] in line]
    assert problems and shown in problems[0], proc.stdout
    quick = run_cli("verify", "-r", str(place.repo), "--quick", check=ExitCode.INTEGRITY)
    assert name[:8] in quick.stdout
    place.assert_outside_untouched()


@pytest.mark.parametrize("variant", ESCAPES)
def test_restore_refuses_and_writes_nothing_outside(place: Place, variant: str) -> None:
    entries, shown, at_root = ESCAPES[variant]
    built = entries(place)
    name = place.craft(built)
    top = built[0].name.split(b"/")[0].split(b"\0")[0].decode() or "d"
    for paths in ((), (top,)):
        proc = place.restore(name, *paths, check=None)
        if paths and at_root:  # the path cannot be found through a tree that is refused
            assert proc.returncode in (ExitCode.INTEGRITY, ExitCode.USAGE), proc.stderr
        else:
            assert proc.returncode == ExitCode.INTEGRITY, proc.stderr
            assert shown in proc.stderr, proc.stderr
        if at_root:  # refused when the root's tree is read: not even the target made
            assert not place.target.exists()
        place.assert_outside_untouched()
    ls = run_cli("ls", "-r", str(place.repo), name[:12], check=ExitCode.INTEGRITY)
    assert shown in ls.stderr


def test_a_root_that_is_not_a_directory_is_refused(place: Place) -> None:
    name = place.craft([], root=place.link("", place.sibling))
    for args in (("ls", "-r", str(place.repo), name[:12]),
                 ("restore", "-r", str(place.repo), name[:12], "--target", str(place.target))):
        proc = run_cli(*args, check=None)
        assert proc.returncode in (ExitCode.INTEGRITY, ExitCode.REPOSITORY), proc.stderr
        assert f"snapshot {name[:8]} is damaged or hostile" in proc.stderr
    proc = run_cli("verify", "-r", str(place.repo), check=ExitCode.INTEGRITY)
    assert f"snapshot {name[:8]} is damaged or hostile" in proc.stdout
    assert not place.target.exists()
    place.assert_outside_untouched()


def test_a_legitimate_snapshot_still_restores_next_to_crafted_ones(place: Place) -> None:
    place.craft([place.file("../sibling/evil")])
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
    name = place.craft([place.link("l", place.sibling), place.file("z")])
    place.restore(name, check=0)
    assert os.readlink(place.target / "l") == str(place.sibling)
    assert (place.target / "z").read_bytes() == b"payload\n"
    place.assert_outside_untouched()


# ---- setuid, setgid and owners ---------------------------------------------------------------


def special_nodes(p: Place, existing: bool = True) -> list[Entry]:
    return [p.dir("existing", mode=0o6777, uid=0, gid=0)] * existing + [
            p.dir("sgid", [p.file("x", mode=0o2755, uid=0, gid=0)], mode=0o2775, uid=0, gid=0),
            p.file("suid", mode=0o4755, uid=0, gid=0)]  # fmt: skip


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
import argon2.low_level, cryptography.hazmat.primitives.ciphers.aead, cryptography.exceptions
import getpass, shlex, orbit_fast.repo.keys, orbit_fast.passwords, orbit_fast.crypto
os.setgroups([]); os.setgid({uid}); os.setuid({uid})
assert os.geteuid() == {uid}
from orbit_fast.cli import main
sys.argv = ["orbit-fast", *sys.argv[1:]]
main()
"""


def test_setuid_bits_dropped_when_restoring_as_nobody(place: Place, tmp_path: Path) -> None:
    name = place.craft(special_nodes(place, existing=False))
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


def test_hard_link_and_xattr_set_claims_stay_inside_the_target(place: Place) -> None:
    """Format 4's new fields as an attacker writes them: names claiming one inode are linked
    only to a file this restore made (a symlink claiming the same inode, pointing at the
    sibling, stays a link and lends nothing), and an entry naming an xattr set the repository
    lacks is restored without it and named (exit 13)."""
    twin = dict(links=2, dev=1, ino=4242)
    crafted = [
        msgspec.structs.replace(place.link("0-link", str(place.sibling / "keep.txt")), **twin),
        place.file("a.txt", **twin),
        place.dir("d", [place.file("x", **twin)]),
        msgspec.structs.replace(place.d, name=b"m", subtree=place.store(treefmt.encode_entries(
            [place.file("z-meta", meta=b"\x55" * 32)]))),  # the set's index, listed
    ]
    name = place.craft(crafted)
    proc = place.restore(name, check=13)
    assert "m/z-meta" in proc.stderr + proc.stdout and "xattr set 55555555" in proc.stderr
    out = place.target
    assert (out / "d" / "x").stat().st_ino == (out / "a.txt").stat().st_ino
    assert (out / "0-link").is_symlink()
    assert (out / "a.txt").stat().st_ino != (place.sibling / "keep.txt").stat().st_ino
    assert os.listxattr(out / "m" / "z-meta") == []
    place.assert_outside_untouched()


# ---- bombs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["claims-200MiB", "frame-declares-200MiB", "many-entries"])
def test_a_tree_bomb_fails_with_an_integrity_error_in_bounded_memory(place: Place,
                                                                    kind: str) -> None:  # fmt: skip
    if kind == "many-entries":  # within the byte limit, but millions of tiny entries
        one = msgspec.msgpack.encode(place.link("l", "t"))
        count = (24 << 20) // len(one)
        raw = b"\x92\xdd" + count.to_bytes(4, "big") + one * count + b"\x90"
        tid = place.store(raw)
        why = f"it claims {count} entries"
    else:
        zeros = bytes(BOMB_BYTES)
        body = zstandard.ZstdCompressor(level=19).compress(zeros)
        tid = chunk_id(place.key, zeros)  # the id is right: only the size gives it away
        del zeros
        claimed = BOMB_BYTES if kind == "claims-200MiB" else 1000
        bomb_pack(place, BLOB_HEADER.pack(BLOB_FORMAT, ZSTD, 0, claimed, len(body)) + body,
                  tid, claimed)  # fmt: skip
        why = "damaged"
    name = place.craft([], root=msgspec.structs.replace(place.root_entry, subtree=tid))
    for args in (("ls", "-r", str(place.repo), name[:12]),
                 ("restore", "-r", str(place.repo), name[:12], "--target", str(place.target)),
                 ("verify", "-r", str(place.repo))):  # fmt: skip
        code, err, rss = rss_run(*args)
        assert code == ExitCode.INTEGRITY, err
        assert rss < MAX_RSS_MIB, f"{args[0]}: peak RSS {rss} MiB"
        if args[0] != "verify":
            assert tid.hex()[:8] in err and why in err, err
    proc = run_cli("verify", "-r", str(place.repo), check=ExitCode.INTEGRITY)
    assert f"snapshot {name[:8]}" in proc.stdout and why in proc.stdout
    place.assert_outside_untouched()


def bomb_pack(place: Place, blob: bytes, cid: bytes, raw_len: int) -> None:
    with Repository.open(str(place.repo)) as repo:
        builder = repo.new_builder(bytearray(1 << 16))
        builder.add(cid, repo.seal_blob(cid, blob), raw_len)
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
    name = place.craft([node])
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
    nodes = [place.file(evil, chunks=b"\x01" * 32), place.link(b"l\x1b[1m", b"target\x1b[5m")]
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
    # warns, backs up without its hostile tree (reading those files again) and stores a good
    # snapshot.
    src = str(place.root / "src")
    root = msgspec.structs.replace(place.root_entry,
                                   subtree=place.tree([place.file("../sibling/evil")]))
    snap = Snapshot(time_ns=time.time_ns(), hostname=socket.gethostname(), source=src,
                    root=root, files_total=1)  # fmt: skip
    with Repository.open(str(place.repo)) as repo:
        bad = repo.write_snapshot(snap)
    proc = run_cli("backup", src, str(place.repo), "--json", "-j", "1", check=ExitCode.PARTIAL)
    assert "bad_parent" in proc.stdout and "damaged or hostile" in proc.stdout
    with Repository.open(str(place.repo)) as repo:
        (name, latest) = repo.resolve("latest")
    assert name != bad and latest.parent == bad
    ls = run_cli("ls", "-r", str(place.repo), "latest", "--json").stdout
    assert sorted(e["path"] for e in json_events(ls)) == [".", "a.txt", "d", "d/inner.txt",
                                                          "tool"]
    place.assert_outside_untouched()
