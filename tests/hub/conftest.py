"""A real orbit-server on 127.0.0.1 (a subprocess, as systemd runs it) and an HTTP client."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REQUIRE_SERVERS
from tests.servers import free_port

ADMIN = ("admin", "SecurePassword123!")  # the guide's register call
SERVER = [sys.executable, "-c", "from orbit_fast.cli.hub_cmd import server_main; server_main()"]


def new_secret() -> str:
    return base64.b64encode(os.urandom(32)).decode()  # what `openssl rand -base64 32` prints


class HubProcess:
    """orbit-server with its own data directory; restartable on the same state."""

    def __init__(self, root: Path, **env: str) -> None:
        self.root = root
        self.data = root / "var-lib-orbit"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "ORBIT_HOST": "127.0.0.1",
            "ORBIT_PORT": str(self.port),
            "DATABASE_URL": f"sqlite:///{self.data}/jobs.db",
            "UNIVERSE_PATH": f"{self.data}/universe_v3.db",
            "ORBIT_AUTH_SECRET": new_secret(),
            "ORBIT_RETRY_BASE_S": "0.5",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / "hub.log"
        self.command = SERVER

    def start(self, wait: bool = True) -> HubProcess:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.command, env=self.env, stdout=log, stderr=log)
        if wait:
            self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"orbit-server exited {self.proc.returncode}:\n"
                                     f"{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/api/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"orbit-server not healthy in {timeout} s:\n{self.log.read_text()}")

    def first_health(self, timeout: float = 30.0) -> httpx.Response:
        """The first /api/health answer, whatever its status (start(wait=False) before)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return httpx.get(self.url + "/api/health")
            except httpx.TransportError:
                assert time.monotonic() < deadline, self.log.read_text()[-3000:]
                time.sleep(0.1)

    @contextmanager
    def failing_disk(self) -> Iterator[None]:
        """The jobs DB's write-ahead log made immutable (chattr +i: even root cannot write
        it), standing in for a full or failing data disk, until the block ends."""
        wal = self.data / "jobs.db-wal"
        if shutil.which("chattr") is None or subprocess.run(
                ["chattr", "+i", str(wal)], capture_output=True).returncode != 0:
            if REQUIRE_SERVERS:
                pytest.fail("chattr +i failed: CI needs root on a file system with attributes")
            pytest.skip("chattr +i is not supported here")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(wal)], check=True)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def client(self, token: str = "", **kw: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kw)

    def login(self, username: str, password: str) -> str:
        r = httpx.post(self.url + "/api/auth/login",
                       json={"username": username, "password": password})
        assert r.status_code == 200, r.text
        return str(r.json()["token"])

    def admin_token(self) -> str:
        with self.client() as c:
            r = c.post("/api/auth/register",
                       json={"username": ADMIN[0], "password": ADMIN[1], "role": "admin"})
            assert r.status_code in (201, 401, 403), r.text
        return self.login(*ADMIN)

    def wait_state(self, c: httpx.Client, job_id: int, states: tuple[str, ...],
                   timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        job: dict[str, Any] = {}
        while time.monotonic() < deadline:
            job = c.get(f"/api/jobs/{job_id}").json()
            if job.get("state") in states:
                return job
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} not in {states} after {timeout} s: {job}\n"
                             f"{self.log.read_text()[-3000:]}")


@pytest.fixture
def hub_factory(tmp_path: Path) -> Iterator[Any]:
    hubs: list[HubProcess] = []

    def make(**env: str) -> HubProcess:
        h = HubProcess(tmp_path, **env)
        hubs.append(h)
        return h

    yield make
    for h in hubs:
        h.stop()


@pytest.fixture
def hub(hub_factory: Any) -> HubProcess:
    return hub_factory().start()


@pytest.fixture
def admin(hub: HubProcess) -> Iterator[httpx.Client]:
    with hub.client(hub.admin_token()) as c:
        yield c
