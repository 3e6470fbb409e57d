"""The files in deploy/ as an operator installs them: the systemd units pass `systemd-analyze
verify` and the timer's trigger script runs a job on a live hub to its end; every query of the
Grafana dashboard is valid PromQL (promtool) over metrics the hub exports. (deploy/nginx is
used by tests/hub/test_nginx.py, deploy/prometheus by tests/hub/test_monitoring.py.)"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import REQUIRE_SERVERS, write
from tests.hub.conftest import HubProcess
from tests.hub.test_monitoring import _promtool

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_the_systemd_units_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        if REQUIRE_SERVERS:
            pytest.fail("systemd-analyze is missing (Debian's systemd package)")
        pytest.skip("needs systemd-analyze")
    server = Path(sys.executable).with_name("orbit-server")
    for name in ("orbit.service", "orbit-nightly-backup.service", "orbit-nightly-backup.timer"):
        text = (DEPLOY / "systemd" / name).read_text()
        # Only the paths this machine has differ: the programs, and no orbit user.
        text = text.replace("/usr/local/bin/orbit-server", str(server))
        text = text.replace("/usr/local/bin/orbit-job-trigger.sh",
                            str(DEPLOY / "systemd" / "orbit-job-trigger.sh"))
        text = re.sub(r"^(User|Group)=orbit$", r"\1=root", text, flags=re.M)
        text = text.replace("EnvironmentFile=/etc/orbit/orbit.env",
                            f"EnvironmentFile=-{tmp_path}/orbit.env")
        (tmp_path / name).write_text(text)
    r = subprocess.run([analyze, "verify", "--man=no", *(str(tmp_path / n) for n in (
        "orbit.service", "orbit-nightly-backup.service", "orbit-nightly-backup.timer"))],
        capture_output=True, text=True, timeout=60)  # fmt: skip
    problems = [line for line in (r.stdout + r.stderr).splitlines()
                if "orbit" in line and "Failed to" not in line.split(":", 1)[0]]
    assert r.returncode == 0, r.stdout + r.stderr
    assert problems == [], problems


def test_the_timers_trigger_script_runs_a_job_to_its_end(hub: HubProcess,
                                                         tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src / "a", b"a" * 1000)
    with hub.client(hub.admin_token()) as c:
        token = c.post("/api/auth/tokens", json={"name": "timer"}).json()["token"]
        c.post("/api/jobs", json={"name": "Nightly SMB to S3 Backup", "source": str(src),
                                  "destination": str(tmp_path / "dst")})  # fmt: skip
    (tmp_path / "token").write_text(token + "\n")
    env = {**os.environ, "ORBIT_HUB_URL": hub.url, "ORBIT_TOKEN_FILE": str(tmp_path / "token"),
           "ORBIT_JOB": "Nightly SMB to S3 Backup",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}  # fmt: skip
    env.pop("ORBIT_TOKEN", None)
    r = subprocess.run([str(DEPLOY / "systemd" / "orbit-job-trigger.sh")], env=env,
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip().endswith("(Nightly SMB to S3 Backup): completed")
    assert (tmp_path / "dst" / "a").read_bytes() == b"a" * 1000
    r = subprocess.run([str(DEPLOY / "systemd" / "orbit-job-trigger.sh")],
                       env={**env, "ORBIT_JOB": "no such job"}, capture_output=True, text=True,
                       timeout=60)  # fmt: skip
    assert r.returncode == 16 and "no job named" in r.stderr


def test_the_grafana_dashboard_asks_only_for_what_the_hub_exports(
        hub: HubProcess, admin: httpx.Client, tmp_path: Path) -> None:
    promtool = _promtool()
    dash = json.loads((DEPLOY / "grafana" / "orbit-fast.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(exprs) >= 10
    # Valid PromQL: each query as a recording rule that promtool checks.
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"orbit_fast:panel{i}", "expr": e.replace("$instance", ".*")}
        for i, e in enumerate(exprs)]}]}  # fmt: skip
    (tmp_path / "panels.yml").write_text(json.dumps(rules))
    r = subprocess.run([promtool, "check", "rules", str(tmp_path / "panels.yml")],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    exported = set()
    for line in admin.get("/metrics").text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            exported.add(name)
            if kind == "histogram":
                exported |= {name + "_bucket", name + "_sum", name + "_count"}
    asked = {m for e in exprs for m in re.findall(r"\borbit_fast_[a-z_]+", e)}
    asked.add(re.findall(r"orbit_fast_[a-z_]+", dash["templating"]["list"][1]["query"])[0])
    assert asked <= exported, asked - exported
