"""orbit-fast: resumable, verified data movement.

The public API is in `orbit_fast.api` and re-exported here lazily, so that `import orbit_fast`
(and the CLI's start-up) stays cheap.
"""

from __future__ import annotations

from typing import Any

from orbit_fast._version import __version__

_API = ("sync", "CancelToken", "SyncOptions", "BackupOptions", "backup", "restore", "verify",
        "forget", "prune", "init_repository", "rebuild_index")
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        from orbit_fast import api

        return getattr(api, name)
    raise AttributeError(f"module 'orbit_fast' has no attribute {name!r}")
