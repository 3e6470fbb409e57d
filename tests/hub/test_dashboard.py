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


SHOTS = Path(os.environ.get("ORBIT_SCREENSHOTS", "/tmp/orbit-screenshots"))


def test_the_operators_views_hold_their_shape(browser: Any, hub: HubProcess,
                                              tmp_path: Path, rng: Any) -> None:
    """Logged out, only the login; a 300-character error stays one line in the table; the
    warnings of a new job are shown; a job is edited and deleted from its page; tiny rates
    read in bytes. Screenshots of each view go to ORBIT_SCREENSHOTS for a person to look at."""
    from playwright.sync_api import expect

    SHOTS.mkdir(parents=True, exist_ok=True)
    token = hub.admin_token()
    src = make_tree(tmp_path / "src", rng, files=5)
    missing = tmp_path / ("not-mounted-" + "x" * 260)
    with hub.client(token) as c:
        broken = c.post("/api/jobs", json={"name": "Nightly SMB to S3 Backup", "source":
                                           str(missing), "destination": str(tmp_path / "d")}
                        ).json()  # fmt: skip
        c.post(f"/api/jobs/{broken['id']}/run")
        hub.wait_state(c, broken["id"], ("failed",))
    page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(hub.url + "/")
    expect(page.locator("#view-login")).to_be_visible()
    for tab in ("#tab-jobs", "#tab-create", "#tab-users"):
        expect(page.locator(tab)).to_be_hidden()
    page.screenshot(path=str(SHOTS / "login.png"))
    page.fill("#username", ADMIN[0])
    page.fill("#password", ADMIN[1])
    page.click("#login-btn")
    row = page.locator("#jobs-table tbody tr", has_text="Nightly SMB to S3 Backup")
    expect(row.locator(".state")).to_have_text("failed")
    name_box = row.locator(".job-link").bounding_box()
    error_box = row.locator(".error").bounding_box()
    assert name_box and error_box
    assert name_box["height"] < 30, "the job's name wraps: the error squeezed the table"
    assert error_box["width"] < 420 and error_box["height"] < 40
    page.screenshot(path=str(SHOTS / "jobs-long-error.png"), full_page=True)
    assert page.evaluate("[fmtBytes(0.3), fmtBytes(300), fmtBytes(1536), fmtBytes(3 * 2**30)]"
                         ) == ["0 B", "300 B", "1.5 KiB", "3.0 GiB"]  # fmt: skip

    # A job made with a setting that does nothing in its mode: the warning is shown.
    page.click("#tab-create")
    page.fill("#f-name", "copy with a warning")
    page.fill("#f-source", str(src))
    page.fill("#f-destination", str(tmp_path / "copy"))
    page.fill("#f-compression", "zstd:3")
    page.fill("#f-exclude", "*.tmp\n/cache/")
    page.screenshot(path=str(SHOTS / "create-form.png"), full_page=True)
    page.click("#create-btn")
    expect(page.locator("#notice")).to_contain_text("config.compression has no effect")
    page.screenshot(path=str(SHOTS / "jobs-notice.png"), full_page=True)
    row = page.locator("#jobs-table tbody tr", has_text="copy with a warning")
    row.locator(".job-link").click()
    expect(page.locator("#d-warnings")).to_contain_text("compression")
    expect(page.locator("#d-error")).to_have_text("")

    # Edit: a schedule and another name; the exclude list stays.
    page.click(".edit-btn")
    expect(page.locator("#form-title")).to_have_text(re.compile(r"Edit job \d+"))
    expect(page.locator("#f-exclude")).to_have_value("*.tmp\n/cache/")
    page.fill("#f-name", "edited copy")
    page.fill("#f-compression", "")
    page.fill("#f-schedule", "0 2 * * *")
    page.click("#create-btn")
    expect(page.locator("#notice")).to_contain_text("Saved job")
    row = page.locator("#jobs-table tbody tr", has_text="edited copy")
    expect(row.locator(".schedule")).to_contain_text("0 2 * * * · next")
    with hub.client(token) as c:
        job = c.get("/api/jobs?name=edited%20copy").json()["jobs"][0]
    assert job["config"] == {"exclude": ["*.tmp", "/cache/"]} and job["warnings"] == []
    row.locator(".job-link").click()
    expect(page.locator("#d-schedule")).to_contain_text("Schedule 0 2 * * *; next run")
    page.screenshot(path=str(SHOTS / "job-detail.png"), full_page=True)
    page.on("dialog", lambda d: d.accept())
    page.click(".delete-btn")
    expect(page.locator("#notice")).to_contain_text("Deleted job")
    expect(page.locator("#jobs-table tbody tr", has_text="edited copy")).to_have_count(0)
    assert errors == []


