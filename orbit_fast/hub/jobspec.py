"""What a hub job means to the engine: its mode and config as engine options, the warnings for
settings that do nothing in the chosen mode, and where it may read and write.

Kept free of the web framework: the API, the CLI and the tests check jobs with the same code.
"""

from __future__ import annotations

import os
from typing import Any

from orbit_fast import locations
from orbit_fast.config import (
    DEFAULT_CHUNK_SIZE_MB,
    BackupOptions,
    SyncOptions,
    validate,
    validate_backup,
)
from orbit_fast.errors import OrbitError, UsageError
from orbit_fast.filters import parse_rule
from orbit_fast.roots import check_protected, check_roots

MODES = ("sync", "mirror", "backup")
# Config fields and the modes where each has an effect.
FIELD_MODES: dict[str, tuple[str, ...]] = {
    "concurrency": MODES,
    "chunk_size_mb": ("sync", "mirror"),
    "retry_attempts": MODES,  # per request in the engine, and per run in the hub
    "compression": ("backup",),
    "password_file": ("backup",),
    "insecure_no_encryption": ("backup",),
    "max_delete": ("mirror",),
    "delete_excluded": ("mirror",),
    **dict.fromkeys(("checksum", "backup_dir", "suffix", "bwlimit", "files_from", "from0",
                     "min_size", "max_size", "min_age", "max_age", "size_only",
                     "ignore_existing", "update", "s3_storage_class", "s3_sse",
                     "s3_sse_kms_key_id", "s3_region", "no_owner", "no_group", "no_xattrs",
                     "no_acls", "no_hard_links", "trust_remote_metadata", "smb_security"),
                    ("sync", "mirror")),
}
DEFAULT_RETRY_ATTEMPTS = 5
# A hub mirror's deletions above this are withheld unless its config says otherwise: a job
# runs unattended, and half the replica gone in one night is never routine.
DEFAULT_MAX_DELETE = "50%"
# Config fields naming files the hub reads at each run: absolute paths, as the hub sees them.
FILE_FIELDS = ("include_from", "exclude_from", "filter_from", "files_from", "password_file")
# The sync options passed through as they are (SyncOptions has the same names).
PASSED = ("checksum", "backup_dir", "suffix", "bwlimit", "from0", "size_only",
          "ignore_existing", "update", "delete_excluded", "s3_storage_class", "s3_sse",
          "s3_sse_kms_key_id", "s3_region", "min_age", "max_age", "files_from", "no_owner",
          "no_group", "no_xattrs", "no_acls", "no_hard_links", "trust_remote_metadata",
          "smb_security")


def mode_warnings(mode: str, given: set[str]) -> list[str]:
    out = []
    for name in sorted(given):
        modes = FIELD_MODES.get(name, MODES)
        if mode not in modes:
            why = {
                "compression": "sync and mirror copy files as they are; compression applies to "
                               "backup repositories (mode backup)",
                "chunk_size_mb": "backup cuts files into content-defined chunks (FastCDC, avg "
                                 "1 MiB), whatever chunk_size_mb says",
                "password_file": "only backup repositories are encrypted",
                "insecure_no_encryption": "only backup repositories are encrypted",
            }.get(name, "")
            out.append(f"config.{name} has no effect in mode {mode}: {why}")
    return out


