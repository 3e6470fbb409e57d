"""The hub behind the deployment guide's nginx (TLS termination, X-Real-IP / X-Forwarded-*):
the API, the dashboard and live progress work through it, and proxied requests never count as
"the hub itself"."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REQUIRE_SERVERS, make_tree, snapshot
from tests.hub.conftest import HubProcess
from tests.hub.test_api import read_sse
from tests.servers import free_port

# The shipped site file (deploy/nginx/orbit.conf, the guide's server block adapted), as it is,
# with only its ports, certificate paths and the hub's port made this test's, inside a main
# configuration that keeps nginx's files in the test's directory.
SITE = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "orbit.conf"
MAIN_CONF = """
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    include {d}/orbit.conf;
}}
"""


def site_for_test(d: Path, port: int, http_port: int, hub_port: int) -> str:
    site = SITE.read_text()
    for old, new in (("listen 443 ssl http2;", f"listen 127.0.0.1:{port} ssl http2;"),
                     ("listen 80;", f"listen 127.0.0.1:{http_port};"),
                     ("/etc/letsencrypt/live/orbit.example.com/fullchain.pem", f"{d}/cert.pem"),
                     ("/etc/letsencrypt/live/orbit.example.com/privkey.pem", f"{d}/key.pem"),
                     ("http://127.0.0.1:3000", f"http://127.0.0.1:{hub_port}")):  # fmt: skip
        assert old in site, f"deploy/nginx/orbit.conf lost {old!r}"
        site = site.replace(old, new)
    return site


@pytest.fixture
def nginx(hub: HubProcess, tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        if REQUIRE_SERVERS:
            pytest.fail("nginx is not installed (tools/test installs nginx-light as root)")
        pytest.skip("apt-get install nginx-light")
    d = tmp_path / "nginx"
    d.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=orbit.example.com", "-keyout", str(d / "key.pem"),
                    "-out", str(d / "cert.pem")], check=True, capture_output=True)
    port = free_port()
    conf = d / "nginx.conf"
    (d / "orbit.conf").write_text(site_for_test(d, port, free_port(), hub.port))
    conf.write_text(MAIN_CONF.format(d=d))
    proc = subprocess.Popen([binary, "-c", str(conf), "-p", str(d)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"https://127.0.0.1:{port}"
    for _ in range(100):
        try:
            httpx.get(url + "/api/health", verify=False)
            break
        except httpx.TransportError:
            assert proc.poll() is None, (d / "error.log").read_text()
            time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(10)


def test_the_hub_behind_the_guides_nginx(hub: HubProcess, nginx: str, tmp_path: Path,
                                         rng: Any) -> None:
    web = httpx.Client(base_url=nginx, verify=False, timeout=30)
    r = web.get("/api/health")
    assert r.status_code == 200 and r.json()["status"] == "healthy"
    assert "<title>orbit-fast hub</title>" in web.get("/").text
    # Through the proxy nobody is "the hub itself": no open first registration, no
    # token-less list_jobs.
    body = {"username": "admin", "password": "SecurePassword123!", "role": "admin"}
    r = web.post("/api/auth/register", json=body)
    assert r.status_code == 403 and r.json()["error"]["code"] == "bootstrap_required"
    assert web.get("/api/list_jobs").status_code == 401
    token = (hub.data / "bootstrap-token").read_text().strip()
    r = web.post("/api/auth/register", json={**body, "bootstrap_token": token})
    assert r.status_code == 201
    r = web.post("/api/auth/login", json={"username": "admin", "password": body["password"]})
    assert r.status_code == 200
    session_cookie = next(h for h in r.headers.get_list("set-cookie")
                          if h.startswith("orbit_session="))
    assert "Secure" in session_cookie and "HttpOnly" in session_cookie  # TLS at nginx
    api_token = r.json()["token"]
    # A job created and followed live through nginx: SSE is not buffered.
    src = make_tree(tmp_path / "src", rng, files=20)
    web.headers["Authorization"] = f"Bearer {api_token}"
    job = web.post("/api/jobs", json={"name": "via nginx", "source": str(src),
                                      "destination": str(tmp_path / "dst")}).json()
    assert web.post(f"/api/jobs/{job['id']}/run").status_code == 202

    events = read_sse(nginx, api_token, f"/api/jobs/{job['id']}/events", '"finished"',
                      last_id="0", verify=False)
    assert events[-1][2]["state"] == "completed"
    assert snapshot(src) == snapshot(tmp_path / "dst")
    web.close()
