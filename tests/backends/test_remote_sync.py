"""`orbit-fast sync` between local disks, S3 (moto server) and SMB (Samba), end to end."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from orbit_fast.errors import ExitCode
from tests.conftest import ORBIT, json_events, run_cli, summary_of, write
from tests.servers import TcpProxy, outage

BIG = 20 << 20  # above SINGLE_MAX (8 MiB): moves in parts (5 MiB on S3: its minimum)


def _files(root: Path, us: bool = False) -> dict[str, tuple[str, int]]:
    """rel -> (content digest, mtime_ns) of every regular file; mtimes to 100 ns where the
    data went through SMB (a FILETIME's unit: shares keep no finer)."""
    import xxhash

    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            st = p.stat()
            mtime = st.st_mtime_ns // 100 if us else st.st_mtime_ns
            out[str(p.relative_to(root))] = (xxhash.xxh3_128_hexdigest(p.read_bytes()), mtime)
    return out


def _tree(root: Path, rng, big: bool = True) -> Path:
    for i in range(30):
        sub = ["", "a/", "a/b/", "c/"][i % 4]
        write(root / f"{sub}f{i}.bin", rng.randbytes(rng.choice([0, 1, 3000, 70_000])),
              mtime=1_600_000_000 + i * 1000 + 0.123456789)  # fmt: skip
    write(root / "ünïcödé name.txt", b"hello", mtime=1_650_000_000.5)
    if big:
        write(root / "big" / "blob.bin", rng.randbytes(BIG), mtime=1_700_000_000.25)
    (root / "link").symlink_to("f0.bin")
    return root


def _sync(src: str, dst: str, *extra: str, check: int = 0) -> dict:
    proc = run_cli("sync", src, dst, "--json", "--chunk-size-mb", "5", *extra, check=check)
    return summary_of(proc.stdout)


def test_sync_between_local_s3_and_smb(tmp_path: Path, rng, s3_bucket, samba, smb_dir) -> None:
    src = _tree(tmp_path / "src", rng)
    smb, s3 = samba.url(smb_dir + "/mirror"), f"s3://{s3_bucket}/copy"
    want, want_us = _files(src), _files(src, us=True)
    n = len(want)
    # local -> SMB -> S3 -> local, and SMB -> local, and local -> S3 directly.
    for i, d in enumerate(("a/b", "a", "c", "big")):  # deepest first: a's time stays
        os.utime(src / d, ns=(1_500_000_000_123_456_789 + i, 1_500_000_000_123_456_789 + i))
    first = _sync(str(src), smb, check=ExitCode.PARTIAL)  # the symlink is skipped, with a warning
    assert first["files_copied"] == n and first["skipped"] == ["link"]
    assert first["dirs_created"] == 4  # a, a/b, c, big: counted on every end with directories
    share = samba.share_dir / smb_dir / "mirror"

    def dir_times_kept() -> None:  # local -> SMB: the share's directories have the source's
        for d in ("a", "a/b", "c", "big"):
            there, here = (share / d).stat().st_mtime_ns, (src / d).stat().st_mtime_ns
            assert there == here // 100 * 100, d

    dir_times_kept()
    to_s3 = _sync(smb, s3)
    assert to_s3["files_copied"] == n and to_s3["dirs_created"] == 0  # S3 has none
    from_s3 = _sync(s3, str(tmp_path / "out1"))
    assert from_s3["files_copied"] == n and from_s3["dirs_created"] == 4
    assert _files(tmp_path / "out1", us=True) == want_us
    from_smb = _sync(smb, str(tmp_path / "out2"))
    assert from_smb["files_copied"] == n and from_smb["dirs_created"] == 4
    for d in ("a", "a/b", "c", "big"):
        copy, there = (tmp_path / "out2" / d).stat(), (share / d).stat()
        assert copy.st_mtime_ns == there.st_mtime_ns // 100 * 100, d  # to the share's 100 ns
    assert _files(tmp_path / "out2", us=True) == want_us
    assert _sync(str(src), f"s3://{s3_bucket}/direct", check=1)["files_copied"] == n
    assert _sync(f"s3://{s3_bucket}/direct", str(tmp_path / "out3"))["files_copied"] == n
    assert _files(tmp_path / "out3") == want  # S3 metadata keeps mtimes to the nanosecond
    # Nothing changed: every hop copies nothing and the listing alone decides.
    for a, b in ((smb, s3), (s3, str(tmp_path / "out1")), (smb, str(tmp_path / "out2"))):
        again = _sync(a, b)
        assert again["files_copied"] == 0 and again["files_unchanged"] == n, (a, b)
        assert again["dirs_created"] == 0
    # A change, a new file and a deletion travel with --mirror, and only they.
    write(src / "a" / "f1.bin", b"changed", mtime=1_690_000_000)
    write(src / "new.txt", b"new")
    os.unlink(src / "c" / "f3.bin")
    hop = _sync(str(src), smb, "--mirror", check=1)
    assert (hop["files_copied"], hop["files_deleted"]) == (2, 1)
    dir_times_kept()  # c lost a file on both ends, a had one replaced on the share
    hop = _sync(smb, s3, "--mirror")
    assert (hop["files_copied"], hop["files_deleted"]) == (2, 1)
    _sync(s3, str(tmp_path / "out1"), "--mirror")
    assert _files(tmp_path / "out1", us=True) == _files(src, us=True)


def test_server_side_copies(tmp_path: Path, rng, s3_bucket, samba, smb_dir, moto) -> None:
    """S3 to S3 and SMB to SMB on one server: the server copies, and the result is the same."""
    src = _tree(tmp_path / "src", rng, big=False)
    write(src / "parts.bin", rng.randbytes(9 << 20), mtime=1_700_000_000)  # uploaded in parts
    want, n = _files(src), len(_files(src))
    a, b = samba.url(smb_dir + "/a"), samba.url(smb_dir + "/b")
    _sync(str(src), a, check=1)
    hop = _sync(a, b)
    assert hop["files_copied"] == hop["files_server_side"] == n
    _sync(str(src), f"s3://{s3_bucket}/a", check=1)
    hop = _sync(f"s3://{s3_bucket}/a", f"s3://{s3_bucket}/b")
    assert hop["files_copied"] == hop["files_server_side"] == n
    assert _sync(f"s3://{s3_bucket}/a", f"s3://{s3_bucket}/b")["files_copied"] == 0
    # The copy keeps what `rclone check` reads of a multipart object: its "md5chksum".
    heads = [moto.client().head_object(Bucket=s3_bucket, Key=f"{side}/parts.bin")["Metadata"]
             for side in "ab"]  # fmt: skip
    assert heads[0]["md5chksum"] and heads[1]["md5chksum"] == heads[0]["md5chksum"]
    assert heads[1]["mtime"] == heads[0]["mtime"]
    _sync(b, str(tmp_path / "out1"))
    _sync(f"s3://{s3_bucket}/b", str(tmp_path / "out2"))
    assert _files(tmp_path / "out1", us=True) == _files(src, us=True)
    assert _files(tmp_path / "out2") == want


def test_checksum_dry_run_and_filters(tmp_path: Path, rng, s3_bucket) -> None:
    src = _tree(tmp_path / "src", rng, big=False)
    write(src / "a" / "f1.bin", rng.randbytes(5000), mtime=1_600_000_000)  # not empty: flipped
    url = f"s3://{s3_bucket}/p"
    dry = run_cli("sync", str(src), url, "--json", "--dry-run", check=1).stdout
    assert any(e.get("action") == "plan-copy" for e in json_events(dry))
    assert _sync(url, str(tmp_path / "none"))["files_scanned"] == 0  # nothing was written
    _sync(str(src), url, "--exclude", "c/", check=1)
    got = _sync(url, str(tmp_path / "out"))
    assert got["files_copied"] == len([k for k in _files(src) if not k.startswith("c/")])
    # Same size, same mtime, other content: only --checksum (S3's MD5 ETag) sees it.
    f = src / "a" / "f1.bin"
    st = f.stat()
    f.write_bytes(bytes(255 - b for b in f.read_bytes()))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert _sync(str(src), url, "--exclude", "c/", check=1)["files_copied"] == 0
    assert _sync(str(src), url, "--exclude", "c/", "--checksum", check=1)["files_copied"] == 1
    assert _sync(url, str(tmp_path / "out"), "--checksum")["files_copied"] == 1
    assert (tmp_path / "out" / "a" / "f1.bin").read_bytes() == f.read_bytes()


def test_kill_during_multipart_upload_resumes_without_resending_parts(
    tmp_path: Path, rng, s3_bucket, moto
) -> None:
    size = 60 << 20  # 12 parts of 5 MiB
    write(tmp_path / "src" / "huge.bin", rng.randbytes(size))
    db = tmp_path / "jobs.db"
    url = f"s3://{s3_bucket}/up"
    args = [*ORBIT, "sync", str(tmp_path / "src"), url, "--db-path", str(db), "-j", "1",
            "--chunk-size-mb", "5", "--json"]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    recorded: dict[int, str] = {}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(recorded) < 3 and proc.poll() is None:
        time.sleep(0.05)
        try:
            with sqlite3.connect(db) as conn:
                recorded = dict(conn.execute("SELECT part, token FROM upload_parts"))
        except sqlite3.Error:
            pass
    proc.kill()
    proc.wait()
    assert len(recorded) >= 3, "the kill came too late to test a resume"
    with sqlite3.connect(db) as conn:
        recorded = dict(conn.execute("SELECT part, token FROM upload_parts"))
        (upload_id,) = conn.execute("SELECT state FROM uploads").fetchone()
    listed = moto.client().list_parts(Bucket=s3_bucket, Key="up/huge.bin", UploadId=upload_id)
    on_server = {p["PartNumber"]: p["ETag"].strip('"') for p in listed["Parts"]}
    assert all(on_server.get(n) == t for n, t in recorded.items())  # recorded => stored
    again = _sync(str(tmp_path / "src"), url, "--db-path", str(db))
    assert again["bytes_resumed"] == len(recorded) * (5 << 20)
    assert again["bytes_copied"] == size - again["bytes_resumed"]  # only the other parts sent
    body = moto.client().get_object(Bucket=s3_bucket, Key="up/huge.bin")["Body"].read()
    assert body == (tmp_path / "src" / "huge.bin").read_bytes()
    uploads = moto.client().list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])
    assert uploads == []


