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


def _mapped_kib(path: str) -> int:
    """Resident KiB of this process's mappings of `path` (from /proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and len(head) >= 5 and ":" in head[3]:  # a mapping's first line
                inside = len(head) >= 6 and head[5] == path
            elif inside and head[0] == "Rss:":
                total += int(head[1])
    return total


def test_lookups_in_an_unchanged_table_leave_it_out_of_memory(tmp_path: Path, rng) -> None:
    # A no-change backup of 1M files looks up 10,101 trees; mapped, each lookup brought in up
    # to 2 MiB of the table (fault-around, large folios) and all 74 MiB of it stayed (#16).
    path = str(tmp_path / "u.db")
    packs = [rows(rng, 20_000) for _ in range(15)]
    with Universe.open(path) as u:
        for r in packs:
            u.add_pack("repo", rng.randbytes(32), r)
        u.checkpoint()
    with Universe.open(path) as u:
        table_kib = len(u._table) // 1024
        ids = [x.tobytes() for r in packs for x in r["id"][::100]]  # 3,000 of them
        for i in ids:
            assert u.locate("repo", [i])[0] is not None
        assert u.locate("repo", [rng.randbytes(32)]) == [None]
        assert table_kib > 12_000
        assert _mapped_kib(path) < table_kib // 8, (_mapped_kib(path), table_kib)
        # The first change makes the mapping the table again, and lookups follow it there.
        extra = rows(rng, 10)
        u.add_pack("repo", rng.randbytes(32), extra)
        assert u.locate("repo", [extra["id"][3].tobytes(), ids[7]])[1] is not None


_GROW = """
import os, random, sys
import numpy as np
from orbit_fast.index.universe import RECORD, Universe
def status(key):  # VmHWM, not ru_maxrss: that one starts at the forking parent's peak
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key))
rng = random.Random(5)
u = Universe.open(sys.argv[1])
base = status("VmRSS:")
for _ in range(40):
    r = np.zeros(15_000, RECORD)
    r["id"] = np.frombuffer(rng.randbytes(32 * len(r)), "V32")
    r["stored"] = 1
    u.add_pack("repo", rng.randbytes(32), r)
peak = status("VmHWM:")
print(peak - base, len(u._table) // 1024, u.count)
u.close(checkpoint=False)
"""


def test_growing_never_holds_the_old_and_new_tables_together(tmp_path: Path) -> None:
    # Grown by 4/3 at 0.8 load, the old table is 3/4 of the new one: side by side they were
    # 1.75x the table at the moment of growing (1M files: 74 + 56 MiB).
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _GROW, str(tmp_path / "u.db")],
                         capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    grown_kib, table_kib, count = map(int, out)
    assert count == 600_000
    assert grown_kib < 1.3 * table_kib, (grown_kib, table_kib)


def test_changes_after_a_checkpoint_match_a_model_through_overlay_merges_and_reopens(
    tmp_path: Path, rng, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Packs added, chunks moved, packs dropped, checkpoints and reopens in a random order:
    what the universe answers is what a dict says, whether the changes sit in the overlay
    (a small overlay here, so it fills and merges often) or in the table."""
    from orbit_fast.index import universe as universe_mod

    monkeypatch.setattr(universe_mod, "_OVERLAY_SLOTS", 1024)
    path = str(tmp_path / "u.db")
    model: dict[bytes, bytes] = {}  # id -> pack name
    packs: dict[bytes, list[bytes]] = {}  # pack name -> ids
    u = Universe.open(path)
    try:
        for step in range(120):
            op = rng.random()
            if op < 0.55 or not packs:
                n = rng.choice([1, 5, 40, 300, 900])
                r = rows(rng, n)
                known = list(model)
                for i in range(min(n // 4, len(known))):  # some chunks move to this pack
                    r["id"][i] = np.frombuffer(rng.choice(known), "V32")[0]
                r = r[np.unique(r["id"], return_index=True)[1]]
                name = rng.randbytes(32)
                u.add_pack("r", name, r)
                ids = [x.tobytes() for x in r["id"]]
                packs[name] = ids
                model.update(dict.fromkeys(ids, name))
            elif op < 0.7:
                name = rng.choice(sorted(packs))
                u.drop_packs("r", [name])
                del packs[name]
                model = {k: v for k, v in model.items() if v != name}
            elif op < 0.8:
                u.checkpoint()
            else:
                u.close(checkpoint=rng.random() < 0.5)
                u = Universe.open(path)
            assert u.count == len(model), step
            probe = rng.sample(sorted(model), min(50, len(model))) + [rng.randbytes(32)]
            got = [loc.pack if loc else None for loc in u.locate("r", probe)]
            assert got == [model.get(i) for i in probe], step
    finally:
        u.close()
