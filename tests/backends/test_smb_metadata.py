"""A file's creation time and DOS attributes between SMB ends in `orbit-fast sync` (issue #19):
kept by every copy (server-side, through orbit-fast, in parts), a change of only them applied
without a copy, a no-change run setting nothing (Samba, which keeps both in user.DOSATTRIB);
with --smb-security, its NT security descriptor too (a share with vfs objects = acl_xattr).

The source's attributes are set, and the destination's read back, with smbprotocol's own
smbclient API and Samba's smbclient and smbcacls CLIs, not orbit-fast's requests."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import json_events, run_cli, summary_of, write
from tests.servers import SMB_PASSWORD, SMB_USER

READONLY, HIDDEN, SYSTEM, ARCHIVE = 0x1, 0x2, 0x4, 0x20
KEPT = READONLY | HIDDEN | SYSTEM | ARCHIVE
EPOCH_FILETIME = 116444736000000000
MTIME = 1_600_000_000.5
# name -> (DOS attributes, creation time in ns): every kept bit alone, together, and none
FILES = {
    "ro.txt": (READONLY, 1_400_000_000_123_456_700),
    "a/hidden.txt": (HIDDEN, 1_400_000_001_000_000_000),
    "a/system.txt": (SYSTEM, 1_400_000_002_000_000_000),
    "a/b/archive.txt": (ARCHIVE, 1_400_000_003_000_000_000),
    "a/b/none.txt": (0, 1_400_000_004_000_000_000),
    "all.txt": (KEPT, -1_000_000_000_000_000_000),  # 1938: before 1970 too
    "big.bin": (READONLY | HIDDEN, 1_400_000_005_000_000_000),  # above 8 MiB: in parts
}


@pytest.fixture
def smb(samba) -> Iterator[dict[str, Any]]:
    """smbclient keyword arguments on a connection of the test's own."""
    import smbclient

    cache: dict = {}
    yield {"port": samba.port, "username": SMB_USER, "password": SMB_PASSWORD,
           "connection_cache": cache}  # fmt: skip
    smbclient.reset_connection_cache(connection_cache=cache)


def _unc(*parts: str) -> str:
    return "\\\\127.0.0.1\\share\\" + "\\".join(p.replace("/", "\\") for p in parts)


def _set(smb: dict[str, Any], path: str, attrs: int = 0, btime_ns: int | None = None) -> None:
    """FileBasicInformation through smbprotocol: zero leaves a field, 0x80 clears the attrs."""
    from smbclient._os import _set_basic_information

    ct = btime_ns // 100 + EPOCH_FILETIME if btime_ns is not None else 0
    _set_basic_information(path, creation_time=ct, file_attributes=attrs or 0x80, **smb)


def _seen(smb: dict[str, Any], path: str) -> tuple[int, int]:
    """(kept DOS attributes, creation time in ns) as the server reports them."""
    import smbclient

    st = smbclient.stat(path, **smb)
    return st.st_file_attributes & KEPT, st.st_ctime_ns  # smbclient's st_ctime: creation


