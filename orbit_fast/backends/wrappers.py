"""RetryingStore: retries of transient failures around any Store, not inside each backend.
`retrying(store)` wraps one with exactly its optional abilities (part uploads, server copies):
a wrapper never claims an ability the store lacks.

A call that raises TransientError is tried again after an exponential backoff with "equal
jitter" (half fixed, half random: 0.5-1 s, then 1-2 s, 2-4 s, ... at most 10 s per wait), up to
`attempts` tries in all: with the default 5, a server may be away for 7.5-15 s without
failing the job. Then RemoteError says what kept failing and that a rerun resumes. Everything
else passes straight through.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from orbit_fast.backends.base import (
    Capabilities,
    Descend,
    FileMeta,
    ObjectInfo,
    OnDir,
    OnSkip,
    PartUploads,
    ServerCopier,
    ServerCopy,
    Store,
    TransientError,
    Upload,
)
from orbit_fast.errors import RemoteUnavailable

T = TypeVar("T")
DEFAULT_ATTEMPTS = 5
BASE_DELAY_S = 0.5
MAX_DELAY_S = 10.0


class Retrier:
    """Runs calls, retrying TransientError with backoff; RemoteUnavailable when it persists."""

    def __init__(self, url: str, attempts: int = DEFAULT_ATTEMPTS,
                 sleep: Callable[[float], None] = time.sleep) -> None:  # fmt: skip
        self.url = url
        self.attempts = max(1, attempts)
        self._sleep = sleep
        self.retries = 0  # transient failures absorbed so far (for stats)

    def _retry(self, what: str, fn: Callable[[], T]) -> T:
        for attempt in range(1, self.attempts + 1):
            try:
                return fn()
            except TransientError as exc:
                self._after_failure(what, attempt, exc)
        raise AssertionError("unreachable")

    def _after_failure(self, what: str, attempt: int, exc: TransientError) -> None:
        """Wait before the next attempt, or raise RemoteUnavailable after the last one."""
        if attempt == self.attempts:
            raise RemoteUnavailable(
                f"{self.url}: {what} kept failing after {attempt} attempts ({exc}); "
                + RemoteUnavailable.ADVICE
            ) from exc
        self.retries += 1
        cap = min(MAX_DELAY_S, BASE_DELAY_S * 2 ** (attempt - 1) * 2)
        self._sleep(cap / 2 + random.uniform(0, cap / 2))

    def __call__(self, what: str, fn: Callable[[], T]) -> T:
        return self._retry(what, fn)


class RetryingStore(Retrier):
    """Both halves of the Store protocol with retries; no optional ability (see retrying)."""

    def __init__(self, inner: Store, attempts: int = DEFAULT_ATTEMPTS,
                 sleep: Callable[[float], None] = time.sleep) -> None:  # fmt: skip
        super().__init__(inner.url, attempts, sleep)
        self.inner = inner

    @property
    def capabilities(self) -> Capabilities:
        return self.inner.capabilities

    def write(self, name: str, data: bytes | bytearray | memoryview, exclusive: bool = False,
              private: bool = False) -> None:  # fmt: skip
        self._retry(f"writing {name}", lambda: self.inner.write(name, data, exclusive, private))

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

    def is_empty(self) -> bool:
        return self._retry("listing /", self.inner.is_empty)

    def delete(self, name: str) -> None:
        self._retry(f"deleting {name}", lambda: self.inner.delete(name))

    def sweep_temp(self, prefix: str) -> int:
        return self._retry("sweeping temp objects", lambda: self.inner.sweep_temp(prefix))

    def remove_temp(self, name: str) -> bool:
        # Not retried: a temp file that cannot be removed now is left for a later run.
        remove: Callable[[str], bool] = getattr(self.inner, "remove_temp")  # noqa: B009
        return remove(name)

    def close(self) -> None:
        self.inner.close()

    def set_dir_mtime(self, name: str, mtime_ns: int) -> None:
        set_time: Callable[[str, int], None] = getattr(self.inner, "set_dir_mtime")  # noqa: B009
        self._retry(f"setting the time of {name}", lambda: set_time(name, mtime_ns))

    def set_meta(self, name: str, meta: FileMeta) -> ObjectInfo:
        # Only where capabilities.dos_meta says the store has it, as set_dir_mtime.
        inner = self.inner
        set_meta: Callable[[str, FileMeta], ObjectInfo] = getattr(inner, "set_meta")  # noqa: B009
        return self._retry(f"setting the attributes of {name}", lambda: set_meta(name, meta))

    def security(self, name: str) -> tuple[bytes, ObjectInfo]:
        # Only where capabilities.nt_security says the store has it.
        inner = self.inner
        get: Callable[[str], tuple[bytes, ObjectInfo]] = getattr(inner, "security")  # noqa: B009
        return self._retry(f"reading the security descriptor of {name}", lambda: get(name))

    def list_info(self, prefix: str, descend: Descend | None = None,
                  on_skip: OnSkip | None = None, on_dir: OnDir | None = None,
                  meta: bool = False) -> Iterator[ObjectInfo]:  # fmt: skip
        # Entries stream as the backend finds them (a sync starts copying while the listing
        # goes on). A listing cut in the middle cannot be resumed portably, so a retry lists
        # again from the start and yields only the names not yielded yet; `on_skip` may hear
        # of an entry twice, harmlessly.
        yielded: set[str] = set()
        for attempt in range(1, self.attempts + 1):
            try:
                for info in self.inner.list_info(prefix, descend, on_skip, on_dir, meta):
                    if info.name not in yielded:
                        yielded.add(info.name)
                        yield info
                return
            except TransientError as exc:
                self._after_failure(f"listing {prefix or '/'}", attempt, exc)

    def stat_info(self, name: str, meta: bool = False) -> ObjectInfo:
        return self._retry(f"stat of {name}", lambda: self.inner.stat_info(name, meta))

    def read_info(self, name: str, expect: ObjectInfo | None = None,
                  meta: bool = False) -> tuple[bytes, ObjectInfo]:  # fmt: skip
        return self._retry(f"reading {name}", lambda: self.inner.read_info(name, expect, meta))

    def put_file(self, name: str, data: bytes, mtime_ns: int, durable: bool = True,
                 meta: FileMeta | None = None) -> ObjectInfo:  # fmt: skip
        return self._retry(f"writing {name}",
                           lambda: self.inner.put_file(name, data, mtime_ns, durable,
                                                       meta))  # fmt: skip

    def delete_many(self, names: Sequence[str]) -> None:
        self._retry(f"deleting {len(names)} objects", lambda: self.inner.delete_many(names))

    def keep_from(self, src: object, name: str, target: str) -> None:
        # Asked of the unwrapped stores, as server_copy_from is.
        inner_src = src.inner if isinstance(src, RetryingStore) else src
        self._retry(f"keeping a copy of {name}",
                    lambda: self.inner.keep_from(inner_src, name, target))  # fmt: skip


class RetryingUploads(RetryingStore):
    """A RetryingStore around a store with PartUploads; its uploads retry too."""

    def __init__(self, inner: Store, attempts: int = DEFAULT_ATTEMPTS,
                 sleep: Callable[[float], None] = time.sleep) -> None:  # fmt: skip
        super().__init__(inner, attempts, sleep)
        if not isinstance(inner, PartUploads):
            raise TypeError(f"{inner.url}: the store has no part uploads to retry")
        self._uploads = inner

    def begin_upload(self, name: str, size: int, part_bytes: int, mtime_ns: int,
                     token: str = "", md5: str = "",
                     meta: FileMeta | None = None) -> Upload:  # fmt: skip
        def begin() -> Upload:
            return self._uploads.begin_upload(name, size, part_bytes, mtime_ns, token, md5,
                                              meta)  # fmt: skip

        up = self._retry(f"starting the upload of {name}", begin)
        return RetryingUpload(up, self)

    def resume_upload(self, name: str, state: str, size: int, part_bytes: int,
                      mtime_ns: int) -> Upload:  # fmt: skip
        up = self._uploads.resume_upload(name, state, size, part_bytes, mtime_ns)
        return RetryingUpload(up, self)


class RetryingCopies(RetryingStore):
    """A RetryingStore around a ServerCopier; its copies retry too."""

    def __init__(self, inner: Store, attempts: int = DEFAULT_ATTEMPTS,
                 sleep: Callable[[float], None] = time.sleep) -> None:  # fmt: skip
        super().__init__(inner, attempts, sleep)
        if not isinstance(inner, ServerCopier):
            raise TypeError(f"{inner.url}: the store has no server copies to retry")
        self._copier = inner

    def server_copy_from(self, src: object) -> ServerCopy | None:
        # Asked of the unwrapped stores: a backend recognises only its own kind of store.
        copy = self._copier.server_copy_from(src.inner if isinstance(src, RetryingStore) else src)
        if copy is None:
            return None

        def retried(name: str, size: int, mtime_ns: int | None,
                    meta: FileMeta | None = None) -> ObjectInfo:  # fmt: skip
            return self._retry(f"copying {name} on the server",
                               lambda: copy(name, size, mtime_ns, meta))  # fmt: skip

        return retried


class RetryingUploadsCopies(RetryingUploads, RetryingCopies):
    """Both optional abilities (S3, SMB)."""


# (has part uploads, has server copies) -> the wrapper with exactly those abilities
_WRAPPERS: dict[tuple[bool, bool], type[RetryingStore]] = {
    (False, False): RetryingStore, (True, False): RetryingUploads,
    (False, True): RetryingCopies, (True, True): RetryingUploadsCopies,
}  # fmt: skip


def retrying(inner: Store, attempts: int = DEFAULT_ATTEMPTS,
             sleep: Callable[[float], None] = time.sleep) -> RetryingStore:  # fmt: skip
    """`inner` with retries, and with exactly the optional abilities `inner` has."""
    kind = (isinstance(inner, PartUploads), isinstance(inner, ServerCopier))
    return _WRAPPERS[kind](inner, attempts, sleep)


class RetryingUpload(Retrier):
    def __init__(self, inner: Upload, store: RetryingStore) -> None:
        super().__init__(store.url, store.attempts, store._sleep)
        self.inner = inner
        self.state, self.part_bytes = inner.state, inner.part_bytes

    def write_part(self, number: int, offset: int, data: bytes) -> str:
        return self._retry(f"uploading part {number}",
                           lambda: self.inner.write_part(number, offset, data))  # fmt: skip

    def confirmed(self, recorded: dict[int, str], lengths: dict[int, int]) -> set[int]:
        return self._retry("listing uploaded parts",
                           lambda: self.inner.confirmed(recorded, lengths))  # fmt: skip

    def complete(self, tokens: dict[int, str], size: int,
                 meta: FileMeta | None = None) -> ObjectInfo:  # fmt: skip
        return self._retry("completing an upload",
                           lambda: self.inner.complete(tokens, size, meta))  # fmt: skip

    def abort(self) -> None:
        self._retry("aborting an upload", self.inner.abort)
