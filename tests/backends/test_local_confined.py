"""The local store confined to its root (#15): whoever can write below the root (here the user
nobody, who owns it) cannot make a root process read, write, delete or touch anything outside
it, through a symlink at a directory component or at an object's name; and an object sync
never uploads a root-only file someone swapped in for a listed one.

Every attack runs with openat2 and with the O_NOFOLLOW component walk (ORBIT_NO_OPENAT2=1).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orbit_fast import confine
from orbit_fast.backends.base import part_uploads
from orbit_fast.backends.local import LocalStore
from orbit_fast.errors import OrbitError

NOBODY = 65534
SECRET = b"root-only: never leaves this file\n"
T = 1_600_000_000_123_456_789

needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="the attacks need a root run and the user nobody")


@pytest.fixture(params=["openat2", "walk"])
def resolver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "walk":
        monkeypatch.setenv("ORBIT_NO_OPENAT2", "1")
    confine.have_openat2.cache_clear()
    if request.param == "openat2" and not confine.have_openat2():
        pytest.skip("this kernel has no openat2")
    yield request.param
    monkeypatch.delenv("ORBIT_NO_OPENAT2", raising=False)
    confine.have_openat2.cache_clear()


@pytest.fixture
def shared(request: pytest.FixtureRequest) -> Path:
    """A directory nobody can reach (pytest's tmp_path is root's alone)."""
    d = Path(tempfile.mkdtemp(prefix="orbit-confined-", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(d, ignore_errors=True))
    os.chmod(d, 0o755)
    return d


@pytest.fixture
def victim(shared: Path) -> Path:
    """Root's directory outside every store: a root-only secret, a file named like a temp
    file of ours, and a plain file."""
    v = shared / "victim"
    v.mkdir()
    (v / "secret").write_bytes(SECRET)
    os.chmod(v / "secret", 0o600)
    (v / ".tmp-0123456789ab").write_bytes(b"not a temp file of any store of ours")
    (v / "old.txt").write_bytes(b"old")
    return v


def _owned_by_nobody(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, NOBODY, NOBODY)
    return path


def as_nobody(script: str) -> None:
    subprocess.run(["runuser", "-u", "nobody", "--", "sh", "-ec", script], check=True)


def snapshot(d: Path) -> dict[str, Any]:
    """Everything an attack could change in a directory: names, contents, modes, mtimes."""
    out: dict[str, Any] = {".": os.lstat(d).st_mtime_ns}
    for p in sorted(d.rglob("*")):
        st = os.lstat(p)
        data = p.read_bytes() if stat.S_ISREG(st.st_mode) else None
        out[str(p.relative_to(d))] = (data, st.st_mode, st.st_mtime_ns, st.st_size)
    return out


def refused(fn: Callable[..., Any], *args: Any) -> None:
    """`fn(*args)` fails with an OSError, or gives nothing: it never reaches outside."""
    try:
        got = fn(*args)
        if isinstance(got, Iterator):
            got = list(got)
    except OSError:
        return
    assert not got, f"reached outside the root: {got!r}"


def _calls(s: LocalStore, name: str) -> list[tuple[Callable[..., Any], tuple[Any, ...]]]:
    """Every call of the store on one object name."""
    uploads = part_uploads(s)
    assert uploads is not None
    return [(s.read, (name,)), (s.read_range, (name, 0, 4)), (s.read_info, (name,)),
            (s.stat_info, (name,)), (s.size, (name,)), (s.exists, (name,)),
            (s.write, (name, b"written through")), (s.put_file, (name, b"through", T)),
            (s.delete, (name,)), (s.delete_many, ([name],)),
            (uploads.begin_upload, (name, 4, 4, T))]  # fmt: skip


def test_bad_names_are_refused_before_any_system_call(tmp_path: Path) -> None:
    (tmp_path / "outside").write_bytes(b"outside")
    root = tmp_path / "store"
    s = LocalStore(str(root))
    s.write("inside", b"x")
    for bad in ("../outside", "/etc/passwd", "a//b", "a/./b", "a/..", "", "a\0b", "./inside"):
        for fn, args in _calls(s, bad):
            with pytest.raises(confine.Escape, match="unsafe path"):
                fn(*args)
    assert (tmp_path / "outside").read_bytes() == b"outside"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outside", "store"]
    assert [n for n, _ in s.list("")] == ["inside"]
    with pytest.raises(confine.Escape):
        list(s.list(".."))


@needs_root
def test_a_symlink_at_a_directory_component_never_leads_outside(shared: Path, victim: Path,
                                                                resolver: str) -> None:
    root = _owned_by_nobody(shared / "store")
    s = LocalStore(str(root))
    s.put_file("keep/mine", b"mine", T)
    as_nobody(f"ln -s {victim} {root}/sub")
    before = snapshot(victim)
    for name in ("sub/secret", "sub/old.txt"):
        for fn, args in _calls(s, name):
            refused(fn, *args)
    refused(s.write, "sub/new", b"new")
    refused(s.sweep_temp, "sub")
    refused(s.list, "sub")
    refused(s.list_info, "sub")
    skipped: list[tuple[str, str]] = []
    assert [i.name for i in s.list_info("", on_skip=lambda *e: skipped.append(e))] == ["keep/mine"]
    assert skipped == [("sub", "a symlink: object stores keep only files")]
    assert [n for n, _ in s.list("")] == ["keep/mine"]
    assert s.sweep_temp("") == 0
    # Deeper: a link in the middle of the name, and one the attacker swaps in for a directory
    # the store has used already (its descriptors are not kept).
    as_nobody(f"mkdir {root}/a && ln -s {victim} {root}/a/b")
    refused(s.write, "a/b/new", b"new")
    refused(s.read, "a/b/secret")
    as_nobody(f"mv {root}/keep {root}/keep.moved && ln -s {victim} {root}/keep")
    for fn, args in _calls(s, "keep/old.txt") + _calls(s, "keep/secret"):
        refused(fn, *args)
    assert snapshot(victim) == before
    assert s.read("keep.moved/mine") == b"mine"
    s.close()


@needs_root
def test_a_symlink_at_the_object_name_is_never_followed(shared: Path, victim: Path,
                                                        resolver: str) -> None:
    root = _owned_by_nobody(shared / "store")
    s = LocalStore(str(root))
    s.write("plain", b"plain")
    as_nobody(f"ln -s {victim}/secret {root}/link")
    before = snapshot(victim)
    with pytest.raises(OSError):
        s.read("link")
    with pytest.raises(OSError):
        s.read_range("link", 0, 4)
    with pytest.raises(OSError):
        s.read_info("link")
    with pytest.raises(FileNotFoundError, match="a symlink"):
        s.stat_info("link")
    with pytest.raises(FileNotFoundError):
        s.size("link")
    assert [n for n, _ in s.list("")] == ["plain"]
    assert [i.name for i in s.list_info("")] == ["plain"]
    s.write("link", b"replaced")  # the link is replaced, never written through
    assert (root / "link").read_bytes() == b"replaced" and not (root / "link").is_symlink()
    as_nobody(f"rm {root}/link && ln -s {victim}/old.txt {root}/link")
    s.put_file("link", b"replaced", T)
    assert not (root / "link").is_symlink() and os.stat(root / "link").st_mtime_ns == T
    as_nobody(f"rm {root}/link && ln -s {victim}/old.txt {root}/link")
    s.delete("link")  # the link goes, not its target
    assert not os.path.lexists(root / "link")
    # An upload in parts whose temp file the attacker replaces with a link to the secret:
    # neither its parts, nor its completion (mtime, rename), nor a read go through it.
    as_nobody(f"mkdir {root}/up")  # the attacker's directory: he may replace what is in it
    up = part_uploads(s).begin_upload("up/big", len(SECRET), len(SECRET), T)  # type: ignore
    as_nobody(f"rm {root}/{up.state} && ln -s {victim}/secret {root}/{up.state}")
    with pytest.raises(OSError):
        up.write_part(1, 0, b"x" * len(SECRET))
    with pytest.raises(OSError):
        up.confirmed({1: "0" * 32}, {1: len(SECRET)})
    with pytest.raises(OSError):
        up.complete({1: "0" * 32}, len(SECRET))
    assert not os.path.lexists(root / "up" / "big")
    assert s.sweep_temp("") == 1 and not os.path.lexists(root / up.state)
    assert snapshot(victim) == before
    s.close()


def test_a_missing_root_is_made_by_the_first_write_only(tmp_path: Path) -> None:
    root = tmp_path / "not" / "yet"
    s = LocalStore(str(root))
    assert s.is_empty() and not s.exists("a") and list(s.list("")) == []
    assert list(s.list_info("")) == [] and s.sweep_temp("") == 0
    s.delete("a")
    with pytest.raises(FileNotFoundError):
        s.read("a")
    with pytest.raises(FileNotFoundError):
        s.stat_info("a")
    assert not root.exists()  # nothing but a write makes it
    s.write("a/b", b"made")
    assert (root / "a" / "b").read_bytes() == b"made" and not s.is_empty()


def test_a_root_replaced_between_runs_is_opened_anew(tmp_path: Path) -> None:
    """A worker keeps its store for the life of the process (hub runs): a root the operator
    moved away and made again is the one the path names, not the descriptor it held."""
    root = tmp_path / "root"
    s = LocalStore(str(root))
    s.write("first", b"1")
    root.rename(tmp_path / "moved")
    root.mkdir()
    s.write("second", b"2")
    assert (root / "second").read_bytes() == b"2"
    assert not s.exists("first") and not (tmp_path / "moved" / "second").exists()
    shutil.rmtree(root)
    s.write("third", b"3")  # a root removed since is made again, as at the first write
    assert (root / "third").read_bytes() == b"3"


# ---- through a whole object sync --------------------------------------------------------------


@contextlib.contextmanager
def _attack_when_listed(name: str, script: str) -> Iterator[list[str]]:
    """Run `script` as nobody right after a LocalStore listing saw `name` as a regular file,
    before the engine hears of it: a race the attacker won, every time. With name "" after
    the listing's end."""
    real = LocalStore.list_info
    done: list[str] = []

    def list_info(self: LocalStore, prefix: str, descend: Any = None, on_skip: Any = None,
                  on_dir: Any = None, meta: bool = False) -> Iterator[Any]:  # fmt: skip
        for info in real(self, prefix, descend, on_skip, on_dir, meta):
            if info.name == name and not done:
                as_nobody(script)
                done.append(name)
            yield info
        if name == "" and not done:
            as_nobody(script)
            done.append(name)

    mp = pytest.MonkeyPatch()
    mp.setattr(LocalStore, "list_info", list_info)
    try:
        yield done
    finally:
        mp.undo()


