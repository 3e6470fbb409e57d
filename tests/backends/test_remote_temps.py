"""Nothing left behind: the temp files of a killed sync to an SMB share (and a local
destination) are found by the next run and removed when no run holds them, `--mirror`
included, and the summary says what a listing did not show as files (docs/sync.md, "Temp
files"). What is left is listed with Samba's own `smbclient`, not with orbit-fast's lister."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from orbit_fast.fsinfo import temp_name
from tests.conftest import ORBIT, json_events, run_cli, summary_of, write
from tests.servers import SMB_PASSWORD, SMB_USER

pytestmark = pytest.mark.integration

TRIALS = int(os.environ.get("ORBIT_TEMP_TRIALS", "10"))
# Whatever a writer names a temp file: a whole write's ".tmp-<12 hex>", an upload in parts'
# ".<name>.orbit-<token>.tmp" (backends/base.py is_temp): anything with ".tmp" is suspect.
_SUSPECT = re.compile(r"\.tmp")


def smbclient_names(samba, directory: str) -> list[str]:
    """Every file name below `directory` of the share, as Samba's smbclient lists it."""
    if shutil.which("smbclient") is None:
        pytest.skip("needs Samba's smbclient CLI (apt-get install smbclient)")
    proc = subprocess.run(
        ["smbclient", "//127.0.0.1/share", "-p", str(samba.port), "-U",
         f"{SMB_USER}%{SMB_PASSWORD}", "-c", f"recurse ON; ls {directory}\\*"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    names = []
    for line in proc.stdout.splitlines():
        # "  name    A   1234  Wed Dec  2 07:00:00 2026": the name, then its attributes
        m = re.match(r"  (.+?)\s+[ADHNRS]*\s+\d+\s+\w{3} \w{3} [ \d]\d ", line)
        if m and m.group(1) not in (".", ".."):
            names.append(m.group(1))
    return names


def _tree(root: Path, rng) -> None:
    """200 files of a few KiB (whole writes) and two of 10 MiB (over SINGLE_MAX, 8 MiB: in
    parts, into a temp file at offsets)."""
    for i in range(200):
        write(root / f"d{i % 7}" / f"f{i}.bin", rng.randbytes(rng.randint(1000, 6000)),
              mtime=1_600_000_000 + i)  # fmt: skip
    for b in range(2):
        write(root / f"big{b}.bin", rng.randbytes(10 << 20), mtime=1_700_000_000 + b)


def _same(src: Path, dst: Path) -> None:
    """The tree on the share (read through the share's directory) is the source's."""
    got = {str(p.relative_to(dst)): p.read_bytes() for p in dst.rglob("*") if p.is_file()}
    want = {str(p.relative_to(src)): p.read_bytes() for p in src.rglob("*") if p.is_file()}
    assert sorted(got) == sorted(want)
    assert got == want


def test_kill_9_during_an_smb_upload_leaves_no_temp_file_after_the_rerun(
    tmp_path: Path, rng, samba, smb_dir
) -> None:
    src, db = tmp_path / "src", tmp_path / "jobs.db"
    _tree(src, rng)
    url = samba.url(smb_dir + "/dst")
    share = samba.share_dir / smb_dir / "dst"
    args = ["sync", str(src), url, "--db-path", str(db), "--json", "--chunk-size-mb", "1"]
    left_by_kills: list[str] = []
    for trial in range(TRIALS):
        shutil.rmtree(share, ignore_errors=True)
        share.mkdir()
        db.unlink(missing_ok=True)
        proc = subprocess.Popen([*ORBIT, *args], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        # Kill while a temp file is on the share (watched through the share's directory):
        # uploads are quick, so a random delay alone mostly lands before or after them.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and proc.poll() is None and not any(
                _SUSPECT.search(f.name) for f in share.rglob("*")):  # fmt: skip
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.02))
        os.killpg(proc.pid, signal.SIGKILL)  # the coordinator and its worker pool
        proc.wait()
        left_by_kills += [n for n in smbclient_names(samba, f"{smb_dir}\\dst")
                          if _SUSPECT.search(n)]  # fmt: skip
        s = summary_of(run_cli(*args).stdout)
        assert s["exit_code"] == 0
        names = smbclient_names(samba, f"{smb_dir}\\dst")
        assert [n for n in names if _SUSPECT.search(n)] == [], (trial, s)
        assert len([n for n in names if n.endswith(".bin")]) == 202
        _same(src, share)
    # The trials test something only if kills left temp files for the reruns to find (with
    # each small file's life one compound request, those are mostly the parts' temp files).
    assert left_by_kills, "no kill landed during an upload"


