"""The universe hash-table kernels against their pure-Python twins."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orbit_fast._native import reference, table
from orbit_fast.index.universe import RECORD

KEYS = st.lists(st.binary(min_size=32, max_size=32), max_size=60, unique=True)


def records(keys: list[bytes], packs: list[int]) -> bytes:
    r = np.zeros(len(keys), RECORD)
    r["id"] = np.frombuffer(b"".join(keys), "V32") if keys else r["id"]
    r["pack"] = packs
    r["offset"] = np.arange(len(keys)) * 7
    r["stored"] = 5
    r["raw"] = np.arange(len(keys))
    return r.tobytes()


@settings(max_examples=60, deadline=None)
@given(KEYS, st.integers(61, 90), st.lists(st.binary(min_size=32, max_size=32), max_size=20),
       st.data())  # fmt: skip
def test_insert_lookup_rehash_match_reference(keys, cap, misses, data) -> None:
    packs = [data.draw(st.integers(1, 9)) for _ in keys]
    recs = records(keys, packs)
    tables = []
    for impl in (table, reference):
        t = bytearray(cap * 48)
        assert impl.table_insert(t, recs) == len(keys)
        assert impl.table_insert(t, recs) == 0  # the same keys again: overwritten, not added
        tables.append(t)
    assert tables[0] == tables[1]  # same slots: the layout is the spec, not just the answers
    probe = b"".join(keys + misses)
    outs = []
    for impl, t in zip((table, reference), tables, strict=True):
        out = np.zeros(4 * (len(keys) + len(misses)), np.uint32)
        hits = impl.table_lookup(t, probe, out)
        assert hits == len(keys) + sum(1 for k in misses if k in keys)
        outs.append(out)
    assert (outs[0] == outs[1]).all()
    rows = outs[0].reshape(-1, 4)
    assert rows[: len(keys), 0].tolist() == packs
    dead = np.zeros(2, np.uint8)
    dead[0] = 0b1010  # packs 1 and 3
    new = [bytearray(cap * 48), bytearray(cap * 48)]
    kept = [impl.table_rehash(t, n, dead) for impl, t, n in zip((table, reference), tables, new,
                                                                strict=True)]  # fmt: skip
    assert kept[0] == kept[1] == sum(1 for p in packs if p not in (1, 3))
    assert new[0] == new[1]


def test_full_table_is_an_error_not_a_hang() -> None:
    keys = [bytes([i]) * 32 for i in range(1, 5)]
    for impl in (table, reference):
        t = bytearray(3 * 48)
        with pytest.raises(ValueError, match="full"):
            impl.table_insert(t, records(keys, [1] * 4))


def test_bad_shapes_are_errors() -> None:
    with pytest.raises(ValueError):
        table.table_lookup(bytearray(48), b"x" * 31, np.zeros(4, np.uint32))
    with pytest.raises(ValueError):
        table.table_insert(bytearray(48), b"x" * 47)
    assert table.table_lookup(bytearray(0), b"k" * 32, np.zeros(4, np.uint32)) == 0


@settings(max_examples=40, deadline=None)
@given(KEYS, st.integers(61, 300), st.lists(st.binary(min_size=32, max_size=32), max_size=20),
       st.integers(0, 4096))  # fmt: skip
def test_lookup_from_a_file_matches_the_mapped_lookup(tmp_path_factory, keys, cap, misses,
                                                      at) -> None:  # fmt: skip
    # cap above 85 slots makes probes cross the kernel's pread windows and wrap at the end.
    t = bytearray(cap * 48)
    table.table_insert(t, records(keys, [1 + i % 9 for i in range(len(keys))]))
    path = tmp_path_factory.mktemp("t") / "table"
    path.write_bytes(b"\xff" * at + bytes(t) + b"\xee" * 100)
    probe = b"".join(keys + misses)
    want = np.zeros(4 * (len(keys) + len(misses)), np.uint32)
    table.table_lookup(t, probe, want)
    fd = os.open(path, os.O_RDONLY)
    try:
        for impl in (table, reference):
            out = np.zeros(len(want), np.uint32)
            assert impl.table_lookup_fd(fd, at, cap, probe, out) == table.table_lookup(
                t, probe, np.zeros(len(want), np.uint32))  # fmt: skip
            assert (out == want).all()
    finally:
        os.close(fd)


def test_lookup_from_a_short_file_is_an_error(tmp_path) -> None:
    path = tmp_path / "table"
    full = bytearray(100 * 48)
    keys = [bytes([i]) * 32 for i in range(1, 60)]
    table.table_insert(full, records(keys, [1] * len(keys)))
    path.write_bytes(bytes(full[: 50 * 48]))  # half the table: probes past it must not read 0s
    fd = os.open(path, os.O_RDONLY)
    try:
        for impl in (table, reference):
            with pytest.raises(OSError):
                impl.table_lookup_fd(fd, 0, 100, b"".join(keys), np.zeros(4 * 59, np.uint32))
    finally:
        os.close(fd)
