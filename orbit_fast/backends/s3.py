"""A Store on S3 or an S3-compatible server (boto3): `s3://bucket/prefix`.

Credentials come from boto3's standard chain (environment, shared config and credentials
files, AWS_PROFILE, instance roles). ORBIT_S3_ENDPOINT points at an S3-compatible server (path-
style addressing is then the default; ORBIT_S3_PATH_STYLE=0/1 overrides); AWS_REGION or
AWS_DEFAULT_REGION, else us-east-1. With a custom endpoint the SDK's newer default request
checksums are off (`when_required`, HUB_ANCHORS.md 4.1: they broke several compatible stores);
ORBIT_S3_CHECKSUMS=when_supported turns them back on.

Integrity: every single PUT carries Content-MD5, and each multipart part too; the server
rejects a body that does not match. Objects above MULTIPART_BYTES go up in parts of
`part_bytes` (at least 5 MiB), PART_THREADS at a time; a failed multipart upload is
aborted. Exclusive writes use If-None-Match: * (atomic where the server supports it; otherwise
check-then-write, declared in `capabilities`). Errors are classified: TransientError (retry),
RemoteError (stop and say what to fix), FileNotFoundError / FileExistsError (the Store
contract).
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from orbit_fast.backends.base import Capabilities, ExistsBySize, TransientError, check_name
from orbit_fast.errors import RemoteError, UsageError

MIN_PART = 5 << 20  # S3's minimum for every part but the last
MAX_PART = 5 << 30
MULTIPART_BYTES = 64 << 20
PART_THREADS = 4  # rclone's --s3-upload-concurrency default
_TRANSIENT_CODES = {"SlowDown", "RequestTimeout", "RequestTimeTooSkewed", "InternalError",
                    "ServiceUnavailable", "Throttling", "ThrottlingException",
                    "OperationAborted"}  # fmt: skip
_AUTH_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled",
               "InvalidToken", "ExpiredToken", "403"}  # fmt: skip


def parse_url(url: str) -> tuple[str, str]:
    rest = url[len("s3://") :]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise UsageError(f"{url}: an S3 URL is s3://bucket[/prefix]")
    return bucket, prefix.strip("/")


def _md5_b64(data: bytes | bytearray | memoryview) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()  # noqa: S324 (integrity, as S3)


class S3Store(ExistsBySize):
    def __init__(self, url: str, endpoint: str | None = None, part_bytes: int = 8 << 20) -> None:
        import boto3
        from botocore.config import Config

        self.url = url
        self.bucket, self.prefix = parse_url(url)
        endpoint = endpoint or os.environ.get("ORBIT_S3_ENDPOINT") or None
        path_style = os.environ.get("ORBIT_S3_PATH_STYLE")
        style = ("path" if path_style == "1" or (path_style is None and endpoint) else "auto")
        checksums = os.environ.get("ORBIT_S3_CHECKSUMS") or ("when_required" if endpoint
                                                             else "when_supported")  # fmt: skip
        region = (os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
                  or "us-east-1")  # fmt: skip
        config = Config(
            s3={"addressing_style": style}, connect_timeout=5, read_timeout=60,
            retries={"total_max_attempts": 1, "mode": "standard"},  # RetryingStore retries
            request_checksum_calculation=checksums, response_checksum_validation=checksums,
            max_pool_connections=16,
        )  # fmt: skip
        self._s3 = boto3.session.Session().client("s3", endpoint_url=endpoint,
                                                  region_name=region, config=config)  # fmt: skip
        self.part_bytes = max(MIN_PART, min(part_bytes, MAX_PART))
        self._conditional = True  # If-None-Match: * works, until the server says it does not
        self.capabilities = Capabilities(ranged_reads=True, atomic_rename=False,
                                         server_side_copy=True, exclusive_create=True,
                                         min_part_bytes=MIN_PART,
                                         max_part_bytes=MAX_PART)  # fmt: skip

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
            code = str(err.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code in ("NoSuchKey", "404", "NotFound"):
                raise FileNotFoundError(2, "no such object", self._where(name)) from None
            if code == "NoSuchBucket":
                raise RemoteError(f"the bucket {self.bucket} does not exist ({self._where()}); "
                                  "create it or fix the URL") from None  # fmt: skip
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status == 412:
                raise FileExistsError(17, "object exists", self._where(name)) from None
            if code in _AUTH_CODES or status == 403:
                raise RemoteError(
                    f"S3 refused to {what} {self._where(name)} ({code}: {err.get('Message')}); "
                    "check the credentials (AWS_ACCESS_KEY_ID/AWS_PROFILE) and the bucket "
                    "policy"
                ) from None
            if code in _TRANSIENT_CODES or status >= 500 or status == 429:
                raise TransientError(f"{what} {self._where(name)}: {code}") from exc
            raise RemoteError(f"S3 could not {what} {self._where(name)}: {code} "
                              f"{err.get('Message', '')}") from None  # fmt: skip
        except NoCredentialsError:
            raise RemoteError(
                f"no S3 credentials for {self._where()}: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or a credentials file"
            ) from None
        except (EndpointConnectionError, ConnectionError, HTTPClientError) as exc:
            raise TransientError(f"{what} {self._where(name)}: {exc}") from exc
        except BotoCoreError as exc:
            raise RemoteError(f"S3 could not {what} {self._where(name)}: {exc}") from exc

    # ---- the Store protocol ---------------------------------------------------------------

    def write(self, name: str, data: bytes | bytearray | memoryview,
              exclusive: bool = False) -> None:  # fmt: skip
        key = self._key(name)
        if len(data) > MULTIPART_BYTES and not exclusive:
            self._write_multipart(name, key, memoryview(data))
            return
        kw: dict[str, Any] = {"Key": key, "Body": bytes(data), "ContentMD5": _md5_b64(data)}
        if exclusive:
            if self._conditional:
                try:
                    self._call("create", name, self._s3.put_object, IfNoneMatch="*", **kw)
                    return
                except RemoteError as exc:
                    if "NotImplemented" not in str(exc):
                        raise
                    self._conditional = False  # this server ignores conditional writes
                    self.capabilities = self.capabilities._replace(exclusive_create=False)
            if self.exists(name):
                raise FileExistsError(17, "object exists", self._where(name))
        self._call("write", name, self._s3.put_object, **kw)

    def _write_multipart(self, name: str, key: str, data: memoryview) -> None:
        upload = self._call("start a multipart upload of", name,
                            self._s3.create_multipart_upload, Key=key)["UploadId"]  # fmt: skip
        def put(n: int, off: int) -> dict[str, Any]:
            body = bytes(data[off : off + self.part_bytes])
            r = self._call("upload a part of", name, self._s3.upload_part, Key=key,
                           UploadId=upload, PartNumber=n, Body=body,
                           ContentMD5=_md5_b64(body))  # fmt: skip
            return {"PartNumber": n, "ETag": r["ETag"]}

        try:
            # Parts in parallel (boto3 clients are thread-safe; one connection each, up to
            # PART_THREADS): one stream of PUTs leaves most of a link's bandwidth unused.
            with ThreadPoolExecutor(PART_THREADS, thread_name_prefix="orbit-s3-part") as pool:
                offsets = range(0, len(data), self.part_bytes)
                parts = list(pool.map(put, range(1, len(offsets) + 1), offsets))
            self._call("complete the upload of", name, self._s3.complete_multipart_upload,
                       Key=key, UploadId=upload, MultipartUpload={"Parts": parts})  # fmt: skip
        except BaseException:
            try:
                self._s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload)
            except Exception:  # noqa: BLE001 - best effort; the original error matters
                pass
            raise
        if self.size(name) != len(data):
            raise RemoteError(f"{self._where(name)}: size after upload differs from the data")

    def read(self, name: str) -> bytes:
        body = self._call("read", name, self._s3.get_object, Key=self._key(name))["Body"]
        try:
            return body.read()
        except Exception as exc:  # a connection cut in the middle of the body
            raise TransientError(f"read {self._where(name)}: {exc}") from exc

    def read_range(self, name: str, offset: int, length: int) -> bytes:
        if length == 0:
            return b""
        r = self._call("read", name, self._s3.get_object, Key=self._key(name),
                       Range=f"bytes={offset}-{offset + length - 1}")  # fmt: skip
        try:
            data = r["Body"].read()
        except Exception as exc:
            raise TransientError(f"read {self._where(name)}: {exc}") from exc
        if len(data) != length:
            raise TransientError(f"{self._where(name)}: short read at {offset} ({len(data)} of "
                                 f"{length})")  # fmt: skip
        return data

    def size(self, name: str) -> int:
        return int(self._call("stat", name, self._s3.head_object,
                              Key=self._key(name))["ContentLength"])  # fmt: skip

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
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
                yield check_name(obj["Key"][strip:], self.url), int(obj["Size"])
            if not page.get("IsTruncated"):
                return
            token = page["NextContinuationToken"]

    def delete(self, name: str) -> None:
        self._call("delete", name, self._s3.delete_object, Key=self._key(name))

    def sweep_temp(self, prefix: str) -> int:
        return 0  # PUTs are atomic: there are no temp objects

    def close(self) -> None:
        self._s3.close()
