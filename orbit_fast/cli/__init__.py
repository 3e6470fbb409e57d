"""The `orbit-fast` / `orbit` command line: flags -> SyncOptions -> api; errors -> exit codes.

Only click is imported at start-up; each command imports the engine when it runs, so that
`orbit-fast --help` and a no-change sync start quickly.
"""

from __future__ import annotations

import sys

import click

from orbit_fast._version import __version__
from orbit_fast.cli.backup_cmd import COMMANDS as REPO_COMMANDS
from orbit_fast.cli.bench_cmd import bench_cmd
from orbit_fast.cli.hub_cmd import job_group, serve_cmd, state_group
from orbit_fast.cli.sync_cmd import sync_cmd


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="orbit-fast")
@click.option("--s3-endpoint", envvar="ORBIT_S3_ENDPOINT", default="", metavar="URL",
              help="An S3-compatible server for every s3:// URL of the command (MinIO, Ceph, "
              "...). Env: ORBIT_S3_ENDPOINT.")  # fmt: skip
def cli(s3_endpoint: str) -> None:
    """orbit-fast: resumable, verified data movement.

    Exit codes are listed in docs/exit-codes.md (0 ok, 1 finished with skipped files,
    2 usage, 3-22 specific errors, 130/143 interrupted and resumable).
    """
    # --s3-endpoint stays in this group's params: each command passes it to the engine as an
    # option (cli.runner.s3_endpoint); os.environ is not ours to change.


cli.add_command(sync_cmd)
cli.add_command(bench_cmd)
cli.add_command(serve_cmd)
cli.add_command(job_group)
cli.add_command(state_group)
for _cmd in REPO_COMMANDS:
    cli.add_command(_cmd)


def main() -> None:
    try:
        cli.main(prog_name="orbit-fast", standalone_mode=True)
    except KeyboardInterrupt:  # a second Ctrl-C while the first one was being handled
        sys.exit(130)
