"""Sync options on S3 (moto) and SMB (Samba) destinations: --backup-dir keeps every replaced and
deleted object on the server; the storage class, SSE and content type are on the objects; an
archived (GLACIER) source object is reported, never read; the mirror guards hold for remote
sources too."""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import json_events, run_cli, summary_of, write


def _old_and_new(tmp_path: Path) -> tuple[Path, Path]:
    old, new = tmp_path / "old", tmp_path / "new"
    for i in range(6):
        write(old / f"d{i % 2}" / f"f{i}.txt", f"old {i}\n".encode() * 50, mtime=1_700_000_000)
        if i % 3:
            write(new / f"d{i % 2}" / f"f{i}.txt", f"new {i}\n".encode() * 60,
                  mtime=1_750_000_000)  # fmt: skip
    write(old / "big.bin", os.urandom(9 << 20), mtime=1_700_000_000)  # copied in parts
    write(new / "big.bin", os.urandom(9 << 20), mtime=1_750_000_000)
    return old, new


def _objects(client, bucket: str, prefix: str) -> dict[str, bytes]:
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            body = client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
            out[o["Key"][len(prefix):]] = body
    return out


def test_backup_dir_on_s3_keeps_replaced_and_deleted(tmp_path: Path, s3_bucket, moto):
    old, new = _old_and_new(tmp_path)
    dst = f"s3://{s3_bucket}/replica"
    run_cli("sync", str(old), dst, "--mirror")
    before = _objects(moto.client(), s3_bucket, "replica/")
    proc = run_cli("sync", str(new), dst, "--mirror", "--backup-dir", "_old/{date}",
                   "--suffix", ".v1", "--json")  # fmt: skip
    summary = summary_of(proc.stdout)
    assert summary["files_backed_up"] == 7  # 3 replaced + big.bin, 3 deleted
    after = _objects(moto.client(), s3_bucket, "replica/")
    kept = {k.split("/", 2)[2]: v for k, v in after.items() if k.startswith("_old/")}
    assert kept == {k + ".v1": v for k, v in before.items()}
    now = {k: v for k, v in after.items() if not k.startswith("_old/")}
    assert now == {str(p.relative_to(new)): p.read_bytes() for p in new.rglob("*")
                   if p.is_file()}  # fmt: skip
    # A sibling prefix as a URL, as rclone's --backup-dir takes it.
    write(new / "d0" / "f2.txt", b"third version", mtime=1_760_000_000)
    run_cli("sync", str(new), dst, "--mirror", "--backup-dir", f"s3://{s3_bucket}/attic",
            "--exclude", "/_old/")  # fmt: skip
    assert _objects(moto.client(), s3_bucket, "attic/") == {"d0/f2.txt": now["d0/f2.txt"]}
    # A mirror never deletes the backup directory inside the destination.
    proc = run_cli("sync", str(new), dst, "--mirror", "--backup-dir", "_old/{date}", "--json")
    assert summary_of(proc.stdout)["files_deleted"] == 0
    left = _objects(moto.client(), s3_bucket, "replica/_old/")
    assert len(left) == 7


def test_backup_dir_on_smb_keeps_replaced_and_deleted(tmp_path: Path, samba, smb_dir):
    old, new = _old_and_new(tmp_path)
    dst = samba.url(smb_dir + "/replica")
    run_cli("sync", str(old), dst, "--mirror")
    share = samba.share_dir / smb_dir / "replica"
    before = {str(p.relative_to(share)): p.read_bytes() for p in share.rglob("*") if p.is_file()}
    run_cli("sync", str(new), dst, "--mirror", "--backup-dir", "_old", "--json")
    kept = {str(p.relative_to(share / "_old")): p.read_bytes()
            for p in (share / "_old").rglob("*") if p.is_file()}  # fmt: skip
    assert kept == before
    assert (share / "_old" / "d0" / "f0.txt").stat().st_mtime == 1_700_000_000


