"""A job's progress over its pass (hub/passes.py): through a pause and resume and a kill -9 of
the hub, what the API and the event stream show never goes back, and a completed pass shows
exactly its totals; a pass with nothing to do says so; a finished job keeps its average rate."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import write
from tests.hub.conftest import HubProcess
from tests.hub.test_api import read_sse

MIB = 1 << 20
FILES = 12


def _poll(c: httpx.Client, job_id: int, seen: list[dict[str, Any]], stop: threading.Event
          ) -> None:  # fmt: skip
    while not stop.is_set():
        try:
            job = c.get(f"/api/jobs/{job_id}").json()
        except httpx.HTTPError:  # the hub is down for a moment
            time.sleep(0.2)
            continue
        if job.get("progress"):
            seen.append({**job["progress"], "state": job["state"]})
        time.sleep(0.15)


def _monotonic(seen: list[dict[str, Any]]) -> None:
    for k in ("files_done", "bytes_done", "files_total", "bytes_total"):
        values = [s[k] for s in seen if k in s]
        assert values == sorted(values), f"{k} went back: {values}"
    for s in seen:
        assert s["bytes_done"] <= s["bytes_total"] and s["files_done"] <= s["files_total"]


def test_progress_is_true_through_pause_resume_and_a_hub_crash(hub: HubProcess,
                                                                tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i in range(FILES):
        write(src / f"f{i:02}", os.urandom(4 * MIB))
    token = hub.admin_token()
    c = hub.client(token)
    job = c.post("/api/jobs", json={"name": "p", "source": str(src),
                                    "destination": str(tmp_path / "dst"),
                                    "config": {"bwlimit": "8M", "concurrency": 2,
                                               "chunk_size_mb": 1}}).json()  # fmt: skip
    jid = job["id"]
    sse: list[tuple[str, str, dict[str, Any]]] = []

    def listen() -> None:
        try:
            sse.extend(read_sse(hub.url, token, f"/api/jobs/{jid}/events", '"paused"',
                                timeout=60))  # fmt: skip
        except AssertionError:
            pass

    listener = threading.Thread(target=listen)
    listener.start()
    seen: list[dict[str, Any]] = []
    stop = threading.Event()
    poller = threading.Thread(target=_poll, args=(c, jid, seen, stop))
    poller.start()
    try:
        c.post(f"/api/jobs/{jid}/run")
        while not seen or seen[-1]["bytes_done"] < 14 * MIB:
            time.sleep(0.1)
        assert c.post(f"/api/jobs/{jid}/pause").status_code == 202
        hub.wait_state(c, jid, ("paused",))
        listener.join(30)
        paused_at = c.get(f"/api/jobs/{jid}").json()["progress"]
        time.sleep(1)
        assert c.get(f"/api/jobs/{jid}").json()["progress"]["bytes_done"] == paused_at["bytes_done"]
        assert c.post(f"/api/jobs/{jid}/resume").status_code == 202
        while seen[-1]["bytes_done"] < 30 * MIB or seen[-1]["state"] != "running":
            time.sleep(0.1)
        before_kill = seen[-1]
        hub.kill9()
        stop.set()  # the poller's client goes with this hub process
        poller.join()
        hub.start()
        c.close()
        c = hub.client(hub.login("admin", "SecurePassword123!"))
        stop.clear()
        poller = threading.Thread(target=_poll, args=(c, jid, seen, stop))
        poller.start()
        done = hub.wait_state(c, jid, ("completed",), timeout=120)
    finally:
        stop.set()
        poller.join()
    final = done["progress"]
    assert final["files_done"] == final["files_total"] == FILES
    assert final["bytes_done"] == final["bytes_total"] == FILES * 4 * MIB
    assert final["percent"] == 100.0 and final["rate_bps"] > 0
    assert before_kill["bytes_done"] >= 30 * MIB
    _monotonic([s for s in seen if s["state"] != "created"] + [final])
    # The event stream showed the same numbers, never going back, up to the pause.
    progress = [d for _, kind, d in sse if kind == "progress"]
    assert progress, sse
    _monotonic(progress)
    runs = c.get(f"/api/jobs/{jid}/runs").json()["runs"]
    assert [r["trigger"] for r in reversed(runs)] == ["manual", "resume", "recovery"]
    c.close()


def test_a_pass_with_nothing_to_do_says_so(hub: HubProcess, tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i in range(5):
        write(src / f"f{i}", b"x" * 1000)
    with hub.client(hub.admin_token()) as c:
        job = c.post("/api/jobs", json={"name": "n", "source": str(src),
                                        "destination": str(tmp_path / "dst")}).json()
        for _ in range(2):
            c.post(f"/api/jobs/{job['id']}/run")
            got = hub.wait_state(c, job["id"], ("completed",))
        p = got["progress"]
        assert p["note"] == "nothing to do, 5 files unchanged"
        assert p["files_total"] == 0 and p["percent"] == 100.0
