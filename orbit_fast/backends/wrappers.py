"""RetryingStore: retries of transient failures around any Store, not inside each backend.

A call that raises TransientError is tried again after an exponential backoff with "equal
jitter" (half fixed, half random: 0.5-1 s, then 1-2 s, 2-4 s, ... at most 10 s per wait), up to
`attempts` tries in all: with the default 5, a server may be away for 7.5-15 s without
failing the job. Then RemoteError says what kept failing and that a rerun resumes. Everything
else passes straight through.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from orbit_fast.backends.base import Store, TransientError
from orbit_fast.errors import RemoteError

T = TypeVar("T")
DEFAULT_ATTEMPTS = 5
BASE_DELAY_S = 0.5
MAX_DELAY_S = 10.0


class RetryingStore:
    def __init__(self, inner: Store, attempts: int = DEFAULT_ATTEMPTS,
                 sleep: Callable[[float], None] = time.sleep) -> None:  # fmt: skip
        self.inner = inner
        self.url = inner.url
        self.attempts = max(1, attempts)
        self._sleep = sleep
        self.retries = 0  # transient failures absorbed so far (for stats)

    @property
    def capabilities(self) -> Any:
        return self.inner.capabilities

    def _retry(self, what: str, fn: Callable[[], T]) -> T:
        for attempt in range(1, self.attempts + 1):
            try:
                return fn()
            except TransientError as exc:
                if attempt == self.attempts:
                    raise RemoteError(
                        f"{self.url}: {what} kept failing after {attempt} attempts ({exc}); "
                        "check that the server is reachable, then rerun: finished work is kept"
                    ) from exc
                self.retries += 1
                cap = min(MAX_DELAY_S, BASE_DELAY_S * 2 ** (attempt - 1) * 2)
                self._sleep(cap / 2 + random.uniform(0, cap / 2))
        raise AssertionError("unreachable")

    def write(self, name: str, data: bytes | bytearray | memoryview,
              exclusive: bool = False) -> None:  # fmt: skip
        self._retry(f"writing {name}", lambda: self.inner.write(name, data, exclusive))

    def read(self, name: str) -> bytes:
        return self._retry(f"reading {name}", lambda: self.inner.read(name))

    def read_range(self, name: str, offset: int, length: int) -> bytes:
        return self._retry(f"reading {name}",
                           lambda: self.inner.read_range(name, offset, length))  # fmt: skip

    def size(self, name: str) -> int:
        return self._retry(f"stat of {name}", lambda: self.inner.size(name))

    def exists(self, name: str) -> bool:
        return self._retry(f"stat of {name}", lambda: self.inner.exists(name))

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        # Whole listings are retried: a listing cut in the middle cannot be resumed portably.
        yield from self._retry(f"listing {prefix or '/'}", lambda: list(self.inner.list(prefix)))

    def delete(self, name: str) -> None:
        self._retry(f"deleting {name}", lambda: self.inner.delete(name))

    def sweep_temp(self, prefix: str) -> int:
        return self._retry("sweeping temp objects", lambda: self.inner.sweep_temp(prefix))

    def close(self) -> None:
        self.inner.close()