def test_mirror_removes_stale_temp_files_and_the_summary_says_so(
    tmp_path: Path, rng, samba, smb_dir
) -> None:
    src, db = tmp_path / "src", tmp_path / "jobs.db"
    write(src / "a" / "f.txt", b"hello", mtime=1_600_000_000)
    url = samba.url(smb_dir + "/m")
    args = ["sync", str(src), url, "--db-path", str(db), "--json", "--mirror"]
    run_cli(*args)
    share = samba.share_dir / smb_dir / "m"
    # What writers killed mid-write leave: a whole write's temp file, and an upload in
    # parts' temp file of a job of another jobs DB (an unknown token), a day old.
    write(share / "a" / ".tmp-0123456789ab", b"partial")
    foreign = share / "a" / temp_name("big.bin", "0badc0de")
    write(foreign, b"part", mtime=time.time() - 2 * 86400)
    # A fresh one of that unknown job may be in use by a run this one cannot ask: kept.
    live = share / temp_name("live.bin", "0badc0de")
    write(live, b"part")
    proc = run_cli(*args)
    s = summary_of(proc.stdout)
    assert (s["names_unlisted"], s["temps_removed"]) == (3, 2), s
    warnings = [e for e in json_events(proc.stdout) if e["event"] == "warning"]
    assert [w["msgid"] for w in warnings] == ["unlisted"], warnings
    assert "2 of interrupted runs removed, 1 kept" in warnings[0]["message"]
    names = smbclient_names(samba, f"{smb_dir}\\m")
    assert sorted(names) == sorted(["a", "f.txt", live.name]), names
    assert s["exit_code"] == 0 and s["skipped"] == []
    # Nothing left to remove: nothing said about removals, the live one still counted.
    s = summary_of(run_cli(*args).stdout)
    assert (s["names_unlisted"], s["temps_removed"]) == (1, 0), s


def test_a_temp_file_its_writer_holds_open_is_kept(tmp_path: Path, samba, smb_dir) -> None:
    """A whole write in progress from another client holds its temp file open; SMB refuses
    to delete it, and the run keeps it (and says so) instead of failing."""
    import smbclient

    src = tmp_path / "src"
    write(src / "f.txt", b"hello")
    url = samba.url(smb_dir + "/h")
    run_cli("sync", str(src), url, "--db-path", str(tmp_path / "jobs.db"))
    cache: dict = {}
    kw = {"port": samba.port, "username": SMB_USER, "password": SMB_PASSWORD,
          "connection_cache": cache}  # fmt: skip
    held = f"\\\\127.0.0.1\\share\\{smb_dir}\\h\\.tmp-00000000abcd"
    f = smbclient.open_file(held, mode="wb", buffering=0, **kw)
    try:
        f.write(b"in progress")
        s = summary_of(run_cli("sync", str(src), url, "--db-path", str(tmp_path / "jobs.db"),
                               "--json").stdout)  # fmt: skip
        assert (s["names_unlisted"], s["temps_removed"], s["exit_code"]) == (1, 0, 0), s
    finally:
        f.close()
        smbclient.reset_connection_cache(connection_cache=cache)
    assert ".tmp-00000000abcd" in smbclient_names(samba, f"{smb_dir}\\h")


def test_stale_temp_files_in_a_local_destination_are_removed(tmp_path: Path, samba,
                                                             smb_dir) -> None:  # fmt: skip
    """SMB -> local: the local store's listing hid its temp files the same way."""
    src = samba.share_dir / smb_dir / "s"
    write(src / "x" / "f.txt", b"hello")
    out = tmp_path / "out"
    write(out / "x" / ".tmp-0123456789ab", b"partial")
    (out / "link").symlink_to("x")
    s = summary_of(run_cli("sync", samba.url(smb_dir + "/s"), str(out), "--json",
                           "--db-path", str(tmp_path / "jobs.db")).stdout)  # fmt: skip
    assert (s["names_unlisted"], s["temps_removed"]) == (2, 1), s
    assert sorted(os.listdir(out / "x")) == ["f.txt"]
    assert (out / "link").is_symlink()


def test_the_sweep_never_follows_a_temp_named_link(tmp_path: Path, samba, smb_dir) -> None:
    """Whoever may write the local destination can plant links under writers' temp names,
    to a file and to a directory outside it: the root run's sweep of stale temps removes at
    most the links themselves (unlinkat in the directory's fd), never what they point at."""
    src = samba.share_dir / smb_dir / "s2"
    write(src / "x" / "f.txt", b"hello")
    victim = tmp_path / "victim"
    write(victim / "secret.txt", b"keep me")
    out = tmp_path / "out"
    (out / "x").mkdir(parents=True)
    (out / "x" / ".tmp-0123456789ab").symlink_to(victim / "secret.txt")
    (out / "x" / ".tmp-ba9876543210").symlink_to(victim)
    os.symlink(victim, out / ".tmp-aaaaaaaaaaaa", target_is_directory=True)
    before = sorted(os.listdir(victim)), (victim / "secret.txt").read_bytes()
    run_cli("sync", samba.url(smb_dir + "/s2"), str(out), "--mirror", "--json",
            "--db-path", str(tmp_path / "jobs.db"), check=None)  # fmt: skip
    assert (sorted(os.listdir(victim)), (victim / "secret.txt").read_bytes()) == before
    assert (out / "x" / "f.txt").read_bytes() == b"hello"
    for link in ("x/.tmp-0123456789ab", "x/.tmp-ba9876543210", ".tmp-aaaaaaaaaaaa"):
        p = out / link
        assert not p.exists() or p.is_symlink(), link  # removed, or left as a link
