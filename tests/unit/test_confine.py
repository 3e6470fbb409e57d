"""orbit_fast.confine: nothing below a tree is reached through a symlink, nothing leaves it.

Every test runs with openat2 and with the O_NOFOLLOW component walk older kernels get, each in
the compiled kernel and its pure-Python twin.
"""

from __future__ import annotations

import errno
import os

import pytest

from orbit_fast import confine
from orbit_fast.confine import Escape, Tree


@pytest.fixture(params=["openat2-native", "walk-native", "openat2-reference",
                        "walk-reference"])
def mode(request, monkeypatch):
    confine.have_openat2.cache_clear()
    resolution, kernel = request.param.split("-")
    monkeypatch.setenv("ORBIT_KERNEL", kernel)
    if resolution == "walk":
        monkeypatch.setenv("ORBIT_NO_OPENAT2", "1")
    elif not confine.have_openat2():
        pytest.skip("kernel without openat2")
    yield request.param
    confine.have_openat2.cache_clear()


@pytest.fixture
def layout(tmp_path, mode):
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    (root / "d" / "e").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret").write_text("secret")
    (root / "d" / "f").write_text("inside")
    os.symlink(str(outside), root / "out")  # a directory link leaving the tree
    os.symlink("../../outside/secret", root / "d" / "s")  # a file link leaving it
    os.symlink("f", root / "d" / "rel")  # a harmless link inside
    return root, outside


@pytest.mark.parametrize("rel", ["/etc/passwd", "../x", "a/../b", "a//b", "./a", "a/.", "",
                                 "a\0b", "a/"])
def test_unclean_paths_are_refused_before_any_system_call(rel):
    if rel == "":
        assert confine.check_rel(rel) == b""
        return
    with pytest.raises(Escape):
        confine.check_rel(rel)


def test_reads_through_a_symlink_in_any_component_fail(layout):
    root, _ = layout
    with Tree.open(root) as t:
        fd = t.open_file("d/f", os.O_RDONLY)
        assert os.read(fd, 100) == b"inside"
        os.close(fd)
        for rel in ("out/secret", "d/s", "d/rel"):
            with pytest.raises(OSError) as err:
                t.open_file(rel, os.O_RDONLY)
            assert err.value.errno in (errno.ELOOP, errno.ENOTDIR, errno.EXDEV), rel
        with pytest.raises(OSError):
            t.open_dir("out")


def test_entry_operations_act_on_the_link_itself(layout):
    root, outside = layout
    with Tree.open(root) as t:
        assert t.readlink("d/s") == "../../outside/secret"
        t.chmod("d/s", 0o777)  # a link has no mode: nothing happens to its target
        before = os.stat(outside / "secret")
        t.utime("d/s", (1, 2))
        assert os.lstat(root / "d" / "s").st_mtime_ns == 2
        assert os.stat(outside / "secret").st_mtime_ns == before.st_mtime_ns
        t.chown("d/s", 65534, 65534)
        assert os.stat(outside / "secret").st_uid == before.st_uid
        assert os.lstat(root / "d" / "s").st_uid == 65534
        t.unlink("d/s")
        assert (outside / "secret").exists() and not os.path.lexists(root / "d" / "s")
        # Nothing below a linked directory is touched, whatever the call.
        for call in (lambda: t.mkdir("out/new"), lambda: t.unlink("out/secret"),
                     lambda: t.chmod("out/secret", 0o777), lambda: t.symlink("x", "out/l"),
                     lambda: t.rename("d/f", "out/f"), lambda: t.rmtree("out"),
                     lambda: t.makedirs("out/a/b")):
            with pytest.raises(OSError):
                call()
        assert sorted(os.listdir(outside)) == ["secret"]
        assert (outside / "secret").read_text() == "secret"


def test_rmtree_removes_a_link_inside_not_its_target(layout):
    root, outside = layout
    os.symlink(str(outside), root / "d" / "e" / "link")
    with Tree.open(root) as t:
        t.rmtree("d")
    assert not (root / "d").exists()
    assert (outside / "secret").read_text() == "secret"


def test_create_exclusive_never_opens_a_planted_link(layout):
    root, outside = layout
    os.symlink(str(outside / "secret"), root / "d" / "tmp")
    with Tree.open(root) as t, pytest.raises(FileExistsError):
        t.open_file("d/tmp", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    assert (outside / "secret").read_text() == "secret"


def test_rename_replaces_a_link_at_the_destination_name(layout):
    root, outside = layout
    with Tree.open(root) as t:
        t.rename("d/f", "d/s")
    assert not os.path.islink(root / "d" / "s")
    assert (root / "d" / "s").read_text() == "inside"
    assert (outside / "secret").read_text() == "secret"


def test_a_root_that_is_a_link_is_refused_without_follow(layout, tmp_path):
    root, outside = layout
    with pytest.raises(OSError):
        Tree.open(root / "out", follow=False)
    with Tree.open(root / "out") as t:  # the operator's own link: followed on request
        assert t.exists("secret")


def test_reopen_checks_identity(tmp_path, mode):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    with Tree.open(a) as t:
        Tree.reopen(a, t.dev, t.ino).close()
        os.rename(a, tmp_path / "c")
        os.rename(b, a)
        with pytest.raises(OSError) as err:
            Tree.reopen(a, t.dev, t.ino)
        assert err.value.errno == errno.ESTALE


def test_makedirs_and_beneath(tmp_path, mode):
    with Tree.open(tmp_path) as t:
        t.makedirs("x/y/z", 0o755)
        with t.beneath("x/y") as sub:
            assert sub.exists("z")
            assert sub.path == str(tmp_path / "x" / "y")


def test_same_file(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"abc")
    st = os.stat(p)
    assert confine.same_file(st, st.st_dev, st.st_ino, 3, st.st_mtime_ns)
    assert not confine.same_file(st, st.st_dev, st.st_ino + 1, 3, st.st_mtime_ns)
    assert not confine.same_file(os.stat(tmp_path), st.st_dev, st.st_ino, 3, st.st_mtime_ns)


def test_create_fresh_replaces_a_planted_link_without_following_it(layout):
    root, outside = layout
    os.symlink(str(outside / "secret"), root / "d" / "tmp")
    with Tree.open(root) as t:
        fd = t.create_fresh("d/tmp")
        os.write(fd, b"ours")
        os.close(fd)
    assert (root / "d" / "tmp").read_text() == "ours" and not os.path.islink(root / "d" / "tmp")
    assert (outside / "secret").read_text() == "secret"


@pytest.mark.parametrize("rel", [b"/etc/passwd", b"../x", b"a/../b", b"a//b", b"./a", b"a/.",
                                 b"a\0b", b"a/", b"..", b"."])
def test_the_kernel_refuses_unclean_paths_itself(tmp_path, mode, rel):
    (tmp_path / "a").mkdir()
    with Tree.open(tmp_path) as t, pytest.raises(OSError) as err:
        t.open_file(rel, os.O_RDONLY)
    assert err.value.errno == errno.EINVAL
