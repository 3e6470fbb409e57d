"""What backup and restore keep beyond data, mode and times (issue #19), with rsync as the
oracle: owners (by name where the name exists, else by id; --numeric-ids), hard links, xattrs
in every namespace, POSIX ACLs (access and default), fifos and device nodes, a symlink's own
owner. After `backup` + `restore`, `rsync -aHAXS --numeric-ids -n -i --delete SRC/ DST/`
lists nothing; a change of metadata only is a "T" in `diff` and reaches the next restore."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import json_events, run_cli, write
from tests.integration.test_sync_metadata import _need_root_and, _tree

pytestmark = pytest.mark.integration


def _backup(src: Path, repo: Path) -> dict:
    proc = run_cli("backup", str(src), str(repo), "--json", "-j", "2")
    (summary,) = [e for e in json_events(proc.stdout) if e["event"] == "backup_summary"]
    return summary


def _rsync(src: Path, dst: Path) -> list[str]:
    r = subprocess.run(["rsync", "-aHAXS", "--numeric-ids", "-n", "-i", "--delete",
                        f"{src}/", f"{dst}/"], capture_output=True, text=True,
                       check=True)  # fmt: skip
    return [line for line in r.stdout.splitlines() if line.strip()]


def test_backup_and_restore_keep_what_rsync_aHAXS_keeps(tmp_path: Path) -> None:
    _need_root_and("rsync", "setfacl")
    src, repo = tmp_path / "src", tmp_path / "repo"
    _tree(src)
    os.link(src / "d1" / "a", src / "d2" / "a-again")  # a hard-link set across directories
    os.link(src / "d2" / "big", src / "big-too")
    first = _backup(src, repo)
    assert first["warnings"] == 0
    out = tmp_path / "out1"
    run_cli("restore", "-r", str(repo), "latest", "--target", str(out))
    assert _rsync(src, out) == []
    assert os.stat(out / "d1" / "a").st_ino == os.stat(out / "d2" / "a-again").st_ino

    # ls -l: owners, link counts, + for an ACL, @ for other xattrs.
    proc = run_cli("ls", "-r", str(repo), "latest", "d1", "-l")
    lines = {line.rsplit("  ", 1)[-1]: line for line in proc.stdout.splitlines()}
    assert lines["d1/a"].startswith("f  664+   2 1234     5678")  # the ACL mask: g=rw
    assert lines["d1/sub/b"].split()[1] == "644@"
    listed = [json.loads(x) for x in run_cli("ls", "-r", str(repo), "latest", "d2",
                                             "--json").stdout.splitlines()]  # fmt: skip
    by_path = {x["path"]: x for x in listed}
    assert by_path["d2/null"]["kind"] == "c" and by_path["d2/null"]["rdev"] == os.makedev(1, 3)
    assert by_path["d2/pipe"]["kind"] == "p"
    assert by_path["d2"]["xattrs"] == ["user.dir"]

    # Metadata only: a "T" in diff, no data read again, and the next restore has it.
    os.chown(src / "d1" / "sub" / "b", 55, 56)
    os.setxattr(src / "d1" / "sub" / "b", "user.new", b"added")
    subprocess.run(["setfacl", "-m", "u:4243:r", str(src / "d1" / "a")], check=True)
    os.unlink(src / "big-too")  # a set shrinks
    second = _backup(src, repo)
    # The files whose ctime moved are read again (a content change with the mtime put back
    # shows only there, as restic assumes too), but no data is stored again: new trees and
    # the new xattr sets only.
    assert second["bytes_added"] < 4096, second
    proc = run_cli("diff", "-r", str(repo), first["snapshot"][:8], second["snapshot"][:8])
    changes = set(proc.stdout.splitlines()[:-1])
    assert {"T d1/a", "T d1/sub/b", "- big-too", "T d2/a-again"} <= changes, changes
    # A prune keeps the xattr sets the remaining snapshot names; verify reads each once.
    run_cli("forget", "-r", str(repo), "--keep-last", "1", "--prune")
    run_cli("verify", "-r", str(repo))
    out2 = tmp_path / "out2"
    run_cli("restore", "-r", str(repo), "latest", "--target", str(out2))
    assert _rsync(src, out2) == []


def test_owners_restore_by_name_unless_numeric_ids(tmp_path: Path) -> None:
    _need_root_and("rsync")
    import pwd

    src, repo = tmp_path / "src", tmp_path / "repo"
    write(src / "f", b"x")
    nobody = pwd.getpwnam("nobody")
    os.chown(src / "f", nobody.pw_uid, nobody.pw_gid)
    _backup(src, repo)
    proc = run_cli("ls", "-r", str(repo), "latest", "--json")
    (f,) = [json.loads(x) for x in proc.stdout.splitlines() if '"f"' in x]
    assert f["user"] == "nobody" and f["uid"] == nobody.pw_uid
    # The same name, another id on the restoring system: simulated by a snapshot whose id
    # for the name differs is not possible here, so the two modes are checked to agree with
    # the name's id, and an id without a name restores by id.
    os.chown(src / "f", 43210, 43210)
    _backup(src, repo)
    for extra in ((), ("--numeric-ids",)):
        out = tmp_path / f"out{len(extra)}"
        run_cli("restore", "-r", str(repo), "latest", "--target", str(out), *extra)
        assert (os.stat(out / "f").st_uid, os.stat(out / "f").st_gid) == (43210, 43210)


def test_twenty_thousand_files_sharing_one_acl_store_it_once(tmp_path: Path) -> None:
    """The set is one blob, and each tree names it once: 2,000 files in one directory with
    the same ACL and xattr cost the set plus one id over the same files without them (less,
    here: setfacl leaves their ctimes equal, which compresses better)."""
    _need_root_and("setfacl")
    sizes = {}
    for with_acl in (False, True):
        src = tmp_path / f"src{with_acl}"
        (src / "d").mkdir(parents=True)
        for i in range(2000):
            p = src / "d" / f"f{i:05}"
            p.write_bytes(b"")
            os.utime(p, ns=(10**18, 10**18))
        if with_acl:
            subprocess.run(["setfacl", "-R", "-m", "u:4242:rw", str(src / "d")], check=True)
            for p in (src / "d").iterdir():
                os.setxattr(p, "user.origin", b"scanner-7")
        sizes[with_acl] = _backup(src, tmp_path / f"repo{with_acl}")["bytes_added"]
    # The set blob (~100 bytes compressed) and the tree's one 32-byte id, compression aside.
    assert sizes[True] - sizes[False] < 1024, sizes


def test_a_restore_as_another_user_applies_what_it_may(tmp_path: Path) -> None:
    """Run as `nobody`: no failure; owners left to the user, user.* xattrs and ACLs kept,
    trusted.* (root's) left out with one warning, exit 1; no device made (one warning)."""
    _need_root_and("rsync", "setfacl", "setpriv")
    src, repo = tmp_path / "src", tmp_path / "repo"
    write(src / "f", b"data")
    os.setxattr(src / "f", "user.k", b"v")
    os.setxattr(src / "f", "trusted.t", b"root only")
    subprocess.run(["setfacl", "-m", "u:4242:r", str(src / "f")], check=True)
    os.mknod(src / "null", 0o666 | 0o020000, os.makedev(1, 3))
    os.mkfifo(src / "pipe")
    run_cli("backup", str(src), str(repo), "--insecure-no-encryption")
    out = tmp_path / "out"
    out.mkdir()
    os.chown(out, 65534, 65534)
    os.chmod(tmp_path, 0o755)
    subprocess.run(["chown", "-R", "65534:65534", str(repo)], check=True)  # the user's own
    from tests.conftest import ORBIT

    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, 65534, 65534)
    # uid and gid 65534 (nobody) with one capability: searching directories, so that this
    # Python, which may live below root's home, can be run at all. Nothing else of root's.
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                 "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
    proc = subprocess.run([*as_nobody, *ORBIT, "restore", "-r", str(repo),
                           "latest", "--target", str(out / "r"), "--json"],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "ORBIT_STATE_DIR": str(state), "HOME": str(state)})
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert proc.stdout, proc.stderr
    warns = [e for e in json_events(proc.stdout) if e["event"] == "warning"]
    assert sorted(w["msgid"] for w in warns) == ["metadata", "metadata"], warns
    f = out / "r" / "f"
    assert f.read_bytes() == b"data" and os.stat(f).st_uid == 65534
    assert os.getxattr(f, "user.k") == b"v"
    assert "trusted.t" not in os.listxattr(f)
    acl = subprocess.run(["getfacl", "-c", str(f)], capture_output=True, text=True).stdout
    assert "user:4242:r--" in acl
    assert (out / "r" / "pipe").is_fifo() and not (out / "r" / "null").exists()


def test_a_restore_onto_a_filesystem_without_xattrs_warns_once_per_kind(tmp_path: Path) -> None:
    """ramfs holds neither xattrs nor ACLs: one warning per kind, every file restored."""
    _need_root_and("setfacl")
    src, repo, mnt = tmp_path / "src", tmp_path / "repo", tmp_path / "ramfs"
    for i in range(5):
        write(src / f"f{i}", b"x" * 10)
        os.setxattr(src / f"f{i}", "user.k", b"v")
        subprocess.run(["setfacl", "-m", "u:4242:r", str(src / f"f{i}")], check=True)
    _backup(src, repo)
    mnt.mkdir()
    subprocess.run(["mount", "-t", "ramfs", "ramfs", str(mnt)], check=True)
    try:
        proc = run_cli("restore", "-r", str(repo), "latest", "--target", str(mnt / "r"),
                       "--json", check=1)  # fmt: skip
        warns = [e for e in json_events(proc.stdout) if e["event"] == "warning"]
        assert [w["msgid"] for w in warns] == ["metadata"], warns
        assert "extended attributes and POSIX ACLs" in warns[0]["message"]
        assert sorted(os.listdir(mnt / "r")) == [f"f{i}" for i in range(5)]
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
