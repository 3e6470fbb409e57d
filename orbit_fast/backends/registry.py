"""URL scheme -> Store: local paths (and file://), s3://bucket/prefix, smb://host/share/path.

Every remote store comes wrapped in retries (wrappers.retrying, ORBIT_RETRY_ATTEMPTS, default
5), so backends only classify their errors and never loop themselves. Settings are read with
environment.getenv: the process environment over the hub's env file.
"""

from __future__ import annotations

from collections.abc import Mapping

from orbit_fast.backends.base import Store
from orbit_fast.backends.local import LocalStore
from orbit_fast.backends.wrappers import DEFAULT_ATTEMPTS, Retrier, retrying
from orbit_fast.config import url_scheme
from orbit_fast.environment import getenv
from orbit_fast.errors import UsageError

SCHEMES = ("s3", "smb", "file")


def open_store(url: str, retry_attempts: int | None = None, s3_endpoint: str = "",
               s3: Mapping[str, str] | None = None) -> Store:  # fmt: skip
    """The Store for `url`; UsageError for a scheme orbit-fast does not know. `s3_endpoint`
    (--s3-endpoint) overrides ORBIT_S3_ENDPOINT; `s3` says how S3 objects are written
    (storage_class, sse, sse_kms_key_id, region: messages.S3Settings)."""
    attempts = retry_attempts or int(getenv("ORBIT_RETRY_ATTEMPTS") or DEFAULT_ATTEMPTS)
    scheme = url_scheme(url)
    if scheme in ("", "file"):
        return LocalStore(url.removeprefix("file://"))
    if scheme == "s3":
        from orbit_fast.backends.s3 import S3Store

        w = s3 or {}
        inner: Store = S3Store(url, endpoint=s3_endpoint or None,
                               storage_class=w.get("storage_class", ""), sse=w.get("sse", ""),
                               sse_kms_key_id=w.get("sse_kms_key_id", ""),
                               region=w.get("region", ""))  # fmt: skip
        return retrying(inner, attempts)
    if scheme == "smb":
        from orbit_fast.backends.smb import SMBStore

        # Connecting is retried too: a share that is rebooting fails here first.
        inner = Retrier(url, attempts)("connecting", lambda: SMBStore(url))
        return retrying(inner, attempts)
    raise UsageError(f"{url}: unknown scheme {scheme}://; use a local path, s3://bucket/prefix "
                     "or smb://[user@]host[:port]/share/path")  # fmt: skip
