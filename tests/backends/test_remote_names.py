"""Remote locations and object names that try to leave their place (issue #15), against real
Samba and moto: %2e%2e, %2F and Unicode look-alikes in URLs, allowed roots on remote URLs, and
bucket keys such as a//b.txt, ./x and ../x, which are skipped with a warning, never mapped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orbit_fast import api
from orbit_fast import progress as p
from orbit_fast.config import BackupOptions, SyncOptions
from orbit_fast.errors import ExitCode, OutsideRoots, UsageError
from tests.conftest import write

ODD_KEYS = ("a//b.txt", "./x", "../x", "a/./b", "/abs", "n" * 300)


def _share_state(root: Path) -> dict[str, bytes]:
    return {str(q.relative_to(root)): q.read_bytes() if q.is_file() else b""
            for q in sorted(root.rglob("*"))}  # fmt: skip


def _smb_layout(samba: Any, smb_dir: str) -> tuple[Path, dict[str, bytes]]:
    base = samba.share_dir / smb_dir
    write(base / "secret.txt", b"outside the allowed sub-path")
    write(base / "victim" / "keep.txt", b"do not touch")
    write(base / "allowed" / "in.txt", b"inside")
    return base, _share_state(base)


def _outside(base: Path) -> dict[str, bytes]:
    return {k: v for k, v in _share_state(base).items() if not k.startswith("allowed")}


@pytest.mark.parametrize("spelling", ["allowed/%2e%2e/victim", "allowed/%2E%2E/victim",
                                      "allowed%2F..%2Fvictim", "allowed/%2e%2e%2Fvictim",
                                      "allowed/%252e%252e/victim"])  # fmt: skip
def test_smb_urls_cannot_step_out_of_their_path(tmp_path: Path, samba: Any, smb_dir: str,
                                                spelling: str) -> None:  # fmt: skip
    """Read, write and delete through an encoded '..': refused (or, decoded once, a plain
    name inside), never outside the sub-path, with or without roots."""
    base, _ = _smb_layout(samba, smb_dir)
    before = _outside(base)
    src = write(tmp_path / "src" / "planted.txt", b"planted").parent
    url = samba.url(f"{smb_dir}/{spelling}")
    for opts in (SyncOptions(source=str(src), destination=url, mirror=True),
                 SyncOptions(source=url, destination=str(tmp_path / "out"))):  # fmt: skip
        try:
            api.sync(options=opts)
        except UsageError as exc:  # refused before anything was opened
            assert "'..'" in str(exc) or "path separator" in str(exc), exc
    assert _outside(base) == before  # nothing outside written or deleted
    assert not (tmp_path / "out" / "keep.txt").exists()  # nor read from there


def test_look_alikes_are_names_inside(tmp_path: Path, samba: Any, smb_dir: str) -> None:
    """Fullwidth dots and the division slash are ordinary characters: they pass the roots and
    land inside the allowed sub-path, as names."""
    base, _ = _smb_layout(samba, smb_dir)
    before = _outside(base)
    src = write(tmp_path / "src" / "f.txt", b"payload").parent
    roots = (samba.url(f"{smb_dir}/allowed"), str(src))  # the source is checked too
    for name in ("%EF%BC%8E%EF%BC%8E", "%E2%88%95..%E2%88%95victim", "．．／", "%C2%A0..",
                 "%E2%80%A4%E2%80%A4"):  # fmt: skip
        summary = api.sync(options=SyncOptions(
            source=str(src), destination=samba.url(f"{smb_dir}/allowed/{name}/x"),
            allowed_roots=roots))  # fmt: skip
        assert summary.files_copied == 1
    assert _outside(base) == before
    inside = {k for k in _share_state(base) if k.endswith("/f.txt")}
    assert inside == {f"allowed/{n}/x/f.txt" for n in
                      ("．．", "∕..∕victim", "．．／", "\xa0..", "․․")}  # fmt: skip


def test_remote_roots_are_enforced_by_the_engine(tmp_path: Path, samba: Any, smb_dir: str,
                                                 s3_bucket: str, moto: Any) -> None:  # fmt: skip
    base, _ = _smb_layout(samba, smb_dir)
    before = _outside(base)
    src = write(tmp_path / "src" / "f.txt", b"payload").parent
    smb_root = samba.url(f"{smb_dir}/allowed")
    s3_root = f"s3://{s3_bucket}/allowed"
    roots = (smb_root, s3_root, str(src))
    for dst in (samba.url(f"{smb_dir}/victim"), samba.url(f"{smb_dir}/allowedx"),
                samba.url(f"{smb_dir}"), f"s3://{s3_bucket}/other",
                f"s3://{s3_bucket}/allowedx/y", f"s3://{s3_bucket}"):  # fmt: skip
        with pytest.raises(OutsideRoots) as err:
            api.sync(options=SyncOptions(source=str(src), destination=dst, allowed_roots=roots))
        assert err.value.exit_code == ExitCode.OUTSIDE_ROOTS
    # The same place spelled otherwise is inside: case of scheme and share, doubled slashes.
    spelled = samba.url(f"{smb_dir}//allowed//sub/.").replace("smb://", "SMB://").replace(
        "/share/", "/SHARE/")  # fmt: skip
    ok = api.sync(options=SyncOptions(source=str(src), destination=spelled,
                                      allowed_roots=roots))  # fmt: skip
    assert ok.files_copied == 1 and (base / "allowed" / "sub" / "f.txt").exists()
    ok = api.sync(options=SyncOptions(source=str(src), allowed_roots=roots,
                                      destination=f"S3://{s3_bucket.upper()}//allowed/./s3"))
    assert ok.files_copied == 1
    keys = {o["Key"] for o in moto.client().list_objects_v2(Bucket=s3_bucket)["Contents"]}
    assert keys == {"allowed/s3/f.txt"}
    with pytest.raises(UsageError):  # an encoded '..' never reaches S3 either
        api.sync(options=SyncOptions(source=str(src), allowed_roots=roots,
                                     destination=f"s3://{s3_bucket}/allowed/%2e%2e/other"))
    assert _outside(base) == before


def _odd_bucket(moto: Any, bucket: str) -> None:
    c = moto.client()
    for key in ODD_KEYS + ("ok.txt", "d/ok2.txt"):
        c.put_object(Bucket=bucket, Key=key, Body=b"data of " + key.encode()[:20])


def _warned(events: list[Any]) -> dict[str, str]:
    return {ev.path: ev.message for ev in events if isinstance(ev, p.Warning)}


def test_odd_keys_are_skipped_by_sync(tmp_path: Path, s3_bucket: str, moto: Any) -> None:
    _odd_bucket(moto, s3_bucket)
    out = tmp_path / "deep" / "out"
    events: list[Any] = []
    summary = api.sync(f"s3://{s3_bucket}", str(out), on_event=events.append)
    assert summary.exit_code == ExitCode.PARTIAL and summary.files_copied == 2
    warned = _warned(events)
    for key in ODD_KEYS:
        assert key in warned and "unsafe name" in warned[key], (key, warned)
    assert sorted(str(q.relative_to(tmp_path)) for q in tmp_path.rglob("*") if q.is_file()) \
        == ["deep/out/d/ok2.txt", "deep/out/ok.txt"]  # fmt: skip
    # S3 to S3, and a destination holding odd keys under --mirror: no abort, they stay.
    c, other = moto.client(), s3_bucket + "-2"
    c.create_bucket(Bucket=other)
    summary = api.sync(f"s3://{s3_bucket}", f"s3://{other}/copy", mirror=True)
    assert summary.exit_code == ExitCode.PARTIAL and summary.files_copied == 2
    c.put_object(Bucket=other, Key="copy/../y", Body=b"odd in the destination")
    events = []
    summary = api.sync(str(out), f"s3://{other}/copy", mirror=True, on_event=events.append)
    assert summary.exit_code == ExitCode.PARTIAL and "../y" in _warned(events)
    keys = {o["Key"] for o in c.list_objects_v2(Bucket=other, Prefix="copy/")["Contents"]}
    assert keys == {"copy/ok.txt", "copy/d/ok2.txt", "copy/../y"}


def test_odd_keys_are_skipped_by_backup(tmp_path: Path, s3_bucket: str, moto: Any) -> None:
    _odd_bucket(moto, s3_bucket)
    events: list[Any] = []
    summary = api.backup(options=BackupOptions(source=f"s3://{s3_bucket}",
                                               repository=str(tmp_path / "repo")),
                         on_event=events.append)  # fmt: skip
    assert summary.exit_code == ExitCode.PARTIAL
    warned = _warned(events)
    assert all(key in warned for key in ODD_KEYS), warned
    target = tmp_path / "target"
    api.restore(str(tmp_path / "repo"), "latest", str(target))
    assert sorted(str(q.relative_to(tmp_path)) for q in tmp_path.rglob("*")
                  if q.is_file() and "repo" not in q.parts) == ["target/d/ok2.txt",
                                                                "target/ok.txt"]  # fmt: skip
