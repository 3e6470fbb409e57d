"""The value forms of rsync and rclone (units.py) and the mirror guards' verdicts (guards.py)."""

from __future__ import annotations

import time

import pytest

from orbit_fast.coordinator.sync import guards
from orbit_fast.errors import UsageError
from orbit_fast.units import (
    Rate,
    parse_age,
    parse_bwlimit,
    parse_duration,
    parse_max_delete,
    parse_size,
)


@pytest.mark.parametrize(("text", "want"), [
    ("512", 512), ("1K", 1024), ("1k", 1024), ("1.5M", 1536 * 1024), ("10MiB", 10 << 20),
    ("10MB", 10_000_000), ("2G", 2 << 30), ("100b", 100), ("1KB", 1000),
])  # fmt: skip
def test_sizes(text: str, want: int):
    assert parse_size(text, "max_size") == want


@pytest.mark.parametrize("text", ["", "ten", "1X", "1Mbb", "-1", "1 M B"])
def test_bad_sizes_name_the_option(text: str):
    with pytest.raises(UsageError, match="max_size") as exc:
        parse_size(text, "max_size")
    assert exc.value.field == "max_size"


@pytest.mark.parametrize(("text", "want"), [
    ("90", 90), ("30s", 30), ("5m", 300), ("1h30m", 5400), ("2d", 172800), ("1w", 604800),
    ("1M", 30 * 86400), ("1y", 365 * 86400), ("500ms", 0.5),
])  # fmt: skip
def test_durations(text: str, want: float):
    assert parse_duration(text, "stats") == pytest.approx(want)


def test_ages_are_back_from_now_or_dates():
    now = 1_800_000_000.0
    assert parse_age("1d", "max_age", now) == now - 86400
    assert parse_age("2026-01-02", "max_age") == time.mktime((2026, 1, 2, 0, 0, 0, 0, 0, -1))
    with pytest.raises(UsageError):
        parse_age("yesterday", "max_age")


def test_max_delete_forms():
    assert parse_max_delete("") == (None, None) == parse_max_delete("off")
    assert parse_max_delete("0").exceeded(1, 100)
    assert not parse_max_delete("10").exceeded(10, 100)
    assert parse_max_delete("10").exceeded(11, 1000)
    pct = parse_max_delete("50%")
    assert not pct.exceeded(5, 10) and pct.exceeded(6, 10)
    for bad in ("lots", "150%", "-5", "1.5"):
        with pytest.raises(UsageError):
            parse_max_delete(bad)


def test_bwlimit_forms_and_timetable():
    assert parse_bwlimit("10M").at() == Rate(10 << 20, 10 << 20)
    assert parse_bwlimit("10M:2M").at() == Rate(10 << 20, 2 << 20)
    assert parse_bwlimit("512").at() == Rate(512 << 10, 512 << 10)  # bare: KiB/s
    assert not parse_bwlimit("off") and not parse_bwlimit("")
    table = parse_bwlimit("08:00,512k 19:00,off")
    monday_9 = time.mktime((2026, 12, 7, 9, 0, 0, 0, 0, -1))  # a Monday
    assert table.at(monday_9) == Rate(512 << 10, 512 << 10)
    assert table.at(monday_9 + 11 * 3600) == Rate(0, 0)  # 20:00
    assert table.at(monday_9 - 3 * 3600) == Rate(0, 0)  # 06:00: the evening's "off" holds
    assert table.next_change(monday_9) == 10 * 3600
    week = parse_bwlimit("Mon-08:00,1M Sat-00:00:30,off")
    assert week.at(monday_9 + 2 * 86400) == Rate(1 << 20, 1 << 20)  # Wednesday
    assert week.at(monday_9 + 5 * 86400) == Rate(0, 0)  # Saturday
    for bad in ("08:00,", "10M:", "25:00,1M", "Xyz-08:00,1M", "08:00,fast"):
        with pytest.raises(UsageError):
            parse_bwlimit(bad)


def test_guards():
    mounted = {"mount": "/mnt/smb_source", "fstype": "cifs", "device": "//srv/share", "dev": 50}
    remounted = dict(mounted, dev=51)  # a network fs gets a new device number at each mount
    bare = {"mount": "/", "fstype": "ext4", "device": "/dev/vda", "dev": 64768}
    none = parse_max_delete("")
    kw = dict(source="/mnt/smb_source", destination_entries=100, limit=none)
    assert guards.judge(deletions=0, source_files=0, then=mounted, now=bare, force=False,
                        **kw) is None  # fmt: skip
    why = guards.judge(deletions=5, source_files=3, then=mounted, now=bare, force=False, **kw)
    assert why and "unmounted" in why and "/ (ext4 /dev/vda)" in why
    assert guards.judge(deletions=5, source_files=3, then=mounted, now=remounted, force=False,
                        **kw) is None  # fmt: skip
    assert guards.judge(deletions=5, source_files=3, then=mounted, now=bare, force=True,
                        **kw) is None  # fmt: skip
    assert "has no files" in guards.judge(deletions=5, source_files=0, then=None, now=bare,
                                          force=False, **kw)  # fmt: skip
    kw["limit"] = parse_max_delete("4%")
    assert "--max-delete 4%" in guards.judge(deletions=5, source_files=9, then=None, now=bare,
                                             force=True, **kw)  # fmt: skip
