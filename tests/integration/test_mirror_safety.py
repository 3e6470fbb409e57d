"""Mirror safety (docs/sync.md, "Mirror safety"): an unmounted or emptied source and deletions
above --max-delete delete nothing, exit 22, and say why; --force-delete and --max-delete off
lift them for one run."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REQUIRE_SERVERS, json_events, run_cli, summary_of, write

WITHHELD = 22


def _tree(root: Path, n: int = 10) -> None:
    for i in range(n):
        write(root / f"f{i:02}", f"file {i}\n".encode())
    write(root / "sub" / "deep.txt", b"deep\n")


def _names(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def tmpfs_source(tmp_path: Path):
    """A tmpfs mounted on the source directory, as the guide's share is mounted there."""
    src = tmp_path / "mnt" / "smb_source"
    src.mkdir(parents=True)
    if os.geteuid() != 0:
        if REQUIRE_SERVERS:
            pytest.fail("mounting a tmpfs needs root")
        pytest.skip("mounting a tmpfs needs root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(src)], check=True)
    yield src
    subprocess.run(["umount", str(src)], check=False, capture_output=True)


def test_an_unmounted_source_deletes_nothing(tmpfs_source: Path, tmp_path: Path):
    dst = tmp_path / "replica"
    _tree(tmpfs_source)
    run_cli("sync", str(tmpfs_source), str(dst), "--mirror")
    before = _names(dst)
    assert len(before) == 12
    subprocess.run(["umount", str(tmpfs_source)], check=True)
    # What an admin finds on the bare mount point is copied; nothing is deleted.
    write(tmpfs_source / "README-not-mounted", b"the share is not mounted\n")
    proc = run_cli("sync", str(tmpfs_source), str(dst), "--mirror", "--json", check=WITHHELD)
    summary = summary_of(proc.stdout)
    assert summary["files_deleted"] == 0 and summary["deletes_withheld"] == 11
    assert summary["files_copied"] == 1
    (err,) = [e for e in json_events(proc.stdout) if e["event"] == "error"]
    assert err["msgid"] == "deletions_withheld" and err["exit_code"] == WITHHELD
    assert "tmpfs" in err["message"] and "unmounted" in err["message"]
    assert "--force-delete" in err["message"]
    assert _names(dst) == before | {"README-not-mounted"}
    # Again: still withheld (the failed run did not record the bare mount point as the source).
    run_cli("sync", str(tmpfs_source), str(dst), "--mirror", check=WITHHELD)
    assert _names(dst) == before | {"README-not-mounted"}
    # Mounted again: the mirror runs as before, and deletes what the share really lost.
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(tmpfs_source)], check=True)
    _tree(tmpfs_source, n=9)  # f09 went
    proc = run_cli("sync", str(tmpfs_source), str(dst), "--mirror", "--json")
    assert summary_of(proc.stdout)["files_deleted"] == 2  # f09 and the README
    assert _names(dst) == before - {"f09"}


def test_a_source_that_moved_on_purpose_is_taken_with_force_delete(tmpfs_source: Path,
                                                                    tmp_path: Path):
    dst = tmp_path / "replica"
    _tree(tmpfs_source)
    run_cli("sync", str(tmpfs_source), str(dst), "--mirror")
    subprocess.run(["umount", str(tmpfs_source)], check=True)
    write(tmpfs_source / "only", b"x")
    run_cli("sync", str(tmpfs_source), str(dst), "--mirror", check=WITHHELD)
    run_cli("sync", str(tmpfs_source), str(dst), "--mirror", "--force-delete")
    assert _names(dst) == {"only"}
    # The new filesystem is now the job's: a normal run deletes again.
    (tmpfs_source / "only").unlink()
    write(tmpfs_source / "other", b"y")
    run_cli("sync", str(tmpfs_source), str(dst), "--mirror")
    assert _names(dst) == {"other"}


def test_an_emptied_source_deletes_nothing(tmp_path: Path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src)
    run_cli("sync", str(src), str(dst), "--mirror")
    for p in sorted(src.rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    proc = run_cli("sync", str(src), str(dst), "--mirror", check=WITHHELD)
    assert "has no files" in proc.stderr and "--force-delete" in proc.stderr
    assert len(_names(dst)) == 12
    # A dry run says the same, and lists nothing as deleted.
    proc = run_cli("sync", str(src), str(dst), "--mirror", "--dry-run", check=WITHHELD)
    assert "delete" not in proc.stdout.replace("deleted", "")
    run_cli("sync", str(src), str(dst), "--mirror", "--force-delete")
    assert _names(dst) == set()


def test_max_delete_count_and_percent(tmp_path: Path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src)
    run_cli("sync", str(src), str(dst), "--mirror")
    for i in range(4):
        (src / f"f{i:02}").unlink()
    (src / "sub" / "deep.txt").unlink()
    (src / "sub").rmdir()
    # 4 files + sub + sub/deep.txt = 6 entries of 12.
    proc = run_cli("sync", str(src), str(dst), "--mirror", "--max-delete", "5", "--json",
                   check=WITHHELD)  # fmt: skip
    assert summary_of(proc.stdout)["deletes_withheld"] == 6
    assert "more than --max-delete 5" in [e for e in json_events(proc.stdout)
                                          if e["event"] == "error"][0]["message"]
    assert len(_names(dst)) == 12
    proc = run_cli("sync", str(src), str(dst), "--mirror", "--max-delete", "40%", check=WITHHELD)
    assert "50% of its 12" in proc.stderr
    assert len(_names(dst)) == 12
    proc = run_cli("sync", str(src), str(dst), "--mirror", "--max-delete", "50%", "--json")
    assert summary_of(proc.stdout)["files_deleted"] == 5  # the top entries: sub goes whole
    assert _names(dst) == _names(src)


def test_guards_need_mirror_and_parse(tmp_path: Path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src)
    proc = run_cli("sync", str(src), str(dst), "--force-delete", check=2)
    assert "needs --mirror" in proc.stderr
    proc = run_cli("sync", str(src), str(dst), "--mirror", "--max-delete", "lots", check=2)
    assert "--max-delete" in proc.stderr and "50%" in proc.stderr
