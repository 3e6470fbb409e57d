"""The sync options in a hub job's JSON, under the CLI's names: validated when the job is made
(the field named), shown on the job, applied when it runs; a mirror job's deletions above 50%
are withheld by default, and one run may override the guards; ORBIT_BWLIMIT holds for every job
together."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import write
from tests.hub.conftest import HubProcess


def _job(src: Path, dst: Path, name: str, mode: str = "mirror", **config: Any) -> dict:
    return {"name": name, "source": str(src), "destination": str(dst), "mode": mode,
            "config": config}  # fmt: skip


def _run(hub: HubProcess, c: httpx.Client, job_id: int, body: dict | None = None) -> dict:
    r = c.post(f"/api/jobs/{job_id}/run", json=body) if body else c.post(
        f"/api/jobs/{job_id}/run")  # fmt: skip
    assert r.status_code == 202, r.text
    return hub.wait_state(c, job_id, ("completed", "partial", "failed", "cancelled"))


def test_a_mirror_job_withholds_mass_deletion_by_default(hub: HubProcess, admin: httpx.Client,
                                                         tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    for i in range(10):
        write(src / f"f{i}", b"x")
    job = admin.post("/api/jobs", json=_job(src, dst, "m")).json()
    assert job["config"] == {} and job["max_delete"] == "50%"
    assert _run(hub, admin, job["id"])["state"] == "completed"
    for i in range(6):
        (src / f"f{i}").unlink()
    done = _run(hub, admin, job["id"])
    assert done["state"] == "failed"
    assert "deletions withheld" in done["last_error"] and "--max-delete 50%" in done["last_error"]
    assert len(os.listdir(dst)) == 10
    # One run's override, and only that run's.
    bad = admin.post(f"/api/jobs/{job['id']}/run", json={"max_delete": "lots"})
    assert bad.status_code == 400 and "max_delete" in bad.text
    assert _run(hub, admin, job["id"], {"max_delete": "off"})["state"] == "completed"
    assert len(os.listdir(dst)) == 4
    # The source emptied: withheld again, whatever the percentage; force_delete lets it go.
    for p in src.iterdir():
        p.unlink()
    assert _run(hub, admin, job["id"], {"max_delete": "off"})["state"] == "failed"
    assert "has no files" in admin.get(f"/api/jobs/{job['id']}").json()["last_error"]
    assert _run(hub, admin, job["id"], {"force_delete": True, "max_delete": "off"}
                )["state"] == "completed"  # fmt: skip
    assert os.listdir(dst) == []


def test_job_options_are_validated_shown_and_applied(hub: HubProcess, admin: httpx.Client,
                                                     tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "keep.txt", b"k" * 10)
    write(src / "big.txt", b"b" * 5000)
    write(src / "skip.tmp", b"t")
    rules = tmp_path / "rules"
    rules.write_text("- *.log\n")
    write(src / "x.log", b"l")
    config = {"filter": ["- *.tmp"], "filter_from": str(rules), "max_size": "1K",
              "backup_dir": ".old", "suffix": "~", "bwlimit": "08:00,10M 20:00,off",
              "max_delete": 3}  # fmt: skip
    job = admin.post("/api/jobs", json=_job(src, dst, "opts", **config)).json()
    assert job["config"] == config and job["max_delete"] == "3"
    assert _run(hub, admin, job["id"])["state"] == "completed"
    assert sorted(os.listdir(dst)) == ["keep.txt"]
    write(src / "keep.txt", b"new content", mtime=time.time() + 5)
    assert _run(hub, admin, job["id"])["state"] == "completed"
    assert (dst / ".old" / "keep.txt~").read_bytes() == b"k" * 10
    for bad, field in ((dict(max_size="huge"), "config.max_size"),
                       (dict(filter=["* no sign"]), "config.filter"),
                       (dict(exclude_from="relative/rules"), "config.exclude_from"),
                       (dict(bwlimit="8:00,fast"), "config.bwlimit"),
                       (dict(s3_storage_class="COLD"), "config.s3_storage_class"),
                       (dict(max_delete="lots"), "config.max_delete")):  # fmt: skip
        r = admin.post("/api/jobs", json=_job(src, dst, f"bad-{field}", **bad))
        assert r.status_code in (400, 422), r.text
        assert field.split(".")[-1] in r.text, r.text
    r = admin.post("/api/jobs", json=_job(src, tmp_path / "d2", "warned", mode="sync",
                                          max_delete="10%"))  # fmt: skip
    assert r.status_code == 201 and any("max_delete" in w for w in r.json()["warnings"])


def test_the_hubs_global_bandwidth_limit(hub_factory: Any, tmp_path: Path) -> None:
    hub = hub_factory(ORBIT_BWLIMIT="16M").start()
    src = tmp_path / "src"
    for i in range(3):
        write(src / f"f{i}", os.urandom(16 << 20))
    with hub.client(hub.admin_token()) as c:
        job = c.post("/api/jobs", json=_job(src, tmp_path / "dst", "bw", mode="sync")).json()
        t0 = time.monotonic()
        assert _run(hub, c, job["id"])["state"] == "completed"
        took = time.monotonic() - t0
    assert took >= 2.4, f"48 MiB at 16 MiB/s took {took:.1f} s"


def test_only_an_admin_makes_or_changes_a_job_that_trusts_remote_metadata(
        hub: HubProcess, admin: httpx.Client, tmp_path: Path) -> None:  # fmt: skip
    """trust_remote_metadata makes whoever writes the bucket as strong as the hub's user: an
    operator can neither turn it on nor re-point a job that has it."""
    admin.post("/api/users", json={"username": "op", "password": "op-password-12",
                                   "role": "operator"})  # fmt: skip
    with hub.client(hub.login("op", "op-password-12")) as op:
        _trust_is_admin_only(admin, op, tmp_path)


def _trust_is_admin_only(admin: httpx.Client, op: httpx.Client, tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    body = _job(src, dst, "t", mode="sync", trust_remote_metadata=True)
    r = op.post("/api/jobs", json=body)
    assert r.status_code == 403 and "trust_remote_metadata" in r.text, r.text
    job = admin.post("/api/jobs", json=body).json()
    assert job["config"]["trust_remote_metadata"] is True
    other = tmp_path / "elsewhere"
    other.mkdir()
    r = op.patch(f"/api/jobs/{job['id']}", json={"source": str(other)})
    assert r.status_code == 403, r.text
    plain = op.post("/api/jobs", json=_job(src, dst, "p", mode="sync")).json()
    r = op.patch(f"/api/jobs/{plain['id']}", json={"config": {"trust_remote_metadata": True}})
    assert r.status_code == 403, r.text
    assert admin.patch(f"/api/jobs/{job['id']}", json={"source": str(other)}).status_code == 200
