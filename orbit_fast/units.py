"""The value forms rsync and rclone users type, parsed once: sizes, rates, durations, ages,
deletion limits and bandwidth timetables.

Where rsync and rclone disagree, the choice is written here and in docs/sync.md: a bare size is
bytes (rsync's --max-size; rclone reads KiB), a bare rate is KiB/s (both), and every suffix is
binary (K = 1024) unless it is written KB/MB/... (1000, rsync's way) or KiB/MiB/... (1024).
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import NamedTuple

from orbit_fast.errors import UsageError

_POW = {"": 0, "b": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([bkmgtp]?)(i?b?)\s*$", re.IGNORECASE)


def parse_size(text: str, what: str, bare_unit: int = 1) -> int:
    """Bytes of "100", "1.5M", "10MiB", "10MB" (1000-based), "4k"; `bare_unit` multiplies a
    number given without a suffix (1: bytes; 1024 for rates in KiB/s)."""
    m = _SIZE.match(str(text))
    if not m:
        raise UsageError(f"{what} {text!r}: give a size such as 512, 100K, 1.5M, 10G (binary: "
                         "K = 1024) or 10MB (decimal)", what)  # fmt: skip
    number, unit, tail = m.group(1), m.group(2).lower(), m.group(3).lower()
    if unit in ("", "b"):
        if tail:  # "bb", "ib"
            raise UsageError(f"{what} {text!r}: unknown unit", what)
        scale = bare_unit if unit == "" else 1
    else:
        base = 1000 if tail == "b" else 1024  # "MB" decimal, "M" and "MiB" binary
        scale = base ** _POW[unit]
    return int(float(number) * scale)


_DUR_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400,
              "M": 30 * 86400, "y": 365 * 86400}  # fmt: skip
_DUR = re.compile(r"(\d+(?:\.\d*)?)(ms|s|m|h|d|w|M|y)?")


def parse_duration(text: str, what: str) -> float:
    """Seconds of rclone's duration forms: "90" (seconds), "30s", "5m", "1h30m", "2d", "1w",
    "1M" (30 days), "1y" (365 days), "500ms"."""
    s = str(text).strip()
    total, pos = 0.0, 0
    while pos < len(s):
        m = _DUR.match(s, pos)
        if not m or m.end() == pos:
            break
        total += float(m.group(1)) * _DUR_UNITS[m.group(2) or "s"]
        pos = m.end()
    if not s or pos != len(s):
        raise UsageError(f"{what} {text!r}: give a duration such as 90s, 15m, 1h30m, 7d, 2w, "
                         "1M or 1y", what)  # fmt: skip
    return total


def parse_age(text: str, what: str, now: float | None = None) -> float:
    """The cut-off time (epoch seconds) of an age: a duration back from now, or an absolute
    date "2026-01-02" / "2026-01-02 15:04:05" (local time), as rclone's --max-age takes."""
    s = str(text).strip()
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"):
        try:
            return datetime.strptime(s, fmt).timestamp()
        except ValueError:
            continue
    return (time.time() if now is None else now) - parse_duration(s, what)


class MaxDelete(NamedTuple):
    """--max-delete: a count, or a percentage of the destination's entries; None: no limit."""

    limit: int | None = None
    percent: float | None = None

    def exceeded(self, deletions: int, destination_entries: int) -> bool:
        if self.limit is not None and deletions > self.limit:
            return True
        if self.percent is not None and destination_entries:
            return deletions * 100.0 > self.percent * destination_entries
        return False

    def __str__(self) -> str:
        if self.limit is not None:
            return str(self.limit)
        return "off" if self.percent is None else f"{self.percent:g}%"


def parse_max_delete(text: str, what: str = "max_delete") -> MaxDelete:
    """"100" (entries), "25%" (of the destination's entries), "" or "off" (no limit); "0"
    deletes nothing (as rsync's --max-delete=0)."""
    s = str(text).strip().lower()
    if s in ("", "off", "none", "-1"):
        return MaxDelete()
    try:
        if s.endswith("%"):
            pct = float(s[:-1])
            if 0 <= pct <= 100:
                return MaxDelete(percent=pct)
        elif int(s) >= 0:
            return MaxDelete(limit=int(s))
    except ValueError:
        pass
    raise UsageError(f"{what} {text!r}: give a number of entries (100), a percentage of the "
                     "destination (50%), or off", what)  # fmt: skip


