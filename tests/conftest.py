"""Shared fixtures: isolated state dirs, a seeded rng, tree builders and comparers."""

from __future__ import annotations

import json
import os
import random
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import xxhash

ORBIT = [sys.executable, "-m", "orbit_fast"]
TEST_PASSWORD = "correct horse battery staple"
# Set by .ci/run: there, a backend suite that cannot start its server fails instead of skipping.
REQUIRE_SERVERS = os.environ.get("ORBIT_TEST_REQUIRE_SERVERS") == "1"


@pytest.fixture(autouse=True)
def _isolated_state(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    for key in list(os.environ):
        if key.startswith("ORBIT_"):
            monkeypatch.delenv(key)
    state = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    # Every repository a test makes is encrypted with this password (the default), with a
    # cheap key derivation: 8 MiB and one pass instead of 64 MiB and three, so the hundreds
    # of opens in the suite do not each cost 0.1 s. Tests of passwords unset or change it.
    monkeypatch.setenv("ORBIT_PASSWORD", TEST_PASSWORD)
    monkeypatch.setenv("ORBIT_KDF_MEMORY_MIB", "8")
    monkeypatch.setenv("ORBIT_KDF_TIME", "1")


class SeededRandom(random.Random):
    def __init__(self, seed: int):
        super().__init__(seed)
        self.seed_value = seed

    def __repr__(self) -> str:
        return f"SeededRandom(seed={self.seed_value})"


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> SeededRandom:
    seed = int(os.environ.get("ORBIT_TEST_SEED", "0")) or (hash(request.node.nodeid) & 0xFFFFFF)
    return SeededRandom(seed)


def write(path: Path, data: bytes, mtime: float | None = None, mode: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mode is not None:
        path.chmod(mode)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def make_tree(root: Path, rng: random.Random, files: int = 60, max_size: int = 20000) -> Path:
    """Nested dirs of random files with varied modes and mtimes, an empty dir and a symlink."""
    for i in range(files):
        depth = rng.randint(0, 3) if i >= 2 else 0
        parts = [f"d{rng.randint(0, 4)}" for _ in range(depth)]
        size = rng.choice([0, 1, rng.randint(2, max_size)])
        data = rng.randbytes(size)
        write(
            root.joinpath(*parts, f"f{i}.bin"),
            data,
            mtime=1_600_000_000 + rng.randint(0, 10**7) + rng.random(),
            mode=rng.choice([0o644, 0o600, 0o755, 0o640]),
        )
    (root / "empty_dir").mkdir(parents=True, exist_ok=True)
    (root / "link_to_f0").symlink_to("f0.bin")
    (root / "dangling").symlink_to("../nowhere/at/all")
    return root


def snapshot(root: Path, with_dir_times: bool = True) -> dict[str, tuple]:
    """Everything sync promises to preserve: kind, content digest, mode, mtime_ns, link target."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(full), st.st_mtime_ns)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = (
                    "dir",
                    stat.S_IMODE(st.st_mode),
                    st.st_mtime_ns if with_dir_times else 0,
                )
            else:
                h = xxhash.xxh3_128()
                with open(full, "rb") as f:
                    while chunk := f.read(1 << 22):
                        h.update(chunk)
                out[rel] = (
                    "file",
                    h.hexdigest(),
                    st.st_size,
                    stat.S_IMODE(st.st_mode),
                    st.st_mtime_ns,
                )
    return out


def assert_same_tree(src: Path, dst: Path, with_dir_times: bool = True) -> None:
    a, b = snapshot(src, with_dir_times), snapshot(dst, with_dir_times)
    missing = sorted(set(a) - set(b))
    extra = sorted(set(b) - set(a))
    differ = sorted(k for k in set(a) & set(b) if a[k] != b[k])
    assert not (missing or extra or differ), (
        f"missing={missing[:10]} extra={extra[:10]} differ={[(k, a[k], b[k]) for k in differ[:5]]}"
    )


def temp_files(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if ".orbit-" in p.name and p.name.endswith(".tmp")]


def run_cli(*args: str, check: int | None = 0, **kw) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*ORBIT, *args], capture_output=True, text=True, timeout=300, **kw)
    if check is not None:
        assert proc.returncode == check, (
            f"exit {proc.returncode} != {check}\nstdout:\n{proc.stdout[-3000:]}\n"
            f"stderr:\n{proc.stderr[-3000:]}"
        )
    return proc


def json_events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def summary_of(stdout: str) -> dict:
    (summary,) = [e for e in json_events(stdout) if e["event"] == "summary"]
    return summary


# ---- real servers on 127.0.0.1 (tests/servers.py) ------------------------------------------


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory):
    from tests.servers import MotoServer

    server = MotoServer(tmp_path_factory.mktemp("moto"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def samba(tmp_path_factory: pytest.TempPathFactory):
    from tests.servers import SambaServer, smb_available

    why = smb_available()
    if why:
        if REQUIRE_SERVERS:
            pytest.fail(f"the SMB backend suite cannot run: Samba {why}")
        pytest.skip(why)
    server = SambaServer(tmp_path_factory.mktemp("samba"))
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(moto, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    """A fresh bucket; the environment points orbit-fast at the moto server."""
    import re

    for k, v in moto.env().items():
        monkeypatch.setenv(k, v)
    name = "t-" + re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    name = f"{name}-{os.getpid() % 10000}-{random.randrange(10**6)}"
    moto.client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def smb_dir(samba, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    """A fresh directory on the Samba share (its smb:// URL path part)."""
    for k, v in samba.env().items():
        monkeypatch.setenv(k, v)
    name = f"t{random.randrange(10**9)}"
    (samba.share_dir / name).mkdir()
    return name


def child_pids(pid: int, marker: str) -> list[int]:
    """Pids of the processes whose parent is `pid` and whose command line holds `marker`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if ppid == pid and marker.encode() in cmd:
            found.append(int(entry))
    return found


def sealed_lock(repo: Path, holder: dict) -> bytes:
    """A repository lock's content as a holder writes it: sealed (one that fails
    authentication is taken for torn, and so stale)."""
    from orbit_fast.crypto import LOCK
    from orbit_fast.repo.repository import Repository

    with Repository.open(str(repo)) as r:
        assert r.sealer is not None
        return r.sealer.seal(LOCK, b"locks/exclusive", json.dumps(holder).encode())
