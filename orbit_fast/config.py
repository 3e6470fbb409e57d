"""Options of a sync run (msgspec Struct) and their validation; importable from every layer.

Precedence: defaults < ORBIT_* environment < CLI flags / API arguments. The same struct is
what the CLI builds, what `api.sync()` takes and what the jobs DB stores for a job.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path

import msgspec

from orbit_fast.errors import UsageError
from orbit_fast.passwords import PasswordSource

MIB = 1 << 20
# 4 MiB: on the 2 GB bench tree 1, 4 and 8 MiB blocks tie (580-614 MB/s into tmpfs) while
# 0.5 MiB, and 16 MiB with one worker, lose ~20% (bench/bench_chunk_size.py,
# docs/performance.md); 4 MiB needs a quarter of the tasks of 1 MiB and is the top of the
# deployment guide's 1-4 MB advice.
DEFAULT_CHUNK_SIZE_MB = 4
MAX_CHUNK_SIZE_MB = 256
MAX_CONCURRENCY = 256


class FsyncPolicy(StrEnum):
    """When copied data is forced to stable storage (docs/sync.md, "Durability")."""

    NONE = "none"  # leave it to the OS: survives a crash of orbit-fast, not a power loss
    BATCH = "batch"  # syncfs() the destination before each checkpoint that records files as done
    FILE = "file"  # fdatasync each file before its rename, fsync its directory after


class SyncOptions(msgspec.Struct, kw_only=True, frozen=True):
    """Everything that defines one sync run. Paths are stored absolute."""

    source: str
    destination: str
    mirror: bool = False
    checksum: bool = False
    dry_run: bool = False
    # (action, pattern) in command-line order; action is "include" or "exclude". First match wins.
    filters: tuple[tuple[str, str], ...] = ()
    concurrency: int = 0  # 0 = number of CPUs
    # The block size, in MiB as the guide and the CLI give it: a file between trees is copied
    # in blocks of block_bytes through one ring slot each; an object copy in parts asks for
    # parts of it (raised to a store's minimum part, upload_part_bytes).
    chunk_size_mb: float = DEFAULT_CHUNK_SIZE_MB
    fsync: FsyncPolicy = FsyncPolicy.BATCH
    db_path: str = ""  # "" = default_db_path()
    sparse: bool = True
    # Remote storage (docs/storage.md): tries per request (0 = ORBIT_RETRY_ATTEMPTS, else 5)
    # and an S3-compatible endpoint ("" = ORBIT_S3_ENDPOINT, else AWS).
    retry_attempts: int = 0
    s3_endpoint: str = ""
    # Checked when the run starts (roots.check_run): both ends reached from one of these
    # (ORBIT_ALLOWED_ROOTS; empty: anywhere), neither overlapping a protected path.
    allowed_roots: tuple[str, ...] = ()
    protected_paths: tuple[str, ...] = ()

    @property
    def remote(self) -> bool:
        """Either side is s3:// or smb://: the run lists and copies objects."""
        return is_remote(self.source) or is_remote(self.destination)

    @property
    def block_bytes(self) -> int:
        """chunk_size_mb in bytes: the one name of the block size below the options."""
        return int(self.chunk_size_mb * MIB)

    @property
    def workers(self) -> int:
        return self.concurrency or (os.cpu_count() or 1)


def url_scheme(url: str) -> str:
    """"s3", "smb", "file", ... of a URL; "" for a plain path."""
    return url.split("://", 1)[0].lower() if "://" in url else ""


def is_remote(url: str) -> bool:
    """Remote storage (s3://, smb://, ...), not a local path or file:// URL."""
    return url_scheme(url) not in ("", "file")


def state_dir() -> Path:
    """Where orbit-fast keeps its own state: $ORBIT_STATE_DIR, else XDG_STATE_HOME/orbit-fast."""
    if env := os.environ.get("ORBIT_STATE_DIR"):
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "orbit-fast"


def default_db_path() -> Path:
    return state_dir() / "jobs.db"


def default_universe_path(db_path: str) -> str:
    """$UNIVERSE_PATH, else universe.db next to the jobs DB (the deployment guide's layout)."""
    return os.environ.get("UNIVERSE_PATH") or os.path.join(os.path.dirname(db_path),
                                                           "universe.db")  # fmt: skip


class BackupOptions(msgspec.Struct, kw_only=True, frozen=True):
    """Everything that defines one backup run. Paths are stored absolute."""

    source: str  # a local directory, or an s3:// or smb:// URL
    repository: str  # a local path, s3:// or smb://
    filters: tuple[tuple[str, str], ...] = ()
    concurrency: int = 0
    codec: str = ""  # "" = the repository's default (set at init; zstd:3 unless told)
    tags: tuple[str, ...] = ()
    db_path: str = ""
    universe_path: str = ""
    s3_endpoint: str = ""  # for s3:// sources and repositories ("" = ORBIT_S3_ENDPOINT, else AWS)
    allowed_roots: tuple[str, ...] = ()  # as SyncOptions: source and repository
    protected_paths: tuple[str, ...] = ()
    # Where an encrypted repository's password is (passwords.py): a path or a command line,
    # never the password itself; "" for both: ORBIT_PASSWORD_FILE, ..._COMMAND, ORBIT_PASSWORD
    # or a terminal.
    password_file: str = ""
    password_command: str = ""
    # A repository this backup creates is not encrypted (shown by `snapshots` and the hub).
    insecure_no_encryption: bool = False

    @property
    def workers(self) -> int:
        return self.concurrency or (os.cpu_count() or 1)

    @property
    def password(self) -> PasswordSource:
        return PasswordSource(file=self.password_file, command=self.password_command)


