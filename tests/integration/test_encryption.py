"""Encrypted repositories as an attacker with the bucket sees them, and keys as operators
use them: nothing readable in the files, every tampered or moved object named and refused
with the rest restored, keys added, changed and removed (also under kill -9)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
import zlib
from pathlib import Path

import pytest

from orbit_fast.errors import ExitCode
from tests.conftest import ORBIT, TEST_PASSWORD, run_cli, snapshot, write

CANARY = b"ORBIT-CANARY-7f3a91 the quarterly numbers nobody may read"


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    for i in range(40):
        write(root / "canarydir" / f"canaryname-{i:02d}.txt", CANARY * (i + 1) + b"%d" % i)
    write(root / "other" / "plain.bin", os.urandom(300_000))
    return root


def backup(src: Path, repo: Path, *extra: str, check: int = 0) -> dict:
    proc = run_cli("backup", str(src), str(repo), "--json", *extra, check=check)
    (summary,) = [json.loads(x) for x in proc.stdout.splitlines() if '"backup_summary"' in x]
    return summary


def repo_bytes(repo: Path) -> dict[str, bytes]:
    return {str(p.relative_to(repo)): p.read_bytes() for p in repo.rglob("*") if p.is_file()}


def test_nothing_of_the_source_is_in_the_repository(src: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    backup(src, repo, "--codec", "none")  # nothing compressed: the text would be verbatim
    files = repo_bytes(repo)
    assert any(k.startswith("keys/") for k in files)
    for name, data in files.items():
        for needle in (CANARY[:20], b"canaryname", b"canarydir", str(src).encode()):
            assert needle not in data, (name, needle)
    config = json.loads(files["config"])
    assert set(config) == {"format", "encryption", "config"}  # the key is not in plain text
    assert config["encryption"] == "aes-256-gcm"
    out = tmp_path / "out"
    run_cli("restore", "-r", str(repo), "latest", "--target", str(out))
    assert snapshot(out) == snapshot(src)


def test_an_unencrypted_repository_is_only_made_when_asked_and_says_so(
    src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ORBIT_PASSWORD")
    repo = tmp_path / "plain"
    proc = run_cli("backup", str(src), str(repo), check=ExitCode.NO_PASSWORD)
    assert "--password-file" in proc.stderr
    assert not repo.exists() or not any(repo.iterdir())  # nothing made without a password
    backup(src, repo, "--insecure-no-encryption")
    assert b"canaryname" in b"".join(repo_bytes(repo).values())  # as it said
    listed = run_cli("snapshots", "-r", str(repo)).stdout
    assert "NOT ENCRYPTED" in listed
    out = tmp_path / "out"
    run_cli("restore", "-r", str(repo), "latest", "--target", str(out))
    assert snapshot(out) == snapshot(src)


# ---- tampering ------------------------------------------------------------------------------


class Repo:
    """A repository with two snapshots, and the places of its objects."""

    def __init__(self, src: Path, path: Path) -> None:
        self.src, self.path = src, path
        backup(src, path)
        write(src / "other" / "second.txt", b"second run")
        backup(src, path)
        from orbit_fast.repo.repository import Repository

        with Repository.open(str(path)) as repo:
            self.snaps = [n for n, _ in repo.snapshots()]  # oldest first
            self.root_tree = repo.load_snapshot(self.snaps[-1]).tree
            self.key = repo.config.key_bytes
            self.packs: dict[bytes, list[tuple[bytes, int, int]]] = {}
            for name in repo.pack_names():
                entries = repo.read_pack_index(name)
                self.packs[name] = [(e["id"].tobytes(), int(e["offset"]), int(e["stored"]))
                                    for e in entries]  # fmt: skip

    def pack_file(self, name: bytes) -> Path:
        return self.path / "packs" / name.hex()[:2] / name.hex()

    def where(self, blob_id: bytes) -> tuple[Path, int, int]:
        for name, entries in self.packs.items():
            for cid, off, stored in entries:
                if cid == blob_id:
                    return self.pack_file(name), off, stored
        raise KeyError(blob_id)

    def data_blob(self) -> bytes:
        """The id of a data chunk (not a tree): plain.bin's first."""
        from orbit_fast.index.universe import Universe
        from orbit_fast.repo.repository import Repository
        from orbit_fast.repo.trees import TreeReader

        with Repository.open(str(self.path)) as repo, Universe.open(
            str(Path(os.environ["XDG_STATE_HOME"]) / "orbit-fast" / "universe.db")
        ) as u:  # fmt: skip
            reader = TreeReader(repo, u)
            other = reader.lookup(self.root_tree, b"other")
            assert other is not None
            plain = reader.lookup(other.subtree, b"plain.bin")
            assert plain is not None
            return plain.chunk_ids()[0]


def flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x10
    path.write_bytes(bytes(data))


def verify(repo: Path, code: int) -> str:
    proc = run_cli("verify", "-r", str(repo), check=code)
    return proc.stdout + proc.stderr


def test_a_flipped_bit_in_a_data_blob_is_named_and_the_rest_restored(src, tmp_path) -> None:
    r = Repo(src, tmp_path / "repo")
    cid = r.data_blob()
    pack, off, stored = r.where(cid)
    flip(pack, off + stored // 2)
    out = verify(r.path, ExitCode.AUTHENTICATION)
    assert "failed authentication" in out and "plain.bin" in out
    target = tmp_path / "out"
    proc = run_cli("restore", "-r", str(r.path), "latest", "--target", str(target),
                   check=ExitCode.AUTHENTICATION)  # fmt: skip
    assert "plain.bin" in proc.stderr + proc.stdout and cid.hex()[:16] in proc.stderr
    assert not (target / "other" / "plain.bin").exists()
    assert (target / "canarydir" / "canaryname-05.txt").read_bytes().startswith(CANARY)


def test_a_flipped_bit_in_a_tree_is_named_and_the_rest_restored(src, tmp_path) -> None:
    r = Repo(src, tmp_path / "repo")
    from orbit_fast.index.universe import Universe
    from orbit_fast.repo.repository import Repository
    from orbit_fast.repo.trees import TreeReader

    # The tree of "other/", found through the root tree.

    upath = str(Path(os.environ["XDG_STATE_HOME"]) / "orbit-fast" / "universe.db")
    with Repository.open(str(r.path)) as repo, Universe.open(upath) as u:
        other = TreeReader(repo, u).lookup(r.root_tree, b"other")
    assert other is not None
    pack, off, stored = r.where(other.subtree)
    flip(pack, off + 20)
    out = verify(r.path, ExitCode.AUTHENTICATION)
    assert f"tree {other.subtree.hex()[:16]}" in out or "other" in out, out
    target = tmp_path / "out"
    run_cli("restore", "-r", str(r.path), "latest", "--target", str(target),
            check=ExitCode.AUTHENTICATION)  # fmt: skip
    assert (target / "canarydir" / "canaryname-05.txt").exists()
    assert not (target / "other" / "plain.bin").exists()


def test_a_pack_index_that_fails_authentication_is_named(src, tmp_path) -> None:
    r = Repo(src, tmp_path / "repo")
    name = next(iter(r.packs))
    path = r.pack_file(name)
    data = bytearray(path.read_bytes())
    import struct

    at, count, _crc, token, magic = struct.unpack("<QII16s8s", data[-40:])
    data[at + 20] ^= 1  # inside the sealed index; the CRC made right again, as anyone can
    index = bytes(data[at:-40])
    data[-40:] = struct.pack("<QII16s8s", at, count, zlib.crc32(index), token, magic)
    path.write_bytes(bytes(data))
    out = verify(r.path, ExitCode.AUTHENTICATION)
    assert f"the index of pack {name.hex()[:12]} failed authentication" in out


@pytest.mark.parametrize("how", ["flipped", "truncated", "renamed", "replayed", "foreign"])
def test_a_snapshot_tampered_moved_or_foreign_is_refused_and_the_others_used(
    src: Path, tmp_path: Path, how: str
) -> None:
    r = Repo(src, tmp_path / "repo")
    snaps = r.path / "snapshots"
    old, new = r.snaps
    fake = "ab" * 32
    if how == "flipped":
        flip(snaps / new, 40)
        bad = new
    elif how == "truncated":
        data = (snaps / new).read_bytes()
        (snaps / new).write_bytes(data[:-5])
        bad = new
    elif how == "renamed":
        os.rename(snaps / new, snaps / fake)
        bad = fake
    elif how == "replayed":  # an old snapshot put back under a new name, to be "latest"
        (snaps / fake).write_bytes((snaps / old).read_bytes())
        os.utime(snaps / fake)
        bad = fake
    else:  # the newest snapshot of another repository, same password and all
        other = Repo(src, tmp_path / "other")
        (snaps / fake).write_bytes((other.path / "snapshots" / other.snaps[-1]).read_bytes())
        bad = fake
    # A truncated one is found by its length before any key is tried: damaged (13).
    out = verify(r.path, ExitCode.INTEGRITY if how == "truncated" else ExitCode.AUTHENTICATION)
    assert f"snapshot {bad[:8]}" in out and ("failed authentication" in out or "damaged" in out)
    listed = run_cli("snapshots", "-r", str(r.path))
    assert f"snapshot {bad[:8]}" in listed.stderr  # said, and left out
    good = old if how in ("flipped", "truncated", "renamed") else new
    assert good[:8] in listed.stdout and bad[:8] not in listed.stdout
    target = tmp_path / "out"
    run_cli("restore", "-r", str(r.path), "latest", "--target", str(target))
    assert (target / "canarydir").is_dir()
    proc = run_cli("restore", "-r", str(r.path), bad[:12], "--target", str(tmp_path / "o2"),
                   check=None)  # fmt: skip
    assert proc.returncode in (ExitCode.AUTHENTICATION, ExitCode.REPOSITORY), proc.stderr


def test_a_pack_from_another_repository_is_not_indexed(src: Path, tmp_path: Path) -> None:
    other = Repo(src, tmp_path / "other")
    r = Repo(src, tmp_path / "repo")  # second: its latest snapshot is the source as it is
    name = next(iter(other.packs))
    dst = r.pack_file(name)
    dst.parent.mkdir(exist_ok=True)
    dst.write_bytes(other.pack_file(name).read_bytes())
    out = verify(r.path, ExitCode.AUTHENTICATION)
    assert f"pack {name.hex()[:12]}" in out and "failed authentication" in out
    target = tmp_path / "out"
    run_cli("restore", "-r", str(r.path), "latest", "--target", str(target))
    assert snapshot(target) == snapshot(src)


def test_a_tampered_config_or_key_stops_the_open_with_its_own_code(src, tmp_path) -> None:
    r = Repo(src, tmp_path / "repo")
    config = json.loads((r.path / "config").read_bytes())
    good = dict(config)
    body = bytearray(__import__("base64").b64decode(config["config"]))
    body[30] ^= 1
    config["config"] = __import__("base64").b64encode(bytes(body)).decode()
    (r.path / "config").write_text(json.dumps(config))
    proc = run_cli("snapshots", "-r", str(r.path), check=ExitCode.AUTHENTICATION)
    assert "the config of" in proc.stderr
    (r.path / "config").write_text(json.dumps(good))
    (key,) = list((r.path / "keys").iterdir())
    doc = json.loads(key.read_text())
    key.write_text(json.dumps({**doc, "memory_kib": 1}))
    proc = run_cli("snapshots", "-r", str(r.path), check=ExitCode.KEY_DAMAGED)
    assert f"key {key.name[:8]}" in proc.stderr and "damaged" in proc.stderr


# ---- keys -----------------------------------------------------------------------------------


def pw(tmp_path: Path, text: str) -> str:
    p = tmp_path / f"pw-{text}"
    p.write_text(text + "\n")
    p.chmod(0o600)
    return str(p)


def opens(repo: Path, password_file: str) -> bool:
    env = {k: v for k, v in os.environ.items() if k != "ORBIT_PASSWORD"}
    proc = run_cli("snapshots", "-r", str(repo), "--password-file", password_file, check=None,
                   env=env)  # fmt: skip
    assert proc.returncode in (0, ExitCode.WRONG_PASSWORD), proc.stderr
    return proc.returncode == 0


def test_keys_added_changed_and_removed(src: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    backup(src, repo)
    first, second, third = pw(tmp_path, TEST_PASSWORD), pw(tmp_path, "two"), pw(tmp_path, "3")
    run_cli("key", "add", "-r", str(repo), "--new-password-file", second)
    assert opens(repo, first) and opens(repo, second) and not opens(repo, third)
    keys = [json.loads(x) for x in
            run_cli("key", "list", "-r", str(repo), "--json").stdout.splitlines()]  # fmt: skip
    assert len(keys) == 2 and sum(k["current"] for k in keys) == 1
    env = {**os.environ, "ORBIT_PASSWORD": "two"}
    run_cli("key", "passwd", "-r", str(repo), "--new-password-file", third, env=env)
    assert opens(repo, first) and not opens(repo, second) and opens(repo, third)
    mine = next(k["name"] for k in keys if k["current"])
    proc = run_cli("key", "remove", "-r", str(repo), mine[:8], check=ExitCode.USAGE)
    assert "the one this password opened" in proc.stderr
    env = {**os.environ, "ORBIT_PASSWORD": "3"}
    run_cli("key", "remove", "-r", str(repo), mine[:8], env=env)
    assert not opens(repo, first) and opens(repo, third)
    (last,) = [json.loads(x)["name"] for x in run_cli(
        "key", "list", "-r", str(repo), "--json", env=env).stdout.splitlines()]  # fmt: skip
    proc = run_cli("key", "remove", "-r", str(repo), last[:8], env=env, check=ExitCode.USAGE)
    out = tmp_path / "out"
    run_cli("restore", "-r", str(repo), "latest", "--target", str(out), env=env)
    assert snapshot(out) == snapshot(src)
    proc = run_cli("snapshots", "-r", str(repo), check=ExitCode.WRONG_PASSWORD)
    assert "does not open any of the 1 key" in proc.stderr


@pytest.mark.parametrize("op", ["add", "passwd"])
def test_kill_9_during_a_key_operation_leaves_a_repository_one_password_opens(
    src: Path, tmp_path: Path, op: str
) -> None:
    repo = tmp_path / "repo"
    backup(src, repo)
    old = pw(tmp_path, TEST_PASSWORD)
    rng = random.Random(7 if op == "add" else 8)
    # One run's length, to aim the kills across the whole of it.
    t0 = time.monotonic()
    new = pw(tmp_path, "probe")
    run_cli("key", op, "-r", str(repo), "--new-password-file", new,
            env={**os.environ, "ORBIT_PASSWORD": TEST_PASSWORD})  # fmt: skip
    span = time.monotonic() - t0
    current = new if op == "passwd" else old
    kills = 0
    for trial in range(12):
        nxt = pw(tmp_path, f"t{trial}")
        env = {**os.environ, "ORBIT_PASSWORD": Path(current).read_text().strip()}
        proc = subprocess.Popen([*ORBIT, "key", op, "-r", str(repo), "--new-password-file", nxt],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.05, span))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        a, b = opens(repo, current), opens(repo, nxt)
        assert a or b, f"trial {trial}: neither password opens the repository"
        if op == "passwd" and b:
            current = nxt  # the new key landed (the old one may still be there too)
    assert kills >= 3, "no kill landed inside a run: the trials tested nothing"
    out = tmp_path / "out"
    run_cli("restore", "-r", str(repo), "latest", "--target", str(out),
            env={**os.environ, "ORBIT_PASSWORD": Path(current).read_text().strip()})  # fmt: skip
    assert snapshot(out) == snapshot(src)