def test_s3_storage_class_sse_and_content_type(tmp_path: Path, s3_bucket, moto):
    src = tmp_path / "src"
    write(src / "index.html", b"<html></html>")
    write(src / "photo.JPG", b"\xff\xd8" * 100)
    write(src / "data.unknownext", b"?")
    write(src / "big.bin", os.urandom(9 << 20))  # a multipart upload
    run_cli("sync", str(src), f"s3://{s3_bucket}/site", "--s3-storage-class", "STANDARD_IA",
            "--s3-sse", "AES256", "--chunk-size-mb", "5")  # fmt: skip
    c = moto.client()
    heads = {k: c.head_object(Bucket=s3_bucket, Key=f"site/{k}")
             for k in ("index.html", "photo.JPG", "data.unknownext", "big.bin")}  # fmt: skip
    assert heads["index.html"]["ContentType"] == "text/html"
    assert heads["photo.JPG"]["ContentType"] == "image/jpeg"
    assert heads["data.unknownext"]["ContentType"] in ("binary/octet-stream",
                                                       "application/octet-stream")
    for k, h in heads.items():
        assert h.get("StorageClass") == "STANDARD_IA", k
        assert h.get("ServerSideEncryption") == "AES256", k
    # Without a class or SSE the objects go through the faster client: typed all the same.
    run_cli("sync", str(src), f"s3://{s3_bucket}/plain", "--chunk-size-mb", "5")
    for k, want in (("index.html", "text/html"), ("photo.JPG", "image/jpeg")):
        assert c.head_object(Bucket=s3_bucket, Key=f"plain/{k}")["ContentType"] == want
    proc = run_cli("sync", str(src), f"s3://{s3_bucket}/x", "--s3-sse-kms-key-id", "k", check=2)
    assert "aws:kms" in proc.stderr


def test_an_archived_source_object_is_reported_not_read(tmp_path: Path, s3_bucket, moto):
    c = moto.client()
    c.put_object(Bucket=s3_bucket, Key="arch/cold.bin", Body=b"cold", StorageClass="GLACIER")
    c.put_object(Bucket=s3_bucket, Key="arch/warm.bin", Body=b"warm")
    proc = run_cli("sync", f"s3://{s3_bucket}/arch", str(tmp_path / "out"), "--json", check=1)
    warns = [e for e in json_events(proc.stdout) if e["event"] == "warning"]
    assert [w["msgid"] for w in warns] == ["archived"]
    assert "GLACIER" in warns[0]["message"] and "restore-object" in warns[0]["message"]
    assert (tmp_path / "out" / "warm.bin").read_bytes() == b"warm"
    assert not (tmp_path / "out" / "cold.bin").exists()


def test_an_emptied_s3_source_deletes_nothing(tmp_path: Path, s3_bucket, moto):
    c = moto.client()
    for i in range(4):
        c.put_object(Bucket=s3_bucket, Key=f"src/f{i}", Body=b"x")
    dst = tmp_path / "replica"
    run_cli("sync", f"s3://{s3_bucket}/src", str(dst), "--mirror")
    c.delete_objects(Bucket=s3_bucket, Delete={"Objects": [{"Key": f"src/f{i}"}
                                                          for i in range(4)]})  # fmt: skip
    proc = run_cli("sync", f"s3://{s3_bucket}/src", str(dst), "--mirror", check=22)
    assert "has no files" in proc.stderr
    assert sorted(os.listdir(dst)) == ["f0", "f1", "f2", "f3"]
    c.put_object(Bucket=s3_bucket, Key="src/f0", Body=b"x")
    proc = run_cli("sync", f"s3://{s3_bucket}/src", str(dst), "--mirror", "--max-delete", "2",
                   check=22)  # fmt: skip
    assert "more than --max-delete 2" in proc.stderr
    run_cli("sync", f"s3://{s3_bucket}/src", str(dst), "--mirror", "--max-delete", "75%")
    assert os.listdir(dst) == ["f0"]


def test_a_restore_from_archived_packs_says_to_restore_them_in_s3(tmp_path: Path, s3_bucket,
                                                                  moto):
    src = tmp_path / "src"
    write(src / "a.txt", b"a" * 5000)
    repo = f"s3://{s3_bucket}/repo"
    run_cli("backup", str(src), repo)
    c = moto.client()
    packs = [o["Key"] for o in c.list_objects_v2(Bucket=s3_bucket, Prefix="repo/packs/")
             .get("Contents", [])]  # fmt: skip
    assert packs
    for key in packs:  # a lifecycle rule moved them to Glacier
        c.copy_object(Bucket=s3_bucket, Key=key, CopySource={"Bucket": s3_bucket, "Key": key},
                      StorageClass="GLACIER", MetadataDirective="COPY")  # fmt: skip
    proc = run_cli("restore", "-r", repo, "latest", "--target", str(tmp_path / "out"),
                   check=None)  # fmt: skip
    assert proc.returncode != 0
    assert "archive storage class" in proc.stderr and "restore-object" in proc.stderr
