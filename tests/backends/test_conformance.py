"""One conformance suite over every Store: local, S3 (moto server) and SMB (Samba), all real.

Both halves (BlobStore: what repositories use; FileStore: what sync uses) and the optional
abilities (part uploads; server copies between two stores of one server).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import xxhash

from orbit_fast.backends.base import (
    CantCopy,
    Capabilities,
    ObjectInfo,
    TransientError,
    multipart_etag,
    part_uploads,
    server_copier,
    upload_part_bytes,
)
from orbit_fast.backends.local import LocalStore
from orbit_fast.backends.registry import open_store
from orbit_fast.backends.wrappers import RetryingStore, RetryingUploads, retrying
from orbit_fast.errors import RemoteError, UsageError


# "s3-boto3": the same S3 store with ORBIT_S3_CLIENT=boto3, every call on boto3 (s3_fast.py
# takes the per-object calls otherwise).
@pytest.fixture(params=["local", "s3", "s3-boto3", "smb"])
def kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "s3-boto3":
        monkeypatch.setenv("ORBIT_S3_CLIENT", "boto3")
        return "s3"
    return request.param


@pytest.fixture
def url_for(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], str]:
    """The URL of a place `sub` on this kind's server (a directory, or a bucket's prefix)."""
    if kind == "local":
        return lambda sub: str(tmp_path / sub)
    if kind == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        return lambda sub: f"s3://{bucket}/{sub}"
    samba, smb_dir = request.getfixturevalue("samba"), request.getfixturevalue("smb_dir")
    return lambda sub: samba.url(f"{smb_dir}/{sub}")


@pytest.fixture
def store(kind: str, url_for: Callable[[str], str]) -> Iterator:
    s = open_store(url_for({"local": "store", "s3": "some/prefix", "smb": "deeper"}[kind]))
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


def test_private_writes_and_emptiness(store, kind, url_for) -> None:
    """What a repository's init needs: whether anything is there yet, and a config only its
    owner may read (it holds the chunk-id key)."""
    assert store.is_empty()
    old = os.umask(0o022)
    try:
        store.write("config", b"secret", exclusive=True, private=True)
        store.write("plain", b"open")
    finally:
        os.umask(old)
    assert store.read("config") == b"secret" and not store.is_empty()
    with pytest.raises(FileExistsError):
        store.write("config", b"again", exclusive=True, private=True)
    if kind == "local":
        root = Path(url_for("store"))
        assert stat.S_IMODE((root / "config").stat().st_mode) == 0o600
        assert stat.S_IMODE((root / "plain").stat().st_mode) == 0o644
        (Path(url_for("only-a-dir")) / "sub").mkdir(parents=True)
        assert not open_store(url_for("only-a-dir")).is_empty()  # something lives there
        assert open_store(url_for("absent")).is_empty()
    store.delete("config")
    store.delete("plain")
    assert store.is_empty()


def test_file_half_put_list_stat_read_delete(store, kind, url_for) -> None:
    prec = store.capabilities.mtime_ns_precision
    t = 1_600_000_000_123_456_789
    kept = t // prec * prec  # what the store keeps of the mtime
    files = {"a/b/one": b"1", "a/two": b"22", "top": b"", "c/d/e/deep": b"deep"}
    put = {n: store.put_file(n, data, t, durable=False) for n, data in files.items()}
    assert all((put[n].size, put[n].mtime_ns) == (len(d), kept) for n, d in files.items())
    listed = {i.name: i for i in store.list_info("")}
    assert sorted(listed) == sorted(files)
    for name, info in listed.items():
        assert info.size == len(files[name]) and info.mtime_ns in (None, kept)  # S3: stat it
        assert (store.stat_info(name).size, store.stat_info(name).mtime_ns) == (info.size, kept)
    if kind == "s3":  # the ETag (the content's MD5) is what tells a change
        assert listed["a/two"].etag == put["a/two"].etag == hashlib.md5(b"22").hexdigest()
    assert sorted(i.name for i in store.list_info("a")) == ["a/b/one", "a/two"]
    asked: list[str] = []
    pruned = {i.name for i in store.list_info("", descend=lambda d: asked.append(d) or d != "a/b")}
    if kind == "s3":  # no directories to prune: the caller filters names
        assert pruned == set(files)
    else:
        assert pruned == set(files) - {"a/b/one"} and "a/b" in asked and "c/d/e" in asked
    for expect in (None, listed["a/two"]):  # a listing's info may spare a stat
        data, info = store.read_info("a/two", expect)
        assert data == b"22" and (info.size, info.mtime_ns) == (2, kept)
    assert store.read_range("c/d/e/deep", 1, 2) == b"ee"
    store.put_file("a/two", b"changed", t + 10**9)  # replaces, with the new mtime
    assert store.read_info("a/two")[0] == b"changed"
    assert store.stat_info("a/two").mtime_ns == (t + 10**9) // prec * prec
    with pytest.raises(FileNotFoundError):
        store.stat_info("nope")
    with pytest.raises(FileNotFoundError):
        store.read_info("nope")
    store.delete_many(["a/b/one", "top", "never-was"])
    store.delete_many([])
    assert sorted(i.name for i in store.list_info("")) == ["a/two", "c/d/e/deep"]
    if kind == "local":  # what an object store cannot hold is reported, not copied
        os.symlink("top", Path(url_for("store")) / "link")
        skipped: list[tuple[str, str]] = []
        names = [i.name for i in store.list_info("", on_skip=lambda *e: skipped.append(e))]
        assert "link" not in names and [n for n, _ in skipped] == ["link"]


def test_part_uploads_resume_confirm_complete_abort(store, kind, rng) -> None:
    uploads = part_uploads(store)
    assert uploads is not None  # every backend uploads in parts
    part = upload_part_bytes(3 << 20, 1 << 20, store.capabilities)  # S3: its 5 MiB minimum
    size = 2 * part + 1000
    data, t = rng.randbytes(size), 1_650_000_000_500_000_000
    lengths = {1: part, 2: part, 3: size - 2 * part}
    up = uploads.begin_upload("big/file.bin", size, part, t)
    tokens = {}
    for n in (3, 1):  # in any order, each from an upload resumed by its state (as workers do)
        again = uploads.resume_upload("big/file.bin", up.state, size, part, t)
        tokens[n] = again.write_part(n, (n - 1) * part, data[(n - 1) * part : n * part])
    assert list(store.list_info("big")) == [] and list(store.list("big")) == []  # not yet
    assert up.confirmed({**tokens, 2: "0" * 32}, lengths) == {1, 3}  # 2: never sent
    assert up.confirmed(tokens, {}) == set()  # a length not recorded: send it again
    tokens[2] = up.write_part(2, part, data[part : 2 * part])
    info = up.complete(tokens, size)
    prec = store.capabilities.mtime_ns_precision
    assert (info.size, info.mtime_ns) == (size, t // prec * prec)
    assert store.read("big/file.bin") == data
    if kind == "s3":  # S3's own multipart ETag, and the part size kept in the metadata
        assert info.etag == multipart_etag([tokens[1], tokens[2], tokens[3]])
        assert store.stat_info("big/file.bin").part_bytes == part
    else:
        assert tokens[1] == xxhash.xxh3_128_hexdigest(data[:part])
    gone = uploads.begin_upload("big/other.bin", size, part, t)
    gone.write_part(1, 0, data[:part])
    gone.abort()
    gone.abort()  # idempotent
    with pytest.raises(FileNotFoundError):
        gone.confirmed({1: "x"}, {1: part})
    assert [i.name for i in store.list_info("big")] == ["big/file.bin"]


def test_sweep_temp_takes_what_a_crashed_upload_left(store, kind) -> None:
    uploads = part_uploads(store)
    assert uploads is not None
    up = uploads.begin_upload("d/f", 10, 10, 0)
    up.write_part(1, 0, b"0123456789")  # and then the process dies
    if kind == "s3":
        assert store.sweep_temp("d") == 0  # an open multipart upload is no object
        up.abort()
    else:
        assert store.sweep_temp("d") == 1
        with pytest.raises(FileNotFoundError):
            up.confirmed({1: "x"}, {1: 10})
    assert list(store.list("d")) == [] and list(store.list_info("d")) == []


@pytest.fixture
def other(url_for: Callable[[str], str]) -> Iterator:
    """A second store on the same server as `store`."""
    s = open_store(url_for("other/place"))
    yield s
    s.close()


def test_server_copy_between_stores_of_one_server(store, other, kind, url_for, tmp_path,
                                                  monkeypatch) -> None:  # fmt: skip
    local = open_store(str(tmp_path / "elsewhere"))
    assert server_copier(local, other) is None and server_copier(other, local) is None
    copy = server_copier(store, other)
    if kind == "local":
        assert copy is None  # the bytes come through us
        return
    assert copy is not None and server_copier(other, store) is not None
    prec = other.capabilities.mtime_ns_precision
    t = 1_620_000_000_987_654_321
    store.put_file("x/y.bin", b"payload", t)
    store.put_file("keep.bin", b"mtime kept", t)
    info = copy("x/y.bin", 7, t + 10**9)
    assert other.read("x/y.bin") == b"payload" and store.read("x/y.bin") == b"payload"
    assert info.mtime_ns == other.stat_info("x/y.bin").mtime_ns == (t + 10**9) // prec * prec
    copy("keep.bin", 10, None)  # no mtime given: the source's
    assert other.stat_info("keep.bin").mtime_ns == t // prec * prec
    assert other.read("keep.bin") == b"mtime kept"
    assert sorted(i.name for i in other.list_info("")) == ["keep.bin", "x/y.bin"]  # no temp
    with pytest.raises(FileNotFoundError):
        copy("absent", 1, t)
    limit = other.capabilities.max_copy_bytes
    if limit:
        with pytest.raises(CantCopy):
            copy("x/y.bin", limit + 1, t)
    if kind == "s3":  # another login on the same endpoint: its server copies are not ours
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "someone-else")
        stranger = open_store(url_for("x"))
        assert server_copier(store, stranger) is None and server_copier(stranger, store) is None


def test_wrappers_have_exactly_the_abilities_of_what_they_wrap(tmp_path) -> None:
    class Plain:
        url = "plain://x"
        capabilities = Capabilities(min_part_bytes=0, max_part_bytes=0)

    class Copier(Plain):
        def __init__(self) -> None:
            self.asked: list[object] = []
            self.calls = 0

        def server_copy_from(self, src: object):  # noqa: ANN201
            self.asked.append(src)
            if not isinstance(src, Copier):
                return None

            def copy(name: str, size: int, mtime_ns: int | None,
                     meta: object = None) -> ObjectInfo:  # fmt: skip
                self.calls += 1
                if self.calls == 1:
                    raise TransientError("connection reset")
                return ObjectInfo(name, size, mtime_ns)

            return copy

    plain = retrying(Plain(), sleep=lambda s: None)  # type: ignore[arg-type]
    assert part_uploads(plain) is None and server_copier(plain, plain) is None
    assert not hasattr(plain, "server_copy_from") and not hasattr(plain, "begin_upload")
    local = retrying(LocalStore(str(tmp_path)))
    assert part_uploads(local) is not None and server_copier(local, local) is None
    a, b = Copier(), Copier()
    wa, wb = (retrying(s, sleep=lambda s: None) for s in (a, b))  # type: ignore[arg-type]
    assert part_uploads(wb) is None
    copy = server_copier(wa, wb)
    assert copy is not None and b.asked == [a]  # asked with the store inside the wrapper
    assert copy("n", 3, 5) == ObjectInfo("n", 3, 5) and b.calls == 2  # retried
    assert server_copier(plain, wb) is None
    with pytest.raises(TypeError, match="no part uploads"):  # a claim it could not keep
        RetryingUploads(Plain())  # type: ignore[arg-type]


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

        def list_info(self, prefix, descend=None, on_skip=None, on_dir=None,  # noqa: ANN001, ANN201
                      meta=False):  # noqa: ANN001
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
    """The raw paths (one compound request per directory and per small file, parsed by
    hand) against what is on disk: a directory too big for one reply, sizes, mtimes to
    100 ns, and a file that changed after it was listed."""
    from tests.conftest import write

    d = samba.share_dir / smb_dir
    for i in range(1500):  # long names: 270 KiB of entries, more than one 256 KiB reply
        f = write(d / "big" / f"a-rather-long-file-name-to-fill-the-reply-{i:04d}.txt", b"x" * i)
        t = (1_600_000_000 + i) * 10**9 + 123456789
        os.utime(f, ns=(t, t))
    write(d / "small" / "f", b"before", mtime=1_650_000_000.5)
    (d / "empty").mkdir()
    s = open_store(samba.url(smb_dir))
    infos = {i.name: i for i in s.list_info("")}
    assert len(infos) == 1501  # "big" needs more than one reply: paged on one handle
    assert list(s.list_info("missing")) == []
    for i in range(1500):  # times to the share's 100 ns
        info = infos[f"big/a-rather-long-file-name-to-fill-the-reply-{i:04d}.txt"]
        assert info.size == i and info.mtime_ns == (1_600_000_000 + i) * 10**9 + 123456700
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