# ---- bandwidth ----------------------------------------------------------------------------------

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WEEK_S = 7 * 86400


class Rate(NamedTuple):
    """Bytes per second up (written to the destination) and down (read from the source);
    0 = unlimited."""

    up: int = 0
    down: int = 0


class Bandwidth(NamedTuple):
    """A --bwlimit: one rate, or a weekly timetable of (second of the week, rate), sorted."""

    table: tuple[tuple[int, Rate], ...] = ()

    def __bool__(self) -> bool:
        return any(r.up or r.down for _, r in self.table)

    def at(self, when: float | None = None) -> Rate:
        """The rate in force at local time `when` (now by default)."""
        if not self.table:
            return Rate()
        if len(self.table) == 1:
            return self.table[0][1]
        t = time.localtime(time.time() if when is None else when)
        sec = t.tm_wday * 86400 + t.tm_hour * 3600 + t.tm_min * 60 + t.tm_sec
        current = self.table[-1][1]  # before the week's first entry: the last one still holds
        for start, rate in self.table:
            if start > sec:
                break
            current = rate
        return current

    def next_change(self, when: float | None = None) -> float:
        """Seconds from `when` until the timetable's next entry starts (inf for one rate)."""
        if len(self.table) < 2:
            return float("inf")
        t = time.localtime(time.time() if when is None else when)
        sec = t.tm_wday * 86400 + t.tm_hour * 3600 + t.tm_min * 60 + t.tm_sec
        for start, _ in self.table:
            if start > sec:
                return float(start - sec)
        return float(self.table[0][0] + WEEK_S - sec)


def _rate(text: str, what: str) -> int:
    if text.strip().lower() in ("off", "0"):
        return 0
    return parse_size(text, what, bare_unit=1024)


def parse_rate(text: str, what: str = "bwlimit") -> Rate:
    """"10M" (both ways), "10M:2M" (up:down), "off"; a bare number is KiB/s."""
    up, sep, down = text.partition(":")
    r_up = _rate(up, what)
    return Rate(r_up, _rate(down, what) if sep else r_up)


def parse_bwlimit(text: str, what: str = "bwlimit") -> Bandwidth:
    """rclone's --bwlimit forms: "10M", "10M:2M", "off", or a timetable of
    "[Day-]HH:MM[:SS],RATE" entries separated by spaces ("08:00,512k 19:00,off";
    "Mon-08:00,1M Sat-00:00,off"). Entries without a day hold on every day."""
    s = str(text).strip()
    if not s:
        return Bandwidth()
    if "," not in s:
        return Bandwidth(((0, parse_rate(s, what)),))
    table: dict[int, Rate] = {}
    for item in s.split():
        when, comma, rate_text = item.partition(",")
        day, dash, hm = when.rpartition("-")
        m = re.fullmatch(r"(\d{1,2}):(\d{2})(?::(\d{2}))?", hm)
        if not comma or not m or (dash and day.lower()[:3] not in _DAYS):
            raise UsageError(f"{what} entry {item!r}: use [Day-]HH:MM,RATE, for example "
                             "\"08:00,512k 19:00,off\" or \"Mon-08:00,10M\"", what)  # fmt: skip
        hh, mm, ss = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
        if hh > 23 or mm > 59 or ss > 59:
            raise UsageError(f"{what} entry {item!r}: no such time of day", what)
        rate = parse_rate(rate_text, what)
        days = [_DAYS.index(day.lower()[:3])] if dash else range(7)
        for d in days:
            table[d * 86400 + hh * 3600 + mm * 60 + ss] = rate
    return Bandwidth(tuple(sorted(table.items())))


def format_rate(bps: float) -> str:
    """A rate for messages: "20.0 MiB/s"."""
    for unit, scale in (("GiB/s", 1 << 30), ("MiB/s", 1 << 20), ("KiB/s", 1 << 10)):
        if bps >= scale:
            return f"{bps / scale:.1f} {unit}"
    return f"{bps:.0f} B/s"
