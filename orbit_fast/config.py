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


# --include / --exclude patterns, and the rule files read when the run starts (filters.py).
FILTER_ACTIONS = ("include", "exclude", "include-from", "exclude-from", "filter-from")


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
    # Mirror safety (docs/sync.md, "Mirror safety"): deletions above this ("N" entries, "P%"
    # of the destination's, "" or "off": no limit) are withheld, all of them; `force_delete`
    # lets this run delete although its source looks unmounted or emptied.
    max_delete: str = ""
    force_delete: bool = False
    # What a run replaces or deletes is moved here (relative: to the destination; {date},
    # {time} and {datetime} are the run's start), its name ending in `suffix`.
    backup_dir: str = ""
    suffix: str = ""
    # Selection beyond the rules (filters.Selection): one path per line (NUL with from0),
    # sizes (units.parse_size), ages (units.parse_age), and what counts as changed.
    files_from: str = ""
    from0: bool = False
    min_size: str = ""
    max_size: str = ""
    min_age: str = ""
    max_age: str = ""
    size_only: bool = False
    ignore_existing: bool = False
    update: bool = False
    delete_excluded: bool = False
    # One limit for the whole run, all workers together (units.parse_bwlimit).
    bwlimit: str = ""
    # Metadata a copy between local trees keeps beyond data, mode and times, as rsync
    # -aAX --numeric-ids does (docs/sync.md, "What is copied"): owners and groups (as root),
    # xattrs, POSIX ACLs; each can be turned off.
    no_owner: bool = False
    no_group: bool = False
    no_xattrs: bool = False
    no_acls: bool = False
    # Hard links within the tree (rsync -H): each inode copied once, its other names linked.
    no_hard_links: bool = False
    # Owners and setuid/setgid/sticky bits from an S3 object's metadata are applied to local
    # files only with this: whoever can write the bucket wrote them (GHSA-945v-v9p3-v5xw).
    trust_remote_metadata: bool = False
    # Between SMB ends, each file's NT security descriptor (owner, group, DACL) goes with it
    # (docs/sync.md, "File metadata"); the account needs WRITE_DAC, WRITE_OWNER and, to set
    # another owner, SeRestorePrivilege.
    smb_security: bool = False

    @property
    def keep(self) -> int:
        """The messages.KEEP_* bits a copy asks its worker for (owners only as root)."""
        root = os.geteuid() == 0
        return ((1 if root and not self.no_owner else 0) | (2 if root and not self.no_group else 0)
                | (0 if self.no_xattrs else 4) | (0 if self.no_acls else 8))  # fmt: skip
    # S3 destinations: what each object is stored as ("" = the bucket's default).
    s3_storage_class: str = ""
    s3_sse: str = ""
    s3_sse_kms_key_id: str = ""
    s3_region: str = ""

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
    if opts.smb_security and not url_scheme(opts.source) == url_scheme(opts.destination) == "smb":
        raise UsageError("smb_security copies NT security descriptors between SMB ends: the "
                         "source and the destination must both be smb:// URLs",
                         "smb_security")  # fmt: skip
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
    _check_selection(opts)
    return msgspec.structs.replace(
        opts,
        # Resolved once: `workers` is read on every turn of the coordinator's loop.
        concurrency=workers,
        source=_abs_or_url(opts.source, "source"),
        destination=_abs_or_url(opts.destination, "destination"),
        db_path=os.path.abspath(os.path.expanduser(db)),
        allowed_roots=_roots(opts.allowed_roots),
        files_from=_abs_file(opts.files_from),
        filters=tuple((a, _abs_file(v) if a.endswith("-from") else v) for a, v in opts.filters),
        backup_dir=_backup_dir(opts),
    )


S3_STORAGE_CLASSES = ("STANDARD", "REDUCED_REDUNDANCY", "STANDARD_IA", "ONEZONE_IA",
                      "INTELLIGENT_TIERING", "GLACIER", "GLACIER_IR", "DEEP_ARCHIVE")  # fmt: skip
S3_SSE = ("AES256", "aws:kms")


def _check_selection(opts: SyncOptions) -> None:
    """Every value of the selection, guard, limit and S3 options parses (the engine parses
    them again where it uses them: these are the errors a user sees first)."""
    from orbit_fast import units

    units.parse_max_delete(opts.max_delete)
    units.parse_bwlimit(opts.bwlimit)
    for name in ("min_size", "max_size"):
        if value := getattr(opts, name):
            units.parse_size(value, name)
    for name in ("min_age", "max_age"):
        if value := getattr(opts, name):
            units.parse_age(value, name)
    if opts.suffix and ("/" in opts.suffix or "\0" in opts.suffix):
        raise UsageError(f"suffix {opts.suffix!r}: a suffix cannot hold '/'", "suffix")
    if opts.s3_storage_class and opts.s3_storage_class not in S3_STORAGE_CLASSES:
        raise UsageError(f"s3_storage_class {opts.s3_storage_class!r}: use one of "
                         f"{', '.join(S3_STORAGE_CLASSES)}", "s3_storage_class")  # fmt: skip
    if opts.s3_sse and opts.s3_sse not in S3_SSE:
        raise UsageError(f"s3_sse {opts.s3_sse!r}: use AES256 or aws:kms", "s3_sse")
    if opts.s3_sse_kms_key_id and opts.s3_sse != "aws:kms":
        raise UsageError("s3_sse_kms_key_id needs s3_sse aws:kms", "s3_sse_kms_key_id")
    if (opts.delete_excluded or opts.force_delete) and not opts.mirror:
        flag = "delete_excluded" if opts.delete_excluded else "force_delete"
        raise UsageError(f"{flag} needs --mirror (only a mirror deletes)", flag)


def _abs_file(path: str) -> str:
    """A rule or list file named on the command line, made absolute ("-": standard input is
    not supported, the engine may run elsewhere)."""
    return os.path.abspath(os.path.expanduser(path)) if path else ""


def _backup_dir(opts: SyncOptions) -> str:
    """--backup-dir as the run will use it: placeholders kept (filled at each run), a relative
    local path made relative to the destination (rsync's rule), a remote one kept as given
    (a path below the destination's bucket or share, or a full URL)."""
    bdir = opts.backup_dir
    if not bdir:
        return ""
    if "://" in bdir:
        return _abs_or_url(bdir, "backup_dir") if "{" not in bdir else bdir
    if is_remote(opts.destination) or os.path.isabs(bdir):
        return bdir
    return os.path.join(os.path.abspath(opts.destination.removeprefix("file://")), bdir)


def _check_common(concurrency: object, filters: tuple[tuple[str, str], ...]) -> None:
    if not (isinstance(concurrency, int) and 0 <= concurrency <= MAX_CONCURRENCY):
        raise UsageError(f"concurrency must be a whole number from 1 to {MAX_CONCURRENCY} "
                         f"(0 = one per CPU), got {concurrency!r}", "concurrency")  # fmt: skip
    for action, pattern in filters:
        if action not in FILTER_ACTIONS or not pattern:
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