def test_api_docs_work_offline(browser: Any, hub: HubProcess) -> None:
    """/api/docs renders from the hub's own files: the browser may reach nothing else."""
    from playwright.sync_api import expect

    ctx = browser.new_context()
    outside: list[str] = []

    def only_the_hub(route: Any) -> None:
        if route.request.url.startswith(hub.url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    ctx.route("**/*", only_the_hub)
    page = ctx.new_page()
    page.goto(hub.url + "/api/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("orbit-fast hub")
    expect(page.locator(".opblock-summary-path", has_text="/api/jobs/{job_id}/run").first
           ).to_be_visible()  # fmt: skip
    page.screenshot(path=str(SHOTS / "api-docs.png"))
    assert outside == []


def test_charts_show_the_live_rate_and_the_history(browser: Any, hub: HubProcess,
                                                   tmp_path: Path) -> None:
    """uPlot, served by the hub: the running run's throughput moves, and each finished run is
    a point of the history (bytes and duration)."""
    from playwright.sync_api import expect

    token = hub.admin_token()
    src = tmp_path / "src"
    for i in range(6):
        (src / f"d{i % 2}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 2}" / f"f{i}").write_bytes(os.urandom(4 << 20))
    with hub.client(token) as c:
        c.post("/api/jobs", json={"name": "charted", "source": str(src),
                                  "destination": str(tmp_path / "dst"),
                                  "config": {"bwlimit": "6M", "chunk_size_mb": 1}})
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(hub.url + "/")
    page.fill("#username", ADMIN[0])
    page.fill("#password", ADMIN[1])
    page.click("#login-btn")
    expect(page.locator("#whoami")).to_have_text("admin (admin)")
    page.locator("#jobs-table tbody tr", has_text="charted").locator(".job-link").click()
    expect(page.locator("#d-name")).to_have_text("charted")
    expect(page.locator("#d-rate-empty")).to_be_visible()
    page.locator("#d-actions .run-btn").click()
    expect(page.locator("#d-rate-chart .u-wrap canvas")).to_have_count(1, timeout=20_000)
    expect(page.locator("#d-rate-empty")).to_be_hidden()
    page.screenshot(path=str(SHOTS / "detail-running-chart.png"), full_page=True)
    expect(page.locator("#d-state")).to_have_text("completed", timeout=60_000)
    expect(page.locator("#d-history-chart .u-wrap canvas")).to_have_count(1)
    legend = page.locator("#d-history-chart .u-legend")
    expect(legend).to_contain_text("MiB moved")
    expect(legend).to_contain_text("duration (s)")
    page.screenshot(path=str(SHOTS / "detail-history-chart.png"), full_page=True)
    assert errors == []


def test_browse_a_snapshot_and_restore_one_file(browser: Any, hub: HubProcess,
                                                tmp_path: Path) -> None:
    from playwright.sync_api import expect

    token = hub.admin_token()
    src = tmp_path / "src"
    (src / "projects" / "apollo").mkdir(parents=True)
    (src / "projects" / "apollo" / "plan.txt").write_bytes(b"launch at dawn\n")
    (src / "projects" / "readme.md").write_bytes(b"# projects\n")
    (src / "top.bin").write_bytes(os.urandom(5000))
    pw = tmp_path / "repo.pass"
    pw.write_text("browse me\n")
    pw.chmod(0o600)
    with hub.client(token) as c:
        job = c.post("/api/jobs", json={"name": "nightly backup", "source": str(src),
                                        "destination": str(tmp_path / "repo"), "mode": "backup",
                                        "config": {"password_file": str(pw)}}).json()
        c.post(f"/api/jobs/{job['id']}/run")
        hub.wait_state(c, job["id"], ("completed",))
        c.post("/api/users", json={"username": "looker", "password": "only-looking-123",
                                   "role": "viewer"})  # fmt: skip
    page = browser.new_context(viewport={"width": 1280, "height": 1100}).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(hub.url + "/")
    page.fill("#username", ADMIN[0])
    page.fill("#password", ADMIN[1])
    page.click("#login-btn")
    page.locator("#jobs-table tbody tr", has_text="nightly backup").locator(".job-link").click()
    expect(page.locator("#snaps-table tbody tr")).to_have_count(1)
    page.locator("#snaps-table .browse-btn").click()
    expect(page.locator("#browse-table tbody tr")).to_have_count(2)  # projects/, top.bin
    page.locator("#browse-table .dir-link", has_text="projects/").click()
    page.locator("#browse-table .dir-link", has_text="apollo/").click()
    expect(page.locator("#b-path")).to_have_text("/projects/apollo")
    page.locator("#browse-table tr[data-path='projects/apollo/plan.txt'] .pick-btn").click()
    expect(page.locator("#r-what")).to_have_text("/projects/apollo/plan.txt")
    target = tmp_path / "restored"
    page.fill("#r-target", str(target))
    page.screenshot(path=str(SHOTS / "snapshot-browse.png"), full_page=True)
    page.click("#restore-btn")
    expect(page.locator("#restore-status")).to_contain_text("Restored 1 file(s)", timeout=30_000)
    assert (target / "projects" / "apollo" / "plan.txt").read_bytes() == b"launch at dawn\n"
    assert not (target / "top.bin").exists()
    # Into the hub's own state: refused, and said.
    page.fill("#r-target", str(hub.data / "x"))
    page.click("#restore-btn")
    expect(page.locator("#restore-status")).to_contain_text("target")
    assert errors == []
    assert "browse me" not in page.content()
    # A viewer browses but gets no restore buttons, and the API refuses the restore.
    viewer = browser.new_context().new_page()
    viewer.goto(hub.url + "/")
    viewer.fill("#username", "looker")
    viewer.fill("#password", "only-looking-123")
    viewer.click("#login-btn")
    viewer.locator("#jobs-table tbody tr", has_text="nightly backup").locator(".job-link").click()
    viewer.locator("#snaps-table .browse-btn").click()
    expect(viewer.locator("#browse-table tbody tr")).to_have_count(2)
    expect(viewer.locator(".pick-btn")).to_have_count(0)
    expect(viewer.locator("#restore-form")).to_be_hidden()
    with hub.client(hub.login("looker", "only-looking-123")) as c:
        r = c.post(f"/api/jobs/{job['id']}/restore", json={"snapshot": "latest", "paths": [],
                                                           "target": str(tmp_path / "v")})
        assert r.status_code == 403
