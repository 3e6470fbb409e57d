"""What a sync between local trees keeps beyond data, mode and times, with rsync as the oracle
(issue #19, first part): owners and groups as root (numeric), xattrs (user.* and trusted.*),
POSIX ACLs (access and default), fifos and device nodes, a symlink's own owner. After a sync,
`rsync -aAXS --numeric-ids -n -i --delete SRC/ DST/` lists nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REQUIRE_SERVERS, json_events, run_cli, summary_of, write


def _need_root_and(*tools: str) -> None:
    missing = [t for t in tools if not shutil.which(t)]
    why = ("needs root" if os.geteuid() != 0 else f"needs {', '.join(missing)}") if (
        os.geteuid() != 0 or missing) else ""  # fmt: skip
    if why:
        if REQUIRE_SERVERS:
            pytest.fail(f"{why} (tools/test installs acl and rsync as root)")
        pytest.skip(why)


def _tree(src: Path) -> None:
    write(src / "d1" / "a", b"hello\n")
    write(src / "d1" / "sub" / "b", b"world\n")
    write(src / "d2" / "big", os.urandom(100_000))
    with open(src / "sparse", "wb") as f:  # 64 MiB, almost all hole
        f.truncate(64 << 20)
        f.write(b"head")
    os.chown(src / "d1" / "a", 1234, 5678)
    os.chown(src / "d1", 2000, 2000)
    os.setxattr(src / "d1" / "a", "user.note", b"hi there")
    os.setxattr(src / "d1" / "sub" / "b", "trusted.tag", b"t1")
    os.setxattr(src / "d2", "user.dir", b"on a directory")
    subprocess.run(["setfacl", "-m", "u:4242:rw", str(src / "d1" / "a")], check=True)
    subprocess.run(["setfacl", "-d", "-m", "g:777:rx", str(src / "d1")], check=True)
    os.mkfifo(src / "d2" / "pipe")
    os.mknod(src / "d2" / "null", 0o666 | 0o020000, os.makedev(1, 3))
    (src / "d2" / "link").symlink_to("../d1/a")
    os.chown(src / "d2" / "link", 3333, 3333, follow_symlinks=False)


def _rsync_differences(src: Path, dst: Path) -> list[str]:
    r = subprocess.run(["rsync", "-aAXS", "--numeric-ids", "-n", "-i", "--delete",
                        f"{src}/", f"{dst}/"], capture_output=True, text=True,
                       check=True)  # fmt: skip
    return [line for line in r.stdout.splitlines() if line.strip()]


def test_a_sync_keeps_what_rsync_aAX_keeps(tmp_path: Path):
    _need_root_and("rsync", "setfacl")
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src)
    run_cli("sync", str(src), str(dst))
    assert _rsync_differences(src, dst) == []
    # The hole stayed a hole (holes are kept by block: the first 4 MiB block has data).
    assert os.stat(dst / "sparse").st_blocks * 512 <= 4 << 20
    # A rerun changes nothing.
    proc = run_cli("sync", str(src), str(dst), "--json")
    assert summary_of(proc.stdout)["files_copied"] == 0
    assert [e for e in json_events(proc.stdout) if e["event"] == "file_done"] == []
    # Only a file's owner changes: the next run chowns it, copying nothing (rsync's
    # attributes-only update).
    os.chown(src / "d1" / "a", 77, 78)
    os.chmod(src / "d2" / "big", 0o600)
    proc = run_cli("sync", str(src), str(dst), "--json")
    assert summary_of(proc.stdout)["files_copied"] == 0
    assert _rsync_differences(src, dst) == []
    # A directory's owner and default ACL change: the next run brings them.
    os.chown(src / "d1" / "sub", 42, 43)
    subprocess.run(["setfacl", "-d", "-m", "u:99:r", str(src / "d1" / "sub")], check=True)
    os.removexattr(src / "d2", "user.dir")
    run_cli("sync", str(src), str(dst))
    assert _rsync_differences(src, dst) == []
    # Only a file's xattrs and ACL change (its size, mtime, mode and owner stay): found by
    # its ctime, brought without a copy.
    os.setxattr(src / "d1" / "a", "user.note", b"changed")
    os.setxattr(src / "d1" / "sub" / "b", "user.new", b"added")
    subprocess.run(["setfacl", "-m", "u:4243:r", str(src / "d1" / "a")], check=True)
    subprocess.run(["setfacl", "-x", "u:4242", str(src / "d1" / "a")], check=True)
    proc = run_cli("sync", str(src), str(dst), "--json")
    assert summary_of(proc.stdout)["files_copied"] == 0
    assert sorted(e["path"] for e in json_events(proc.stdout)
                  if e["event"] == "file_done" and e["action"] == "meta") == ["d1/a", "d1/sub/b"]
    assert _rsync_differences(src, dst) == []
    # ... and the run after that compares nothing again.
    proc = run_cli("sync", str(src), str(dst), "--json")
    assert [e for e in json_events(proc.stdout) if e["event"] == "file_done"] == []


def test_no_owner_no_xattrs_no_acls_turn_each_off(tmp_path: Path):
    _need_root_and("rsync", "setfacl")
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src)
    run_cli("sync", str(src), str(dst), "--no-owner", "--no-group", "--no-xattrs", "--no-acls")
    st = os.stat(dst / "d1" / "a")
    assert (st.st_uid, st.st_gid) == (0, 0)
    assert os.listxattr(dst / "d1" / "a") == []
    assert os.listxattr(dst / "d1") == []


def test_a_destination_without_xattrs_gets_one_warning_per_kind(tmp_path: Path):
    _need_root_and("setfacl")
    src, dst = tmp_path / "src", tmp_path / "ramfs"
    for i in range(5):
        write(src / f"f{i}", b"x" * 10)
        os.setxattr(src / f"f{i}", "user.k", b"v")
        subprocess.run(["setfacl", "-m", "u:4242:r", str(src / f"f{i}")], check=True)
    dst.mkdir()
    subprocess.run(["mount", "-t", "ramfs", "ramfs", str(dst)], check=True)
    try:
        proc = run_cli("sync", str(src), str(dst / "copy"), "--json", check=1)
        warns = [e for e in json_events(proc.stdout) if e["event"] == "warning"]
        assert len(warns) == 1 and warns[0]["msgid"] == "metadata"
        assert "extended attributes and POSIX ACLs" in warns[0]["message"]
        assert summary_of(proc.stdout)["files_copied"] == 5
        assert sorted(os.listdir(dst / "copy")) == [f"f{i}" for i in range(5)]
    finally:
        subprocess.run(["umount", str(dst)], check=False)


def test_hard_links_are_kept_as_rsync_H_keeps_them(tmp_path: Path):
    _need_root_and("rsync")
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "a" / "one", b"1" * 5000)
    write(src / "b" / "two", b"2" * 70_000)
    os.link(src / "a" / "one", src / "b" / "one-again")
    os.link(src / "a" / "one", src / "c-one")
    os.link(src / "b" / "two", src / "a" / "two-again")
    write(src / "single", b"s")
    proc = run_cli("sync", str(src), str(dst), "--json")
    s = summary_of(proc.stdout)
    assert s["files_copied"] == 3 and s["links_created"] == 3  # each inode once
    inodes = {p.stat().st_ino for p in dst.rglob("*") if p.is_file()}
    assert len(inodes) == 3
    r = subprocess.run(["rsync", "-aHAXS", "--numeric-ids", "-n", "-i", "--delete",
                        f"{src}/", f"{dst}/"], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == ""
    # A link added to a set, and a name that was a separate file before: linked on the rerun,
    # nothing copied.
    os.link(src / "single", src / "a" / "single-link")
    write(dst / "a" / "single-link", b"s")  # a stale separate copy, as a run without -H left
    proc = run_cli("sync", str(src), str(dst), "--json")
    assert summary_of(proc.stdout)["files_copied"] == 0
    assert os.stat(dst / "single").st_ino == os.stat(dst / "a" / "single-link").st_ino
    r = subprocess.run(["rsync", "-aHAXS", "--numeric-ids", "-n", "-i", "--delete",
                        f"{src}/", f"{dst}/"], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == ""
    # A rerun with nothing changed touches nothing.
    proc = run_cli("sync", str(src), str(dst), "--json")
    assert [e for e in json_events(proc.stdout) if e["event"] == "file_done"] == []
    # A name taken out of a set (a separate copy now, same content and times) is split
    # from it in the destination: a later change to one would show through the other.
    shutil.copy2(src / "c-one", src / "c-one.tmp")
    os.replace(src / "c-one.tmp", src / "c-one")
    os.unlink(src / "a" / "two-again")  # and a name removed: the set shrinks
    proc = run_cli("sync", str(src), str(dst), "--mirror", "--json")
    assert summary_of(proc.stdout)["files_copied"] == 1  # only the split name
    assert os.stat(dst / "c-one").st_ino != os.stat(dst / "a" / "one").st_ino
    assert os.stat(dst / "b" / "one-again").st_ino == os.stat(dst / "a" / "one").st_ino
    assert os.stat(dst / "b" / "two").st_nlink == 1
    r = subprocess.run(["rsync", "-aHAXS", "--numeric-ids", "-n", "-i", "--delete",
                        f"{src}/", f"{dst}/"], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == ""
    proc = run_cli("sync", str(src), str(dst), "--mirror", "--json")
    assert [e for e in json_events(proc.stdout) if e["event"] == "file_done"] == []
    # --no-hard-links copies each name on its own.
    run_cli("sync", str(src), str(tmp_path / "flat"), "--no-hard-links")
    assert len({p.stat().st_ino for p in (tmp_path / "flat").rglob("*") if p.is_file()}) == 6


def test_a_sync_as_another_user_keeps_what_it_may(tmp_path: Path):
    """Run as uid 65534 (setpriv, keeping only the right to search directories so that this
    Python can be run at all): no failure, the files are the user's, user.* xattrs and ACLs
    kept; a fifo is made; the hard links kept. Nothing to warn about: what a user cannot set
    (trusted.*) it cannot read either, so it is never asked for."""
    _need_root_and("rsync", "setfacl", "setpriv")
    import tempfile

    from tests.conftest import ORBIT

    # Not below pytest's root-only base directory: the user checks its own access to the ends.
    tmp_path = Path(tempfile.mkdtemp(prefix="orbit-nobody-"))
    try:
        _sync_as_nobody(tmp_path, ORBIT)
    finally:
        shutil.rmtree(tmp_path)


def _sync_as_nobody(tmp_path: Path, orbit: list[str]) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "f", b"data")
    os.setxattr(src / "f", "user.k", b"v")
    subprocess.run(["setfacl", "-m", "u:4242:r", str(src / "f")], check=True)
    os.link(src / "f", src / "f2")
    os.mkfifo(src / "pipe")
    subprocess.run(["chown", "-R", "65534:65534", str(src)], check=True)
    os.chmod(tmp_path, 0o755)
    os.chown(tmp_path, 65534, 65534)
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, 65534, 65534)
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                 "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
    proc = subprocess.run([*as_nobody, *orbit, "sync", str(src), str(dst), "--json"],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "ORBIT_STATE_DIR": str(state), "HOME": str(state)})
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert [e for e in json_events(proc.stdout) if e["event"] == "warning"] == []
    st = os.stat(dst / "f")
    assert (st.st_uid, st.st_gid) == (65534, 65534)
    assert os.getxattr(dst / "f", "user.k") == b"v"
    acl = subprocess.run(["getfacl", "-c", str(dst / "f")], capture_output=True, text=True)
    assert "user:4242:r--" in acl.stdout
    assert os.stat(dst / "f2").st_ino == st.st_ino
    assert (dst / "pipe").is_fifo()
    assert _rsync_differences(src, dst) == []
