"""`orbit-fast sync SRC DST` (also `orbit sync --source SRC --destination DST`)."""

from __future__ import annotations

import click

_FILTER_FLAGS = ("--include", "--exclude")


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
    help="Also delete destination entries that are not in the source (never excluded ones).",
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
@click.option(
    "--concurrency",
    "-j",
    type=int,
    default=0,
    envvar="ORBIT_CONCURRENCY",
    show_default="one per CPU",
    help="Worker processes.",
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
    concurrency: int,
    chunk_size_mb: float | None,
    fsync_policy: str,
    no_sparse: bool,
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
        filters=ctx.meta.get("filter_order", ()),
        concurrency=concurrency,
        chunk_size_mb=DEFAULT_CHUNK_SIZE_MB if chunk_size_mb is None else chunk_size_mb,
        fsync=FsyncPolicy(fsync_policy),
        db_path=db_path or "",
        sparse=not no_sparse,
        retry_attempts=retry_attempts,
        s3_endpoint=s3_endpoint,
    )
    renderer = Renderer(json_out=json_out, progress=not no_progress and not json_out)
    from orbit_fast.api import sync
    from orbit_fast.cli.runner import run_engine

    run_engine(lambda cancel: sync(options=opts, on_event=renderer, cancel=cancel), renderer,
               json_out)  # fmt: skip


def _one(arg: str | None, opt: str | None, arg_name: str, opt_name: str) -> str:
    if arg and opt and arg != opt:
        raise click.UsageError(f"give {arg_name} or {opt_name}, not both")
    value = arg or opt
    if not value:
        raise click.UsageError(f"missing {arg_name} (or {opt_name} PATH)")
    return value
