"""names.shown: what a name from someone else's tree or repository looks like on a terminal."""

from __future__ import annotations

import os

import pytest

from orbit_fast.names import shown


@pytest.mark.parametrize(
    ("name", "text"),
    [
        (b"plain name.txt", "plain name.txt"),
        ("caf\u00e9/\u65e5\u672c", "caf\u00e9/\u65e5\u672c"),  # printable Unicode stays
        (b"a\x1b[2Jb", "a\\x1b[2Jb"),  # ESC (C0)
        (b"\x00\x07\t\n\r", "\\x00\\x07\\x09\\x0a\\x0d"),
        (b"del\x7f", "del\\x7f"),
        ("c1\u009b31m", "c1\\x9b31m"),  # CSI as one C1 character
        (b"raw\x9b\xff", "raw\\x9b\\xff"),  # bytes that are not UTF-8
        (os.fsdecode(b"fs\xfe"), "fs\\xfe"),  # ... as os.fsdecode gives them
        ("bidi\u202egnp.exe", "bidi\\u202egnp.exe"),  # right-to-left override
        ("zero\u200bwidth", "zero\\u200bwidth"),
        ("line\u2028sep", "line\\u2028sep"),
    ],
)  # fmt: skip
def test_shown(name: str | bytes, text: str) -> None:
    assert shown(name) == text


def test_shown_output_is_printable_on_one_line() -> None:
    every = bytes(range(256))
    out = shown(every)
    assert out.isprintable() and out.isascii()
