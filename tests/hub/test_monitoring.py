"""Monitoring as the guide asks for it: /metrics passes `promtool check metrics`, the shipped
alerts pass `promtool check rules` and their unit tests (`promtool test rules`), the hub's
starts and its API's answer times are there, and a job that stops moving is marked stalled."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REQUIRE_SERVERS, write
from tests.hub.conftest import HubProcess
from tests.servers import TcpProxy

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def _promtool() -> str:
    found = shutil.which("promtool")
    if not found:
        if REQUIRE_SERVERS:
            pytest.fail("promtool is not installed (tools/test installs Debian's prometheus)")
        pytest.skip("apt-get install prometheus (for promtool)")
    return found


def _samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_the_shipped_alerts_load_and_fire_as_tested() -> None:
    promtool = _promtool()
    r = subprocess.run([promtool, "check", "rules", str(RULES / "alerts.yml")],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0 and "SUCCESS: 5 rules found" in r.stdout, r.stdout + r.stderr
    r = subprocess.run([promtool, "test", "rules", "alerts_test.yml"], cwd=RULES,
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


def test_metrics_pass_promtool_and_count_starts_and_answers(hub: HubProcess,
                                                           admin: httpx.Client) -> None:
    promtool = _promtool()
    for _ in range(3):
        assert admin.get("/api/jobs").status_code == 200
    text = admin.get("/metrics").text
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                       text=True)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    s = _samples(text)
    assert s['orbit_fast_http_request_duration_seconds_count{method="GET",route="/api/jobs"}'] >= 3
    assert s["orbit_fast_hub_starts_total"] == 1
    assert s["orbit_fast_hub_start_time_seconds"] > time.time() - 600
    size, free = (s[f'orbit_fast_disk_{k}_bytes{{dir="data"}}'] for k in ("size", "free"))
    assert size > free > 0
    assert not any("route=\"/api/jobs/1" in k for k in s), "raw paths as labels"
    hub.stop()
    hub.start()
    with hub.client(hub.login("admin", "SecurePassword123!")) as c:
        assert _samples(c.get("/metrics").text)["orbit_fast_hub_starts_total"] == 2


def test_a_job_that_stops_moving_is_marked_stalled(hub_factory: Any, moto: Any, s3_bucket: str,
                                                   tmp_path: Path) -> None:  # fmt: skip
    proxy = TcpProxy(moto.port)
    try:
        hub = hub_factory(**{**moto.env(), "ORBIT_S3_ENDPOINT": f"http://127.0.0.1:{proxy.port}",
                             "ORBIT_STALL_S": "3"}).start()
        src = tmp_path / "src"
        for i in range(40):
            write(src / f"f{i}", b"x" * 300_000)
        with hub.client(hub.admin_token()) as c:
            job = c.post("/api/jobs", json={"name": "to-s3", "source": str(src),
                                            "destination": f"s3://{s3_bucket}/copy",
                                            "config": {"bwlimit": "2M", "concurrency": 1}}
                         ).json()  # fmt: skip
            c.post(f"/api/jobs/{job['id']}/run")
            deadline = time.monotonic() + 60
            while (c.get(f"/api/jobs/{job['id']}").json().get("progress") or {}).get(
                    "files_done", 0) < 2:  # fmt: skip
                assert time.monotonic() < deadline
                time.sleep(0.2)
            proxy.pause()  # the server hangs: no error, no progress
            while not (got := c.get(f"/api/jobs/{job['id']}").json())["progress"].get("stalled"):
                assert time.monotonic() < deadline, got
                time.sleep(0.3)
            assert got["state"] == "running"
            assert got["progress"]["stalled"].startswith("no progress for ")
            assert _samples(c.get("/metrics").text)["orbit_fast_stalled_jobs"] == 1
            proxy.resume()
            done = hub.wait_state(c, job["id"], ("completed", "failed"), timeout=120)
            assert done["state"] == "completed"
            assert _samples(c.get("/metrics").text)["orbit_fast_stalled_jobs"] == 0
    finally:
        proxy.pause()
