"""The hub's commands: `orbit-server` / `orbit-fast serve`, the `job` client for cron and
systemd timers, and `state backup` / `state restore`.

Only click is imported at start-up (this module is loaded for every `orbit-fast` command);
the server, the HTTP client and the error printer are imported by the commands that use them.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, NoReturn

import click


def exit_with_error(err: Exception, json_out: bool) -> NoReturn:
    from orbit_fast.cli.runner import exit_with_error as exit_

    exit_(err, json_out)

_ENV_FILE = click.option("--env-file", envvar="ORBIT_ENV_FILE", default="", metavar="FILE",
                         help="KEY=VALUE settings, as systemd's EnvironmentFile (e.g. "
                         "/etc/orbit/orbit.env). The environment overrides it.")  # fmt: skip


def _serve(env_file: str, host: str, port: int, s3_endpoint: str = "") -> None:
    import dataclasses
    import logging

    from orbit_fast.errors import OrbitError, UsageError
    from orbit_fast.hub import settings as hub_settings

    # Before anything is opened: what the hub and its jobs create without an explicit mode
    # (SQLite's files, a library's temp files, local repositories) is its user's alone,
    # whatever umask systemd or a shell gave it. Synced files keep their sources' modes, which
    # are set explicitly. Hub.open still sets the state files' modes itself: an embedder's
    # umask is not ours to choose.
    os.umask(0o077)
    try:
        settings = hub_settings.load(env_file, host=host, port=port)
    except OrbitError as exc:
        exit_with_error(exc, json_out=False)
    if s3_endpoint:
        # `orbit-fast --s3-endpoint URL serve`: for every job, as an env file line would be
        # (the jobs' overlay, which the workers get too); os.environ stays as it was. The
        # environment wins over the overlay, so a different ORBIT_S3_ENDPOINT there is refused.
        if os.environ.get("ORBIT_S3_ENDPOINT", s3_endpoint) != s3_endpoint:
            exit_with_error(UsageError(
                f"--s3-endpoint {s3_endpoint} and ORBIT_S3_ENDPOINT="
                f"{os.environ['ORBIT_S3_ENDPOINT']} disagree; give the hub one of them"),
                json_out=False)  # fmt: skip
        settings = dataclasses.replace(
            settings, job_env={**settings.job_env, "ORBIT_S3_ENDPOINT": s3_endpoint})
    level = {"trace": "DEBUG", "warn": "WARNING"}.get(settings.log_level,
                                                      settings.log_level.upper())  # fmt: skip
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    log = logging.getLogger("orbit_fast.hub")
    for w in settings.warnings:
        log.warning(w)
    import uvicorn

    from orbit_fast.hub.app import create_app
    from orbit_fast.hub.core import Hub

    # The HTTP loop shares the GIL with the coordinator threads of running jobs: a shorter
    # switch interval than the default 5 ms lets a request through sooner
    # (bench/bench_hub_load.py; docs/performance.md, "Hub under load").
    sys.setswitchinterval(settings.switch_interval_s)
    try:
        hub = Hub.open(settings)
    except OrbitError as exc:
        exit_with_error(exc, json_out=False)
    # proxy_headers off: request.client stays the real peer; the hub reads forwarding headers
    # itself, and only from ORBIT_TRUSTED_PROXIES (hub/guards.py).
    config = uvicorn.Config(create_app(hub), host=settings.host, port=settings.port,
                            log_level="warning" if level == "INFO" else level.lower(),
                            proxy_headers=False, server_header=False,
                            timeout_graceful_shutdown=30,
                            # a body's deadline is guards.BodyLimit's
                            timeout_keep_alive=5)  # fmt: skip

    class HubServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            hub.begin_shutdown()
            super().handle_exit(sig, frame)

    HubServer(config).run()


@click.command("serve", context_settings={"help_option_names": ["-h", "--help"]})
@_ENV_FILE
@click.option("--host", default="", help="Overrides ORBIT_HOST (default 127.0.0.1).")
@click.option("--port", default=0, type=int, help="Overrides ORBIT_PORT (default 3000).")
@click.pass_context
def serve_cmd(ctx: click.Context, env_file: str, host: str, port: int) -> None:
    """Run the hub: HTTP API, dashboard and every job (docs/deployment.md).

    Settings come from the environment: ORBIT_HOST, ORBIT_PORT, DATABASE_URL, UNIVERSE_PATH,
    ORBIT_AUTH_SECRET, ORBIT_AUTH_ENABLED, ORBIT_ALLOWED_ROOTS, ORBIT_MAX_JOBS, ORBIT_LOG.
    """
    from click.core import ParameterSource

    root = ctx.find_root()
    given = root.get_parameter_source("s3_endpoint") is ParameterSource.COMMANDLINE
    _serve(env_file, host, port, root.params["s3_endpoint"] if given else "")


def server_main() -> None:
    """`orbit-server`: the deployment guide's hub binary."""
    serve_cmd.main(prog_name="orbit-server", standalone_mode=True)


