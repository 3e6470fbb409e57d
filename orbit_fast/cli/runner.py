"""Running an engine call from the CLI: signals -> CancelToken, OrbitError -> exit code."""

from __future__ import annotations

import gc
import signal
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click

from orbit_fast.cli.render import Renderer

# Option fields (UsageError.field) whose command-line spelling is not "--" + the field.
FLAGS = {"filters": "--include / --exclude", "source": "SRC", "destination": "DST"}


def s3_endpoint() -> str:
    """The global --s3-endpoint (or ORBIT_S3_ENDPOINT) of the command being run: passed to the
    engine as an option, never put into os.environ."""
    root = click.get_current_context().find_root()
    return str(root.params.get("s3_endpoint") or "")


def run_engine(call: Callable[[Any], Any], renderer: Renderer, json_out: bool) -> None:
    """Run `call(cancel)` and exit with its summary's exit code (or the error's).

    The first SIGINT/SIGTERM asks the engine to stop at a safe point (checkpointed, exit 130 or
    143); a second one stops waiting. Errors are printed to stderr, or as an `error` JSON event
    with --json unless the engine already emitted it (a run that had started reports its
    own failure; one refused before it started, by option checks, does not).
    """
    from orbit_fast.cancel import CancelToken
    from orbit_fast.errors import ExitCode, OrbitError

    cancel = CancelToken()

    def on_signal(signum: int, frame: Any) -> None:
        if cancel.cancelled:
            raise KeyboardInterrupt  # second signal: stop waiting for in-flight work
        cancel.cancel(ExitCode.TERMINATED if signum == signal.SIGTERM else ExitCode.INTERRUPTED)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    renderer.on_stdout_gone = lambda: cancel.cancel(ExitCode.BROKEN_PIPE)
    # What start-up made (modules, click, the options) lives as long as this one command: the
    # collector need not walk it again in every full collection, which a run allocating a few
    # objects per file triggers often (#16: ~10% of the coordinator's CPU on 50k small files).
    gc.freeze()
    try:
        summary = call(cancel)
    except OrbitError as err:
        renderer.close()
        exit_with_error(err, json_out, already_emitted=renderer.errored)
    renderer.close()
    if renderer.stdout_gone:  # a run that ended anyway (nothing left to stop) says so too
        sys.exit(int(ExitCode.BROKEN_PIPE))
    sys.exit(getattr(summary, "exit_code", 0))


def exit_with_error(err: Exception, json_out: bool, already_emitted: bool = False) -> NoReturn:
    """Print an OrbitError (stderr, or an `error` JSON line with --json) and exit with its
    code; anything else is a bug and propagates with its traceback."""
    from orbit_fast import progress as p
    from orbit_fast.errors import OrbitError
    from orbit_fast.names import shown

    if not isinstance(err, OrbitError):
        raise err
    if not json_out:
        field = getattr(err, "field", "")
        flag = f" ({FLAGS.get(field, '--' + field.replace('_', '-'))})" if field else ""
        click.echo(f"orbit-fast: error: {shown(str(err))}{flag}", err=True)  # names inside
    elif not already_emitted:
        sys.stdout.buffer.write(p.encode_json(p.Error(msgid=err.msgid, message=str(err),
                                                      exit_code=int(err.exit_code))) + b"\n")
        sys.stdout.flush()
    sys.exit(int(err.exit_code))
