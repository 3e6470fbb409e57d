"""A Store on S3 or an S3-compatible server (boto3): `s3://bucket/prefix`. Both halves, part
uploads (multipart) and server copies (CopyObject) between stores of one endpoint and login.

Credentials come from boto3's standard chain (environment, shared config and credentials
files, AWS_PROFILE, instance roles). ORBIT_S3_ENDPOINT points at an S3-compatible server (path-
style addressing is then the default; ORBIT_S3_PATH_STYLE=0/1 overrides); AWS_REGION or
AWS_DEFAULT_REGION, else us-east-1. With a custom endpoint the SDK's newer default request
checksums are off (`when_required`, HUB_ANCHORS.md 4.1: they broke several compatible stores);
ORBIT_S3_CHECKSUMS=when_supported turns them back on.

Any of these settings may also come from the hub's env file (orbit_fast/environment.py):
boto3 reads only os.environ, so what only the env file sets is handed to it explicitly
(`_session`), with the precedence it would have in the environment.

Per-object calls (PUT, GET, HEAD, DELETE) go through obstore when it is installed (s3_fast.py
says why and what stays on boto3); ORBIT_S3_CLIENT=boto3 keeps every call on boto3, for a
compatible server that object_store does not speak to as boto3 does.

Integrity: every PUT and every part carries its body's SHA-256 in the request's signature
(x-amz-content-sha256; boto3 with payload_signing_enabled, obstore by default, never
UNSIGNED-PAYLOAD); the server rejects a body that does not match. It replaced Content-MD5:
SHA-256 is the cheaper of the two where the CPU has SHA instructions, and over plain HTTP
boto3 signs the payload anyway, so parts paid for both. A repository's objects above
MULTIPART_BYTES go up in parts of `part_bytes` (at least 5 MiB), PART_THREADS at a time; a
sync's uploads in parts (begin_upload) carry the whole file's MD5 as rclone's "md5chksum"
metadata, since their ETag is not one (MD5_META). A file's mode, owner and atime go into the
user-metadata keys rclone's --metadata uses (meta_keys), so each tool restores the other's. A
failed multipart upload is aborted.
Exclusive writes use If-None-Match: * (atomic where the server supports it; otherwise
check-then-write). Errors are classified: TransientError (retry), RemoteError (stop and say
what to fix), FileNotFoundError / FileExistsError (the Store contract).
"""

from __future__ import annotations

import base64
import calendar
import re
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from orbit_fast.backends import s3_fast
from orbit_fast.backends.base import (
    CantCopy,
    Capabilities,
    Descend,
    FileMeta,
    ObjectInfo,
    OnDir,
    OnSkip,
    ProbesByListing,
    ServerCopy,
    TransientError,
    listed_name,
    multipart_etag,
)
from orbit_fast.environment import from_overlay, getenv
from orbit_fast.errors import RemoteError, UsageError
from orbit_fast.locations import parse as parse_location

MIN_PART = 5 << 20  # S3's minimum for every part but the last
MAX_PART = 5 << 30
MULTIPART_BYTES = 64 << 20  # repositories (write); a sync's threshold is objects.SINGLE_MAX
# rclone's user metadata key for the whole-file MD5 (base64 of the 16-byte digest) of objects
# whose ETag is no MD5; `rclone check` compares it, and --checksum here reads it.
MD5_META = "md5chksum"
MAX_COPY_BYTES = 5 << 30  # CopyObject's limit; larger objects are copied through us
PART_THREADS = 4  # rclone's --s3-upload-concurrency default
_TRANSIENT_CODES = {"SlowDown", "RequestTimeout", "RequestTimeTooSkewed", "InternalError",
                    "ServiceUnavailable", "Throttling", "ThrottlingException",
                    "OperationAborted"}  # fmt: skip
_AUTH_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled",
               "InvalidToken", "ExpiredToken", "403"}  # fmt: skip


def parse_url(url: str) -> tuple[str, str]:
    """(bucket, prefix) of an s3:// URL, decoded and normalised as the roots check reads it
    (locations.parse)."""
    loc = parse_location(url)
    if loc.scheme != "s3":
        raise UsageError(f"{url}: an S3 URL is s3://bucket[/prefix]")
    return loc.host, "/".join(loc.parts)


def md5_from_meta(text: str | None) -> str:
    """The hex MD5 of an "md5chksum" value (base64 of 16 bytes); "" if absent or malformed."""
    try:
        raw = base64.b64decode(text or "", validate=True)
    except ValueError:  # binascii.Error
        return ""
    return raw.hex() if len(raw) == 16 else ""


