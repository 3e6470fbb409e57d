"""The environment the stores read their settings from: the process environment over an
overlay, the hub's env file.

`orbit-server --env-file F` is meant to work as systemd's `EnvironmentFile=F`: the S3 and SMB
settings and credentials in F reach the jobs, and the process environment still wins. The hub
is embeddable (`Hub.open(settings)` in someone else's program, and in the tests), so F is never
written into `os.environ`: the hub installs it here for its own life (`install` in Hub.open,
`remove` in Hub.close), and hands the same mapping to its worker processes, which install it
in themselves at start. Backends read through `getenv`, never `os.environ` directly.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from types import MappingProxyType

_lock = threading.Lock()
_overlay: Mapping[str, str] = MappingProxyType({})
_owners: list[object] = []  # who installed it (hubs; a worker process for itself)


def getenv(name: str, default: str | None = None) -> str | None:
    """`name` from the process environment, else from the overlay, else `default`."""
    value = os.environ.get(name)
    if value is not None:
        return value
    return _overlay.get(name, default)


def from_overlay(name: str) -> bool:
    """`name` is set by the overlay alone: a library that reads os.environ by itself (boto3)
    must be given its value explicitly."""
    return name not in os.environ and name in _overlay


def overlay() -> dict[str, str]:
    """A copy of the overlay installed now (what a new worker process is to install)."""
    return dict(_overlay)


def install(owner: object, values: Mapping[str, str]) -> None:
    """Make `values` the overlay until `owner` removes it. A second owner (two hubs in one
    process) may share it only with the same values: one overlay is process-wide, and jobs
    of two hubs with different env files would otherwise see each other's credentials."""
    global _overlay
    with _lock:
        if _owners and dict(_overlay) != dict(values):
            raise RuntimeError("another hub in this process has installed a different env file "
                               "for its jobs; run hubs with different env files in separate "
                               "processes")  # fmt: skip
        if not _owners:
            _overlay = MappingProxyType(dict(values))
        _owners.append(owner)


def remove(owner: object) -> None:
    """End `owner`'s use of the overlay; the last owner's removal empties it. A no-op for an
    owner that never installed one."""
    global _overlay
    with _lock:
        for i, o in enumerate(_owners):
            if o is owner:  # by identity: an owner's __eq__ is not ours to rely on
                del _owners[i]
                break
        if not _owners:
            _overlay = MappingProxyType({})
