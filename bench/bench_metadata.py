"""Metadata fidelity at speed (issue #19): the bench tree with an ACL and a user xattr on every
file and directory, against the same tree without them, and against `rsync -aHAXS`.

Usage:  python bench/bench_metadata.py [--root /tmp/orbit-meta] [--runs 3] [--only NAMES]
        python bench/bench_metadata.py --hardlinks 100000 [--root /tmp/orbit-links]

Rows (medians of --runs, each into a fresh destination, interleaved; run as root):
  initial sync: orbit-fast of the plain tree, orbit-fast of the ACL tree, rsync -aHAXS of
  the ACL tree; then the no-change rerun of each; then an initial and a no-change backup of
  each tree (plain repositories, --insecure-no-encryption, so the KDF is not measured).
Also the repository bytes each backup adds.

`--hardlinks N`: N files in N/2 link pairs across two directories: sync and backup + restore,
checking that the copies hold N/2 inodes, with times and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data import make_tree  # noqa: E402
from product import ORBIT, compile_bytecode, write_result  # noqa: E402


def run(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, int]:
    """(wall s, CPU s of it and its children, peak RSS KiB)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd="/",
                            env=env)  # fmt: skip
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    assert proc.stderr is not None
    if code != 0:
        raise SystemExit(f"{cmd[:3]} failed ({code}): {proc.stderr.read()[-2000:]!r}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def with_acls(src: Path) -> None:
    """An ACL (a named user and group, and the mask) and a user xattr on every entry, a
    default ACL on every directory: what a project share looks like."""
    marker = src / ".acls"
    if marker.exists():
        return
    subprocess.run(["setfacl", "-R", "-m", "u:4242:rw,g:4343:r", str(src)], check=True)
    subprocess.run(["find", str(src), "-type", "d", "-exec", "setfacl", "-d", "-m",
                    "u:4242:rwx,g:4343:rx", "{}", "+"], check=True)  # fmt: skip
    for d, dirs, files in os.walk(src):
        for n in dirs + files:
            os.setxattr(os.path.join(d, n), "user.project", b"orbit")
    marker.write_text("1")


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def bench_acls(args: argparse.Namespace) -> None:
    root = Path(args.root)
    plain, acl = root / "plain", root / "acl"
    for t in (plain, acl):
        make_tree(t)  # (kept between runs: a marker says it is complete)
    with_acls(acl)
    env = {**os.environ, "ORBIT_STATE_DIR": str(root / "state")}
    rows: dict[str, dict[str, list[float]]] = {}

    def sync_cmds(src: Path, dst: Path) -> dict[str, list[str]]:
        return {"orbit": [ORBIT, "sync", str(src), str(dst), "--no-progress",
                          "--db-path", str(root / f"{dst.name}.db")],
                "rsync": ["rsync", "-aHAXS", "--numeric-ids", f"{src}/", f"{dst}/"]}

    plan = [("orbit plain", plain, "orbit"), ("orbit acl", acl, "orbit"),
            ("rsync -aHAXS acl", acl, "rsync")]
    plan = [p for p in plan if not args.only or p[0] in args.only.split(",")]
    for _ in range(args.runs):
        for name, src, tool in plan:
            dst = root / ("dst-" + name.replace(" ", "-"))
            shutil.rmtree(dst, ignore_errors=True)
            for s in ("", "-wal", "-shm", ".lock"):
                Path(str(root / f"{dst.name}.db") + s).unlink(missing_ok=True)
            subprocess.run(["sync"], check=True)
            cmd = sync_cmds(src, dst)[tool]
            w, c, _ = run(cmd, env)
            rows.setdefault(f"initial sync: {name}", {"wall": [], "cpu": []})
            rows[f"initial sync: {name}"]["wall"].append(w)
            rows[f"initial sync: {name}"]["cpu"].append(c)
            w, c, _ = run(cmd, env)
            rows.setdefault(f"no-change sync: {name}", {"wall": [], "cpu": []})
            rows[f"no-change sync: {name}"]["wall"].append(w)
            rows[f"no-change sync: {name}"]["cpu"].append(c)
        for name, src in (("plain", plain), ("acl", acl)):
            repo = root / f"repo-{name}"
            shutil.rmtree(repo, ignore_errors=True)
            cmd = [ORBIT, "backup", str(src), str(repo), "--insecure-no-encryption",
                   "--no-progress"]  # fmt: skip
            w, c, _ = run(cmd, env)
            rows.setdefault(f"initial backup: {name}", {"wall": [], "cpu": [], "bytes": []})
            rows[f"initial backup: {name}"]["wall"].append(w)
            rows[f"initial backup: {name}"]["cpu"].append(c)
            rows[f"initial backup: {name}"]["bytes"].append(du(repo))
            w, c, _ = run(cmd, env)
            rows.setdefault(f"no-change backup: {name}", {"wall": [], "cpu": []})
            rows[f"no-change backup: {name}"]["wall"].append(w)
            rows[f"no-change backup: {name}"]["cpu"].append(c)
    print(f"\nbench tree ({sum(1 for _ in plain.rglob('*'))} entries), medians of {args.runs}\n")
    print("| row | wall | CPU | runs |")
    print("|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {statistics.median(r['wall']):.2f} s | "
              f"{statistics.median(r['cpu']):.2f} s | "
              f"{' / '.join(f'{w:.2f}' for w in r['wall'])} |")  # fmt: skip
    for name in ("plain", "acl"):
        r = rows.get(f"initial backup: {name}")
        if r:
            print(f"repository after the first backup, {name}: {int(r['bytes'][-1]):,} bytes")
    write_result("metadata", {"bench": "metadata", "runs": args.runs, "rows": rows})


def bench_hardlinks(args: argparse.Namespace) -> None:
    root = Path(args.root)
    src = root / f"src{args.hardlinks}"
    n = args.hardlinks
    if not (src / ".complete").exists():
        shutil.rmtree(src, ignore_errors=True)
        for i in range(n // 2):
            d = src / "a" / f"{i // 1000:03d}"
            e = src / "b" / f"{i // 1000:03d}"
            if i % 1000 == 0:
                d.mkdir(parents=True)
                e.mkdir(parents=True)
            (d / f"f{i}").write_bytes(b"%d\n" % i)
            os.link(d / f"f{i}", e / f"f{i}")
        (src / ".complete").write_text("1")
    env = {**os.environ, "ORBIT_STATE_DIR": str(root / "state")}
    out: dict[str, object] = {}

    def inodes(p: Path) -> int:
        return len({f.stat().st_ino for f in p.rglob("f*") if f.is_file()})

    for name in ("dst", "repo", "restored"):
        shutil.rmtree(root / name, ignore_errors=True)
    w, c, rss = run([ORBIT, "sync", str(src), str(root / "dst"), "--no-progress"], env)
    out["sync"] = {"wall": w, "cpu": c, "rss_kib": rss, "inodes": inodes(root / "dst")}
    w, c, rss = run(["rsync", "-aH", f"{src}/", f"{root / 'rsync'}/"])
    out["rsync -aH"] = {"wall": w, "cpu": c, "rss_kib": rss}
    shutil.rmtree(root / "rsync", ignore_errors=True)
    w, c, rss = run([ORBIT, "backup", str(src), str(root / "repo"), "--insecure-no-encryption",
                     "--no-progress"], env)  # fmt: skip
    out["backup"] = {"wall": w, "cpu": c, "rss_kib": rss}
    w, c, rss = run([ORBIT, "restore", "-r", str(root / "repo"), "latest", "--target",
                     str(root / "restored"), "--no-progress"], env)  # fmt: skip
    out["restore"] = {"wall": w, "cpu": c, "rss_kib": rss, "inodes": inodes(root / "restored")}
    print(json.dumps(out, indent=1))
    ours = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    write_result("hardlinks", {"files": n, "results": out, "bench_rss_kib": ours})


def main() -> None:
    compile_bytecode()
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", default="")
    ap.add_argument("--hardlinks", type=int, default=0)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the trees carry ACLs for other users")
    if args.hardlinks:
        args.root = args.root or "/tmp/orbit-links"
        bench_hardlinks(args)
    else:
        args.root = args.root or "/tmp/orbit-meta"
        bench_acls(args)


if __name__ == "__main__":
    main()
