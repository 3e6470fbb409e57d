"""The per-object S3 calls on obstore (Rust's object_store): PUT, GET, ranged GET, HEAD and
DELETE of one object at about a quarter of boto3's client CPU per request, and no boto3
import in a worker that only moves whole objects (bench/bench_s3_clients.py; docs/
performance.md, "S3 clients").

S3Store (s3.py) owns the settings and keeps boto3 for what object_store cannot do as S3 does:
listings (object_store refuses a whole listing over one key it cannot name, and reads a
"dir/" folder marker as a file "dir"), part uploads (it has no part-numbered API, so no
resumable uploads), copies with new metadata, exclusive writes (the NotImplemented fallback)
and batch deletes. Keys that object_store would refuse or rewrite (plain_key) go to boto3 too.

Integrity: object_store signs every payload (x-amz-content-sha256 is the body's SHA-256, not
UNSIGNED-PAYLOAD), so the server rejects a body that does not match, as for boto3's (s3.py).
Retries are off here: RetryingStore (wrappers.py) retries what `classify` calls transient,
as it does for boto3.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_STATUS = re.compile(r"status code: (\d{3})")
_CODE = re.compile(r"<Code>([^<]+)</Code>")
_MESSAGE = re.compile(r"<Message>([^<]*)</Message>")
# What object_store says when no HTTP status came back: connection refused or reset, DNS,
# timeouts, a body cut short.
_NETWORK = ("error sending request", "timed out", "timeout", "connection", "body error",
            "error decoding response body", "broken pipe")  # fmt: skip

Classify = Callable[[str, str, str, int, str], Exception]


def plain_key(key: str) -> bool:
    """Whether object_store addresses `key` as it is: no empty, "." or ".." segment, no
    leading or trailing "/", no control character (it refuses those or strips the slash)."""
    if not key or key[0] == "/" or key[-1] == "/" or "//" in key or _CONTROL.search(key):
        return False
    return not any(part in (".", "..") for part in key.split("/"))


class Fast:
    """One obstore S3Store for one bucket, with S3Store's settings. `credentials` is
    (key, secret, token) when the environment gives keys, else `provider` returns them
    (boto3's chain: profiles, config files, instance roles)."""

    def __init__(self, bucket: str, endpoint: str | None, region: str, path_style: bool,
                 checksums: bool, credentials: tuple[str, str, str | None] | None,
                 provider: Callable[[], tuple[str, str, str | None, datetime | None]] | None,
                 ca_bundle: str | None) -> None:  # fmt: skip
        import obstore
        from obstore.store import S3Store as ObStore

        self._ob = obstore
        options: dict[str, Any] = {"connect_timeout": "5s", "read_timeout": "60s",
                                   "timeout": "24h", "pool_max_idle_per_host": "16"}  # fmt: skip
        if endpoint and endpoint.startswith("http://"):
            options["allow_http"] = True
        if ca_bundle:
            with open(ca_bundle, "rb") as f:
                options["root_certificate"] = f.read()
        kw: dict[str, Any] = {"region": region, "virtual_hosted_style_request": not path_style,
                              "client_options": options, "retry_config": {"max_retries": 0},
                              "unsigned_payload": False}  # its default, and the integrity claim
        if endpoint:
            kw["endpoint"] = endpoint
        if checksums:
            kw["checksum_algorithm"] = "sha256"
        if credentials is not None:
            kw.update(access_key_id=credentials[0], secret_access_key=credentials[1])
            if credentials[2]:
                kw["token"] = credentials[2]
        elif provider is not None:
            get = provider

            def refresh() -> dict[str, Any]:
                key, secret, token, expires = get()
                return {"access_key_id": key, "secret_access_key": secret, "token": token,
                        "expires_at": expires}  # fmt: skip

            kw["credential_provider"] = refresh
        self._store = ObStore(bucket, **kw)

    def put(self, key: str, data: bytes | bytearray | memoryview, meta: dict[str, str]) -> str:
        r = self._ob.put(self._store, key, bytes(data) if isinstance(data, memoryview) else data,
                         attributes=meta, use_multipart=False)  # fmt: skip
        return (r["e_tag"] or "").strip('"')

    def get(self, key: str) -> tuple[bytes, int, str, dict[str, str], datetime]:
        """(data, size the server announced, ETag, user metadata, last modified)."""
        r = self._ob.get(self._store, key)
        meta = r.meta
        data = r.bytes().to_bytes()
        return (data, int(meta["size"]), (meta["e_tag"] or "").strip('"'),
                _user_meta(r.attributes), meta["last_modified"])  # fmt: skip

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        return self._ob.get_range(self._store, key, start=offset, length=length).to_bytes()

    def head(self, key: str) -> tuple[int, str, dict[str, str], datetime]:
        # A HEAD that returns the attributes (obstore.head gives the size and ETag only).
        r = self._ob.get(self._store, key, options={"head": True})
        meta = r.meta
        return (int(meta["size"]), (meta["e_tag"] or "").strip('"'),
                _user_meta(r.attributes), meta["last_modified"])  # fmt: skip

    def delete(self, key: str) -> None:
        self._ob.delete(self._store, key)


def _user_meta(attributes: Any) -> dict[str, str]:
    """The object's user metadata (x-amz-meta-*, lower case as S3 keeps it) of obstore's
    attributes, which name the standard headers ("Content-Type", ...) capitalised."""
    return {k: v for k, v in dict(attributes).items() if k == k.lower()}


def call(what: str, name: str, fn: Callable[[], Any], classify: Classify) -> Any:
    """Run one obstore call; its errors become what `classify(what, name, code, status,
    message)` makes of S3's error code and HTTP status (S3Store._classify, shared with
    boto3's errors), FileNotFoundError for a missing key."""
    from obstore import exceptions as ox

    try:
        return fn()
    except (ox.BaseError, FileNotFoundError) as exc:  # its NotFoundError is a FileNotFoundError
        text = str(exc)
        status_m, code_m, msg_m = _STATUS.search(text), _CODE.search(text), _MESSAGE.search(text)
        status = int(status_m.group(1)) if status_m else 0
        code = code_m.group(1) if code_m else ""
        message = msg_m.group(1) if msg_m else text.split("\n", 1)[0][:300]
        if isinstance(exc, FileNotFoundError) and not code:
            code = "NoSuchKey"
        elif isinstance(exc, ox.AlreadyExistsError | ox.PreconditionError) and not code:
            code = "PreconditionFailed"
        elif not status and not code and any(n in text.lower() for n in _NETWORK):
            status = 599  # no answer from the server: transient, as boto3's connection errors
        raise classify(what, name, code, status, message) from (exc if status >= 500 else None)


def expiry_in(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)
