"""Three S3 clients on the same operations against one moto server (issue #21: "measure boto3,
awscrt's S3 client and obstore, choose by measurement"): client CPU (user + sys of the client
process, all its threads) and wall time per operation.

    .venv/bin/pip install awscrt obstore      # not dependencies: only this bench needs them
    .venv/bin/python bench/bench_s3_clients.py [--files 2000] [--big-mib 256]

Each client runs in a process of its own (one import, one connection pool), eight requests in
flight for the small operations and 8 MiB parts, four at a time, for the large object, the
settings orbit-fast's S3 store uses. Operations: PUT of small objects with an "mtime" metadata
field, LIST of them, HEAD of each, GET of each, PUT and GET of one large object. moto, being
Python, is slow; its CPU is not counted, the client's is the figure that matters. Writes a
JSON result to bench/results/.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.product import write_result  # noqa: E402

IN_FLIGHT = int(os.environ.get("IN_FLIGHT", "8"))
PART = 8 << 20
PART_THREADS = 4
SMALL = 16 << 10


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _measure(fn: Callable[[], object]) -> tuple[float, float]:
    c0, t0 = _cpu(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, _cpu() - c0


def _md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()  # noqa: S324


class Boto3:
    def __init__(self, endpoint: str, bucket: str, md5: bool) -> None:
        import boto3
        from botocore.config import Config

        self.b, self.md5 = bucket, md5
        self.c = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id="test", aws_secret_access_key="test",
                              config=Config(s3={"addressing_style": "path"},
                                            max_pool_connections=16,
                                            request_checksum_calculation="when_required",
                                            response_checksum_validation="when_required"))

    def put(self, key: str, data: bytes) -> None:
        kw = {"ContentMD5": _md5_b64(data)} if self.md5 else {}
        self.c.put_object(Bucket=self.b, Key=key, Body=data, Metadata={"mtime": "1.5"}, **kw)

    def list(self, prefix: str) -> int:
        n = 0
        for page in self.c.get_paginator("list_objects_v2").paginate(Bucket=self.b,
                                                                     Prefix=prefix):
            n += len(page.get("Contents", []))
        return n

    def head(self, key: str) -> None:
        assert self.c.head_object(Bucket=self.b, Key=key)["Metadata"]["mtime"] == "1.5"

    def get(self, key: str) -> int:
        return len(self.c.get_object(Bucket=self.b, Key=key)["Body"].read())

    def put_big(self, key: str, data: bytes) -> None:
        up = self.c.create_multipart_upload(Bucket=self.b, Key=key)["UploadId"]
        view = memoryview(data)

        def part(n: int) -> dict[str, Any]:
            body = bytes(view[(n - 1) * PART : n * PART])
            kw = {"ContentMD5": _md5_b64(body)} if self.md5 else {}
            r = self.c.upload_part(Bucket=self.b, Key=key, UploadId=up, PartNumber=n,
                                   Body=body, **kw)
            return {"PartNumber": n, "ETag": r["ETag"]}

        with ThreadPoolExecutor(PART_THREADS) as pool:
            parts = list(pool.map(part, range(1, -(-len(data) // PART) + 1)))
        self.c.complete_multipart_upload(Bucket=self.b, Key=key, UploadId=up,
                                         MultipartUpload={"Parts": parts})

    def get_big(self, key: str) -> int:
        return self.get(key)


class Obstore:
    def __init__(self, endpoint: str, bucket: str) -> None:
        import obstore
        from obstore.store import S3Store

        self.o = obstore
        self.s = S3Store(bucket, endpoint=endpoint, region="us-east-1", access_key_id="test",
                         secret_access_key="test", virtual_hosted_style_request=False,
                         client_options={"allow_http": True})

    def put(self, key: str, data: bytes) -> None:
        self.o.put(self.s, key, data, attributes={"mtime": "1.5"}, use_multipart=False)

    def list(self, prefix: str) -> int:
        return sum(len(batch) for batch in self.o.list(self.s, prefix))

    def head(self, key: str) -> None:
        self.o.head(self.s, key)  # ObjectMeta only: user metadata needs a GET

    def get(self, key: str) -> int:
        return len(self.o.get(self.s, key).bytes())

    def put_big(self, key: str, data: bytes) -> None:
        self.o.put(self.s, key, data, chunk_size=PART, max_concurrency=PART_THREADS,
                   use_multipart=True)

    def get_big(self, key: str) -> int:
        return len(self.o.get(self.s, key).bytes())


class Crt:
    def __init__(self, endpoint: str, bucket: str) -> None:
        from awscrt import auth, io, s3

        self.s3, self.b = s3, bucket
        self.host = endpoint.split("://", 1)[1]
        elg = io.EventLoopGroup(2)
        boot = io.ClientBootstrap(elg, io.DefaultHostResolver(elg))
        creds = auth.AwsCredentialsProvider.new_static("test", "test")
        cfg = s3.create_default_s3_signing_config(region="us-east-1", credential_provider=creds)
        self.c = s3.S3Client(bootstrap=boot, region="us-east-1", signing_config=cfg,
                             tls_mode=s3.S3RequestTlsMode.DISABLED, part_size=PART,
                             throughput_target_gbps=10.0)

    def _do(self, kind: Any, method: str, key: str, body: bytes | None = None,
            headers: tuple[tuple[str, str], ...] = ()) -> bytearray:
        from io import BytesIO

        from awscrt.http import HttpHeaders, HttpRequest

        h = HttpHeaders([("Host", self.host), *headers])
        if body is not None:
            h.add("Content-Length", str(len(body)))
        out = bytearray()
        req = HttpRequest(method, f"/{self.b}/{key}", h,
                          BytesIO(body) if body is not None else None)
        r = self.c.make_request(type=kind, request=req,
                                on_body=lambda chunk, offset, **_: out.extend(chunk))
        r.finished_future.result()
        return out

    def put(self, key: str, data: bytes) -> None:
        self._do(self.s3.S3RequestType.PUT_OBJECT, "PUT", key, data,
                 (("x-amz-meta-mtime", "1.5"),))

    def list(self, prefix: str) -> int:
        import re

        n, token = 0, ""
        while True:
            q = f"?list-type=2&prefix={prefix}" + (f"&continuation-token={token}" if token else "")
            body = bytes(self._do(self.s3.S3RequestType.DEFAULT, "GET", q))
            n += body.count(b"<Key>")
            m = re.search(rb"<NextContinuationToken>([^<]+)<", body)
            if not m:
                return n
            token = m.group(1).decode()

    def head(self, key: str) -> None:
        self._do(self.s3.S3RequestType.DEFAULT, "HEAD", key)

    def get(self, key: str) -> int:
        return len(self._do(self.s3.S3RequestType.GET_OBJECT, "GET", key))

    def put_big(self, key: str, data: bytes) -> None:
        self._do(self.s3.S3RequestType.PUT_OBJECT, "PUT", key, data)

    def get_big(self, key: str) -> int:
        return self.get(key)


def _fix_list(c: Any) -> None:
    # The DEFAULT request type needs an operation name; the path carries the query.
    if isinstance(c, Crt):
        orig = c._do

        def do(kind: Any, method: str, key: str, *a: Any) -> bytearray:
            if key.startswith("?"):
                from awscrt.http import HttpHeaders, HttpRequest

                out = bytearray()
                req = HttpRequest(method, f"/{c.b}{key}", HttpHeaders([("Host", c.host)]))
                r = c.c.make_request(type=kind, request=req, operation_name="ListObjectsV2",
                                     on_body=lambda chunk, offset, **_: out.extend(chunk))
                r.finished_future.result()
                return out
            if kind == c.s3.S3RequestType.DEFAULT:
                from awscrt.http import HttpHeaders, HttpRequest

                req = HttpRequest(method, f"/{c.b}/{key}", HttpHeaders([("Host", c.host)]))
                r = c.c.make_request(type=kind, request=req, operation_name="HeadObject")
                r.finished_future.result()
                return bytearray()
            return orig(kind, method, key, *a)

        c._do = do  # type: ignore[method-assign]


def child(name: str, endpoint: str, bucket: str, files: int, big_mib: int) -> None:
    c0 = _cpu()
    client: Any = {"boto3": lambda: Boto3(endpoint, bucket, True),
                   "boto3-no-md5": lambda: Boto3(endpoint, bucket, False),
                   "obstore": lambda: Obstore(endpoint, bucket),
                   "awscrt": lambda: Crt(endpoint, bucket)}[name]()
    _fix_list(client)
    setup = _cpu() - c0
    data = os.urandom(SMALL)
    keys = [f"{name}/d{i // 100}/f{i}" for i in range(files)]
    big = os.urandom(big_mib << 20)
    pool = ThreadPoolExecutor(IN_FLIGHT)
    out: dict[str, Any] = {"setup_cpu": round(setup, 3)}

    def each(fn: Callable[[str], object]) -> Callable[[], object]:
        return lambda: list(pool.map(fn, keys))

    def listed() -> None:
        assert client.list(f"{name}/") == files

    def got_big() -> None:
        assert client.get_big(f"{name}-big") == len(big)

    for op, fn in (("put", each(lambda k: client.put(k, data))), ("list", listed),
                   ("head", each(client.head)), ("get", each(client.get)),
                   ("put_big", lambda: client.put_big(f"{name}-big", big)),
                   ("get_big", got_big)):
        wall, cpu = _measure(fn)
        out[op] = {"wall": round(wall, 3), "cpu": round(cpu, 3)}
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--big-mib", type=int, default=256)
    ap.add_argument("--clients", default="boto3,boto3-no-md5,obstore,awscrt")
    ap.add_argument("--child", nargs=3)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.child[2], args.files, args.big_mib)
        return
    import tempfile

    from tests.servers import MotoServer

    moto = MotoServer(Path(tempfile.mkdtemp(prefix="orbit-s3-clients-")))
    results: dict[str, Any] = {}
    try:
        for name in args.clients.split(","):
            bucket = f"b-{name}"
            moto.client().create_bucket(Bucket=bucket)
            r = subprocess.run([sys.executable, __file__, "--files", str(args.files),
                                "--big-mib", str(args.big_mib), "--child", name,
                                moto.endpoint, bucket],
                               check=True, capture_output=True, text=True)
            results[name] = json.loads(r.stdout.strip().splitlines()[-1])
    finally:
        moto.stop()
    ops = ("put", "list", "head", "get", "put_big", "get_big")
    print(f"{args.files} objects of {SMALL >> 10} KiB, one of {args.big_mib} MiB; "
          "wall s / client CPU s")
    print(f"{'client':14}" + "".join(f"{op:>16}" for op in ops) + f"{'setup CPU':>12}")
    for name, r in results.items():
        print(f"{name:14}" + "".join(f"{r[op]['wall']:>8.2f}/{r[op]['cpu']:<7.2f}" for op in ops)
              + f"{r['setup_cpu']:>12.2f}")
    write_result("s3_clients", {"files": args.files, "big_mib": args.big_mib, **results})


if __name__ == "__main__":
    main()
