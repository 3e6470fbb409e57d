"""One conformance suite over every Store: local, S3 (moto server) and SMB (Samba), all real."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orbit_fast.backends.base import TransientError
from orbit_fast.backends.registry import open_store
from orbit_fast.backends.wrappers import RetryingStore
from orbit_fast.errors import RemoteError, UsageError


@pytest.fixture(params=["local", "s3", "smb"])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "local":
        url = str(tmp_path / "store")
    elif request.param == "s3":
        url = f"s3://{request.getfixturevalue('s3_bucket')}/some/prefix"
    else:
        samba = request.getfixturevalue("samba")
        url = samba.url(request.getfixturevalue("smb_dir") + "/deeper")
    s = open_store(url)
    yield s
    s.close()


def test_write_read_stat_list_delete(store) -> None:
    store.write("a/b/c.bin", b"hello world")
    store.write("a/top", b"")  # empty objects are objects
    store.write("z", b"z" * 10)
    assert store.read("a/b/c.bin") == b"hello world"
    assert store.read_range("a/b/c.bin", 6, 5) == b"world"
    assert store.read_range("a/b/c.bin", 0, 0) == b""
    assert store.size("a/b/c.bin") == 11 and store.size("a/top") == 0
    assert store.read("a/top") == b""
    assert store.exists("z") and not store.exists("nope")
    assert sorted(store.list("a")) == [("a/b/c.bin", 11), ("a/top", 0)]
    assert sorted(store.list("")) == [("a/b/c.bin", 11), ("a/top", 0), ("z", 10)]
    assert list(store.list("missing")) == []
    store.write("z", b"replaced")  # a plain write replaces
    assert store.read("z") == b"replaced"
    store.delete("z")
    store.delete("z")  # idempotent
    assert not store.exists("z")
    with pytest.raises(FileNotFoundError):
        store.read("z")
    with pytest.raises(FileNotFoundError):
        store.size("z")


def test_exclusive_write_is_create_only(store) -> None:
    store.write("locks/exclusive", b"first", exclusive=True)
    with pytest.raises(FileExistsError):
        store.write("locks/exclusive", b"second", exclusive=True)
    assert store.read("locks/exclusive") == b"first"
    assert [n for n, _ in store.list("locks")] == ["locks/exclusive"]  # no temp left behind


def test_unicode_names(store) -> None:
    names = ["ü/日本語.txt", "space name", "emoji-☃"]
    for i, n in enumerate(names):
        store.write(n, bytes([i]) * (i + 1))
    assert sorted(n for n, _ in store.list("")) == sorted(names)
    assert store.read("ü/日本語.txt") == b"\0"


def test_large_object_ranged_reads(store, rng) -> None:
    data = rng.randbytes(66 << 20)  # above the S3 multipart threshold
    store.write("big.bin", data)
    assert store.size("big.bin") == len(data)
    for off in (0, 5 << 20, len(data) - 1000):
        assert store.read_range("big.bin", off, 1000) == data[off : off + 1000]
    assert store.read("big.bin") == data


def test_retrying_store_retries_transient_then_gives_up() -> None:
    class Flaky:
        url = "flaky://x"
        capabilities = None

        def __init__(self) -> None:
            self.calls = 0

        def read(self, name: str) -> bytes:
            self.calls += 1
            if self.calls < 3:
                raise TransientError("connection reset")
            return b"ok"

        def size(self, name: str) -> int:
            raise TransientError("down")

        def list_info(self, prefix, descend=None, on_skip=None):  # noqa: ANN001, ANN201
            from orbit_fast.backends.base import ObjectInfo

            self.calls += 1
            for i in range(4):
                if self.calls == 4 and i == 2:  # the connection drops half-way, once
                    raise TransientError("connection reset")
                yield ObjectInfo(f"o{i}", i, 0)

    inner, waits = Flaky(), []
    s = RetryingStore(inner, attempts=4, sleep=waits.append)  # type: ignore[arg-type]
    assert s.read("x") == b"ok" and inner.calls == 3 and len(waits) == 2
    with pytest.raises(RemoteError, match="kept failing after 4 attempts"):
        s.size("x")
    assert all(0 <= w <= 10 for w in waits)
    # A listing streams; cut half-way, it starts over and yields each name once, in order.
    listing = s.list_info("")
    assert next(listing).name == "o0" and inner.calls == 4  # streaming: before the end
    assert [i.name for i in listing] == ["o1", "o2", "o3"] and inner.calls == 5


def test_unknown_scheme_and_bad_urls() -> None:
    with pytest.raises(UsageError, match="unknown scheme"):
        open_store("ftp://host/x")
    with pytest.raises(UsageError, match="s3://bucket"):
        open_store("s3://")


def test_s3_errors_are_named(moto, monkeypatch) -> None:
    for k, v in moto.env().items():
        monkeypatch.setenv(k, v)
    with pytest.raises(RemoteError, match="does not exist"):
        open_store("s3://no-such-bucket-here/x").write("a", b"1")
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    with pytest.raises(RemoteError, match="no-such-profile"):
        open_store("s3://bucket/x")


def test_s3_listing_refuses_escaping_keys(moto, s3_bucket) -> None:
    moto.client().put_object(Bucket=s3_bucket, Key="p/../../etc/passwd", Body=b"x")
    s = open_store(f"s3://{s3_bucket}/p")
    with pytest.raises(RemoteError, match="could escape"):
        list(s.list(""))


def test_smb_wrong_password_and_missing_share(samba, monkeypatch) -> None:
    monkeypatch.setenv("ORBIT_SMB_PASSWORD", "wrong")
    with pytest.raises(RemoteError, match="refused the login"):
        open_store(samba.url("x"))
    monkeypatch.setenv("ORBIT_SMB_PASSWORD", samba.env()["ORBIT_SMB_PASSWORD"])
    monkeypatch.setenv("ORBIT_SMB_TIMEOUT", "3")
    with pytest.raises(RemoteError, match="no such share|check the share name"):
        open_store(samba.url("x", share="nosuchshare"))


def test_smb_credentials_file(samba, smb_dir, tmp_path, monkeypatch) -> None:
    creds = tmp_path / "creds"
    creds.write_text(f"username=orbitsmb\npassword={samba.env()['ORBIT_SMB_PASSWORD']}\n"
                     "domain=WORKGROUP\n")  # fmt: skip
    monkeypatch.delenv("ORBIT_SMB_PASSWORD")
    monkeypatch.setenv("ORBIT_SMB_CREDENTIALS", str(creds))
    url = f"smb://127.0.0.1:{samba.port}/share/{smb_dir}"
    s = open_store(url)
    s.write("f", b"via credentials file")
    assert (samba.share_dir / smb_dir / "f").read_bytes() == b"via credentials file"
    os.unlink(creds)


def test_smb_listing_and_reads_agree_with_the_share(samba, smb_dir, monkeypatch) -> None:
    """The fast paths (one compound request per directory and per small file, parsed by
    hand) against what is on disk: a directory too big for one reply, sizes, mtimes to the
    microsecond, and a file that changed after it was listed."""
    from tests.conftest import write

    d = samba.share_dir / smb_dir
    for i in range(600):  # ~600 entries with long names: more than half of a 64 KiB reply
        f = write(d / "big" / f"a-rather-long-file-name-to-fill-the-reply-{i:04d}.txt", b"x" * i)
        t = (1_600_000_000 + i) * 10**9 + 123456789
        os.utime(f, ns=(t, t))
    write(d / "small" / "f", b"before", mtime=1_650_000_000.5)
    (d / "empty").mkdir()
    from orbit_fast.backends import smb

    fallbacks: list[str] = []  # listings that went through smbclient's slow path
    fast = smb._scan_compound

    def scan_compound(fd, msg):  # type: ignore[no-untyped-def]
        buf = fast(fd, msg)
        if buf is None:
            fallbacks.append(fd.name)
        return buf

    monkeypatch.setattr(smb, "_scan_compound", scan_compound)
    s = open_store(samba.url(smb_dir))
    infos = {i.name: i for i in s.list_info("")}
    assert len(infos) == 601
    assert not fallbacks  # every directory in one compound, parsed by hand
    assert list(s.list_info("missing")) == [] and len(fallbacks) == 1  # smbclient names it
    for i in range(600):
        info = infos[f"big/a-rather-long-file-name-to-fill-the-reply-{i:04d}.txt"]
        assert info.size == i and info.mtime_ns == (1_600_000_000 + i) * 10**9 + 123456000
    listed = infos["small/f"]
    assert s.read_info("small/f", listed) == (b"before", listed)
    write(d / "small" / "f", b"after, and longer", mtime=1_660_000_000)
    data, now = s.read_info("small/f", listed)  # the listing is stale: read what is there
    assert data == b"after, and longer" and now.mtime_ns == 1_660_000_000 * 10**9
    os.unlink(d / "small" / "f")
    with pytest.raises(FileNotFoundError):
        s.read_info("small/f", listed)
    # Several reads in the one request: sizes around the 1 MiB read size, and exactly 2 MiB
    # (the read past the end then answers STATUS_END_OF_FILE).
    def no_stat(name: str) -> None:
        raise AssertionError(f"{name}: the compound read fell back to stat and read")

    s.inner.stat_info = no_stat  # the listing's size is right: one request must do
    for size in ((1 << 20) - 1, 1 << 20, 2 << 20, (3 << 20) + 5):
        data = os.urandom(size)
        write(d / "mid" / str(size), data, mtime=1_670_000_000)
        (info,) = [i for i in s.list_info("mid") if i.name == f"mid/{size}"]
        assert s.read_info(info.name, info) == (data, info)
