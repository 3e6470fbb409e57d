"""The stage of the hostile-user suite: a root-only secret, victim directories, trees that the
user `nobody` owns, the attacker process (attacker.py, run through runuser) and the checks.

The engine runs as root (the tests' own user); the attacker as `nobody`. Everything lives in an
`Arena`, a directory in /tmp both can reach (pytest's tmp_path is root's alone). Each run gets
a fresh directory in it; a `Tally` keeps what each run showed, so a failure says how many of
the runs leaked the secret or changed a victim, and how.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pwd
import random
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ATTACKER = Path(__file__).with_name("attacker.py")
# The smallest block the engine takes (4 KiB; config.validate): files of a few KiB are then
# copied in several blocks, and a swap between two block reads is tried too.
BLOCK_MB = 4096 / (1 << 20)
RUNS = 20  # of each kind (issue #15)
SINGLE = (64, 4000)  # sizes a symlink's target text can match (at most 4095 bytes)
MULTI = (5000, 20000)  # 2 to 5 blocks: no link can have that length; flipped instead


def skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "the attacks need a root run of the engine and the user nobody"
    if shutil.which("runuser") is None:
        return "runuser (util-linux) is missing"
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        return "there is no user nobody"
    if attacker_python() is None:
        return "no Python interpreter that the user nobody may run"
    return None


@functools.cache
def attacker_python() -> str | None:
    """An interpreter `nobody` can run (the tests' own may sit in root's home, as pyenv's)."""
    for cand in (os.path.realpath(sys.executable), "/usr/bin/python3",
                 shutil.which("python3") or ""):  # fmt: skip
        if cand and subprocess.run(["runuser", "-u", "nobody", "--", cand, "-I", "-S", "-c",
                                    "pass"], capture_output=True).returncode == 0:  # fmt: skip
            return cand
    return None


def nobody() -> tuple[int, int]:
    pw = pwd.getpwnam("nobody")
    return pw.pw_uid, pw.pw_gid


class Arena:
    """/tmp/orbit-attack-*/: `vault/secret` (root, 0600, in a 0700 directory nobody cannot
    write), the attacker's script, and one directory per run."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="orbit-attack-", dir="/tmp"))
        os.chmod(self.base, 0o755)
        vault = self.base / "vault"
        vault.mkdir(mode=0o700)
        self.marker = f"ORBIT-SECRET-{os.urandom(8).hex()}".encode()
        # Longer than any source file, so a read through the link never comes up short; every
        # 64-byte window of it holds the whole marker.
        self.secret = vault / "secret"
        self.secret.write_bytes((self.marker + b"\n") * (MULTI[1] // len(self.marker) + 1))
        os.chmod(self.secret, 0o600)
        self.attacker = self.base / "attacker.py"
        shutil.copyfile(ATTACKER, self.attacker)
        os.chmod(self.attacker, 0o644)
        self._runs = 0

    def run_dir(self) -> Path:
        self._runs += 1
        d = self.base / f"run{self._runs}"
        d.mkdir(mode=0o755)
        return d

    def close(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)


# ---- trees ----------------------------------------------------------------------------------


def give_to_nobody(root: Path) -> None:
    """chown -R nobody: the tree, and the right to rename anything in it, are the attacker's."""
    uid, gid = nobody()
    os.lchown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, gid)


def make_files(root: Path, rng: random.Random, names: list[str], multi: float = 0.1
               ) -> list[tuple[str, int, int]]:  # fmt: skip
    """Random files (a share `multi` of them in several blocks); (path, size, mtime_ns) each,
    in name order, as the engine lists them."""
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for name in sorted(names):
        size = rng.randint(*(MULTI if rng.random() < multi else SINGLE))
        path = root / name
        path.write_bytes(rng.randbytes(size))
        path.chmod(rng.choice([0o644, 0o640, 0o600, 0o755]))
        mtime_ns = 1_600_000_000_000_000_000 + rng.randrange(10**16)
        os.utime(path, ns=(mtime_ns, mtime_ns))
        out.append((str(path), size, mtime_ns))
    return out


def make_victim(path: Path, rng: random.Random, names: list[str]) -> Path:
    """A root-owned directory (0750) of root-only files with old times: what must not change."""
    path.parent.mkdir(mode=0o755, exist_ok=True)
    path.mkdir(mode=0o750)
    for name in names:
        f = path / name
        f.write_bytes(b"victim " + name.encode() + b" " + rng.randbytes(rng.randint(0, 300)))
        f.chmod(0o640)
        os.utime(f, ns=(1_500_000_000_000_000_000, 1_500_000_000_000_000_000))
    os.utime(path, ns=(1_500_000_000_000_000_000, 1_500_000_000_000_000_000))
    return path


