"""Each selection option against rsync's (or, for ages, rclone's) result on the same tree: both
run from the same starting point and the destinations they leave are compared, file by file
(issue #22; docs/sync.md, "Selection")."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REQUIRE_SERVERS, run_cli, write

DAY = 86400


def _need(tool: str) -> str:
    here = Path(sys.executable).parent / tool
    found = str(here) if here.exists() else shutil.which(tool)
    if not found:
        if REQUIRE_SERVERS:
            pytest.fail(f"{tool} is needed to compare with (tools/test installs it)")
        pytest.skip(f"needs {tool}")
    return found


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """Names, sizes and ages the options tell apart."""
    src = tmp_path / "src"
    now = time.time()
    files = {
        "a.txt": (100, 1), "b.log": (3000, 1), "c.tmp": (10, 1), "big.bin": (50_000, 1),
        "old.txt": (200, 40), "new.txt": (5000, 0.01),
        "build/out.o": (700, 2), "build/keep.txt": (80, 2),
        "docs/readme.txt": (900, 3), "docs/cache/x.txt": (20, 3), "docs/cache/y.log": (20, 3),
        "logs/app.log": (1500, 5), "logs/2026/jan.log": (1600, 50), "logs/2026/note.txt": (5, 50),
        "deep/er/still/file.txt": (1024, 10), "deep/er/k.tmp": (1025, 10),
        "space name.txt": (2048, 4), "sub/build/nested.o": (30, 2),
    }  # fmt: skip
    for rel, (size, days) in files.items():
        write(src / rel, (rel.encode() * (size // len(rel) + 1))[:size],
              mtime=now - days * DAY)  # fmt: skip
    return src


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _compare(tmp_path: Path, src: Path, orbit_args: list[str], peer_args: list[str],
             peer: str = "rsync", start: Path | None = None) -> dict[str, bytes]:  # fmt: skip
    """Run the peer and orbit-fast from the same destination state; assert equal results."""
    a, b = tmp_path / "by-peer", tmp_path / "by-orbit"
    for d in (a, b):
        if d.exists():
            shutil.rmtree(d)
        if start is not None:
            shutil.copytree(start, d, symlinks=True)
        else:
            d.mkdir()
    if peer == "rsync":
        cmd = [_need("rsync"), "-a", *peer_args, f"{src}/", f"{a}/"]
    else:
        cmd = [_need("rclone"), "copy", "--config", "/dev/null", *peer_args, str(src), str(a)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    run_cli("sync", str(src), str(b), *orbit_args)
    got, want = _files(b), _files(a)
    assert sorted(got) == sorted(want)
    assert got == want
    return got


def test_exclude_from_as_rsync(tmp_path: Path, tree: Path):
    rules = tmp_path / "excludes"
    rules.write_text("# build output\n*.tmp\n/build/\ncache/\n\n; logs\n*.log\n")
    got = _compare(tmp_path, tree, ["--exclude-from", str(rules)],
                   ["--exclude-from", str(rules)])  # fmt: skip
    assert "sub/build/nested.o" in got and "build/keep.txt" not in got


def test_include_from_then_exclude_all_as_rsync(tmp_path: Path, tree: Path):
    rules = tmp_path / "includes"
    rules.write_text("*/\n*.txt\n")
    got = _compare(tmp_path, tree, ["--include-from", str(rules), "--exclude", "*"],
                   ["--include-from", str(rules), "--exclude", "*"])  # fmt: skip
    assert got and all(k.endswith(".txt") for k in got)


def test_filter_from_as_rsync(tmp_path: Path, tree: Path):
    rules = tmp_path / "filters"
    rules.write_text("- /logs/2026/\n+ *.log\n- /deep/\n- *.bin\n")
    _compare(tmp_path, tree, ["--filter-from", str(rules)], ["--filter", f"merge {rules}"])


def test_files_from_and_from0_as_rsync(tmp_path: Path, tree: Path):
    listed = ["a.txt", "docs/cache/y.log", "deep/er/still/file.txt", "space name.txt"]
    lst = tmp_path / "list"
    lst.write_text("\n".join(listed) + "\n")
    got = _compare(tmp_path, tree, ["--files-from", str(lst)], ["--files-from", str(lst)])
    assert sorted(got) == sorted(listed)
    lst0 = tmp_path / "list0"
    lst0.write_bytes(b"\0".join(x.encode() for x in listed) + b"\0")
    _compare(tmp_path, tree, ["--files-from", str(lst0), "--from0"],
             ["--files-from", str(lst0), "--from0"])  # fmt: skip


@pytest.mark.parametrize("args", [["--max-size", "1K"], ["--min-size", "1500"],
                                  ["--min-size", "1k", "--max-size", "3000"]])  # fmt: skip
def test_sizes_as_rsync(tmp_path: Path, tree: Path, args: list[str]):
    _compare(tmp_path, tree, args, args)


@pytest.mark.parametrize("args", [["--max-age", "7d"], ["--min-age", "3d"],
                                  ["--min-age", "2d", "--max-age", "12d"]])  # fmt: skip
def test_ages_as_rclone(tmp_path: Path, tree: Path, args: list[str]):
    _compare(tmp_path, tree, args, args, peer="rclone")


def _changed_destination(tmp_path: Path, src: Path) -> Path:
    """A destination copied earlier, then changed: some files newer there, some of other
    sizes, some of the same size but other content and time."""
    start = tmp_path / "start"
    shutil.copytree(src, start)
    now = time.time()
    write(start / "a.txt", b"newer on the destination", mtime=now + 3600)  # other size, newer
    write(start / "old.txt", b"x" * 200, mtime=now - 400 * DAY)  # same size, older
    write(start / "b.log", b"short", mtime=now - 500 * DAY)  # other size, older
    write(start / "new.txt", b"y" * 5000, mtime=now + 7200)  # same size, newer
    return start


@pytest.mark.parametrize("flag", ["--size-only", "--ignore-existing", "--update"])
def test_what_counts_as_changed_as_rsync(tmp_path: Path, tree: Path, flag: str):
    start = _changed_destination(tmp_path, tree)
    (start / "docs" / "readme.txt").unlink()  # missing there: copied whatever the flag
    got = _compare(tmp_path, tree, [flag], [flag], start=start)
    assert got["docs/readme.txt"] == (tree / "docs" / "readme.txt").read_bytes()


def test_delete_excluded_as_rsync(tmp_path: Path, tree: Path):
    start = tmp_path / "start"
    shutil.copytree(tree, start)
    write(start / "stale.txt", b"gone from the source")
    write(start / "extra.tmp", b"excluded and only here")
    args = ["--exclude", "*.tmp", "--exclude", "/logs/"]
    got = _compare(tmp_path, tree, ["--mirror", "--delete-excluded", *args],
                   ["--delete", "--delete-excluded", *args], start=start)  # fmt: skip
    assert not any(k.endswith(".tmp") or k.startswith("logs/") for k in got)
    # Without --delete-excluded, what the rules leave out stays (as rsync --delete does).
    got = _compare(tmp_path, tree, ["--mirror", *args], ["--delete", *args], start=start)
    assert "extra.tmp" in got and "logs/app.log" in got and "stale.txt" not in got


def test_bad_rule_files_are_named(tmp_path: Path, tree: Path):
    proc = run_cli("sync", str(tree), str(tmp_path / "d"), "--exclude-from",
                   str(tmp_path / "missing"), check=2)  # fmt: skip
    assert "missing" in proc.stderr and "readable" in proc.stderr
    bad = tmp_path / "bad"
    bad.write_text("merge other.rules\n")
    proc = run_cli("sync", str(tree), str(tmp_path / "d"), "--filter-from", str(bad), check=2)
    assert "not '+ PATTERN'" in proc.stderr
    lst = tmp_path / "l"
    lst.write_text("../etc/passwd\n")
    proc = run_cli("sync", str(tree), str(tmp_path / "d"), "--files-from", str(lst), check=2)
    assert "climbs out" in proc.stderr
    assert not os.path.exists(tmp_path / "d" / "etc")