# ---- the client side: `orbit-fast job ...` ------------------------------------------------------


class HubClient:
    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.token = token

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        import urllib.error
        import urllib.request

        from orbit_fast.errors import HubError

        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                err = json.loads(exc.read())["error"]
                msg = f"{err['message']} ({err['code']}, HTTP {exc.code})"
            except Exception:
                msg = f"HTTP {exc.code}"
            if exc.code == 401 and not self.token:
                msg += ("; give an API token: --token-file FILE (or ORBIT_TOKEN_FILE), or the "
                        "token itself in ORBIT_TOKEN (make one: POST /api/auth/tokens)")
            raise HubError(f"the hub at {self.url} refused {method} {path}: {msg}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise HubError(f"cannot reach the hub at {self.url} ({reason}); is orbit-server "
                           "running? Set --hub or ORBIT_HUB_URL") from None  # fmt: skip

    def job(self, name_or_id: str) -> dict[str, Any]:
        import urllib.parse

        from orbit_fast.errors import HubError

        if name_or_id.isdigit():
            return self.call("GET", f"/api/jobs/{name_or_id}")  # type: ignore[no-any-return]
        found = self.call("GET", "/api/jobs?name=" + urllib.parse.quote(name_or_id))["jobs"]
        if not found:
            raise HubError(f"the hub has no job named {name_or_id!r} (orbit-fast job list)")
        return found[0]  # type: ignore[no-any-return]


_HUB = click.option("--hub", envvar="ORBIT_HUB_URL", default="http://127.0.0.1:3000",
                    show_default=True, help="The hub's URL. Env: ORBIT_HUB_URL.")  # fmt: skip
_TOKEN = click.option("--token-file", envvar="ORBIT_TOKEN_FILE", default="", metavar="FILE",
                      help="A file holding an API token (POST /api/auth/tokens). Env: "
                      "ORBIT_TOKEN_FILE, or the token itself in ORBIT_TOKEN.")  # fmt: skip


def _client(hub: str, token_file: str) -> HubClient:
    token = os.environ.get("ORBIT_TOKEN", "")
    if token_file:
        with open(token_file) as f:
            token = f.read().strip()
    return HubClient(hub, token)


@click.group("job")
def job_group() -> None:
    """Drive jobs on a running hub (for cron, systemd timers and scripts)."""


@job_group.command("run")
@click.argument("name")
@click.option("--wait", is_flag=True, help="Wait until the run ends; exit 0 if it completed.")
@click.option("--timeout", default=0.0, help="With --wait: give up after this many seconds.")
@click.option("--json", "json_out", is_flag=True,
              help="With --wait: one JSON line a second with the job's state and progress.")
@_HUB
@_TOKEN
def job_run(name: str, wait: bool, timeout: float, json_out: bool, hub: str,
            token_file: str) -> None:  # fmt: skip
    """Start job NAME (or id) on the hub; with --wait, follow it to the end.

    Exit codes: 0 completed, 1 completed with skipped files, 15 failed or cancelled,
    16 hub unreachable or refused.
    """
    from orbit_fast.errors import HubError, JobFailed, OrbitError
    from orbit_fast.names import shown

    try:
        client = _client(hub, token_file)
        job = client.job(name)
        before = job["attempt"]
        client.call("POST", f"/api/jobs/{job['id']}/run")
        click.echo(f"job {job['id']} ({shown(job['name'])}): queued", err=True)
        if not wait:
            return
        deadline = time.monotonic() + timeout if timeout else None
        tty, last_line = sys.stderr.isatty(), 0.0
        while True:
            time.sleep(1.0)
            job = client.call("GET", f"/api/jobs/{job['id']}")
            done = job["attempt"] > before and job["state"] in (
                "completed", "partial", "failed", "cancelled")
            if json_out:
                click.echo(json.dumps({"event": "job", "id": job["id"], "state": job["state"],
                                       "progress": job.get("progress") or {},
                                       "last_error": job.get("last_error")}))  # fmt: skip
            elif tty or time.monotonic() - last_line >= WAIT_LINE_S:
                # A line that rewrites itself on a terminal; one every WAIT_LINE_S in a log.
                last_line = time.monotonic()
                click.echo(("\r\033[K" if tty else "") + _progress_line(job), nl=not tty,
                           err=True)  # fmt: skip
            if done:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise HubError(f"job {job['id']} still {job['state']} after {timeout:.0f} s; it "
                               "goes on in the hub")  # fmt: skip
        click.echo(("\r\033[K" if tty and not json_out else "")
                   + f"job {job['id']} ({shown(job['name'])}): {job['state']}", err=True)
        if job["state"] == "partial":
            sys.exit(1)
        if job["state"] != "completed":
            raise JobFailed(f"job {job['name']} {job['state']}: {job['last_error']}")
    except OrbitError as exc:
        exit_with_error(exc, json_out=False)