def format_mtime(mtime_ns: int) -> str:
    """The file's mtime as object metadata: seconds with nine decimals, under the key "mtime"
    as rclone writes it, so either tool sees the other's modification times."""
    sec, frac = divmod(mtime_ns, 1_000_000_000)
    return f"{sec}.{frac:09d}"


def parse_mtime(text: str | None) -> int | None:
    if not text:
        return None
    sec, _, frac = text.strip().partition(".")
    try:
        return int(sec) * 1_000_000_000 + int((frac + "000000000")[:9] or 0)
    except ValueError:
        return None


# A file's metadata beyond its mtime, in the user-metadata keys rclone's --metadata writes and
# reads (its local backend's names): "mode" as the octal st_mode with the file type ("100644"),
# "uid" and "gid" in decimal, "atime" in RFC 3339 with nanoseconds, UTC. Checked against rclone
# 1.75: `rclone copy --metadata` writes exactly these, and reads them back onto local files.
# (rclone shows "mtime" as RFC 3339 in its metadata listings, but stores it, as here, in seconds
# with nine decimals: it reads no other form.)
_RFC3339 = re.compile(r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9})\d*)?"
                      r"(?:([Zz])|([+-])(\d\d):(\d\d))\Z")  # fmt: skip
_MAX_ID = 1 << 32


