"""The hub's settings: the deployment guide's environment variables, from the environment and
an env file, checked before anything starts.

Precedence: defaults < env file (ORBIT_ENV_FILE, or --env-file) < the process environment, so
systemd's `EnvironmentFile=/etc/orbit/orbit.env` and a shell `export` both work.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from orbit_fast.errors import UsageError

PLACEHOLDER_SECRET = "CHANGE_THIS_TO_A_SECURE_RANDOM_STRING"
MIN_SECRET_CHARS = 32
# zxcvbn's estimate for `openssl rand -base64 32` is 10^42 guesses or more, for `-hex 16`
# 10^29; "abcdefghijklmnopqrstuvwxyzabcdef" is 10^4.
MIN_SECRET_GUESSES_LOG10 = 24
# Words of the placeholders people paste from guides ("your-secret-key-here-change-me",
# "REPLACE_WITH_A_SECURE_RANDOM_STRING"): two of them in a secret mean it was never replaced.
PLACEHOLDER_WORDS = frozenset(
    "change changeme replace secret your here example placeholder random string secure "
    "insert put default sample dummy todo fixme key password generate token value this "
    "with me please".split())
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK_NETS: tuple[IPNetwork, ...] = (ipaddress.ip_network("127.0.0.0/8"),
                                       ipaddress.ip_network("::1/128"))  # fmt: skip
def how_to_secret(env_file: str) -> str:
    """What to do about the secret, naming the env file in use (the guide's by default)."""
    return ("generate one with `openssl rand -base64 32` and set ORBIT_AUTH_SECRET to it in "
            f"the env file ({env_file or '/etc/orbit/orbit.env'})")


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
    stall_s: float = 120.0  # ORBIT_STALL_S: a running job with no progress this long is stalled
    min_free_bytes: int = 1 << 30  # /api/health turns 503 below this free on the data disk
    workers: int = 0  # processes of the pool every job shares (0: one per CPU)
    bwlimit: str = ""  # ORBIT_BWLIMIT: one limit for all jobs together (units.parse_bwlimit)
    worker_nice: int = 10  # their CPU priority: bulk copying yields to the API
    # The hub's GIL switch interval: CPython's 5 ms lets job coordinators delay API answers.
    switch_interval_s: float = 0.0005
    session_hours: float = 12.0
    loopback_reads: bool = True  # GET /api/list_jobs from the hub itself without a token
    # Peers whose X-Forwarded-For / X-Real-IP name the client (nginx on the hub: loopback).
    trusted_proxies: tuple[IPNetwork, ...] = LOOPBACK_NETS
    # Host names the hub answers to besides localhost names and IP addresses (DNS rebinding).
    allowed_hosts: frozenset[str] = frozenset()
    public_url: str = ""  # ORBIT_PUBLIC_URL: the address users reach the hub at (via nginx)
    max_body_bytes: int = 1 << 20
    body_timeout_s: float = 30.0  # a request's whole body must arrive within this (slowloris)
    state_backup_dir: str = ""  # POST /api/admin/state-backup writes here
    env_file: str = ""  # ORBIT_ENV_FILE / --env-file, absolute ("": none)
    # The env file's settings for the jobs (S3, SMB, retries: job_env_keys), never put in
    # os.environ; the process environment wins over them (orbit_fast/environment.py).
    job_env: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def data_dir(self) -> str:
        return os.path.dirname(self.db_path)

    @property
    def protected_paths(self) -> tuple[str, ...]:
        """What no job may read, write or contain (roots.check_protected), at creation and at
        every run: the jobs DB's directory, the universe's, the state backups, the env file."""
        found = (self.data_dir, os.path.dirname(self.universe_path), self.state_backup_dir,
                 self.env_file)  # fmt: skip
        return tuple(dict.fromkeys(p for p in found if p))


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


# ORBIT_* settings the jobs read (orbit_fast/backends); every other ORBIT_* key, DATABASE_URL,
# UNIVERSE_PATH and RUST_LOG are the hub's own, and an env file's copy of them stays out of
# the jobs' overlay and the worker processes (ORBIT_AUTH_SECRET above all; a secret in the
# process environment, as systemd's EnvironmentFile= puts it, is inherited by them all the same).
JOB_ORBIT_KEYS = ("ORBIT_S3_", "ORBIT_SMB_", "ORBIT_RETRY_ATTEMPTS")


def job_env_keys(file_env: Mapping[str, str]) -> dict[str, str]:
    """The env file's entries the jobs see: all but the hub's own settings."""
    return {k: v for k, v in file_env.items()
            if k.startswith(JOB_ORBIT_KEYS) or not (k.startswith("ORBIT_") or k in (
                "DATABASE_URL", "UNIVERSE_PATH", "RUST_LOG"))}  # fmt: skip


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
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:  # ::ffff:127.0.0.1
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def secret_problem(secret: str) -> str | None:
    """Why `secret` is not good enough to sign sessions with, or None."""
    if not secret:
        return "ORBIT_AUTH_SECRET is not set"
    if "CHANGE_THIS" in secret.upper():
        return "ORBIT_AUTH_SECRET is still the guide's placeholder"
    if len(secret) < MIN_SECRET_CHARS:
        return f"ORBIT_AUTH_SECRET is {len(secret)} characters; at least {MIN_SECRET_CHARS} needed"
    words = {w for w in re.split(r"[^a-z0-9]+", secret.lower()) if w in PLACEHOLDER_WORDS}
    if len(words) >= 2:
        return (f"ORBIT_AUTH_SECRET looks like a placeholder (it has the words "
                f"{', '.join(sorted(words))})")
    from zxcvbn import zxcvbn

    # zxcvbn finds sequences, repeats, keyboard walks and dictionary words; its cost grows
    # with length, and 128 characters of a real secret are past any threshold.
    if zxcvbn(secret[:128])["guesses_log10"] < MIN_SECRET_GUESSES_LOG10:
        return "ORBIT_AUTH_SECRET is too easy to guess (a sequence, a pattern or words)"
    return None


def parse_proxies(value: str) -> tuple[IPNetwork, ...]:
    """ORBIT_TRUSTED_PROXIES: comma-separated addresses or networks; `none` trusts no peer."""
    if value.strip().lower() in ("none", "-"):
        return ()
    out = []
    for item in value.replace(",", " ").split():
        try:
            out.append(ipaddress.ip_network(item.strip("[]"), strict=False))
        except ValueError:
            raise UsageError(f"ORBIT_TRUSTED_PROXIES: {item!r} is not an address or network "
                             "(e.g. 127.0.0.1,10.0.0.0/24, or none)") from None  # fmt: skip
    return tuple(out)


def host_names(env: Mapping[str, str], bind: str) -> tuple[frozenset[str], str]:
    """The names the hub answers to (ORBIT_ALLOWED_HOSTS, ORBIT_PUBLIC_URL's host, a named
    ORBIT_HOST) and the public URL."""
    from urllib.parse import urlsplit

    names = {h.strip().lower().rstrip(".") for h in
             (env.get("ORBIT_ALLOWED_HOSTS") or "").replace(",", " ").split()}  # fmt: skip
    public = (env.get("ORBIT_PUBLIC_URL") or "").strip().rstrip("/")
    if public:
        try:
            parts = urlsplit(public)
            ok = parts.scheme in ("http", "https") and bool(parts.hostname) and (
                parts.port or 0) >= 0  # .port raises ValueError on a bad one
        except ValueError:
            ok = False
        if not ok:
            raise UsageError(f"ORBIT_PUBLIC_URL={public!r}: give the URL users open, e.g. "
                             "https://orbit.example.com")  # fmt: skip
        names.add((parts.hostname or "").lower())
    if bind not in ("0.0.0.0", "::", "") and not is_ip(bind):
        names.add(bind.lower())
    for n in names:
        if not n or any(c in n for c in "/@ ") or n.startswith("."):
            raise UsageError(f"ORBIT_ALLOWED_HOSTS: {n!r} is not a host name")
    return frozenset(names), public


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


def env_file_exposure(path: str) -> str | None:
    """A warning if users other than the file's owner can read the env file: it holds
    ORBIT_AUTH_SECRET (anyone with it can mint sessions) and the storage credentials."""
    try:
        mode = os.stat(path).st_mode & 0o777
    except OSError:
        return None  # parse_env_file has said what is wrong with it
    if not mode & 0o044:
        return None
    who = " and ".join(w for w, bit in (("its group", 0o040), ("all users", 0o004)) if mode & bit)
    return (f"the env file {path} is readable by {who} (mode {mode:o}) but holds "
            f"ORBIT_AUTH_SECRET and storage credentials: chmod 600 {path}")


def load(env_file: str = "", environ: dict[str, str] | None = None,
         host: str = "", port: int = 0) -> HubSettings:  # fmt: skip
    """Read and check the settings; raise UsageError saying what to fix."""
    env = dict(os.environ if environ is None else environ)
    env_file = env_file or env.get("ORBIT_ENV_FILE", "")
    file_env = parse_env_file(env_file) if env_file else {}
    merged = {**file_env, **env}
    get = merged.get
    warnings: list[str] = []
    if env_file and (loose := env_file_exposure(env_file)):
        warnings.append(loose)
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
        raise UsageError(f"refusing to start: {why}; {how_to_secret(env_file)}")
    if not auth and not is_loopback(host):
        raise UsageError(f"refusing to start: ORBIT_AUTH_ENABLED=false on ORBIT_HOST={host} would "
                         "let anyone on the network run jobs as admin; bind to 127.0.0.1 or "
                         f"enable auth ({how_to_secret(env_file)})")  # fmt: skip
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
        body_timeout = float(get("ORBIT_BODY_TIMEOUT_S") or 30)
        stall = float(get("ORBIT_STALL_S") or 120)
    except ValueError as exc:
        raise UsageError(f"ORBIT_MAX_JOBS / ORBIT_WORKERS / ORBIT_WORKER_NICE / "
                         f"ORBIT_SWITCH_INTERVAL_S / ORBIT_RETRY_BASE_S / ORBIT_MIN_FREE_BYTES "
                         f"/ ORBIT_SESSION_HOURS / ORBIT_BODY_TIMEOUT_S: {exc}") from None
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
    if not 0 < hours <= 8760:  # also refuses inf and nan
        raise UsageError(f"ORBIT_SESSION_HOURS={get('ORBIT_SESSION_HOURS')}: use hours above 0, "
                         "at most 8760 (a year)")  # fmt: skip
    if not 1 <= stall <= 86400:
        raise UsageError(f"ORBIT_STALL_S={get('ORBIT_STALL_S')}: use seconds from 1 to 86400")
    if not 0 < body_timeout <= 3600:
        raise UsageError(f"ORBIT_BODY_TIMEOUT_S={get('ORBIT_BODY_TIMEOUT_S')}: use seconds above "
                         "0, at most 3600")  # fmt: skip
    proxies = parse_proxies(get("ORBIT_TRUSTED_PROXIES") or "127.0.0.0/8,::1")
    allowed_hosts, public_url = host_names(merged, host)
    if not allowed_hosts and not is_loopback(host):
        warnings.append(f"ORBIT_HOST={host}: requests that name this hub by a host name (the "
                        "guide's nginx sends Host: orbit.example.com) get 421 until that name "
                        "is in ORBIT_PUBLIC_URL or ORBIT_ALLOWED_HOSTS; IP addresses and "
                        "localhost are always answered")  # fmt: skip
    return HubSettings(
        host=host, port=port, db_path=db, universe_path=universe, auth_secret=secret,
        auth_enabled=auth, log_level=level.lower(), allowed_roots=roots, max_jobs=max_jobs,
        retry_base_s=retry_base, min_free_bytes=min_free,
        workers=workers or os.cpu_count() or 1, worker_nice=nice, switch_interval_s=switch,
        session_hours=hours, trusted_proxies=proxies, allowed_hosts=allowed_hosts,
        public_url=public_url, body_timeout_s=body_timeout,
        loopback_reads=_bool("ORBIT_LOOPBACK_READS", get("ORBIT_LOOPBACK_READS") or "true"),
        state_backup_dir=os.path.abspath(get("ORBIT_STATE_BACKUP_DIR") or os.path.join(
            os.path.dirname(db), "state-backups")),
        job_env=job_env_keys(file_env), warnings=warnings,
        env_file=os.path.abspath(env_file) if env_file else "",
        bwlimit=_bwlimit(get("ORBIT_BWLIMIT") or ""), stall_s=stall,
    )  # fmt: skip


def _bwlimit(text: str) -> str:
    from orbit_fast.units import parse_bwlimit

    parse_bwlimit(text, "ORBIT_BWLIMIT")  # refused at start, with the entry that is wrong
    return text