def filter_rules(cfg: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """A job's rules in the order they are tried: `filter` ("+ P" / "- P"), `include`,
    `exclude`, then the rule files."""
    out: list[tuple[str, str]] = []
    out += [parse_rule(str(rule), "filter") for rule in cfg.get("filter") or []]
    out += [("include", str(p)) for p in cfg.get("include") or []]
    out += [("exclude", str(p)) for p in cfg.get("exclude") or []]
    for key in ("include_from", "exclude_from", "filter_from"):
        if cfg.get(key):
            out.append((key.replace("_", "-"), cfg[key]))
    return tuple(out)


def engine_options(job: dict[str, Any], db_path: str, universe_path: str,
                   roots: tuple[str, ...] = (), protected: tuple[str, ...] = (),
                   overrides: dict[str, Any] | None = None
                   ) -> SyncOptions | BackupOptions:  # fmt: skip
    """The engine's options for a job, as given: the engine checks them when it runs the job
    (api.sync / api.backup: the allowed roots and protected paths included, at every run),
    check_job when the job is created or changed. `overrides`: one run's (RunRequest)."""
    cfg = job["config"]
    once = overrides or {}
    concurrency = int(cfg.get("concurrency") or 0)
    retries = int(cfg.get("retry_attempts") or 0)
    if job["mode"] == "backup":
        return BackupOptions(
            source=job["source"], repository=job["destination"], concurrency=concurrency,
            codec=cfg.get("compression") or "", db_path=db_path, universe_path=universe_path,
            allowed_roots=roots, protected_paths=protected,
            password_file=cfg.get("password_file") or "",
            insecure_no_encryption=bool(cfg.get("insecure_no_encryption")),
            filters=filter_rules(cfg),
        )  # fmt: skip
    max_delete = once.get("max_delete", cfg.get("max_delete"))
    return SyncOptions(
        source=job["source"], destination=job["destination"], mirror=job["mode"] == "mirror",
        concurrency=concurrency, chunk_size_mb=cfg.get("chunk_size_mb") or DEFAULT_CHUNK_SIZE_MB,
        retry_attempts=retries, db_path=db_path, allowed_roots=roots, protected_paths=protected,
        filters=filter_rules(cfg),
        max_delete=DEFAULT_MAX_DELETE if max_delete is None else str(max_delete),
        force_delete=bool(once.get("force_delete")) and job["mode"] == "mirror",
        min_size="" if cfg.get("min_size") is None else str(cfg["min_size"]),
        max_size="" if cfg.get("max_size") is None else str(cfg["max_size"]),
        **{k: cfg[k] for k in PASSED if cfg.get(k) is not None},
    )  # fmt: skip


def check_job(job: dict[str, Any], db_path: str, universe_path: str, roots: tuple[str, ...],
              protected: tuple[str, ...] = ()) -> list[str]:  # fmt: skip
    """Raise UsageError for a job that cannot run as given; return its warnings. `protected`:
    the hub's state paths (HubSettings.protected_paths; the jobs DB's directory always)."""
    if job["mode"] not in MODES:
        raise UsageError(f"mode {job['mode']!r}: use one of {', '.join(MODES)}")
    comp = job["config"].get("compression")
    if comp:
        from orbit_fast.compression import parse_codec

        parse_codec(comp)
    for key in FILE_FIELDS:
        path = job["config"].get(key)
        if path and not os.path.isabs(path):
            raise UsageError(f"{key} {path!r}: use an absolute path (as the hub sees it)", key)
    protected = protected or (os.path.dirname(db_path),)
    for what in ("source", "destination"):
        check_location(what, job[what], roots, protected)
    opts = engine_options(job, db_path, universe_path)
    # The engine's own check, the one it makes again when it runs the job; its UsageError
    # names the field.
    if isinstance(opts, BackupOptions):
        validate_backup(opts)
    else:
        validate(opts)
    warnings = mode_warnings(job["mode"], set(job["config"]))
    source = locations.parse(job["source"])
    if not source.remote and not os.path.isdir(locations.format(source)):
        warnings.append(f"source {job['source']} is not a directory here now: the job fails "
                        "when it runs unless it appears (a share mounted later?)")  # fmt: skip
    return warnings


def check_location(what: str, url: str, roots: tuple[str, ...],
                   protected: tuple[str, ...]) -> None:  # fmt: skip
    """A job's source or destination: decoded and normalised as the engine and the backends
    read it (locations.parse), not the hub's own state, and under an allowed root when
    ORBIT_ALLOWED_ROOTS is set, through directories only (the run checks all of it again)."""
    if "\\" in url:
        raise UsageError(f"{what} {url!r}: backslashes are not allowed in job paths")
    try:
        loc = locations.parse(url)
    except UsageError as exc:
        raise UsageError(f"{what}: {exc}", what) from None
    if not loc.remote and not url.removeprefix("file://").startswith("/"):
        raise UsageError(f"{what} {url!r}: use an absolute path (as the hub sees it)")
    where = locations.format(loc)
    try:
        check_protected(what, where, protected)
    except OrbitError as exc:
        raise UsageError(str(exc), what) from None
    check_roots(what, where, roots)


def resource_keys(job: dict[str, Any]) -> set[str]:
    """What two running jobs may not share: a destination (or repository) — equal, nested,
    or the same place spelled differently: keys_conflict compares them — and the universe
    index for backups."""
    keys = {"dst:" + place_key(job["destination"])}
    if job["mode"] == "backup":
        keys.add("universe")
    return keys


def place_key(url: str) -> str:
    """A destination as the overlap rule compares it: normalised (locations.py), local paths
    with their links resolved, SMB paths in lower case (shares are usually case-insensitive:
    comparing more broadly only serialises more)."""
    try:
        loc = locations.parse(url)
    except UsageError:
        return url  # refused when the job was made; it fails at its run without a conflict
    if not loc.remote:
        return os.path.realpath(locations.format(loc))
    if loc.scheme == "smb":
        loc = loc._replace(parts=tuple(p.lower() for p in loc.parts))
    return locations.format(loc.place())


def keys_conflict(a: set[str], b: set[str]) -> bool:
    """Whether jobs holding `a` and `b` may not run at once: a shared key, or destinations of
    which one is the other or below it."""
    if a & b:
        return True
    return any(_nested(x[4:], y[4:]) for x in a if x.startswith("dst:")
               for y in b if y.startswith("dst:"))  # fmt: skip


def _nested(x: str, y: str) -> bool:
    def within(inner: str, outer: str) -> bool:
        return inner == outer or inner.startswith(outer.rstrip("/") + "/")

    return within(x, y) or within(y, x)