def format_rfc3339(ns: int) -> str:
    """`ns` since the epoch as Go's RFC3339Nano in UTC (trailing zeros of the fraction
    dropped), as rclone writes "atime"."""
    sec, frac = divmod(ns, 1_000_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    return text + (f".{frac:09d}".rstrip("0") if frac else "") + "Z"


def parse_rfc3339(text: str) -> int | None:
    m = _RFC3339.match(text.strip())
    if m is None:
        return parse_mtime(text)  # seconds, as "mtime" is kept
    y, mo, d, h, mi, sec, frac, _, sign, oh, om = m.groups()
    try:
        t = calendar.timegm((int(y), int(mo), int(d), int(h), int(mi), int(sec), 0, 0, 0))
    except (ValueError, OverflowError):
        return None
    if sign:
        t -= (1 if sign == "+" else -1) * (int(oh) * 3600 + int(om) * 60)
    return t * 1_000_000_000 + int((frac or "").ljust(9, "0"))


def meta_keys(meta: FileMeta | None) -> dict[str, str]:
    """rclone's user-metadata keys for what `meta` knows of a file (mode, uid, gid, atime)."""
    if meta is None:
        return {}
    out: dict[str, str] = {}
    if meta.mode >= 0:
        out["mode"] = f"{meta.mode:o}"
    if meta.uid >= 0:
        out["uid"] = str(meta.uid)
    if meta.gid >= 0:
        out["gid"] = str(meta.gid)
    if meta.atime_ns is not None:
        out["atime"] = format_rfc3339(meta.atime_ns)
    return out


def file_meta(keys: dict[str, str]) -> FileMeta | None:
    """The FileMeta of an object's user metadata (rclone's keys); None if it has none of them.
    A malformed value counts as absent: whoever wrote the bucket wrote these."""

    def number(key: str, base: int, limit: int) -> int:
        text = keys.get(key, "").strip()
        try:
            value = int(text, base) if text.isdigit() else -1
        except ValueError:  # an 8 or 9 in an octal mode
            return -1
        return value if value < limit else -1

    mode = number("mode", 8, 1 << 16)
    uid, gid = number("uid", 10, _MAX_ID), number("gid", 10, _MAX_ID)
    atime = parse_rfc3339(keys["atime"]) if "atime" in keys else None
    if mode < 0 and uid < 0 and gid < 0 and atime is None:
        return None
    return FileMeta(mode, uid, gid, atime)


def _etag(raw: str) -> str:
    return raw.strip('"')


# Variables boto3 reads from os.environ by itself (botocore's session variables and its
# credential chain), and the botocore session variable each sets.
_SESSION_VARS = (("AWS_SHARED_CREDENTIALS_FILE", "credentials_file"),
                 ("AWS_CONFIG_FILE", "config_file"), ("AWS_CA_BUNDLE", "ca_bundle"))  # fmt: skip
_KEY_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
_PROFILE_VARS = ("AWS_DEFAULT_PROFILE", "AWS_PROFILE")  # botocore's order: the first wins


def _session() -> Any:
    """A botocore Session as the environment plus the hub's env file would make it: boto3's
    chain, untouched, when the env file sets nothing it reads; else given those values
    explicitly. Keys beat a profile, as they do in the environment (for botocore an explicit
    profile would disable the environment's keys). botocore's own, not boto3's wrapper of it:
    the client is the same, and boto3's import (s3transfer and all) was a third of the CPU of
    a sync with nothing to copy."""
    import botocore.session

    core = botocore.session.Session()
    names = (*(v for v, _ in _SESSION_VARS), *_KEY_VARS, *_PROFILE_VARS)
    if not any(from_overlay(n) for n in names):
        return core
    for var, logical in _SESSION_VARS:
        if from_overlay(var):
            core.set_config_variable(logical, getenv(var))
    profile = any(from_overlay(v) for v in _PROFILE_VARS)
    if profile:
        core.set_config_variable("profile", getenv(_PROFILE_VARS[0]) or getenv(_PROFILE_VARS[1]))
    key, secret, token = (getenv(v) for v in _KEY_VARS)
    # Given explicitly too when only the profile came from the file: keys in os.environ
    # would otherwise lose to it.
    if (key or secret) and (profile or any(from_overlay(v) for v in _KEY_VARS)):
        if not (key and secret):
            raise RemoteError("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together "
                              "(in the environment or the hub's env file)")  # fmt: skip
        core.set_credentials(key, secret, token)
    return core


class S3Store(ProbesByListing):
    def __init__(self, url: str, endpoint: str | None = None, part_bytes: int = 8 << 20,
                 storage_class: str = "", sse: str = "", sse_kms_key_id: str = "",
                 region: str = "") -> None:  # fmt: skip
        self.url = url
        # What each object a sync writes is stored as (--s3-storage-class, --s3-sse): sent
        # with every PUT, multipart start and copy; obstore's path has no header for them,
        # so writes with any go through boto3.
        self._put_extra = {k: v for k, v in (("StorageClass", storage_class),
                                             ("ServerSideEncryption", sse),
                                             ("SSEKMSKeyId", sse_kms_key_id)) if v}  # fmt: skip
        self.bucket, self.prefix = parse_url(url)
        endpoint = endpoint or getenv("ORBIT_S3_ENDPOINT") or None
        path_style = getenv("ORBIT_S3_PATH_STYLE")
        style = ("path" if path_style == "1" or (path_style is None and endpoint) else "auto")
        checksums = getenv("ORBIT_S3_CHECKSUMS") or ("when_required" if endpoint
                                                     else "when_supported")  # fmt: skip
        region = (region or getenv("AWS_REGION") or getenv("AWS_DEFAULT_REGION")
                  or "us-east-1")  # fmt: skip
        # botocore's own AWS_ENDPOINT_URL[_S3] lookup sees os.environ only; as for the
        # credentials, one the env file alone sets is passed explicitly. It is not an
        # ORBIT_S3_ENDPOINT: the addressing and checksum defaults above stay AWS's.
        aws_endpoint = None
        if from_overlay("AWS_ENDPOINT_URL_S3") or from_overlay("AWS_ENDPOINT_URL"):
            aws_endpoint = getenv("AWS_ENDPOINT_URL_S3") or getenv("AWS_ENDPOINT_URL")
        self._settings = (endpoint or aws_endpoint, region, style, checksums)
        self._client: Any = None  # boto3's, made on first use (a worker may never need it)
        self.part_bytes = max(MIN_PART, min(part_bytes, MAX_PART))
        self._conditional = True  # If-None-Match: * works, until the server says it does not
        self.capabilities = Capabilities(min_part_bytes=MIN_PART, max_part_bytes=MAX_PART,
                                         max_copy_bytes=MAX_COPY_BYTES,
                                         whole_md5=True, file_meta=True)  # fmt: skip
        if any(getenv(v) for v in _PROFILE_VARS):
            # A named profile is checked now, as boto3 does when its client is made: a name
            # that does not exist is a mistake to report before any work, keys or not.
            self._client = self._boto3_client()
        self._fast = self._open_fast(endpoint or getenv("AWS_ENDPOINT_URL_S3")
                                     or getenv("AWS_ENDPOINT_URL"), region,
                                     style == "path" or "." in self.bucket,
                                     checksums == "when_supported")  # fmt: skip

    def _open_fast(self, endpoint: str | None, region: str, path_style: bool,
                   checksums: bool) -> s3_fast.Fast | None:  # fmt: skip
        if (getenv("ORBIT_S3_CLIENT") or "obstore") == "boto3":
            return None
        try:
            import obstore  # noqa: F401
        except ImportError:
            return None
        key, secret = getenv("AWS_ACCESS_KEY_ID"), getenv("AWS_SECRET_ACCESS_KEY")
        creds: tuple[str, str, str | None] | None = None
        provider = None
        if key and secret:
            creds = (key, secret, getenv("AWS_SESSION_TOKEN") or None)
        elif not (key or secret):
            from botocore.credentials import RefreshableCredentials
            from botocore.exceptions import BotoCoreError

            try:  # boto3's chain, resolved once: profiles, config files, roles, SSO
                chain = _session().get_credentials()
            except BotoCoreError:
                return None  # boto3 says what is wrong, with our message, on the first call
            if chain is None:
                return None
            # Refreshable credentials (roles, SSO) renew themselves when frozen; obstore asks
            # again every few minutes.
            ttl = 300 if isinstance(chain, RefreshableCredentials) else None

            def provider() -> tuple[str, str, str | None, Any]:
                f = chain.get_frozen_credentials()
                return (f.access_key, f.secret_key, f.token,
                        s3_fast.expiry_in(ttl) if ttl else None)  # fmt: skip

        else:
            return None  # one key without the other: boto3's path reports it
        return s3_fast.Fast(self.bucket, endpoint, region, path_style, checksums, creds,
                            provider, getenv("AWS_CA_BUNDLE") or None)  # fmt: skip

    @property
    def _s3(self) -> Any:
        if self._client is None:
            self._client = self._boto3_client()
        return self._client

    def _boto3_client(self) -> Any:
        from botocore.config import Config

        endpoint, region, style, checksums = self._settings
        config = Config(
            s3={"addressing_style": style, "payload_signing_enabled": True},
            connect_timeout=5, read_timeout=60,
            retries={"total_max_attempts": 1, "mode": "standard"},  # RetryingStore retries
            request_checksum_calculation=checksums, response_checksum_validation=checksums,
            max_pool_connections=16,
        )  # fmt: skip
        from botocore.exceptions import BotoCoreError

        try:
            return _session().create_client("s3", endpoint_url=endpoint, region_name=region,
                                            config=config)  # fmt: skip
        except BotoCoreError as exc:  # e.g. AWS_PROFILE names a profile that does not exist
            raise RemoteError(f"cannot set up S3 access for {self.url}: {exc}; check "
                              "AWS_PROFILE and the AWS config and credentials files"
                              ) from None  # fmt: skip

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def _where(self, name: str = "") -> str:
        return f"s3://{self.bucket}/{self._key(name)}" if name else self.url

    def _call(self, what: str, name: str, fn: Any, **kw: Any) -> Any:
        """Run one boto3 call and translate its errors into the Store contract."""
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectionError,
            EndpointConnectionError,
            HTTPClientError,
            NoCredentialsError,
        )

        try:
            return fn(Bucket=self.bucket, **kw)
        except ClientError as exc:
            err = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            raise self._classify(what, name, str(err.get("Code", "")), status,
                                 str(err.get("Message", ""))) from (exc if status >= 500 else None)
        except NoCredentialsError:
            raise RemoteError(
                f"no S3 credentials for {self._where()}: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or a credentials file"
            ) from None
        except (EndpointConnectionError, ConnectionError, HTTPClientError) as exc:
            raise TransientError(f"{what} {self._where(name)}: {exc}") from exc
        except BotoCoreError as exc:
            raise RemoteError(f"S3 could not {what} {self._where(name)}: {exc}") from exc

    def _classify(self, what: str, name: str, code: str, status: int,
                  message: str) -> Exception:  # fmt: skip
        """The Store contract's exception for S3's error `code` and HTTP `status` (from boto3
        or obstore): missing key, missing bucket, precondition, refusal, transient, other."""
        if code in ("NoSuchKey", "404", "NotFound") or (status == 404 and not code):
            return FileNotFoundError(2, "no such object", self._where(name))
        if code == "NoSuchBucket":
            return RemoteError(f"the bucket {self.bucket} does not exist ({self._where()}); "
                               "create it or fix the URL")  # fmt: skip
        if code == "InvalidObjectState":
            return RemoteError(f"{self._where(name)} is in an archive storage class (GLACIER or "
                               "DEEP_ARCHIVE) and cannot be read until it is restored: run "
                               "`aws s3api restore-object` on it (or restore the whole prefix) "
                               "and try again once the restore has finished")  # fmt: skip
        if code in ("PreconditionFailed", "ConditionalRequestConflict") or status == 412:
            return FileExistsError(17, "object exists", self._where(name))
        if code in _AUTH_CODES or status in (401, 403):
            return RemoteError(f"S3 refused to {what} {self._where(name)} ({code}: {message}); "
                               "check the credentials (AWS_ACCESS_KEY_ID/AWS_PROFILE) and the "
                               "bucket policy")  # fmt: skip
        if code in _TRANSIENT_CODES or status >= 500 or status == 429:
            return TransientError(f"{what} {self._where(name)}: {code or status} {message}")
        return RemoteError(f"S3 could not {what} {self._where(name)}: {code} {message}")

    def _fast_for(self, key: str) -> s3_fast.Fast | None:
        return self._fast if self._fast is not None and s3_fast.plain_key(key) else None

    def _on_fast(self, what: str, name: str, fn: Any) -> Any:
        return s3_fast.call(what, name, fn, self._classify)

    # ---- BlobStore (base.py) ----------------------------------------------------------------

    def write(self, name: str, data: bytes | bytearray | memoryview, exclusive: bool = False,
              private: bool = False) -> None:  # fmt: skip
        # `private`: objects have no owner of their own; the bucket policy decides.
        key = self._key(name)
        if len(data) > MULTIPART_BYTES and not exclusive:
            self._write_multipart(name, memoryview(data))
            return
        fast = self._fast_for(key)
        if fast is not None and not exclusive:
            self._on_fast("write", name, lambda: fast.put(key, data, {}))
            return
        kw: dict[str, Any] = {"Key": key, "Body": bytes(data)}
        if exclusive:
            if self._conditional:
                try:
                    self._call("create", name, self._s3.put_object, IfNoneMatch="*", **kw)
                    return
                except RemoteError as exc:
                    if "NotImplemented" not in str(exc):
                        raise
                    self._conditional = False  # this server ignores conditional writes
            if self.exists(name):
                raise FileExistsError(17, "object exists", self._where(name))
        self._call("write", name, self._s3.put_object, **kw)

    def _write_multipart(self, name: str, data: memoryview) -> None:
        up = self._start_upload(name, {}, self.part_bytes)

        def put(n: int, off: int) -> tuple[int, str]:
            return n, up.write_part(n, off, bytes(data[off : off + self.part_bytes]))

        try:
            # Parts in parallel (boto3 clients are thread-safe; one connection each, up to
            # PART_THREADS): one stream of PUTs leaves most of a link's bandwidth unused.
            with ThreadPoolExecutor(PART_THREADS, thread_name_prefix="orbit-s3-part") as pool:
                offsets = range(0, len(data), self.part_bytes)
                tokens = dict(pool.map(put, range(1, len(offsets) + 1), offsets))
            up.complete(tokens, len(data))  # checks the size and the multipart ETag
        except BaseException:
            up.abort()
            raise

    def read(self, name: str) -> bytes:
        return self.read_info(name)[0]

    def read_range(self, name: str, offset: int, length: int) -> bytes:
        if length == 0:
            return b""
        key = self._key(name)
        fast = self._fast_for(key)
        if fast is not None:
            data: bytes = self._on_fast("read", name,
                                        lambda: fast.get_range(key, offset, length))  # fmt: skip
        else:
            r = self._call("read", name, self._s3.get_object, Key=key,
                           Range=f"bytes={offset}-{offset + length - 1}")  # fmt: skip
            data = self._body(name, r)
        if len(data) != length:
            raise TransientError(f"{self._where(name)}: short read at {offset} ({len(data)} of "
                                 f"{length})")  # fmt: skip
        return data

    def _body(self, name: str, r: dict[str, Any]) -> bytes:
        """A GET's body, read to the end (a botocore StreamingBody, untyped)."""
        try:
            data: bytes = r["Body"].read()
            return data
        except Exception as exc:  # a connection cut in the middle of the body
            raise TransientError(f"read {self._where(name)}: {exc}") from exc

    def size(self, name: str) -> int:
        return self.stat_info(name).size

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        for name, size, _, _ in self._list(prefix):
            yield name, size

    def _list(self, prefix: str, on_skip: OnSkip | None = None
              ) -> Iterator[tuple[str, int, str, str]]:  # fmt: skip
        base = self._key(prefix).rstrip("/") + "/" if prefix else (
            self.prefix + "/" if self.prefix else "")  # fmt: skip
        strip = len(self.prefix) + 1 if self.prefix else 0
        token: str | None = None
        while True:
            kw: dict[str, Any] = {"Prefix": base, "MaxKeys": 1000}
            if token:
                kw["ContinuationToken"] = token
            page = self._call("list", prefix, self._s3.list_objects_v2, **kw)
            for obj in page.get("Contents", []):
                if obj["Key"].endswith("/"):
                    continue  # a "folder" marker of consoles and other tools, not a file
                name = obj["Key"][strip:]
                if listed_name(name, self.url, on_skip):
                    yield (name, int(obj["Size"]), _etag(obj.get("ETag", "")),
                           obj.get("StorageClass") or "")  # fmt: skip
            if not page.get("IsTruncated"):
                return
            token = page["NextContinuationToken"]

    def delete(self, name: str) -> None:
        key = self._key(name)
        fast = self._fast_for(key)
        if fast is not None:
            self._on_fast("delete", name, lambda: fast.delete(key))
            return
        self._call("delete", name, self._s3.delete_object, Key=self._key(name))

    def sweep_temp(self, prefix: str) -> int:
        return 0  # PUTs are atomic: there are no temp objects

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    # ---- FileStore and PartUploads (base.py) ------------------------------------------------

    def list_info(self, prefix: str, descend: Descend | None = None,
                  on_skip: OnSkip | None = None, on_dir: OnDir | None = None,
                  meta: bool = False) -> Iterator[ObjectInfo]:  # fmt: skip
        # No directories to prune on S3: the caller filters names. mtime is in the metadata,
        # which listings do not return (stat_info has it); so is `meta` (no dos_meta).
        for name, size, etag, cls in self._list(prefix, on_skip):
            yield ObjectInfo(name, size, None, etag, storage_class=cls)

    def _head(self, name: str) -> tuple[int, str, dict[str, str], Any]:
        """A HEAD of `name`: (size, ETag, user metadata, Last-Modified), from either client."""
        key = self._key(name)
        fast = self._fast_for(key)
        if fast is not None:
            return self._on_fast("stat", name, lambda: fast.head(key))  # type: ignore[no-any-return]
        h = self._call("stat", name, self._s3.head_object, Key=key)
        return (int(h["ContentLength"]), _etag(h.get("ETag", "")), h.get("Metadata") or {},
                h.get("LastModified"))  # fmt: skip

    def stat_info(self, name: str, meta: bool = False) -> ObjectInfo:
        return _object_info(name, *self._head(name), meta)

    def read_info(self, name: str, expect: ObjectInfo | None = None,
                  meta: bool = False) -> tuple[bytes, ObjectInfo]:  # fmt: skip
        key = self._key(name)
        fast = self._fast_for(key)
        if fast is not None:
            data, size, etag, keys, modified = self._on_fast("read", name, lambda: fast.get(key))
        else:
            r = self._call("read", name, self._s3.get_object, Key=key)
            data = self._body(name, r)
            size, etag, keys = int(r["ContentLength"]), _etag(r.get("ETag", "")), r.get(
                "Metadata") or {}  # fmt: skip
            modified = r.get("LastModified")
        info = _object_info(name, size, etag, keys, modified, meta)
        if len(data) != info.size:
            raise TransientError(f"{self._where(name)}: short read ({len(data)} of {info.size})")
        return data, info

    def put_file(self, name: str, data: bytes, mtime_ns: int, durable: bool = True,
                 meta: FileMeta | None = None) -> ObjectInfo:  # fmt: skip
        key = self._key(name)
        fast = self._fast_for(key) if not self._put_extra else None
        ctype = content_type(name)
        keys = {"mtime": format_mtime(mtime_ns), **meta_keys(meta)}
        if fast is not None:
            attrs = {**keys, **({"Content-Type": ctype} if ctype else {})}
            etag = self._on_fast("write", name, lambda: fast.put(key, data, attrs))
            return ObjectInfo(name, len(data), mtime_ns, etag)
        r = self._call("write", name, self._s3.put_object, Key=self._key(name), Body=data,
                       Metadata=keys, **self._object_args(name))  # fmt: skip
        return ObjectInfo(name, len(data), mtime_ns, _etag(r.get("ETag", "")))

    def _object_args(self, name: str) -> dict[str, str]:
        """The storage class, encryption and content type of a new object `name`."""
        ctype = content_type(name)
        return {**self._put_extra, **({"ContentType": ctype} if ctype else {})}

    def keep_from(self, src: object, name: str, target: str) -> None:
        """--backup-dir: copy `src`'s object `name` to `target` here on the server (boto3's
        managed copy: UploadPartCopy above 5 GiB), before it is overwritten or deleted."""
        if not isinstance(src, S3Store):
            raise CantCopy(f"{self._where(target)}: cannot keep {name} from {src!r}")
        from boto3.s3.inject import copy as managed_copy  # boto3's client.copy, on ours

        def copy(**kw: Any) -> None:
            managed_copy(self._s3, **kw)

        self._call("keep a copy of", name, copy, Key=self._key(target),
                   CopySource={"Bucket": src.bucket, "Key": src._key(name)},
                   ExtraArgs=dict(self._put_extra) or None)  # fmt: skip

    def begin_upload(self, name: str, size: int, part_bytes: int, mtime_ns: int,
                     token: str = "", md5: str = "",
                     meta: FileMeta | None = None) -> S3Upload:  # fmt: skip
        keys = {"mtime": format_mtime(mtime_ns), "orbit-part-bytes": str(part_bytes),
                **meta_keys(meta)}  # fmt: skip
        if md5:
            keys[MD5_META] = base64.b64encode(bytes.fromhex(md5)).decode()
        return self._start_upload(name, keys, part_bytes)

    def _start_upload(self, name: str, meta: dict[str, str], part_bytes: int) -> S3Upload:
        r = self._call("start a multipart upload of", name, self._s3.create_multipart_upload,
                       Key=self._key(name), Metadata=meta,
                       **self._object_args(name))  # fmt: skip
        return S3Upload(self, name, r["UploadId"], part_bytes)

    def resume_upload(self, name: str, state: str, size: int, part_bytes: int,
                      mtime_ns: int) -> S3Upload:  # fmt: skip
        return S3Upload(self, name, state, part_bytes)

    def delete_many(self, names: Sequence[str]) -> None:
        for i in range(0, len(names), 1000):  # DeleteObjects takes at most 1000 keys
            batch = names[i : i + 1000]
            r = self._call("delete", batch[0], self._s3.delete_objects, Delete={
                "Objects": [{"Key": self._key(n)} for n in batch], "Quiet": True})  # fmt: skip
            errors = r.get("Errors") or []
            if errors:
                first = errors[0]
                raise RemoteError(f"S3 did not delete {len(errors)} of {len(batch)} objects, "
                                  f"e.g. {first.get('Key')}: {first.get('Code')} "
                                  f"{first.get('Message', '')}")  # fmt: skip

    # ---- ServerCopier (base.py) -------------------------------------------------------------

    def server_copy_from(self, src: object) -> ServerCopy | None:
        """CopyObject from `src` when it is on the same endpoint with the same credentials."""
        if not isinstance(src, S3Store):
            return None
        a, b = self._s3.meta, src._s3.meta
        ca, cb = self._s3._request_signer._credentials, src._s3._request_signer._credentials
        if (a.endpoint_url, a.region_name) != (b.endpoint_url, b.region_name) or (
                ca is None or cb is None or ca.access_key != cb.access_key):  # fmt: skip
            return None

        def copy(name: str, size: int, mtime_ns: int | None,
                 meta: FileMeta | None = None) -> ObjectInfo:  # fmt: skip
            # `meta`: CopyObject copies the object's metadata with it (MetadataDirective).
            return self.copy_from(src, name, size, mtime_ns)

        return copy

    def copy_from(self, other: S3Store, name: str, size: int,
                  mtime_ns: int | None) -> ObjectInfo:  # fmt: skip
        """CopyObject: the data never leaves S3 (objects up to MAX_COPY_BYTES, else CantCopy).
        Without a known mtime the source's metadata (its "mtime", if any) is copied as it is."""
        if size > MAX_COPY_BYTES:
            raise CantCopy(f"{self._where(name)}: {size} bytes is above CopyObject's limit of "
                           f"{MAX_COPY_BYTES}; copy it through orbit-fast")  # fmt: skip
        meta: dict[str, Any] = {"MetadataDirective": "COPY", **self._put_extra}
        if mtime_ns is not None:
            # REPLACE sets every field: the source's others ("md5chksum", the part size) are
            # carried over, or `rclone check` would find no hash on a copied multipart object.
            theirs = other._head(name)[2]
            meta = {"MetadataDirective": "REPLACE", **self._object_args(name),
                    "Metadata": {**theirs, "mtime": format_mtime(mtime_ns)}}  # fmt: skip
        r = self._call("copy", name, self._s3.copy_object, Key=self._key(name),
                       CopySource={"Bucket": other.bucket, "Key": other._key(name)},
                       **meta)  # fmt: skip
        etag = _etag(r.get("CopyObjectResult", {}).get("ETag", ""))
        return ObjectInfo(name, size, mtime_ns, etag)


