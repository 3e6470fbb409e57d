"""A file's metadata through S3 in `orbit-fast sync` (issue #19): mode, owner and atime in the
user-metadata keys rclone's --metadata uses, what an object cannot hold reported once per kind,
and S3 metadata applied to local files only as far as --trust-remote-metadata says (moto)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from orbit_fast.backends.base import FileMeta
from orbit_fast.backends.s3 import file_meta, format_rfc3339, meta_keys, parse_rfc3339
from orbit_fast.errors import ExitCode
from tests.conftest import json_events, run_cli, summary_of, write

MTIME = 1_600_000_000_123_456_789
ATIME = 1_500_000_000_500_000_000  # 2017-07-14T02:40:00.5Z
BIG = 9 << 20  # above SINGLE_MAX (8 MiB): moves in parts of 5 MiB either way


def _sync(*args: str, check: int = 0) -> tuple[dict, list[dict]]:
    proc = run_cli("sync", *args, "--json", "--chunk-size-mb", "5", check=check)
    events = json_events(proc.stdout)
    return summary_of(proc.stdout), [e for e in events if e["event"] == "warning"]


def _user_xattr(path: Path) -> bool:
    """Give `path` a user.* xattr; False where its filesystem has none (tmpfs of old kernels)."""
    try:
        os.setxattr(path, "user.note", b"kept nowhere on S3")
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return False
        raise
    return True


def _warned(warnings: list[dict], *words: str) -> list[str]:
    return [w["message"] for w in warnings if all(x in w["message"] for x in words)]


# ---- the keys ------------------------------------------------------------------------------


def test_keys_are_rclones_and_read_back() -> None:
    meta = FileMeta(0o104750, 1234, 2345, ATIME)
    keys = meta_keys(meta)
    # As `rclone copy --metadata` writes them from a local file (rclone 1.75).
    assert keys == {"mode": "104750", "uid": "1234", "gid": "2345",
                    "atime": "2017-07-14T02:40:00.5Z"}  # fmt: skip
    assert file_meta(keys) == meta
    assert format_rfc3339(1_500_000_000 * 10**9) == "2017-07-14T02:40:00Z"
    assert parse_rfc3339("2017-07-14T04:40:00.000000001+02:00") == 1_500_000_000 * 10**9 + 1
    assert file_meta({"mode": "0100640"}) == FileMeta(0o100640)  # a leading 0 reads too
    # What anyone with write access to the bucket may have put there is read, never trusted
    # to be well formed: a bad value is as good as none.
    assert file_meta({"mode": "0o777", "uid": "-1", "gid": "1e3", "atime": "yesterday"}) is None
    assert file_meta({"mode": "9", "uid": str(1 << 40)}) is None
    assert file_meta({"mtime": "1600000000.5"}) is None


@pytest.mark.parametrize("euid", [0, 1000])
def test_what_a_copy_carries_and_leaves_out(monkeypatch: pytest.MonkeyPatch, euid: int) -> None:
    """workers/objects.py's rule, as root and as another user."""
    from orbit_fast import messages as m
    from orbit_fast.workers.objects import _carried

    monkeypatch.setattr(os, "geteuid", lambda: euid)
    monkeypatch.setattr(os, "getegid", lambda: euid)
    owners = (m.META_OWNER | m.META_GROUP) if euid == 0 else 0  # as SyncOptions.keep asks
    asked = m.META_XATTRS | m.META_ACLS | m.META_LINKS | owners

    def ends(src: str, dst: str, bits: int) -> m.Ends:
        return m.Ends(src=src, dst=dst, s3_endpoint="", attempts=1, meta=bits)

    # A local file to S3: all of it goes; what no object holds is named.
    local = FileMeta(0o104755, 0, 0, ATIME, 2, ("user.a", "security.selinux",
                                               "system.posix_acl_access"))  # fmt: skip
    meta, left = _carried(ends("/src", "s3://b/p", asked), local)
    assert meta == local
    assert left == m.META_XATTRS | m.META_ACLS | m.META_LINKS
    only_selinux = local._replace(nlink=1, xattrs=("security.selinux",))
    _, left = _carried(ends("/src", "s3://b/p", asked), only_selinux)
    assert left == (m.META_XATTRS if euid == 0 else 0)  # another user could never copy it
    assert _carried(ends("/src", "s3://b/p", m.META_LINKS), local)[1] == m.META_LINKS
    # S3 onto a local file: setid bits and foreign owners only if trusted.
    planted = FileMeta(0o104755, 1234, 0, ATIME)
    meta, left = _carried(ends("s3://b/p", "/dst", asked), planted)
    assert meta == FileMeta(0o100755, -1, -1, ATIME)
    assert left == m.META_SETID | (m.META_OWNER if euid == 0 else 0)  # gid 0: root's own
    meta, left = _carried(ends("s3://b/p", "/dst", asked | m.META_TRUSTED), planted)
    assert left == 0
    assert meta == (FileMeta(0o104755, 1234, 0, ATIME) if euid == 0
                    else FileMeta(0o104755, -1, -1, ATIME))  # fmt: skip
    # Between buckets it travels as it is.
    assert _carried(ends("s3://a/p", "s3://b/p", asked), planted) == (planted, 0)
    assert _carried(ends("s3://b/p", "/dst", asked), None) == (None, 0)