WAIT_LINE_S = 30.0  # `job run --wait` without a terminal: a progress line this often


def _progress_line(job: dict[str, Any]) -> str:
    """"job 3 (nightly): running 45.2% · 120/300 files · 1.2 GiB of 3.0 GiB · 55.0 MiB/s"."""
    from orbit_fast.cli.render import human_size, plural
    from orbit_fast.names import shown

    pr = job.get("progress") or {}
    head = f"job {job['id']} ({shown(job['name'])}): {job['state']}"
    if not pr:
        return head
    done, total = human_size(pr.get("bytes_done", 0)), human_size(pr.get("bytes_total", 0))
    return (f"{head} {pr.get('percent', 0):.1f}% · {pr.get('files_done', 0)}/"
            f"{plural(pr.get('files_total', 0), 'file')} · {done} of {total} · "
            f"{human_size(pr.get('rate_bps', 0))}/s")


@job_group.command("list")
@_HUB
@_TOKEN
def job_list(hub: str, token_file: str) -> None:
    """List the hub's jobs."""
    from orbit_fast.errors import OrbitError
    from orbit_fast.names import shown

    try:
        jobs = _client(hub, token_file).call("GET", "/api/jobs")["jobs"]
    except OrbitError as exc:
        exit_with_error(exc, json_out=False)
    for j in jobs:
        pct = (j.get("progress") or {}).get("percent", 0)
        click.echo(f"{j['id']:>5}  {j['state']:<10} {pct:>5.1f}%  {j['mode']:<6} "
                   f"{shown(j['name'])}")  # fmt: skip


# ---- state backups ----------------------------------------------------------------------------


GUIDE_ENV_FILE = "/etc/orbit/orbit.env"  # where the deployment guide's systemd unit reads it


def _state_paths(env_file: str, db_path: str, universe_path: str) -> tuple[str, str]:
    """The hub's state files: the flags, else the hub's own settings (env file, environment);
    with none of them, the guide's env file when it is there (a hub run by systemd), so that
    `orbit-fast state backup DIR` backs up the hub, not this user's own state."""
    from orbit_fast.hub.settings import parse_env_file, state_paths

    told = env_file or db_path or "DATABASE_URL" in os.environ
    if not told and os.access(GUIDE_ENV_FILE, os.R_OK):
        env_file = GUIDE_ENV_FILE
    elif not told:
        click.echo("orbit-fast: no --env-file, DATABASE_URL or /etc/orbit/orbit.env: using this "
                   "user's own state; for a hub's, give --env-file", err=True)  # fmt: skip
    env = {**(parse_env_file(env_file) if env_file else {}), **os.environ}
    if db_path:
        env["DATABASE_URL"] = os.path.abspath(db_path)
    if universe_path:
        env["UNIVERSE_PATH"] = universe_path
    return state_paths(env)


@click.group("state")
def state_group() -> None:
    """Back up and restore the hub's state (jobs DB and universe index)."""


@state_group.command("backup")
@click.argument("directory")
@_ENV_FILE
@click.option("--db-path", default="", help="The jobs DB (default: DATABASE_URL).")
@click.option("--universe-path", default="", help="The universe (default: UNIVERSE_PATH).")
def state_backup(directory: str, env_file: str, db_path: str, universe_path: str) -> None:
    """Consistent copies into DIRECTORY, safe while the hub runs; prints the manifest."""
    from orbit_fast.api import backup_state
    from orbit_fast.errors import OrbitError

    try:
        db, uni = _state_paths(env_file, db_path, universe_path)
        click.echo(json.dumps(backup_state(db, uni, directory), indent=1))
    except OrbitError as exc:
        exit_with_error(exc, json_out=False)


@state_group.command("restore")
@click.argument("backup_file")
@click.option("--universe", "universe_file", default="",
              help="With a bare jobs DB copy (the guide's script): its universe copy.")  # fmt: skip
@_ENV_FILE
@click.option("--db-path", default="", help="The jobs DB (default: DATABASE_URL).")
@click.option("--universe-path", default="", help="The universe (default: UNIVERSE_PATH).")
def state_restore(backup_file: str, universe_file: str, env_file: str, db_path: str,
                  universe_path: str) -> None:  # fmt: skip
    """Check BACKUP_FILE (a manifest .json, or a jobs DB copy), then swap it in. Stop the hub
    first; the replaced files are kept as *.before-restore-<time>."""
    from orbit_fast.api import restore_state
    from orbit_fast.errors import OrbitError

    try:
        db, uni = _state_paths(env_file, db_path, universe_path)
        click.echo(json.dumps(restore_state(backup_file, db, uni, universe_file), indent=1))
    except OrbitError as exc:
        exit_with_error(exc, json_out=False)
