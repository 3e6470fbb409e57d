"""The dashboard in headless system Chromium (RECIPES.md section 5): log in, create a job in the
form, run it, watch it reach 100%; a viewer sees no Run button and the API refuses them."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REQUIRE_SERVERS, make_tree, sealed_lock, snapshot
from tests.hub.conftest import ADMIN, HubProcess

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        if REQUIRE_SERVERS:
            pytest.fail("chromium is not installed (tools/test installs it as root)")
        pytest.skip("chromium is not installed: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


def test_admin_creates_runs_and_watches_a_job(browser: Any, hub: HubProcess, tmp_path: Path,
                                              rng: Any) -> None:
    from playwright.sync_api import expect

    hub.admin_token()
    src = make_tree(tmp_path / "src", rng, files=30, max_size=200_000)
    dst = tmp_path / "dst"
    page = browser.new_context().new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(hub.url + "/")
    page.fill("#username", ADMIN[0])
    page.fill("#password", "wrong password!")
    page.click("#login-btn")
    expect(page.locator("#login-error")).to_contain_text("wrong user name or password")
    page.fill("#password", ADMIN[1])
    page.click("#login-btn")
    expect(page.locator("#whoami")).to_have_text("admin (admin)")

    page.click("#tab-create")
    # The guide's recommended values are the hints.
    expect(page.locator("#f-concurrency")).to_have_attribute("placeholder", "4-8 for SMB (guide)")
    page.fill("#f-name", "Nightly copy")
    page.fill("#f-source", str(src))
    page.fill("#f-destination", str(dst))
    page.fill("#f-concurrency", "4")
    page.fill("#f-chunk", "2")
    page.click("#create-btn")  # "Launch Orbit Job"

    row = page.locator("#jobs-table tbody tr", has_text="Nightly copy")
    expect(row).to_have_count(1)
    expect(row.locator(".state")).to_have_text("created")
    row.locator(".run-btn").click()
    expect(row.locator(".pct")).to_have_text("100.0%", timeout=60_000)
    expect(row.locator(".state")).to_have_text("completed")
    assert snapshot(src) == snapshot(dst)

    row.locator(".job-link").click()
    expect(page.locator("#d-name")).to_have_text("Nightly copy")
    expect(page.locator("#runs-table tbody tr")).to_have_count(1)
    expect(page.locator("#runs-table tbody tr .state")).to_have_text("completed")
    assert errors == []


def test_a_viewer_gets_no_run_button_and_the_api_refuses(browser: Any, hub: HubProcess,
                                                         tmp_path: Path) -> None:
    from playwright.sync_api import expect

    with hub.client(hub.admin_token()) as c:
        c.post("/api/users", json={"username": "watcher", "password": "just-looking-123",
                                   "role": "viewer"})
        (tmp_path / "src").mkdir()
        job = c.post("/api/jobs", json={"name": "guarded", "source": str(tmp_path / "src"),
                                        "destination": str(tmp_path / "dst")}).json()
    ctx = browser.new_context()
    page = ctx.new_page()
    page.goto(hub.url + "/")
    page.fill("#username", "watcher")
    page.fill("#password", "just-looking-123")
    page.click("#login-btn")
    expect(page.locator("#whoami")).to_have_text("watcher (viewer)")
    row = page.locator("#jobs-table tbody tr", has_text="guarded")
    expect(row).to_have_count(1)
    expect(row.locator("button")).to_have_count(0)
    expect(page.locator("#tab-create")).to_be_hidden()
    expect(page.locator("#tab-users")).to_be_hidden()
    # The same session, straight at the API (with its CSRF value): refused.
    csrf = next(ck["value"] for ck in ctx.cookies() if ck["name"] == "orbit_csrf")
    session = next(ck["value"] for ck in ctx.cookies() if ck["name"] == "orbit_session")
    r = httpx.post(f"{hub.url}/api/jobs/{job['id']}/run", cookies={"orbit_session": session},
                   headers={"X-CSRF-Token": csrf})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    status = page.evaluate(
        """async (id) => (await fetch(`/api/jobs/${id}/run`, {method: "POST",
            headers: {"X-CSRF-Token": document.cookie.match(/orbit_csrf=([^;]*)/)[1]}})).status""",
        job["id"])
    assert status == 403


def test_a_retrying_job_says_when_and_which_attempt(browser: Any, hub_factory: Any,
                                                    tmp_path: Path, rng: Any) -> None:
    """A repository locked by another live process is a transient error: the job waits with
    backoff, the dashboard says so, and it completes once the lock is gone."""
    import socket
    import subprocess
    import sys

    from playwright.sync_api import expect

    from orbit_fast.repo.repository import _start_time

    repo = tmp_path / "repo"
    subprocess.run([sys.executable, "-m", "orbit_fast", "init", str(repo)], check=True,
                   capture_output=True)
    lock = repo / "locks" / "exclusive"
    lock.parent.mkdir(exist_ok=True)
    lock.write_bytes(sealed_lock(repo, {"host": socket.gethostname(), "pid": os.getpid(),
                                        "start": _start_time(os.getpid()),
                                        "operation": "prune", "time_ns": 0}))
    hub = hub_factory(ORBIT_RETRY_BASE_S="4").start()
    src = make_tree(tmp_path / "src", rng, files=10)
    with hub.client(hub.admin_token()) as c:
        job = c.post("/api/jobs", json={"name": "locked backup", "source": str(src),
                                        "destination": str(repo), "mode": "backup",
                                        "config": {"retry_attempts": 3}}).json()
        c.post(f"/api/jobs/{job['id']}/run")
    page = browser.new_context().new_page()
    page.goto(hub.url + "/")
    page.fill("#username", ADMIN[0])
    page.fill("#password", ADMIN[1])
    page.click("#login-btn")
    row = page.locator("#jobs-table tbody tr", has_text="locked backup")
    expect(row.locator(".state")).to_have_text(
        re.compile(r"retrying in \d+ s \(attempt 1 of 3\)"), timeout=30_000)
    expect(row.locator(".error")).to_contain_text("is locked by prune")
    lock.unlink()  # the other process is done
    expect(row.locator(".state")).to_have_text("completed", timeout=60_000)


def test_a_backup_made_from_the_form_with_a_password_file_says_it_is_encrypted(
    browser: Any, hub: HubProcess, tmp_path: Path, rng: Any
) -> None:
    from playwright.sync_api import expect

    token = hub.admin_token()
    src = make_tree(tmp_path / "src", rng, files=5)
    pw = tmp_path / "repo.pass"
    pw.write_text("from the form\n")
    pw.chmod(0o600)
    with hub.client(token) as c:  # and one made unencrypted, through the API
        c.post("/api/jobs", json={"name": "plain", "source": str(src), "mode": "backup",
                                  "destination": str(tmp_path / "plain"),
                                  "config": {"insecure_no_encryption": True}})  # fmt: skip
    page = browser.new_context().new_page()
    page.goto(hub.url + "/")
    page.fill("#username", ADMIN[0])
    page.fill("#password", ADMIN[1])
    page.click("#login-btn")
    expect(page.locator("#whoami")).to_have_text("admin (admin)")
    page.click("#tab-create")
    page.fill("#f-name", "sealed")
    page.fill("#f-source", str(src))
    page.fill("#f-destination", str(tmp_path / "repo"))
    page.select_option("#f-mode", "backup")
    page.fill("#f-password-file", str(pw))
    page.click("#create-btn")
    row = page.locator("#jobs-table tbody tr", has_text="sealed")
    expect(row.locator(".enc")).to_have_text(" · encrypted")
    expect(page.locator("#jobs-table tbody tr", has_text="plain").locator(".enc")).to_have_text(
        " · not encrypted")  # fmt: skip
    row.locator(".run-btn").click()
    expect(row.locator(".state")).to_have_text("completed", timeout=60_000)
    row.locator(".job-link").click()
    expect(page.locator("#d-paths")).to_contain_text("repository encrypted, aes-256-gcm")
    assert "from the form" not in page.content()