# ---- local -> S3 ---------------------------------------------------------------------------


def test_sync_to_s3_keeps_mode_owner_and_times_in_rclones_keys(tmp_path: Path, rng, s3_bucket,
                                                               moto) -> None:  # fmt: skip
    src = tmp_path / "src"
    small = write(src / "a" / "small.txt", b"small", mode=0o640)
    big = write(src / "big.bin", rng.randbytes(BIG), mode=0o4711)
    root = os.geteuid() == 0
    if root:  # another owner than the running user's, as a file server's are
        for p in (small, big):
            os.chown(p, 1234, 2345)
        os.chmod(big, 0o4711)  # the chown cleared setuid
    for p in (small, big):
        os.utime(p, ns=(ATIME, MTIME))
    summary, warnings = _sync(str(src), f"s3://{s3_bucket}/t")
    assert summary["files_copied"] == 2 and warnings == [], warnings
    s3 = moto.client()
    uid, gid = ("1234", "2345") if root else (str(os.geteuid()), str(os.getegid()))
    for key, mode in (("t/a/small.txt", "100640"), ("t/big.bin", "104711")):
        head = s3.head_object(Bucket=s3_bucket, Key=key)
        meta = head["Metadata"]
        assert {k: meta.get(k) for k in ("mode", "uid", "gid", "atime", "mtime")} == {
            "mode": mode, "uid": uid, "gid": gid, "atime": "2017-07-14T02:40:00.5Z",
            "mtime": "1600000000.123456789"}, key  # fmt: skip
    assert "-" in s3.head_object(Bucket=s3_bucket, Key="t/big.bin")["ETag"]  # in parts
    # The same through boto3's PUT (a storage class sends every write there); the first
    # run's reads moved the atimes.
    for p in (small, big):
        os.utime(p, ns=(ATIME, MTIME))
    summary, _ = _sync(str(src), f"s3://{s3_bucket}/std", "--s3-storage-class", "STANDARD")
    assert summary["files_copied"] == 2
    meta = s3.head_object(Bucket=s3_bucket, Key="std/a/small.txt")["Metadata"]
    assert (meta["mode"], meta["uid"], meta["atime"]) == ("100640", uid,
                                                           "2017-07-14T02:40:00.5Z")  # fmt: skip


def test_what_an_object_cannot_hold_is_reported_once_per_kind(tmp_path: Path, rng, s3_bucket,
                                                              moto) -> None:  # fmt: skip
    src = tmp_path / "src"
    for i in range(3):
        write(src / f"x{i}.txt", b"x")
    os.link(src / "x0.txt", src / "x0-again.txt")  # one inode, two names: 2 files with links
    big = write(src / "big.bin", rng.randbytes(BIG))
    has_xattrs = _user_xattr(src / "x1.txt") and _user_xattr(big)
    for i in range(2):
        (src / f"link{i}").symlink_to("x1.txt")
    os.mkfifo(src / "fifo")
    summary, warnings = _sync(str(src), f"s3://{s3_bucket}/t", check=ExitCode.PARTIAL)
    assert summary["files_copied"] == 5
    assert sorted(summary["skipped"]) == ["fifo", "link0", "link1"]
    kinds = [w["message"].split(":")[0] for w in warnings if w["msgid"] == "special"]
    assert sorted(kinds) == ["special files (fifos, sockets, devices)", "symlinks"], warnings
    assert _warned(warnings, "symlinks: 2 in the source, not copied")
    assert _warned(warnings, "2 files have several hard links, which S3 objects cannot hold")
    if has_xattrs:  # the big one's listed on the fd its parts were read through
        assert _warned(warnings, "2 files have extended attributes, which S3 objects cannot")
    assert len(warnings) == 3 + has_xattrs, warnings  # one per kind, never one per file
    # Asked not to keep them, nothing is said of them: symlinks and the fifo still are.
    summary, warnings = _sync(str(src), f"s3://{s3_bucket}/u", "--no-hard-links",
                              "--no-xattrs", check=ExitCode.PARTIAL)  # fmt: skip
    assert [w["msgid"] for w in warnings] == ["special", "special"], warnings
    # Nothing of the kind in the source: exit 0, no warning.
    clean = tmp_path / "clean"
    write(clean / "f", b"f")
    assert _sync(str(clean), f"s3://{s3_bucket}/v")[1] == []


# ---- S3 -> local ---------------------------------------------------------------------------


