"""CancelToken: how a signal handler or another thread asks a running engine call to stop.

Importable from every layer and cheap to import (the CLI and api import it at start-up).
"""

from __future__ import annotations

from orbit_fast.errors import ExitCode


class CancelToken:
    """Set from a signal handler or another thread; the coordinator polls it."""

    def __init__(self) -> None:
        self.exit_code: ExitCode | None = None

    def cancel(self, exit_code: ExitCode = ExitCode.INTERRUPTED) -> None:
        if self.exit_code is None:
            self.exit_code = exit_code

    @property
    def cancelled(self) -> bool:
        return self.exit_code is not None
