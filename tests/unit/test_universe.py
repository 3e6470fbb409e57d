"""The universe index: journal, checkpoints, growth, dropping packs, damage and locking."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from orbit_fast.errors import DatabaseBusy, DatabaseError
from orbit_fast.index.universe import RECORD, Universe


def rows(rng, n: int) -> np.ndarray:
    r = np.zeros(n, RECORD)
    r["id"] = np.frombuffer(rng.randbytes(32 * n), "V32")
    r["offset"] = np.arange(n) * 100
    r["stored"] = 90
    r["raw"] = 100
    return r


def test_add_locate_reopen_and_checkpoint(tmp_path: Path, rng) -> None:
    path = str(tmp_path / "u.db")
    packs = {rng.randbytes(32): rows(rng, 500) for _ in range(300)}  # grows past 65536 slots
    with Universe.open(path) as u:
        for name, r in packs.items():
            u.add_pack("repo-a", name, r)
        assert u.count == 150_000
    for _ in range(2):  # from the journal, then (after a checkpoint) from the checkpoint
        with Universe.open(path) as u:
            assert u.count == 150_000
            for name, r in list(packs.items())[::37]:
                ids = [x.tobytes() for x in r["id"][:5]]
                locs = u.locate("repo-a", ids)
                assert [loc.pack for loc in locs] == [name] * 5
                assert [loc.offset for loc in locs] == [0, 100, 200, 300, 400]
            assert u.locate("repo-b", ids) == [None] * 5  # another repository's view
            assert u.locate("repo-a", [rng.randbytes(32)]) == [None]
            u.checkpoint()
    assert os.path.getsize(path + "-journal") == 16


def test_torn_journal_tail_is_dropped(tmp_path: Path, rng) -> None:
    path = str(tmp_path / "u.db")
    a, b = rng.randbytes(32), rng.randbytes(32)
    ra, rb = rows(rng, 10), rows(rng, 10)
    with Universe.open(path) as u:
        u.add_pack("r", a, ra)
        u.add_pack("r", b, rb)
    size = os.path.getsize(path + "-journal")
    os.truncate(path + "-journal", size - 7)  # a crash in the middle of the last batch
    with Universe.open(path) as u:
        assert set(u.packs_of("r")) == {a}
        assert u.locate("r", [rb["id"][0].tobytes()]) == [None]
        u.add_pack("r", b, rb)  # the reconcile adds it again, after the good prefix
    with Universe.open(path) as u:
        assert set(u.packs_of("r")) == {a, b}


def test_drop_packs_removes_their_entries_only(tmp_path: Path, rng) -> None:
    path = str(tmp_path / "u.db")
    names = [rng.randbytes(32) for _ in range(4)]
    data = [rows(rng, 1000) for _ in names]
    with Universe.open(path) as u:
        for n, r in zip(names, data, strict=True):
            u.add_pack("r", n, r)
        u.drop_packs("r", names[1:3])
        assert u.count == 2000
    with Universe.open(path) as u:
        assert u.count == 2000
        assert set(u.packs_of("r")) == {names[0], names[3]}
        assert u.locate("r", [data[1]["id"][0].tobytes()]) == [None]
        assert u.locate("r", [data[3]["id"][9].tobytes()])[0].pack == names[3]


def test_moved_chunk_keeps_its_new_home_when_the_old_pack_goes(tmp_path: Path, rng) -> None:
    """What prune relies on: re-adding an id elsewhere, then dropping its old pack."""
    r = rows(rng, 50)
    old, new = rng.randbytes(32), rng.randbytes(32)
    with Universe.open(str(tmp_path / "u.db")) as u:
        u.add_pack("r", old, r)
        u.add_pack("r", new, r[:10])
        u.drop_packs("r", [old])
        locs = u.locate("r", [x.tobytes() for x in r["id"]])
        assert [loc.pack if loc else None for loc in locs] == [new] * 10 + [None] * 40


def test_second_opener_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "u.db")
    with Universe.open(path):
        with pytest.raises(DatabaseBusy, match="in use by another"):
            Universe.open(path)


def test_damaged_and_newer_checkpoints_are_named(tmp_path: Path, rng) -> None:
    path = tmp_path / "u.db"
    with Universe.open(str(path)) as u:
        u.add_pack("r", rng.randbytes(32), rows(rng, 5))
        u.checkpoint()
    data = bytearray(path.read_bytes())
    data[8] = 9  # the version field (the CRC no longer matches either)
    path.write_bytes(bytes(data))
    with pytest.raises(DatabaseError, match="index rebuild"):
        Universe.open(str(path))
