"""`orbit-fast sync SRC DST` (also `orbit sync --source SRC --destination DST`)."""

from __future__ import annotations

import click

_FILTER_FLAGS = ("--include", "--exclude", "--filter", "--include-from", "--exclude-from",
                 "--filter-from")


class _FilterOrderCommand(click.Command):
    """Records --include/--exclude in command-line order: first match wins (filters.py)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        order: list[tuple[str, str]] = []
        it = iter(args)
        for arg in it:
            if arg == "--":
                break
            for flag in _FILTER_FLAGS:
                if arg == flag:
                    value = next(it, None)
                    if value is not None:
                        order.append((flag[2:], value))
                elif arg.startswith(flag + "="):
                    order.append((flag[2:], arg[len(flag) + 1 :]))
        ctx.meta["filter_order"] = tuple(order)
        return super().parse_args(ctx, args)


@click.command("sync", cls=_FilterOrderCommand)
@click.argument("src", required=False)
@click.argument("dst", required=False)
@click.option("--source", "source_opt", metavar="PATH",
              help="Source directory or s3:// / smb:// URL (or give SRC).")  # fmt: skip
@click.option("--destination", "dest_opt", metavar="PATH",
              help="Destination directory or s3:// / smb:// URL (or give DST).")  # fmt: skip
@click.option(
    "--db-path",
    envvar="ORBIT_DB_PATH",
    metavar="PATH",
    help="Jobs DB (SQLite) holding checkpoints. Default: $XDG_STATE_HOME/orbit-fast/jobs.db. "
    "Must be on a local disk.",
)
@click.option(
    "--mirror",
    "--delete",
    "mirror",
    is_flag=True,
    help="Also delete destination entries that are not in the source (excluded ones only "
    "with --delete-excluded). Guarded: see --max-delete, --force-delete.",
)
@click.option(
    "--checksum",
    "-c",
    is_flag=True,
    help="Compare content (xxh3-128), not size and mtime, to find changed files.",
)
@click.option("--dry-run", "-n", is_flag=True, help="Print the plan; change nothing.")
@click.option(
    "--include",
    multiple=True,
    metavar="GLOB",
    help="Take part in the run if this matches first (repeatable).",
)
@click.option(
    "--exclude",
    multiple=True,
    metavar="GLOB",
    help="Leave out if this matches first (repeatable). See docs/sync.md.",
)
@click.option("--filter", "filter_rules", multiple=True, metavar="RULE",
              help="A rule '+ PATTERN' or '- PATTERN', in order with the others (rclone).")
@click.option("--include-from", multiple=True, metavar="FILE",
              help="Include patterns, one per line (rsync, rclone).")  # fmt: skip
@click.option("--exclude-from", multiple=True, metavar="FILE",
              help="Exclude patterns, one per line (rsync, rclone).")  # fmt: skip
@click.option("--filter-from", multiple=True, metavar="FILE",
              help="Rules '+ PATTERN' / '- PATTERN' per line; '!' clears (rsync, rclone).")
@click.option("--files-from", metavar="FILE",
              help="Only these paths (relative to SRC, one per line; a directory brings "
              "everything below it).")  # fmt: skip
@click.option("--from0", "-0", is_flag=True,
              help="Entries of --files-from and rule files end with NUL, not newline.")
@click.option("--min-size", metavar="SIZE",
              help="Leave out files smaller (100K, 1.5M; bare: bytes).")
@click.option("--max-size", metavar="SIZE",
              help="Leave out files larger (100K, 1.5M; bare: bytes).")
@click.option("--min-age", metavar="AGE",
              help="Leave out files modified more recently (90s, 1h30m, 7d, or 2026-01-02).")
@click.option("--max-age", metavar="AGE",
              help="Leave out files modified longer ago (90s, 1h30m, 7d, or 2026-01-02).")
@click.option("--size-only", is_flag=True, help="A file of the same size is unchanged.")
@click.option("--ignore-existing", is_flag=True,
              help="Never replace a file the destination has.")
@click.option("--update", "-u", is_flag=True,
              help="Keep destination files newer than the source's.")
@click.option("--delete-excluded", is_flag=True,
              help="With --mirror: also delete destination entries the rules leave out.")
@click.option("--max-delete", metavar="N|P%", envvar="ORBIT_MAX_DELETE",
              help="With --mirror: if more would be deleted (entries, or percent of the "
              "destination), delete nothing and exit 22. 'off': no limit.")  # fmt: skip
@click.option("--force-delete", is_flag=True,
              help="With --mirror: delete even though the source looks unmounted (another "
              "filesystem than last time) or empty. For one run; see docs/sync.md.")  # fmt: skip
@click.option("--backup-dir", metavar="DIR",
              help="Move what this run replaces or deletes here (relative: to the "
              "destination; {date}, {time}, {datetime} are filled in).")  # fmt: skip
@click.option("--suffix", metavar="SUFFIX", default="",
              help="Append to names moved to --backup-dir.")  # fmt: skip
@click.option("--bwlimit", metavar="RATE", envvar="ORBIT_BWLIMIT",
              help="One limit for the whole run: 10M, 10M:2M (up:down), off, or a timetable "
              "\"08:00,512k 19:00,off\" (bare numbers: KiB/s).")  # fmt: skip
@click.option("--log-file", metavar="FILE", help="Also write the run's log here (appended).")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "NOTICE", "ERROR"],
              case_sensitive=False), default=None,
              help="What --log-file gets: DEBUG and INFO every file, NOTICE [default] "
              "warnings, stats and the summary, ERROR only errors.")  # fmt: skip
@click.option("--stats", "stats_every", metavar="DURATION",
              help="Print a line of totals this often (30s, 5m), for logs without a terminal.")
@click.option("--s3-storage-class", metavar="CLASS",
              help="Store objects as STANDARD_IA, GLACIER_IR, DEEP_ARCHIVE, "
              "INTELLIGENT_TIERING, ...")  # fmt: skip
@click.option("--s3-sse", type=click.Choice(["AES256", "aws:kms"]),
              help="Server-side encryption of the objects written.")
@click.option("--s3-sse-kms-key-id", metavar="KEY", help="The KMS key for --s3-sse aws:kms.")
@click.option("--s3-region", metavar="REGION", envvar="ORBIT_S3_REGION",
              help="The bucket's region when no --s3-endpoint is given.")
@click.option(
    "--concurrency",
    "-j",
    type=click.IntRange(1, 256),
    default=None,
    envvar="ORBIT_CONCURRENCY",
    show_default="one per CPU",
    help="Worker processes (1-256).",
)
@click.option(
    "--chunk-size-mb",
    type=float,
    default=None,
    envvar="ORBIT_CHUNK_SIZE_MB",
    help="Block size moved through the ring, in MiB [default: 4].",
)
@click.option(
    "--fsync",
    "fsync_policy",
    type=click.Choice(["none", "batch", "file"]),
    default="batch",
    envvar="ORBIT_FSYNC",
    show_default=True,
    help="none: leave flushing to the OS; batch: flush the destination once before "
    "reporting success; file: flush every file before its rename.",
)
@click.option("--no-sparse", is_flag=True, help="Write zero blocks instead of leaving holes.")
@click.option("--no-owner", is_flag=True, help="Leave owners as the running user (root keeps "
              "the source's numeric uid by default, as rsync -a --numeric-ids).")
@click.option("--no-group", is_flag=True, help="Leave groups as the running user's.")
@click.option("--no-xattrs", is_flag=True, help="Do not copy extended attributes.")
@click.option("--no-acls", is_flag=True, help="Do not copy POSIX ACLs.")
@click.option("--no-hard-links", is_flag=True,
              help="Copy each name of a hard-linked file as a file of its own.")
@click.option("--trust-remote-metadata", is_flag=True,
              help="From an S3 source, apply owners (as root) and setuid/setgid/sticky bits "
              "from the objects' metadata; without it files get mode & 0o777 and the running "
              "user as owner, and the run says what it left out.")
@click.option("--smb-security", is_flag=True,
              help="Between SMB ends, copy each file's NT security descriptor (owner, group, "
              "DACL) too; the account needs WRITE_DAC and WRITE_OWNER, and SeRestorePrivilege "
              "to set other owners. With --checksum, every file's is compared.")
@click.option(
    "--retry-attempts",
    type=int,
    default=0,
    envvar="ORBIT_RETRY_ATTEMPTS",
    show_default="5",
    help="Tries of each remote request before the run stops (backoff with jitter).",
)
@click.option(
    "--s3-endpoint",
    default="",
    envvar="ORBIT_S3_ENDPOINT",
    metavar="URL",
    help="An S3-compatible server (MinIO, Ceph, ...); path-style addressing is then used.",
)
@click.option(
    "--json",
    "json_out",
    is_flag=True,
    help="Write one JSON event per line to stdout (for scripts and the hub).",
)
@click.option("--no-progress", is_flag=True, help="No progress bar, even on a terminal.")
@click.pass_context
def sync_cmd(
    ctx: click.Context,
    src: str | None,
    dst: str | None,
    source_opt: str | None,
    dest_opt: str | None,
    db_path: str | None,
    mirror: bool,
    checksum: bool,
    dry_run: bool,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    filter_rules: tuple[str, ...],
    include_from: tuple[str, ...],
    exclude_from: tuple[str, ...],
    filter_from: tuple[str, ...],
    files_from: str | None,
    from0: bool,
    min_size: str | None,
    max_size: str | None,
    min_age: str | None,
    max_age: str | None,
    size_only: bool,
    ignore_existing: bool,
    update: bool,
    delete_excluded: bool,
    max_delete: str | None,
    force_delete: bool,
    backup_dir: str | None,
    suffix: str,
    bwlimit: str | None,
    log_file: str | None,
    log_level: str | None,
    stats_every: str | None,
    s3_storage_class: str | None,
    s3_sse: str | None,
    s3_sse_kms_key_id: str | None,
    s3_region: str | None,
    concurrency: int | None,
    chunk_size_mb: float | None,
    fsync_policy: str,
    no_sparse: bool,
    no_owner: bool,
    no_group: bool,
    no_xattrs: bool,
    no_acls: bool,
    no_hard_links: bool,
    trust_remote_metadata: bool,
    smb_security: bool,
    retry_attempts: int,
    s3_endpoint: str,
    json_out: bool,
    no_progress: bool,
) -> None:
    """Copy new and changed files from SRC to DST; rerun the same command to resume."""
    source = _one(src, source_opt, "SRC", "--source")
    destination = _one(dst, dest_opt, "DST", "--destination")
    from click.core import ParameterSource

    from orbit_fast.cli.render import Renderer
    from orbit_fast.cli.runner import s3_endpoint as global_endpoint
    from orbit_fast.config import DEFAULT_CHUNK_SIZE_MB, FsyncPolicy, SyncOptions

    if ctx.get_parameter_source("s3_endpoint") is not ParameterSource.COMMANDLINE:
        # `orbit-fast --s3-endpoint URL sync ...`: the global flag, given or from the
        # environment (the same ORBIT_S3_ENDPOINT this option would read).
        s3_endpoint = global_endpoint() or s3_endpoint
    opts = SyncOptions(
        source=source,
        destination=destination,
        mirror=mirror,
        checksum=checksum,
        dry_run=dry_run,
        filters=_rules(ctx.meta.get("filter_order", ())),
        concurrency=concurrency or 0,
        chunk_size_mb=DEFAULT_CHUNK_SIZE_MB if chunk_size_mb is None else chunk_size_mb,
        fsync=FsyncPolicy(fsync_policy),
        db_path=db_path or "",
        sparse=not no_sparse,
        no_owner=no_owner,
        no_group=no_group,
        no_xattrs=no_xattrs,
        no_acls=no_acls,
        no_hard_links=no_hard_links,
        trust_remote_metadata=trust_remote_metadata,
        smb_security=smb_security,
        retry_attempts=retry_attempts,
        s3_endpoint=s3_endpoint,
        files_from=files_from or "",
        from0=from0,
        min_size=min_size or "",
        max_size=max_size or "",
        min_age=min_age or "",
        max_age=max_age or "",
        size_only=size_only,
        ignore_existing=ignore_existing,
        update=update,
        delete_excluded=delete_excluded,
        max_delete=max_delete or "",
        force_delete=force_delete,
        backup_dir=backup_dir or "",
        suffix=suffix,
        bwlimit=bwlimit or "",
        s3_storage_class=s3_storage_class or "",
        s3_sse=s3_sse or "",
        s3_sse_kms_key_id=s3_sse_kms_key_id or "",
        s3_region=s3_region or "",
    )
    renderer = Renderer(json_out=json_out, progress=not no_progress and not json_out,
                        log_file=log_file or "", log_level=(log_level or "NOTICE").upper(),
                        stats_every=stats_every or "")  # fmt: skip
    from orbit_fast.api import sync
    from orbit_fast.cli.runner import run_engine

    run_engine(lambda cancel: sync(options=opts, on_event=renderer, cancel=cancel), renderer,
               json_out)  # fmt: skip


def _rules(order: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """--filter "+ P" / "- P" as the include / exclude it means."""
    from orbit_fast.errors import UsageError
    from orbit_fast.filters import parse_rule

    try:
        return tuple(parse_rule(v) if a == "filter" else (a, v) for a, v in order)
    except UsageError as exc:
        raise click.UsageError(str(exc)) from None


def _one(arg: str | None, opt: str | None, arg_name: str, opt_name: str) -> str:
    if arg and opt and arg != opt:
        raise click.UsageError(f"give {arg_name} or {opt_name}, not both")
    value = arg or opt
    if not value:
        raise click.UsageError(f"missing {arg_name} (or {opt_name} PATH)")
    return value
