"""--checksum's S3 digests: multipart ETags for several part sizes in one pass
(workers/objects.py) and rclone's "md5chksum" metadata (backends/s3.py)."""

from __future__ import annotations

import base64
import hashlib

from orbit_fast.backends.base import multipart_etag
from orbit_fast.backends.s3 import md5_from_meta
from orbit_fast.workers.objects import MultipartEtags


def _etag(data: bytes, part: int) -> str:
    parts = [data[i : i + part] for i in range(0, len(data), part)]
    return multipart_etag([hashlib.md5(p).hexdigest() for p in parts])  # noqa: S324


def test_multipart_etags_of_several_part_sizes_in_one_pass(rng) -> None:
    data = rng.randbytes(100_003)
    sizes = [10_000, 7_777, 100_003, 50_000]  # 50,000 divides 100,000: a 3-byte last part
    h = MultipartEtags(sizes)
    at = 0
    for step in (1, 9_999, 30_000, 17, 60_000):  # pieces that cut parts anywhere
        h.update(data[at : at + step])
        at += step
    assert at >= len(data)
    assert h.etags() == [_etag(data, p) for p in sizes]
    exact = MultipartEtags([25_000])  # the data ends on a part boundary: no empty last part
    exact.update(data[:100_000])
    assert exact.etags() == [_etag(data[:100_000], 25_000)]
    assert exact.etags()[0].endswith("-4")


def test_md5_from_rclone_metadata() -> None:
    digest = hashlib.md5(b"x").digest()  # noqa: S324
    assert md5_from_meta(base64.b64encode(digest).decode()) == digest.hex()
    assert md5_from_meta(None) == ""
    assert md5_from_meta("not base64!") == ""
    assert md5_from_meta(base64.b64encode(b"short").decode()) == ""