def resolve_state_paths(db_path: str, universe_path: str) -> tuple[str, str]:
    db = os.path.abspath(os.path.expanduser(db_path or str(default_db_path())))
    return db, os.path.abspath(os.path.expanduser(universe_path or default_universe_path(db)))


def validate_backup(opts: BackupOptions) -> BackupOptions:
    """Check ranges and normalise paths; raise UsageError naming the field and the fix."""
    from orbit_fast.compression import parse_codec

    _check_common(opts.concurrency, opts.filters)
    if opts.codec:
        try:
            parse_codec(opts.codec)
        except UsageError as exc:
            raise UsageError(str(exc), "codec") from None
    db, universe = resolve_state_paths(opts.db_path, opts.universe_path)
    source = _abs_or_url(opts.source, "source")
    repo = opts.repository
    if is_remote(repo):
        repo = _abs_or_url(repo, "repository")
    elif "://" not in repo:
        repo = os.path.abspath(os.path.expanduser(repo))
        src = source
        if repo == src or repo.startswith(src.rstrip("/") + "/"):
            raise UsageError(f"the repository {repo} is inside the source {src}; it would "
                             "back itself up. Put it elsewhere, or --exclude it")  # fmt: skip
    return msgspec.structs.replace(
        opts, concurrency=opts.workers, source=source, repository=repo,
        db_path=db, universe_path=universe, allowed_roots=_roots(opts.allowed_roots),
    )  # fmt: skip


def validate(opts: SyncOptions) -> SyncOptions:
    """Check ranges and normalise paths; raise UsageError naming the option and the fix."""
    for what, url in (("source", opts.source), ("destination", opts.destination)):
        scheme = url_scheme(url)
        if scheme not in ("", "file", "s3", "smb"):
            raise UsageError(
                f"{what} {url}: unknown scheme {scheme}://; use a local path, "
                "s3://bucket/prefix or smb://[user@]host[:port]/share/path", what
            )
    if not (isinstance(opts.retry_attempts, int) and 0 <= opts.retry_attempts <= 100):
        raise UsageError(f"retry_attempts must be a whole number from 1 to 100, "
                         f"got {opts.retry_attempts!r}", "retry_attempts")  # fmt: skip
    _check_common(opts.concurrency, opts.filters)
    size = opts.chunk_size_mb
    if not (isinstance(size, int | float) and size > 0 and size <= MAX_CHUNK_SIZE_MB):
        raise UsageError(f"chunk_size_mb must be more than 0 and at most {MAX_CHUNK_SIZE_MB}, "
                         f"got {size!r}", "chunk_size_mb")  # fmt: skip
    if opts.block_bytes < 4096:
        raise UsageError(f"chunk_size_mb must be at least 4 KiB (0.004), got {size!r}",
                         "chunk_size_mb")  # fmt: skip
    db = opts.db_path or str(default_db_path())
    # Remote transfers wait on the network, not the CPU: at least 4 at once (rclone's
    # --transfers default) unless told.
    workers = opts.workers if not opts.remote or opts.concurrency else max(4, opts.workers)
    return msgspec.structs.replace(
        opts,
        # Resolved once: `workers` is read on every turn of the coordinator's loop.
        concurrency=workers,
        source=_abs_or_url(opts.source, "source"),
        destination=_abs_or_url(opts.destination, "destination"),
        db_path=os.path.abspath(os.path.expanduser(db)),
        allowed_roots=_roots(opts.allowed_roots),
    )


def _check_common(concurrency: object, filters: tuple[tuple[str, str], ...]) -> None:
    if not (isinstance(concurrency, int) and 0 <= concurrency <= MAX_CONCURRENCY):
        raise UsageError(f"concurrency must be a whole number from 1 to {MAX_CONCURRENCY} "
                         f"(0 = one per CPU), got {concurrency!r}", "concurrency")  # fmt: skip
    for action, pattern in filters:
        if action not in ("include", "exclude") or not pattern:
            raise UsageError(f"bad filter rule {action!r} {pattern!r}", "filters")


def _abs_or_url(url: str, what: str) -> str:
    """A remote URL decoded and normalised once (locations.py: what the backends will use);
    a local path made absolute."""
    from orbit_fast import locations

    url = url.removeprefix("file://")
    if not is_remote(url):
        return os.path.abspath(url)
    try:
        return locations.normalise(url)
    except UsageError as exc:
        raise UsageError(str(exc), what) from None


def _roots(roots: tuple[str, ...]) -> tuple[str, ...]:
    from orbit_fast import locations

    try:
        return tuple(locations.normalise(r) for r in roots)
    except UsageError as exc:
        raise UsageError(f"allowed root: {exc}", "allowed_roots") from None