def test_smb_server_restart_mid_sync_is_retried(tmp_path: Path, rng, samba, smb_dir) -> None:
    src = tmp_path / "src"
    for i in range(40):
        write(src / f"f{i:02d}", rng.randbytes(512 << 10))
    url = samba.url(smb_dir + "/dst")
    proc = subprocess.Popen([*ORBIT, "sync", str(src), url, "-j", "1", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    dst = samba.share_dir / smb_dir / "dst"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(dst.glob("f*"))) < 3:
        time.sleep(0.02)
    out, err = outage(proc, samba.stop, samba.start)
    assert proc.returncode == 0, out[-2000:] + err
    assert _files(dst, us=True) == _files(src, us=True)


def test_remote_errors_are_clear_and_lose_nothing(tmp_path: Path, s3_bucket, moto, samba,
                                                  smb_dir, monkeypatch) -> None:  # fmt: skip
    write(tmp_path / "src" / "f", b"x")
    proc = run_cli("sync", str(tmp_path / "src"), "s3://no-such-bucket-zz/r",
                   check=ExitCode.REMOTE)  # fmt: skip
    assert "does not exist" in proc.stderr
    # A key that would escape the target directory is never mapped: skipped with a warning
    # naming it (exit 1, issue #15; it aborted the run with exit 14 before), nothing written.
    moto.client().put_object(Bucket=s3_bucket, Key="p/../../evil", Body=b"x")
    proc = run_cli("sync", f"s3://{s3_bucket}/p", str(tmp_path / "out"), check=ExitCode.PARTIAL)
    assert "../../evil: unsafe name" in proc.stderr and not (tmp_path / "evil").exists()
    # A share the account may only read: a clear refusal, and the source is untouched.
    proc = run_cli("sync", str(tmp_path / "src"), samba.url(smb_dir, share="readonly"),
                   check=ExitCode.REMOTE)  # fmt: skip
    assert "denied" in proc.stderr and (tmp_path / "src" / "f").read_bytes() == b"x"
    monkeypatch.setenv("ORBIT_SMB_PASSWORD", "wrong")
    proc = run_cli("sync", str(tmp_path / "src"), samba.url(smb_dir), check=ExitCode.REMOTE)
    assert "refused the login" in proc.stderr
    proc = run_cli("sync", str(tmp_path / "src"), "ftp://host/x", check=ExitCode.USAGE)
    assert "unknown scheme" in proc.stderr


def test_s3_outage_mid_sync_is_retried(tmp_path: Path, rng, s3_bucket, moto,
                                       monkeypatch) -> None:  # fmt: skip
    """The network to S3 drops for a moment: requests are retried and the job completes."""

    proxy = TcpProxy(moto.port)
    src = tmp_path / "src"
    for i in range(40):
        write(src / f"f{i:02d}", rng.randbytes(256 << 10))
    env = {**os.environ, "ORBIT_S3_ENDPOINT": f"http://127.0.0.1:{proxy.port}"}
    proc = subprocess.Popen([*ORBIT, "sync", str(src), f"s3://{s3_bucket}/blip", "-j", "1",
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)  # fmt: skip
    s3 = moto.client()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and s3.list_objects_v2(
            Bucket=s3_bucket, Prefix="blip/").get("KeyCount", 0) < 3:  # fmt: skip
        time.sleep(0.02)
    out, err = outage(proc, proxy.pause, proxy.resume, down_s=1.5)
    assert proc.returncode == 0, out[-2000:] + err
    assert summary_of(out)["files_copied"] == 40
    _sync(f"s3://{s3_bucket}/blip", str(tmp_path / "back"))
    assert _files(tmp_path / "back") == _files(src)


def test_the_global_s3_endpoint_flag_reaches_sync(tmp_path: Path, s3_bucket, moto,
                                                  monkeypatch) -> None:  # fmt: skip
    """`orbit-fast --s3-endpoint URL sync ...`: the flag alone (no ORBIT_S3_ENDPOINT), and it
    wins over a different ORBIT_S3_ENDPOINT in the environment; sync's own flag wins over it."""
    monkeypatch.delenv("ORBIT_S3_ENDPOINT")
    write(tmp_path / "src" / "f", b"data")
    dst = f"s3://{s3_bucket}/g"
    run_cli("--s3-endpoint", moto.endpoint, "sync", str(tmp_path / "src"), dst)
    monkeypatch.setenv("ORBIT_S3_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    run_cli("--s3-endpoint", moto.endpoint, "sync", str(tmp_path / "src"), dst + "2")
    run_cli("--s3-endpoint", "http://127.0.0.1:9", "sync", "--s3-endpoint", moto.endpoint,
            str(tmp_path / "src"), dst + "3")  # fmt: skip
    for prefix in ("g", "g2", "g3"):
        got = moto.client().get_object(Bucket=s3_bucket, Key=f"{prefix}/f")["Body"].read()
        assert got == b"data"


@pytest.mark.skipif(os.geteuid() != 0, reason="the attack needs a root run and the user nobody")
def test_a_symlink_planted_at_the_upload_temp_name_is_never_written_through(
        tmp_path: Path, rng, s3_bucket, request) -> None:  # fmt: skip
    """A copy in parts into a local directory writes `.<name>.orbit-<job token>.tmp`, a name
    an unprivileged user who can write there learns from any earlier run. Planted in advance
    as a symlink to a root-owned file, it must be replaced, never followed: the root run
    neither truncates nor writes the victim, and the copy lands as a regular file."""
    src = tmp_path / "src"
    write(src / "small.txt", b"first run: makes the job and its token")
    # pytest's tmp_path is root's alone: the attacker needs a path it can reach.
    shared = Path(tempfile.mkdtemp(prefix="orbit-attack-", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(shared, ignore_errors=True))
    os.chmod(shared, 0o755)
    dst = shared / "dst"
    dst.mkdir()
    os.chown(dst, 65534, 65534)  # the destination directory is the attacker's (nobody)
    victim = shared / "victim"
    victim.write_bytes(b"precious")
    os.chmod(victim, 0o600)
    s3 = f"s3://{s3_bucket}/x"
    db = tmp_path / "jobs.db"
    run_cli("sync", str(src), s3, "--db-path", str(db))
    run_cli("sync", s3, str(dst), "--db-path", str(db))
    con = sqlite3.connect(db)
    ((token,),) = con.execute("SELECT token FROM jobs WHERE destination=?", (str(dst),))
    con.close()
    write(src / "big.bin", data := rng.randbytes(BIG))
    run_cli("sync", str(src), s3, "--db-path", str(db))
    planted = dst / f".big.bin.orbit-{token}.tmp"
    subprocess.run(["runuser", "-u", "nobody", "--", "ln", "-s", str(victim), str(planted)],
                   check=True)  # fmt: skip
    assert planted.is_symlink()
    s = _sync(s3, str(dst), "--db-path", str(db))
    assert s["files_copied"] == 1
    assert victim.read_bytes() == b"precious"
    assert not (dst / "big.bin").is_symlink() and (dst / "big.bin").read_bytes() == data
    assert not planted.exists() and not planted.is_symlink()