def _planted_bucket(moto, bucket: str, rng) -> int:
    """Objects as someone with write access to the bucket may leave them: setuid, owned by
    root (or, when the test runs as root, by uid 1234, so that a chown shows); one of them
    large enough to arrive in parts. Returns the uid they name."""
    s3 = moto.client()
    uid = 1234 if os.geteuid() == 0 else 0
    meta = {"mode": "104755", "uid": str(uid), "gid": "0", "mtime": "1600000000.5",
            "atime": "2021-01-01T00:00:00Z"}  # fmt: skip
    s3.put_object(Bucket=bucket, Key="p/bin/tool", Body=b"#!/bin/sh\n", Metadata=meta)
    s3.put_object(Bucket=bucket, Key="p/big.bin", Body=rng.randbytes(BIG),
                  Metadata={**meta, "mode": "102750"})  # fmt: skip
    s3.put_object(Bucket=bucket, Key="p/private.txt", Body=b"mine",
                  Metadata={"mode": "100600", "mtime": "1600000000"})  # fmt: skip
    s3.put_object(Bucket=bucket, Key="p/plain.txt", Body=b"no metadata of rclone's")
    return uid


def test_remote_metadata_is_not_trusted_by_default(tmp_path: Path, rng, s3_bucket,
                                                   moto) -> None:  # fmt: skip
    _planted_bucket(moto, s3_bucket, rng)
    out = tmp_path / "out"
    summary, warnings = _sync(f"s3://{s3_bucket}/p", str(out), check=ExitCode.PARTIAL)
    assert summary["files_copied"] == 4 and summary["skipped"] == []
    tool, big = (out / "bin" / "tool").stat(), (out / "big.bin").stat()
    assert stat.S_IMODE(tool.st_mode) == 0o755 and stat.S_IMODE(big.st_mode) == 0o750
    for st in (tool, big):  # no setuid, no setgid; and the running user's file
        assert (st.st_uid, st.st_gid) == (os.geteuid(), os.getegid())
        assert st.st_mtime_ns == 1_600_000_000_500_000_000
        assert st.st_atime_ns == 1_609_459_200 * 10**9
    assert stat.S_IMODE((out / "private.txt").stat().st_mode) == 0o600  # the mode it names
    assert (out / "plain.txt").read_bytes() == b"no metadata of rclone's"
    assert _warned(warnings, "2 files have setuid, setgid or sticky bits in their metadata")
    owners = _warned(warnings, "2 files have another owner in their metadata")
    assert len(owners) == (1 if os.geteuid() == 0 else 0), warnings  # only root chowns
    assert all(w["msgid"] == "metadata" for w in warnings)
    assert len(warnings) == 1 + len(owners), warnings  # once per kind, with the count
    # An unchanged rerun copies nothing and so leaves nothing out: exit 0.
    again, warnings = _sync(f"s3://{s3_bucket}/p", str(out))
    assert again["files_copied"] == 0 and warnings == []


def test_trust_remote_metadata_applies_owner_and_setuid(tmp_path: Path, rng, s3_bucket,
                                                        moto) -> None:  # fmt: skip
    uid = _planted_bucket(moto, s3_bucket, rng)
    out = tmp_path / "out"
    _, warnings = _sync(f"s3://{s3_bucket}/p", str(out), "--trust-remote-metadata")
    assert warnings == []
    tool, big = (out / "bin" / "tool").stat(), (out / "big.bin").stat()
    assert stat.S_IMODE(tool.st_mode) == 0o4755 and stat.S_IMODE(big.st_mode) == 0o2750
    if os.geteuid() == 0:  # chowned as the metadata says; another user may not
        assert (tool.st_uid, tool.st_gid) == (uid, 0) and big.st_uid == uid
    # --no-owner / --no-group win over trust, as between trees.
    _sync(f"s3://{s3_bucket}/p", str(tmp_path / "mine"), "--trust-remote-metadata",
          "--no-owner", "--no-group")  # fmt: skip
    assert (tmp_path / "mine" / "bin" / "tool").stat().st_uid == os.geteuid()


@pytest.mark.parametrize("flag", ["--no-owner", ""])
def test_no_owner_says_nothing_of_owners(tmp_path: Path, rng, s3_bucket, moto,
                                         flag: str) -> None:  # fmt: skip
    """Owners are asked for only as root and without --no-owner/--no-group: only then is one
    left out worth a word."""
    if os.geteuid() != 0:
        pytest.skip("owners are applied, or reported, only as root")
    _planted_bucket(moto, s3_bucket, rng)
    extra = [flag, "--no-group"] if flag else []
    _, warnings = _sync(f"s3://{s3_bucket}/p", str(tmp_path / "o"), *extra,
                        check=ExitCode.PARTIAL)  # fmt: skip
    assert bool(_warned(warnings, "another owner")) == (not flag)


def test_a_hub_job_takes_the_flag_under_the_same_name() -> None:
    from orbit_fast.config import SyncOptions
    from orbit_fast.hub.jobspec import engine_options
    from orbit_fast.hub.models import JobConfig

    cfg = JobConfig(trust_remote_metadata=True).model_dump(exclude_none=True)
    job = {"source": "s3://b/p", "destination": "/srv/x", "mode": "sync", "config": cfg}
    opts = engine_options(job, "/tmp/jobs.db", "/tmp/universe")
    assert isinstance(opts, SyncOptions) and opts.trust_remote_metadata
    job["config"] = {}
    plain = engine_options(job, "/tmp/jobs.db", "/tmp/universe")
    assert isinstance(plain, SyncOptions) and not plain.trust_remote_metadata