def content_type(name: str) -> str:
    """The Content-Type of an object by its name (mimetypes, as rclone guesses it); "" when
    the name says nothing (S3 then stores binary/octet-stream)."""
    import mimetypes

    return mimetypes.guess_type(name, strict=False)[0] or ""


def _object_info(name: str, size: int, etag: str, meta: dict[str, str], modified: Any,
                 with_meta: bool = False) -> ObjectInfo:  # fmt: skip
    """What a HEAD or GET says of an object: its user metadata's "mtime" (else the server's
    Last-Modified, to the second), part size and "md5chksum"; `with_meta`: rclone's keys of
    the file's mode, owner and atime too."""
    mtime = parse_mtime(meta.get("mtime"))
    if mtime is None and modified is not None:
        mtime = int(modified.timestamp()) * 1_000_000_000
    part = meta.get("orbit-part-bytes", "")
    return ObjectInfo(name, size, mtime, etag, int(part) if part.isdigit() else 0,
                      md5_from_meta(meta.get(MD5_META)),
                      meta=file_meta(meta) if with_meta else None)  # fmt: skip


class S3Upload:
    """A multipart upload: parts from any process holding the upload id, resumable."""

    def __init__(self, store: S3Store, name: str, upload_id: str, part_bytes: int):
        self._st = store
        self.name = name
        self.state = upload_id
        self.part_bytes = part_bytes
        self._key = store._key(name)

    def write_part(self, number: int, offset: int, data: bytes) -> str:
        r = self._st._call("upload a part of", self.name, self._st._s3.upload_part,
                           Key=self._key, UploadId=self.state, PartNumber=number,
                           Body=data)  # fmt: skip
        return _etag(r["ETag"])

    def _listed(self) -> dict[int, tuple[str, int]]:
        out: dict[int, tuple[str, int]] = {}
        marker = 0
        while True:
            try:
                r = self._st._call("list the parts of", self.name, self._st._s3.list_parts,
                                   Key=self._key, UploadId=self.state,
                                   PartNumberMarker=marker)  # fmt: skip
            except RemoteError as exc:
                if "NoSuchUpload" in str(exc):
                    raise FileNotFoundError(2, "upload gone", self.state) from None
                raise
            for part in r.get("Parts", []):
                out[int(part["PartNumber"])] = (_etag(part["ETag"]), int(part["Size"]))
            if not r.get("IsTruncated"):
                return out
            marker = int(r["NextPartNumberMarker"])

    def confirmed(self, recorded: dict[int, str], lengths: dict[int, int]) -> set[int]:
        listed = self._listed()
        return {n for n, token in recorded.items()
                if n in listed and listed[n] == (token, lengths.get(n))}  # fmt: skip

    def complete(self, tokens: dict[int, str], size: int,
                 meta: FileMeta | None = None) -> ObjectInfo:  # fmt: skip
        # `meta`: in the object's metadata since begin_upload (S3 takes it only then).
        order = sorted(tokens)
        parts = [{"PartNumber": n, "ETag": f'"{tokens[n]}"'} for n in order]
        try:
            self._st._call("complete the upload of", self.name,
                           self._st._s3.complete_multipart_upload, Key=self._key,
                           UploadId=self.state, MultipartUpload={"Parts": parts})  # fmt: skip
        except RemoteError as exc:
            # A retry of a completion that did succeed: the upload is gone, the object is there.
            if "NoSuchUpload" not in str(exc):
                raise
        info = self._st.stat_info(self.name)
        want = multipart_etag([tokens[n] for n in order])
        if info.size != size or ("-" in info.etag and info.etag != want):
            raise RemoteError(f"{self._st._where(self.name)}: after the upload the server has "
                              f"{info.size} bytes, ETag {info.etag}; expected {size} bytes, "
                              f"ETag {want}. Rerun to upload it again")  # fmt: skip
        return info

    def abort(self) -> None:
        try:
            self._st._call("abort the upload of", self.name,
                           self._st._s3.abort_multipart_upload, Key=self._key,
                           UploadId=self.state)  # fmt: skip
        except (RemoteError, FileNotFoundError):
            pass  # already gone; what matters is that it does not linger
