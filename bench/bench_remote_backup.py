"""Backups of the ~2 GB bench tree into local, S3 (moto server) and SMB (private Samba)
repositories, all on loopback, one after the other in the same run (#5).

    .venv/bin/python bench/bench_remote_backup.py     # as root, with samba installed

Prints the initial backup and a no-change rerun per kind of repository. The servers are the
test servers (tests/servers.py), so numbers measure orbit-fast plus a Python S3 server; a
real S3 or NAS differs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.data import make_tree  # noqa: E402
from bench.product import ORBIT, compile_bytecode  # noqa: E402
from tests.servers import MotoServer, SambaServer  # noqa: E402


def main() -> None:
    compile_bytecode()
    src = Path("/tmp/orbit-bench/src")
    make_tree(src)
    work = Path(tempfile.mkdtemp(prefix="orbit-remote-bench-"))
    moto, samba = MotoServer(work), SambaServer(work / "smb")
    try:
        moto.client().create_bucket(Bucket="bench")
        env = {**os.environ, **moto.env(), **samba.env()}
        targets = [("local", str(work / "repo")), ("s3 (moto)", "s3://bench/repo"),
                   ("smb (samba)", samba.url("repo"))]  # fmt: skip
        print("| repository | initial backup s | no-change rerun s |\n|---|---|---|")
        for name, url in targets:
            e = {**env, "ORBIT_STATE_DIR": str(work / f"state-{name[:3]}"),
                 "ORBIT_PASSWORD": "bench"}
            times = []
            for _ in range(2):
                t0 = time.perf_counter()
                subprocess.run([ORBIT, "backup", str(src), url, "--no-progress"], env=e,
                               check=True, capture_output=True)  # fmt: skip
                times.append(time.perf_counter() - t0)
            print(f"| {name} | {times[0]:.1f} | {times[1]:.2f} |", flush=True)
    finally:
        moto.stop()
        samba.stop()


if __name__ == "__main__":
    main()
