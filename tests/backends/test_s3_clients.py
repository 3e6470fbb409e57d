"""S3's two clients (orbit_fast/backends/s3_fast.py): per-object calls on obstore without boto3,
the keys obstore cannot name on boto3, and obstore's errors in the Store contract. The whole
conformance suite runs on both (tests/backends/test_conformance.py, kind "s3-boto3")."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from orbit_fast.backends.base import TransientError
from orbit_fast.backends.s3 import S3Store
from orbit_fast.backends.s3_fast import plain_key
from tests.servers import free_port

MTIME = 1_700_000_000_123_456_789


def test_a_worker_moves_whole_objects_without_importing_boto3(moto, s3_bucket) -> None:
    script = textwrap.dedent(f"""
        import sys
        from orbit_fast.backends.registry import open_store
        s = open_store("s3://{s3_bucket}/p")
        info = s.put_file("d/f.bin", b"0123456789", {MTIME})
        assert s.stat_info("d/f.bin").mtime_ns == {MTIME}, s.stat_info("d/f.bin")
        data, got = s.read_info("d/f.bin")
        assert data == b"0123456789" and got.sig == info.sig, (got, info)
        assert s.read_range("d/f.bin", 3, 4) == b"3456" and s.size("d/f.bin") == 10
        s.write("blob", b"x" * 100)
        assert s.read("blob") == b"x" * 100
        s.delete("blob")
        print("boto3" in sys.modules or "botocore" in sys.modules)
    """)
    env = {**os.environ, **moto.env()}
    env.pop("ORBIT_S3_CLIENT", None)
    r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                       check=False)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"
    # What boto3 (and rclone, which reads the same "mtime" key) sees of it.
    head = moto.client().head_object(Bucket=s3_bucket, Key="p/d/f.bin")
    assert head["Metadata"]["mtime"] == "1700000000.123456789"
    with pytest.raises(Exception, match="404|Not Found"):
        moto.client().head_object(Bucket=s3_bucket, Key="p/blob")


@pytest.mark.parametrize("name", ["ctl\x01name", "dot/./x", "a/../b", "two//slashes"])
def test_keys_object_store_cannot_name_go_through_boto3(moto, s3_bucket, name: str) -> None:
    assert not plain_key(f"p/{name}")
    s = S3Store(f"s3://{s3_bucket}/p")
    assert s._fast is not None  # the fast path is on, and steps aside for this key
    s.put_file(name, b"odd", MTIME)
    keys = [o["Key"] for o in moto.client().list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert keys == [f"p/{name}"]
    data, info = s.read_info(name)
    assert data == b"odd" and info.mtime_ns == MTIME and s.stat_info(name).size == 3
    s.delete(name)
    assert "Contents" not in moto.client().list_objects_v2(Bucket=s3_bucket)


def test_plain_keys() -> None:
    for key in ("a", "a b/c", "ü/%41", "x#y?z", "a..b/end.", "back\\slash", "[br]*~+"):
        assert plain_key(key), key
    for key in ("", "/a", "a/", "a//b", "./a", "a/..", "tab\tx", "del\x7f"):
        assert not plain_key(key), key


def test_obstore_errors_keep_the_store_contract(moto, s3_bucket, monkeypatch) -> None:
    s = S3Store(f"s3://{s3_bucket}/p")
    with pytest.raises(FileNotFoundError):
        s.read_info("missing")
    with pytest.raises(FileNotFoundError):
        s.stat_info("missing")
    monkeypatch.setenv("ORBIT_S3_ENDPOINT", f"http://127.0.0.1:{free_port()}")  # nobody there
    dead = S3Store(f"s3://{s3_bucket}/p")
    assert dead._fast is not None
    with pytest.raises(TransientError):  # RetryingStore retries these
        dead.put_file("f", b"1", MTIME)
    with pytest.raises(TransientError):
        dead.read_info("f")


def test_a_server_copy_with_a_new_mtime_keeps_the_other_metadata(moto, s3_bucket) -> None:
    # REPLACE sets every field: a copy that gave only "mtime" lost "md5chksum", the hash
    # `rclone check` reads of a multipart object.
    a, b = S3Store(f"s3://{s3_bucket}/a"), S3Store(f"s3://{s3_bucket}/b")
    data = os.urandom(6 << 20)
    up = a.begin_upload("m.bin", len(data), 5 << 20, MTIME, md5="0123456789abcdef" * 2)
    tokens = {1: up.write_part(1, 0, data[: 5 << 20]), 2: up.write_part(2, 5 << 20,
                                                                       data[5 << 20 :])}
    up.complete(tokens, len(data))
    b.copy_from(a, "m.bin", len(data), MTIME + 1)
    head = moto.client().head_object(Bucket=s3_bucket, Key="b/m.bin")["Metadata"]
    assert head["md5chksum"] == "ASNFZ4mrze8BI0VniavN7w=="
    assert head["orbit-part-bytes"] == str(5 << 20)
    assert b.stat_info("m.bin").mtime_ns == MTIME + 1
