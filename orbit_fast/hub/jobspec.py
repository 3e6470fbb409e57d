"""What a hub job means to the engine: its mode and config as engine options, the warnings for
settings that do nothing in the chosen mode, and where it may read and write.

Kept free of the web framework: the API, the CLI and the tests check jobs with the same code.
"""

from __future__ import annotations

import os
import posixpath
from typing import Any

from orbit_fast.config import (
    DEFAULT_CHUNK_SIZE_MB,
    BackupOptions,
    SyncOptions,
    is_remote,
    validate,
    validate_backup,
)
from orbit_fast.errors import UsageError

MODES = ("sync", "mirror", "backup")
# Config fields and the modes where each has an effect.
FIELD_MODES: dict[str, tuple[str, ...]] = {
    "concurrency": MODES,
    "chunk_size_mb": ("sync", "mirror"),
    "retry_attempts": MODES,  # per request in the engine, and per run in the hub
    "compression": ("backup",),
}
DEFAULT_RETRY_ATTEMPTS = 5


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
            }.get(name, "")
            out.append(f"config.{name} has no effect in mode {mode}: {why}")
    return out


def engine_options(job: dict[str, Any], db_path: str,
                   universe_path: str) -> SyncOptions | BackupOptions:  # fmt: skip
    """The engine's options for a job, as given: the engine checks them when it runs the job
    (api.sync / api.backup), check_job when the job is created or changed."""
    cfg = job["config"]
    concurrency = int(cfg.get("concurrency") or 0)
    retries = int(cfg.get("retry_attempts") or 0)
    if job["mode"] == "backup":
        return BackupOptions(
            source=job["source"], repository=job["destination"], concurrency=concurrency,
            codec=cfg.get("compression") or "", db_path=db_path, universe_path=universe_path,
        )  # fmt: skip
    return SyncOptions(
        source=job["source"], destination=job["destination"], mirror=job["mode"] == "mirror",
        concurrency=concurrency, chunk_size_mb=cfg.get("chunk_size_mb") or DEFAULT_CHUNK_SIZE_MB,
        retry_attempts=retries, db_path=db_path,
    )  # fmt: skip


def check_job(job: dict[str, Any], db_path: str, universe_path: str,
              roots: tuple[str, ...]) -> list[str]:  # fmt: skip
    """Raise UsageError for a job that cannot run as given; return its warnings."""
    if job["mode"] not in MODES:
        raise UsageError(f"mode {job['mode']!r}: use one of {', '.join(MODES)}")
    comp = job["config"].get("compression")
    if comp:
        from orbit_fast.compression import parse_codec

        parse_codec(comp)
    state_dir = os.path.dirname(db_path)
    for what in ("source", "destination"):
        check_location(what, job[what], roots, state_dir)
    opts = engine_options(job, db_path, universe_path)
    # The engine's own check, the one it makes again when it runs the job; its UsageError
    # names the field.
    if isinstance(opts, BackupOptions):
        validate_backup(opts)
    else:
        validate(opts)
    return mode_warnings(job["mode"], set(job["config"]))


def check_location(what: str, url: str, roots: tuple[str, ...], state_dir: str) -> None:
    """A job's source or destination: no traversal, not the hub's own state, under an allowed
    root when ORBIT_ALLOWED_ROOTS is set."""
    if not url or "\x00" in url or len(url) > 4096:
        raise UsageError(f"{what}: give a path or URL without NUL, at most 4096 characters")
    remote = is_remote(url)
    path = url.split("://", 1)[1] if remote else url.removeprefix("file://")
    if "\\" in path or any(part == ".." for part in path.split("/")):
        raise UsageError(f"{what} {url!r}: '..' and backslashes are not allowed in job paths")
    if not remote:
        if not path.startswith("/"):
            raise UsageError(f"{what} {url!r}: use an absolute path (as the hub sees it)")
        real = os.path.realpath(path)
        state = os.path.realpath(state_dir)
        if real == state or real.startswith(state + "/") or state.startswith(real + "/"):
            raise UsageError(f"{what} {url!r} overlaps the hub's own state directory {state_dir}")
        candidates = {posixpath.normpath(path), real}
    else:
        candidates = {url.split("://", 1)[0].lower() + "://" + posixpath.normpath(path)}
    # Both the path as written and where its symlinks lead must lie under a root.
    if roots and not all(any(_under(c, r) for r in roots) for c in candidates):
        raise UsageError(f"{what} {url!r} is outside the allowed roots "
                         f"(ORBIT_ALLOWED_ROOTS={','.join(roots)}); ask an admin to add it")


def _under(path: str, root: str) -> bool:
    if "://" not in root:
        root = os.path.realpath(root) if path.startswith("/") else root
    return path == root or path.startswith(root.rstrip("/") + "/") or root == "/"


def resource_keys(job: dict[str, Any]) -> set[str]:
    """What two running jobs may not share: a destination (or repository), and the universe
    index for backups."""
    dst = job["destination"].rstrip("/")
    keys = {"dst:" + (dst if is_remote(dst) else os.path.realpath(dst))}
    if job["mode"] == "backup":
        keys.add("universe")
    return keys
