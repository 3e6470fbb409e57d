"""ORBIT_ALLOWED_ROOTS and the hub's own state, held at run time (issue #15): a link swapped
in after a job was made, a chain of jobs that plants one, roots narrowed since, and
destinations that overlap each other or the hub's state."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import write
from tests.hub.conftest import HubProcess

END = ("completed", "partial", "failed", "cancelled")


def _make(c: httpx.Client, name: str, src: Path | str, dst: Path | str,
          mode: str = "sync") -> int:  # fmt: skip
    r = c.post("/api/jobs", json={"name": name, "mode": mode, "source": str(src),
                                  "destination": str(dst)})  # fmt: skip
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def _run(hub: HubProcess, c: httpx.Client, job_id: int) -> dict[str, Any]:
    assert c.post(f"/api/jobs/{job_id}/run").status_code == 202
    return hub.wait_state(c, job_id, END, timeout=120)


def _tree_state(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Everything under `root`: (mode, mtime_ns, content) per entry."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(root))] = (st.st_mode, st.st_mtime_ns,
                                         p.read_bytes() if p.is_file() else b"")  # fmt: skip
    return out


def _swap_for_link(path: Path, target: Path) -> None:
    """What a user who owns the tree does after the job was made: the directory becomes a
    symlink to somewhere else."""
    shutil.rmtree(path)
    path.symlink_to(target)


def _refused(job: dict[str, Any]) -> None:
    assert job["state"] == "failed", job
    assert "outside the allowed roots" in job["last_error"], job


def test_links_swapped_in_after_creation_fail_the_run(hub_factory: Any, tmp_path: Path) -> None:
    """The five swaps of the issue: source, destination, mirror destination, a parent of the
    source, a backup source; each run fails before touching anything."""
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    write(outside / "secret.txt", b"root only", mode=0o600)
    write(outside / "victim" / "keep.txt", b"do not delete")
    write(outside / "parent" / "src" / "secret2.txt", b"also secret")
    for d in ("src", "dst", "mdst", "p/src", "bsrc"):
        write(allowed / d / "f.txt", b"ordinary")
    hub = hub_factory(ORBIT_ALLOWED_ROOTS=str(allowed)).start()
    with hub.client(hub.admin_token()) as c:
        jobs = {
            "source": _make(c, "s", allowed / "src", allowed / "out1"),
            "destination": _make(c, "d", allowed / "src2-dummy", allowed / "dst"),
            "mirror": _make(c, "m", allowed / "mirror-src", allowed / "mdst", mode="mirror"),
            "parent": _make(c, "p", allowed / "p" / "src", allowed / "out2"),
            "backup": _make(c, "b", allowed / "bsrc", allowed / "repo", mode="backup"),
        }
        write(allowed / "src2-dummy" / "new.txt", b"new")
        write(allowed / "mirror-src" / "other.txt", b"other")
        before = _tree_state(outside)
        _swap_for_link(allowed / "src", outside)
        _swap_for_link(allowed / "dst", outside / "victim")
        _swap_for_link(allowed / "mdst", outside / "victim")
        _swap_for_link(allowed / "p", outside / "parent")
        _swap_for_link(allowed / "bsrc", outside)
        for job_id in jobs.values():
            _refused(_run(hub, c, job_id))
    assert _tree_state(outside) == before  # nothing written, nothing deleted
    assert not (allowed / "out1").exists() and not (allowed / "out2").exists()
    assert not (allowed / "repo").exists()


def test_a_job_cannot_plant_a_link_for_the_next(hub_factory: Any, tmp_path: Path) -> None:
    """The API-only chain: job A copies an outward link into a staging dir; job B, made while
    the staging dir did not exist, would read through it."""
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    write(outside / "secret.txt", b"root only", mode=0o600)
    write(allowed / "tree" / "f.txt", b"ordinary")
    (allowed / "tree" / "out").symlink_to(outside)
    hub = hub_factory(ORBIT_ALLOWED_ROOTS=str(allowed)).start()
    with hub.client(hub.admin_token()) as c:
        a = _make(c, "a", allowed / "tree", allowed / "staging")
        b = _make(c, "b", allowed / "staging" / "out", allowed / "loot")
        assert _run(hub, c, a)["state"] == "completed"
        assert (allowed / "staging" / "out").is_symlink()  # sync copies links as links
        _refused(_run(hub, c, b))
    assert not (allowed / "loot").exists()


def test_narrowed_roots_hold_for_old_jobs(hub_factory: Any, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write(b / "src" / "f.txt", b"data")
    hub = hub_factory(ORBIT_ALLOWED_ROOTS=f"{a},{b}").start()
    with hub.client(hub.admin_token()) as c:
        job_id = _make(c, "old", b / "src", b / "dst")
    hub.stop()
    hub.env["ORBIT_ALLOWED_ROOTS"] = str(a)  # the admin narrows the roots and restarts
    hub.start()
    with hub.client(hub.login("admin", "SecurePassword123!")) as c:
        _refused(_run(hub, c, job_id))
    assert not (b / "dst").exists()


def test_overlapping_destinations_run_one_after_the_other(hub_factory: Any,
                                                         tmp_path: Path) -> None:  # fmt: skip
    """X and X/inner (and X spelled with a doubled slash) never run at once: the later one
    starts only after the earlier one finished (the hub's run records say so)."""
    src = tmp_path / "src"
    for i in range(4):
        write(src / f"big{i}.bin", os.urandom(16 << 20))
    write(tmp_path / "small" / "s.txt", b"small")
    x = tmp_path / "x"
    hub = hub_factory(ORBIT_MAX_JOBS="3").start()
    with hub.client(hub.admin_token()) as c:
        first = _make(c, "outer", src, x)
        inner = _make(c, "inner", tmp_path / "small", x / "inner")
        same = _make(c, "same", tmp_path / "small", f"{tmp_path}//x")
        for j in (first, inner, same):
            assert c.post(f"/api/jobs/{j}/run").status_code == 202
        for j in (first, inner, same):
            assert hub.wait_state(c, j, END, timeout=180)["state"] == "completed"
        runs = {j: c.get(f"/api/jobs/{j}/runs").json()["runs"][0] for j in (first, inner, same)}
    spans = sorted((r["started_at"], r["finished_at"]) for r in runs.values())
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start >= end, spans  # no two of them overlapped in time


def test_the_hubs_state_is_never_an_end(hub_factory: Any, tmp_path: Path) -> None:
    """With or without roots: not the state directory, the universe's, the state backups or
    the env file, nor anything inside them, nor anything that contains them ("/" included)."""
    env_file = tmp_path / "etc" / "orbit.env"
    write(env_file, b"ORBIT_LOG=info\n", mode=0o600)
    backups = tmp_path / "backups"
    universe_dir = tmp_path / "uni"
    universe_dir.mkdir()
    write(tmp_path / "src" / "f.txt", b"data")
    hub = hub_factory(ORBIT_ENV_FILE=str(env_file), ORBIT_STATE_BACKUP_DIR=str(backups),
                      UNIVERSE_PATH=str(universe_dir / "universe_v3.db")).start()  # fmt: skip
    bad = ["/", str(tmp_path), str(hub.data), str(hub.data / "sub"), str(universe_dir),
           str(backups), str(backups / "x"), str(env_file.parent), str(env_file),
           f"{hub.data}/./"]  # fmt: skip
    (tmp_path / "link-to-state").symlink_to(hub.data)
    bad.append(str(tmp_path / "link-to-state"))
    with hub.client(hub.admin_token()) as c:
        held = {d: sorted(os.listdir(d)) for d in (hub.data, universe_dir, env_file.parent)}
        for mode in ("sync", "mirror", "backup"):
            for dst in bad:
                r = c.post("/api/jobs", json={"name": f"bad-{mode}", "mode": mode,
                                              "source": str(tmp_path / "src"),
                                              "destination": dst})  # fmt: skip
                assert r.status_code == 400, (mode, dst, r.text)
        for src in ("/", str(hub.data), str(env_file.parent)):
            r = c.post("/api/jobs", json={"name": "bad-src", "source": src,
                                          "destination": str(tmp_path / "out")})  # fmt: skip
            assert r.status_code == 400, (src, r.text)
        # At run time too: a destination that became a link into the state directory.
        job_id = _make(c, "later", tmp_path / "src", tmp_path / "dst", mode="mirror")
        (tmp_path / "dst").symlink_to(hub.data)
        job = _run(hub, c, job_id)
        assert job["state"] == "failed" and "hub's own state" in job["last_error"], job
        assert c.get("/api/health").json()["status"] == "healthy"
    assert {d: sorted(os.listdir(d)) for d in held} == held  # nothing deleted there


def test_encoded_dot_dot_in_an_smb_job(hub_factory: Any, tmp_path: Path, samba: Any,
                                       smb_dir: str) -> None:  # fmt: skip
    """The check at creation reads the URL as the backend will: %2e%2e and %2F are refused,
    whatever the roots say; the same place spelled in other case is accepted."""
    write(tmp_path / "src" / "f.txt", b"planted")
    write(samba.share_dir / smb_dir / "victim" / "keep.txt", b"do not touch")
    root = samba.url(f"{smb_dir}/allowed")
    hub = hub_factory(ORBIT_ALLOWED_ROOTS=f"{root},{tmp_path / 'src'}").start()
    with hub.client(hub.admin_token()) as c:
        for spelling in ("allowed/%2e%2e/victim", "allowed%2F..%2Fvictim"):
            r = c.post("/api/jobs", json={"name": "x", "mode": "mirror",
                                          "source": str(tmp_path / "src"),
                                          "destination": samba.url(f"{smb_dir}/{spelling}")})
            assert r.status_code == 400, r.text
        job_id = _make(c, "ok", tmp_path / "src",
                       samba.url(f"{smb_dir}//allowed/sub").replace("/share/", "/SHARE/"))
        assert _run(hub, c, job_id)["state"] == "completed"
    assert (samba.share_dir / smb_dir / "allowed" / "sub" / "f.txt").read_bytes() == b"planted"
    assert (samba.share_dir / smb_dir / "victim" / "keep.txt").exists()