def state_of(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry at and below `root` (never following a link): kind, mode, owner, mtime and
    content digest or link target."""
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames]:
            full = os.path.join(dirpath, name) if name != "." else dirpath
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            what: Any = ""
            if stat.S_ISLNK(st.st_mode):
                what = os.readlink(full)
            elif stat.S_ISREG(st.st_mode):
                what = hashlib.sha256(Path(full).read_bytes()).hexdigest()
            out[rel] = (stat.S_IFMT(st.st_mode), oct(stat.S_IMODE(st.st_mode)), st.st_uid,
                        st.st_gid, st.st_mtime_ns, what)  # fmt: skip
    return out


def changes(before: dict[str, tuple[Any, ...]], after: dict[str, tuple[Any, ...]],
            where: str) -> list[str]:  # fmt: skip
    gone = sorted(set(before) - set(after))
    new = sorted(set(after) - set(before))
    differ = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    out = [f"{where}/{k} removed" for k in gone] + [f"{where}/{k} created" for k in new]
    out += [f"{where}/{k} changed {before[k][1:5]} -> {after[k][1:5]}"
            + (" (content)" if before[k][5] != after[k][5] else "") for k in differ]
    return out


def secret_holders(root: Path, marker: bytes) -> list[str]:
    """Regular files at or below `root` (links not followed) whose bytes hold the secret."""
    found = []
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            if stat.S_ISREG(st.st_mode) and marker in Path(full).read_bytes():
                found.append(f"{os.path.relpath(full, root)} (mode {oct(stat.S_IMODE(st.st_mode))},"
                             f" uid {st.st_uid})")
    return found


# ---- the attacker ---------------------------------------------------------------------------


def source_group(files: list[tuple[str, int, int]], stash: Path, secret: Path,
                 trigger: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """Swap `files` for length- and mtime-matched links to `secret` once `trigger` fires."""
    return {"kind": "source", "files": files, "stash": str(stash), "secret": str(secret),
            "trigger": trigger}


def dest_group(dirs: list[tuple[Path, Path]], watch_parent: bool = False) -> dict[str, Any]:
    """Swap each (directory, victim): the directory for a link to the victim once the run
    writes in it (`watch_parent`: once the run creates it)."""
    return {"kind": "dest", "dirs": [(str(d), str(v), str(d.parent if watch_parent else d))
                                     for d, v in dirs]}  # fmt: skip


class Attacker:
    """attacker.py as `nobody`, started and prepared before the run it races.

    `stash`: a directory of the attacker's own beside the trees (for its hard links)."""

    def __init__(self, arena: Arena, run: Path, groups: list[dict[str, Any]]) -> None:
        self.stop = run / "attacker.stop"
        plan = run / "attacker.json"
        plan.write_text(json.dumps({"stop": str(self.stop), "timeout_s": 120,
                                    "groups": groups}))  # fmt: skip
        plan.chmod(0o644)
        python = attacker_python()
        assert python is not None
        self.proc = subprocess.Popen(
            ["runuser", "-u", "nobody", "--", python, "-I", "-S", str(arena.attacker),
             str(plan)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line != "ready\n":
            out, err = self.proc.communicate(timeout=30)
            raise AssertionError(f"the attacker did not start: {line}{out}{err}")

    def finish(self) -> list[dict[str, Any]]:
        """Stop it; what it did (each group's first swap, CLOCK_MONOTONIC, and its count)."""
        self.stop.touch()
        out, err = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0, f"the attacker failed ({self.proc.returncode}): {err}"
        return list(json.loads(out.strip().splitlines()[-1]))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@dataclass
class Tally:
    """What the runs of one kind showed: leaks of the secret, writes outside, and whether the
    attacker's swap landed before the run ended (a run it missed proves nothing)."""

    kind: str
    runs: int = 0
    attacked: int = 0
    leaked: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)
    exits: dict[str, int] = field(default_factory=dict)

    def record(self, exit_code: Any, ended: float, report: list[dict[str, Any]],
               leaks: list[str], outside: list[str]) -> None:  # fmt: skip
        self.runs += 1
        self.exits[str(exit_code)] = self.exits.get(str(exit_code), 0) + 1
        if any(g["first"] is not None and g["first"] < ended for g in report):
            self.attacked += 1
        if leaks:
            self.leaked.append(f"run {self.runs}: {len(leaks)} files, e.g. {leaks[:3]}")
        if outside:
            self.outside.append(f"run {self.runs}: {len(outside)} changes, e.g. {outside[:4]}")

    def verdict(self) -> str:
        lines = [f"{self.kind}: {self.runs} runs (exit codes {self.exits}); the attacker swapped "
                 f"before the run ended in {self.attacked}; the secret leaked in "
                 f"{len(self.leaked)}; the victim changed in {len(self.outside)}"]
        lines += [f"  leak   {x}" for x in self.leaked[:5]]
        lines += [f"  outside {x}" for x in self.outside[:5]]
        return "\n".join(lines)

    def check(self) -> None:
        print("\n" + self.verdict())
        assert not self.leaked and not self.outside, self.verdict()
        # Guards the guard: a suite whose attacker always came too late would pass on any code.
        assert self.attacked >= self.runs // 4, self.verdict()


def now() -> float:
    return time.monotonic()  # CLOCK_MONOTONIC: the attacker's clock too