def _bucket_holds(moto: Any, bucket: str) -> dict[str, bytes]:
    c = moto.client()
    keys = [o["Key"] for o in c.list_objects_v2(Bucket=bucket).get("Contents", [])]
    return {k: c.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


@needs_root
def test_a_file_swapped_for_a_symlink_to_a_secret_is_never_uploaded(
        shared: Path, victim: Path, resolver: str, moto, s3_bucket) -> None:  # fmt: skip
    """local -> S3. The listing sees `f` and `d/g` as regular files; then nobody replaces `f`
    with a symlink to the root-only secret, of the same length and mtime as `f` (touch -h),
    and the directory `d` with a symlink to the secret's directory."""
    from orbit_fast import api

    src = _owned_by_nobody(shared / "src")
    secret = victim / "secret"
    m = 1_650_000_000_123_456_789
    at = f"@{m // 10**9}.{m % 10**9:09d}"
    as_nobody(f"printf %s '{'x' * len(str(secret))}' > {src}/f && touch -d {at} {src}/f && "
              f"mkdir {src}/d && cp {src}/f {src}/d/secret && echo ok > {src}/ok")
    swap = (f"ln -s {secret} {src}/.f.new && touch -h -d {at} {src}/.f.new && "
            f"mv -T {src}/.f.new {src}/f")
    assert os.lstat(src / "f").st_size == len(str(secret)) and os.lstat(src / "f").st_mtime_ns == m
    with _attack_when_listed("f", swap) as f_done:
        with _attack_when_listed("d/secret", f"mv {src}/d {src}/d.old && ln -s {victim} "
                                 f"{src}/d") as d_done:  # fmt: skip
            summary = api.sync(str(src), f"s3://{s3_bucket}/x")
    assert f_done and d_done
    link = os.lstat(src / "f")  # what a length- and mtime-checking lstat would have accepted
    assert stat.S_ISLNK(link.st_mode) and (link.st_size, link.st_mtime_ns) == (len(str(secret)), m)
    got = _bucket_holds(moto, s3_bucket)
    assert all(SECRET not in data for data in got.values()), sorted(got)
    assert got["x/ok"] == b"ok\n" and "x/f" not in got and "x/d/secret" not in got
    assert summary.exit_code == 1 and summary.warnings >= 2


@needs_root
@pytest.mark.parametrize("what", ["write", "delete"])
def test_a_destination_directory_swapped_for_a_symlink_is_never_written_through(
        shared: Path, victim: Path, resolver: str, moto, s3_bucket, what: str) -> None:  # fmt: skip
    """S3 -> local, --mirror. After the destination was listed (`sub/old.txt` there, not in
    the source), nobody replaces `sub` with a symlink to root's directory: neither the copy of
    `sub/new.txt` nor the mirror's delete of `sub/old.txt` lands there."""
    from orbit_fast import api

    c = moto.client()
    c.put_object(Bucket=s3_bucket, Key="x/top.txt", Body=b"top")
    if what == "write":
        c.put_object(Bucket=s3_bucket, Key="x/sub/new.txt", Body=b"new")
    dst = _owned_by_nobody(shared / "dst")
    as_nobody(f"mkdir {dst}/sub && echo old > {dst}/sub/old.txt")
    before = snapshot(victim)
    with _attack_when_listed("", f"mv {dst}/sub {dst}/sub.moved && ln -s {victim} {dst}/sub"):
        with contextlib.suppress(OrbitError):  # the run may fail: a destination it cannot use
            api.sync(f"s3://{s3_bucket}/x", str(dst), mirror=True)
    assert (dst / "sub").is_symlink()
    assert snapshot(victim) == before
    assert (dst / "sub.moved" / "old.txt").read_bytes() == b"old\n"
