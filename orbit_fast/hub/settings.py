"""The hub's settings: the deployment guide's environment variables, from the environment and
an env file, checked before anything starts.

Precedence: defaults < env file (ORBIT_ENV_FILE, or --env-file) < the process environment, so
systemd's `EnvironmentFile=/etc/orbit/orbit.env` and a shell `export` both work.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from orbit_fast.errors import UsageError

PLACEHOLDER_SECRET = "CHANGE_THIS_TO_A_SECURE_RANDOM_STRING"
MIN_SECRET_CHARS = 32
HOW_TO_SECRET = ("generate one with `openssl rand -base64 32` and set ORBIT_AUTH_SECRET to it "
                 "in the env file (/etc/orbit/orbit.env)")  # fmt: skip


@dataclass(frozen=True)
class HubSettings:
    host: str = "127.0.0.1"
    port: int = 3000
    db_path: str = ""  # from DATABASE_URL=sqlite:///path
    universe_path: str = ""
    auth_secret: str = ""
    auth_enabled: bool = True
    log_level: str = "info"
    # Where job sources and destinations may lie: path prefixes and URL prefixes
    # (s3://bucket/prefix, smb://host/share). Empty: anywhere (a warning is logged).
    allowed_roots: tuple[str, ...] = ()
    max_jobs: int = 2  # jobs running at once; the rest wait in "pending"
    retry_base_s: float = 5.0  # first wait after a transient storage error (then doubling)
    min_free_bytes: int = 1 << 30  # /api/health turns 503 below this free on the data disk
    workers: int = 0  # processes of the pool every job shares (0: one per CPU)
    worker_nice: int = 10  # their CPU priority: bulk copying yields to the API
    # The hub's GIL switch interval: CPython's 5 ms lets job coordinators delay API answers.
    switch_interval_s: float = 0.0005
    session_hours: float = 12.0
    loopback_reads: bool = True  # GET /api/list_jobs from the hub itself without a token
    max_body_bytes: int = 1 << 20
    state_backup_dir: str = ""  # POST /api/admin/state-backup writes here
    warnings: list[str] = field(default_factory=list)

    @property
    def data_dir(self) -> str:
        return os.path.dirname(self.db_path)


def parse_env_file(path: str) -> dict[str, str]:
    """KEY=VALUE lines as systemd's EnvironmentFile reads them: comments, blank lines,
    optional `export ` and quotes."""
    out: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read the env file {path}: {exc.strerror}") from exc
    for n, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        if not sep or not key.strip().replace("_", "").isalnum():
            raise UsageError(f"{path}:{n}: expected KEY=VALUE, got {raw!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def _bool(name: str, value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise UsageError(f"{name}={value!r}: use true or false")


def db_path_from_url(url: str) -> str:
    """DATABASE_URL in the guide's form, sqlite:///var/lib/orbit/jobs.db (three slashes and
    an absolute path), or a plain path."""
    if "://" not in url:
        return os.path.abspath(url)
    scheme, _, rest = url.partition("://")
    if scheme != "sqlite":
        raise UsageError(f"DATABASE_URL={url!r}: only sqlite:///path/to/jobs.db is supported "
                         "(the hub keeps its state in SQLite on local disk)")  # fmt: skip
    path = rest.split("?", 1)[0]
    if not path.strip("/") or path.strip("/") == ":memory:":
        raise UsageError(f"DATABASE_URL={url!r}: name a file, e.g. sqlite:///var/lib/orbit/jobs.db")
    # sqlite:///abs (the guide) and sqlite:////abs (SQLAlchemy's absolute form) are both
    # /abs: a hub's state never lives relative to whatever directory it was started in.
    return os.path.abspath("/" + path.lstrip("/") if path.startswith("/") else path)


def state_paths(env: Mapping[str, str]) -> tuple[str, str]:
    """The jobs DB and the universe from DATABASE_URL and UNIVERSE_PATH (defaults: the
    state directory's jobs.db, and universe.db next to it)."""
    from orbit_fast.config import state_dir

    db = db_path_from_url(env.get("DATABASE_URL") or str(state_dir() / "jobs.db"))
    universe = env.get("UNIVERSE_PATH") or os.path.join(os.path.dirname(db), "universe.db")
    return db, os.path.abspath(universe)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def secret_problem(secret: str) -> str | None:
    """Why `secret` is not good enough to sign sessions with, or None."""
    if not secret:
        return "ORBIT_AUTH_SECRET is not set"
    if "CHANGE_THIS" in secret.upper():
        return "ORBIT_AUTH_SECRET is still the guide's placeholder"
    if len(secret) < MIN_SECRET_CHARS:
        return f"ORBIT_AUTH_SECRET is {len(secret)} characters; at least {MIN_SECRET_CHARS} needed"
    if len(set(secret)) < 12:
        return "ORBIT_AUTH_SECRET repeats a few characters; it is too easy to guess"
    return None


def load(env_file: str = "", environ: dict[str, str] | None = None,
         host: str = "", port: int = 0) -> HubSettings:  # fmt: skip
    """Read and check the settings; raise UsageError saying what to fix."""
    env = dict(os.environ if environ is None else environ)
    env_file = env_file or env.get("ORBIT_ENV_FILE", "")
    merged = {**(parse_env_file(env_file) if env_file else {}), **env}
    get = merged.get
    warnings: list[str] = []
    if "RUST_LOG" in merged and "ORBIT_LOG" not in merged:
        warnings.append("RUST_LOG is read as the log level's first word; ORBIT_LOG is ours")
    level = (get("ORBIT_LOG") or get("RUST_LOG") or "info").split(",")[0].split("=")[-1]
    if level.lower() not in ("trace", "debug", "info", "warn", "warning", "error"):
        level = "info"
    try:
        port = port or int(get("ORBIT_PORT") or 3000)
    except ValueError:
        raise UsageError(f"ORBIT_PORT={get('ORBIT_PORT')!r}: use a port number") from None
    if not 0 <= port <= 65535:
        raise UsageError(f"ORBIT_PORT={port}: use a port number from 1 to 65535")
    db, universe = state_paths(merged)
    host = host or get("ORBIT_HOST") or "127.0.0.1"
    auth = _bool("ORBIT_AUTH_ENABLED", get("ORBIT_AUTH_ENABLED") or "true")
    secret = get("ORBIT_AUTH_SECRET") or ""
    if auth and (why := secret_problem(secret)):
        raise UsageError(f"refusing to start: {why}; {HOW_TO_SECRET}")
    if not auth and not is_loopback(host):
        raise UsageError(f"refusing to start: ORBIT_AUTH_ENABLED=false on ORBIT_HOST={host} would "
                         "let anyone on the network run jobs as admin; bind to 127.0.0.1 or "
                         f"enable auth ({HOW_TO_SECRET})")  # fmt: skip
    listed = (get("ORBIT_ALLOWED_ROOTS") or "").replace(",", "\n").splitlines()
    roots = tuple(r.strip().rstrip("/") or "/" for r in listed if r.strip())
    for r in roots:
        if "://" not in r and not r.startswith("/"):
            raise UsageError(f"ORBIT_ALLOWED_ROOTS: {r!r} is not an absolute path or a URL")
    if not roots:
        warnings.append("ORBIT_ALLOWED_ROOTS is not set: jobs may read and write anywhere the "
                        "hub's user can; set it to the paths and buckets jobs may use")  # fmt: skip
    try:
        max_jobs = int(get("ORBIT_MAX_JOBS") or 2)
        workers = int(get("ORBIT_WORKERS") or 0)
        nice = int(get("ORBIT_WORKER_NICE") or 10)
        switch = float(get("ORBIT_SWITCH_INTERVAL_S") or 0.0005)
        retry_base = float(get("ORBIT_RETRY_BASE_S") or 5.0)
        min_free = int(get("ORBIT_MIN_FREE_BYTES") or (1 << 30))
        hours = float(get("ORBIT_SESSION_HOURS") or 12)
    except ValueError as exc:
        raise UsageError(f"ORBIT_MAX_JOBS / ORBIT_WORKERS / ORBIT_WORKER_NICE / "
                         f"ORBIT_SWITCH_INTERVAL_S / ORBIT_RETRY_BASE_S / ORBIT_MIN_FREE_BYTES "
                         f"/ ORBIT_SESSION_HOURS: {exc}") from None
    if not 1 <= max_jobs <= 64:
        raise UsageError(f"ORBIT_MAX_JOBS={max_jobs}: use 1 to 64")
    if not 0 <= workers <= 256:
        raise UsageError(f"ORBIT_WORKERS={workers}: use 1 to 256 (0: one per CPU)")
    if not 0 <= nice <= 19:
        raise UsageError(f"ORBIT_WORKER_NICE={nice}: use 0 (the hub's own priority) to 19")
    if not 0 < switch <= 1:
        raise UsageError(f"ORBIT_SWITCH_INTERVAL_S={switch}: use seconds above 0, at most 1")
    if not 0 < retry_base <= 600:
        raise UsageError(f"ORBIT_RETRY_BASE_S={retry_base}: use seconds above 0, at most 600")
    if min_free < 0:
        raise UsageError(f"ORBIT_MIN_FREE_BYTES={min_free}: use a number of bytes, 0 or more")
    return HubSettings(
        host=host, port=port, db_path=db, universe_path=universe, auth_secret=secret,
        auth_enabled=auth, log_level=level.lower(), allowed_roots=roots, max_jobs=max_jobs,
        retry_base_s=retry_base, min_free_bytes=min_free,
        workers=workers or os.cpu_count() or 1, worker_nice=nice, switch_interval_s=switch,
        session_hours=hours,
        loopback_reads=_bool("ORBIT_LOOPBACK_READS", get("ORBIT_LOOPBACK_READS") or "true"),
        state_backup_dir=os.path.abspath(get("ORBIT_STATE_BACKUP_DIR") or os.path.join(
            os.path.dirname(db), "state-backups")),
        warnings=warnings,
    )  # fmt: skip