def _source(samba, smb_dir: str, smb: dict[str, Any]) -> Path:
    root = samba.share_dir / smb_dir / "src"
    for name in FILES:
        data = os.urandom(9 << 20) if name == "big.bin" else name.encode() * 100
        write(root / name, data, mtime=MTIME)
    for name, (attrs, btime) in FILES.items():
        _set(smb, _unc(smb_dir, "src", name), attrs, btime)
        assert _seen(smb, _unc(smb_dir, "src", name)) == (attrs, btime // 100 * 100), name
    return root


def _sync(src: str, dst: str, *extra: str, check: int = 0) -> tuple[dict, list[dict]]:
    proc = run_cli("sync", src, dst, "--json", "--chunk-size-mb", "5", *extra, check=check)
    _SEEN[:] = json_events(proc.stdout)
    return summary_of(proc.stdout), [e for e in _SEEN if e["event"] == "warning"]


_SEEN: list[dict] = []  # the last _sync's events


def _meta_done() -> set[str]:
    """The files the last _sync updated by their metadata alone (its "meta" events)."""
    return {e["path"] for e in _SEEN if e["event"] == "file_done" and e["action"] == "meta"}


def _inodes(root: Path) -> dict[str, tuple[int, int]]:
    """name -> (inode, ctime) of the destination's files on the server's disk: a copy makes
    another inode, and setting anything (data, times, user.DOSATTRIB) moves the ctime."""
    out = {}
    for name in FILES:
        st = (root / name).stat()
        out[name] = (st.st_ino, st.st_ctime_ns)
    return out


@pytest.mark.parametrize("way", ["server", "through"])
def test_smb_to_smb_keeps_creation_times_and_dos_attributes(samba, smb_dir: str, smb,
                                                            way: str) -> None:  # fmt: skip
    """`server`: one server and login, FSCTL_SRV_COPYCHUNK; `through`: the destination named
    by another host name, so the bytes come through orbit-fast (big.bin in parts)."""
    _source(samba, smb_dir, smb)
    src = samba.url(smb_dir + "/src")
    dst = samba.url(smb_dir + "/dst")
    if way == "through":
        dst = dst.replace("@127.0.0.1:", "@localhost:")
    n = len(FILES)
    s, warnings = _sync(src, dst)
    assert (s["files_copied"], s["warnings"]) == (n, 0), (s, warnings)
    assert s["files_server_side"] == (n if way == "server" else 0)

    def kept() -> None:
        for name in FILES:
            want = _seen(smb, _unc(smb_dir, "src", name))
            assert _seen(smb, _unc(smb_dir, "dst", name)) == want, name

    kept()
    root = samba.share_dir / smb_dir / "dst"
    before = _inodes(root)
    # Nothing changed: nothing copied, nothing set (no file's ctime moved).
    s, _ = _sync(src, dst)
    assert (s["files_copied"], s["files_unchanged"]) == (0, n), s
    assert _inodes(root) == before
    # Someone sets only the hidden bit of one source file, and only the creation time of
    # another: both reach the destination without a copy (same inodes, nothing else moved).
    if shutil.which("smbclient") is None:
        pytest.skip("needs Samba's smbclient CLI (apt-get install smbclient)")
    proc = subprocess.run(
        ["smbclient", "//127.0.0.1/share", "-p", str(samba.port), "-U",
         f"{SMB_USER}%{SMB_PASSWORD}", "-c", f"setmode {smb_dir}\\src\\a\\b\\none.txt +h"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _seen(smb, _unc(smb_dir, "src", "a/b/none.txt"))[0] == HIDDEN
    _set(smb, _unc(smb_dir, "src", "a/system.txt"), SYSTEM, 1_300_000_000_000_000_000)
    s, warnings = _sync(src, dst)
    assert (s["files_copied"], s["files_unchanged"], s["warnings"]) == (0, n, 0), s
    assert _meta_done() == {"a/b/none.txt", "a/system.txt"}  # said, as between trees
    kept()
    after = _inodes(root)
    moved = {k for k in FILES if after[k] != before[k]}
    assert moved == {"a/b/none.txt", "a/system.txt"}
    assert all(after[k][0] == before[k][0] for k in FILES)  # no copy: the same inodes
    assert _sync(src, dst)[0]["files_copied"] == 0 and _inodes(root) == after
    # A new version of a read-only file replaces it; --mirror deletes a read-only one (SMB
    # refuses to delete a file with READONLY: it is cleared first).
    write(samba.share_dir / smb_dir / "src" / "ro.txt", b"new", mtime=MTIME + 1)
    os.unlink(samba.share_dir / smb_dir / "src" / "all.txt")
    s, _ = _sync(src, dst, "--mirror")
    assert (s["files_copied"], s["files_deleted"]) == (1, 1), s
    assert (root / "ro.txt").read_bytes() == b"new" and not (root / "all.txt").exists()
    assert _seen(smb, _unc(smb_dir, "dst", "ro.txt"))[0] == READONLY


def test_checksum_and_size_only_set_attributes_without_copying(samba, smb_dir: str,
                                                               smb) -> None:  # fmt: skip
    _source(samba, smb_dir, smb)
    src, dst = samba.url(smb_dir + "/src"), samba.url(smb_dir + "/dst")
    _sync(src, dst)
    root = samba.share_dir / smb_dir / "dst"
    for flag, attrs in (("--checksum", HIDDEN | ARCHIVE), ("--size-only", SYSTEM)):
        _set(smb, _unc(smb_dir, "src", "a/hidden.txt"), attrs)
        before = _inodes(root)
        s, _ = _sync(src, dst, flag)
        assert (s["files_copied"], s["files_unchanged"]) == (0, len(FILES)), (flag, s)
        assert _seen(smb, _unc(smb_dir, "dst", "a/hidden.txt"))[0] == attrs, flag
        after = _inodes(root)
        assert {k for k in FILES if after[k] != before[k]} == {"a/hidden.txt"}, flag
    # --dry-run sets nothing, and says what it would set.
    _set(smb, _unc(smb_dir, "src", "a/hidden.txt"), READONLY)
    before = _inodes(root)
    _sync(src, dst, "--dry-run")
    assert _inodes(root) == before
    assert _meta_done() == {"a/hidden.txt"}


def test_local_and_smb_ends_leave_dos_attributes_out(tmp_path: Path, samba, smb_dir: str,
                                                     smb) -> None:  # fmt: skip
    """SMB -> local: a local file has no DOS attributes and Linux sets no creation time, so
    they stay behind (docs/sync.md); local -> SMB: files get the share's defaults. Neither
    fails or warns because of them."""
    _source(samba, smb_dir, smb)
    s, warnings = _sync(samba.url(smb_dir + "/src"), str(tmp_path / "out"))
    assert (s["files_copied"], warnings) == (len(FILES), [])
    assert (tmp_path / "out" / "ro.txt").stat().st_mode & 0o200  # still writable here
    s, warnings = _sync(str(tmp_path / "out"), samba.url(smb_dir + "/back"))
    assert (s["files_copied"], warnings) == (len(FILES), [])
    assert _seen(smb, _unc(smb_dir, "back", "ro.txt"))[0] == ARCHIVE  # a new file's
    # Unchanged either way after that: the attributes that differ are not compared there.
    assert _sync(samba.url(smb_dir + "/src"), str(tmp_path / "out"))[0]["files_copied"] == 0
    assert _sync(str(tmp_path / "out"), samba.url(smb_dir + "/back"))[0]["files_copied"] == 0


def test_a_share_that_keeps_no_dos_attributes_is_reported(samba, smb_dir: str, smb) -> None:
    """A destination share with `store dos attributes = no` loses them: said once per run
    with the count, exit 1, data complete; the next run tries again and says so again."""
    _source(samba, smb_dir, smb)
    src, dst = samba.url(smb_dir + "/src"), samba.url(smb_dir, share="nodos")
    for copied in (len(FILES), 0):
        s, warnings = _sync(src, dst, check=1)
        assert s["files_copied"] == copied and s["skipped"] == [], s
        (w,) = warnings
        assert w["msgid"] == "metadata" and w["message"].startswith(f"{len(FILES)} files "), w
        assert "did not keep" in w["message"] and "store dos attributes" in w["message"]
    for name in FILES:
        got = samba.share_dir.parent / "nodos" / smb_dir / name
        assert got.read_bytes() == (samba.share_dir / smb_dir / "src" / name).read_bytes()


# ---- --smb-security ------------------------------------------------------------------------


@pytest.fixture
def smbcacls(samba) -> Iterator[Any]:
    """Samba's smbcacls on the test server: it has no port option (it dials 445, then 139),
    so a relay listens on port 445 of a loopback address of its own and forwards to Samba.
    Returns run(share, path, *args) -> its output lines."""
    import random
    import socket
    import threading

    if shutil.which("smbcacls") is None:
        pytest.skip("needs Samba's smbcacls (apt-get install smbclient)")
    lst = socket.socket()
    for _ in range(20):  # another test run may hold one address: take another
        host = f"127.{random.randrange(1, 255)}.{random.randrange(256)}.{random.randrange(1, 255)}"
        try:
            lst.bind((host, 445))
            break
        except OSError:
            continue
    else:
        pytest.fail("no loopback address with port 445 free for the smbcacls relay")
    lst.listen(16)
    conns: list[socket.socket] = []  # closed when the test is over

    def pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(1 << 16):
                b.sendall(data)
            b.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def accept() -> None:
        while True:
            try:
                c, _ = lst.accept()
            except OSError:
                return  # closed: the test is over
            s = socket.create_connection(("127.0.0.1", samba.port))
            conns.extend((c, s))
            threading.Thread(target=pipe, args=(c, s), daemon=True).start()
            threading.Thread(target=pipe, args=(s, c), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()

    def run(share: str, path: str, *args: str) -> list[str]:
        proc = subprocess.run(["smbcacls", f"//{host}/{share}", path.replace("/", "\\"), "-U",
                               f"{SMB_USER}%{SMB_PASSWORD}", *args],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout.splitlines()

    yield run
    lst.close()
    for c in conns:
        c.close()


SECURED = {"a/granted.txt": "ACL:orbitsmb:ALLOWED/0x0/READ",
           "denied.txt": "ACL:orbitsmb:DENIED/0x0/D",
           "big.bin": "ACL:orbitsmb:ALLOWED/0x0/FULL"}  # fmt: skip


@pytest.mark.parametrize("way", ["server", "through"])
def test_smb_security_carries_descriptors_set_by_smbcacls(samba, smb_dir: str, smbcacls,
                                                          way: str) -> None:  # fmt: skip
    """--smb-security: the owner, group and DACL smbcacls gave source files are the copies',
    on the server and through orbit-fast (big.bin in parts); without the flag they are not;
    with --checksum a change of only a DACL reaches the destination without a copy, and an
    unchanged tree is left alone."""
    root = samba.share_dir.parent / "acl" / smb_dir
    for name in (*SECURED, "plain.txt"):
        write(root / "src" / name, os.urandom(9 << 20) if name == "big.bin" else b"x" * 100,
              mtime=MTIME)  # fmt: skip
    for name, ace in SECURED.items():
        smbcacls("acl", f"{smb_dir}/src/{name}", "-a", ace)
    smbcacls("acl", f"{smb_dir}/src/a/granted.txt", "-C", SMB_USER)  # another owner

    def acl(side: str, name: str) -> list[str]:
        return smbcacls("acl", f"{smb_dir}/{side}/{name}")

    src = samba.url(smb_dir + "/src", share="acl")
    dst = samba.url(smb_dir + "/dst", share="acl")
    if way == "through":
        dst = dst.replace("@127.0.0.1:", "@localhost:")
    s, _ = _sync(src, dst, "--smb-security")
    assert s["files_copied"] == 4 and s["exit_code"] == 0, s
    for name, ace in SECURED.items():
        got = acl("dst", name)
        assert got == acl("src", name) and ace.split(":", 1)[1] in "".join(got), name
    assert f"\\{SMB_USER}" in next(x for x in acl("dst", "a/granted.txt") if x.startswith("OWNER"))
    # Without the flag: the share's default, not the source's.
    s, _ = _sync(src, samba.url(smb_dir + "/plain", share="acl"))
    assert s["files_copied"] == 4
    assert acl("plain", "denied.txt") != acl("src", "denied.txt")
    # A change of only a DACL moves nothing a listing shows: --checksum compares them all.
    smbcacls("acl", f"{smb_dir}/src/plain.txt", "-a", "ACL:orbitsmb:ALLOWED/0x0/R")
    inodes = {n: (root / "dst" / n).stat() for n in (*SECURED, "plain.txt")}
    s, _ = _sync(src, dst, "--smb-security", "--checksum")
    assert (s["files_copied"], s["files_unchanged"]) == (0, 4), s
    assert acl("dst", "plain.txt") == acl("src", "plain.txt")
    after = {n: (root / "dst" / n).stat() for n in inodes}
    assert {n for n in inodes if after[n].st_ctime_ns != inodes[n].st_ctime_ns} == {"plain.txt"}
    assert all(after[n].st_ino == inodes[n].st_ino for n in inodes)  # set, not copied
    s, _ = _sync(src, dst, "--smb-security", "--checksum")  # equal now: nothing set
    assert {n: (root / "dst" / n).stat().st_ctime_ns for n in inodes} == \
        {n: after[n].st_ctime_ns for n in inodes}  # fmt: skip


def test_smb_security_needs_two_smb_ends(tmp_path: Path, samba, smb_dir: str) -> None:
    proc = run_cli("sync", str(tmp_path), samba.url(smb_dir), "--smb-security", check=None)
    assert proc.returncode == 2 and "smb_security" in proc.stderr + proc.stdout, proc


def test_a_descriptor_the_destination_refuses_stops_the_run_before_the_rename(
        samba, smb_dir: str) -> None:  # fmt: skip
    """Writing as itself (no `force user`), the account may not give a file another owner:
    the run stops with an error naming the rights, and the file never appears under its
    name without the descriptor (it is set and checked before the rename)."""
    root = samba.share_dir.parent / "acl" / smb_dir
    write(root / "src" / "owned.txt", b"x" * 100, mtime=MTIME)  # owned by root (force user)
    write(root / "src" / "big.bin", os.urandom(9 << 20), mtime=MTIME)  # in parts
    src = samba.url(smb_dir + "/src", share="acl")
    for dst in (samba.url(smb_dir, share="acluser"),
                samba.url(smb_dir, share="acluser").replace("@127.0.0.1:", "@localhost:")):
        proc = run_cli("sync", src, dst, "--smb-security", "--json", "--chunk-size-mb", "5",
                       check=None)  # fmt: skip
        assert proc.returncode == 14, proc.stdout + proc.stderr  # ExitCode.REMOTE
        assert "refused the security descriptor" in proc.stdout + proc.stderr
        assert "SeRestorePrivilege" in proc.stdout + proc.stderr
        assert not (Path(samba.user_dir) / smb_dir / "owned.txt").exists()
        assert not (Path(samba.user_dir) / smb_dir / "big.bin").exists()
