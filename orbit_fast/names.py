"""Names as a terminal may show them: file names come from trees and repositories other people
write, and a name holding ESC, CR or a bidi override would otherwise drive the terminal of
whoever lists it (`ls`, `diff`, warnings, verify's problems, error messages).

`shown` is the one place that turns a name (bytes, or str decoded with surrogateescape) into
printable text; everything that prints a name from outside calls it. JSON output needs no
help: the JSON encoder escapes control characters itself.
"""

from __future__ import annotations

import unicodedata

# Format (bidi overrides, zero-width joiners), line and paragraph separators, private use:
# printable in the sense of str.isprintable() for some, but they reorder or hide what follows.
_HIDING = frozenset(("Cf", "Zl", "Zp", "Co", "Cn"))


def _escape(ch: str) -> str:
    o = ord(ch)
    if 0xDC80 <= o <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{o - 0xDC00:02x}"
    if o < 0x20 or 0x7F <= o <= 0x9F:  # C0, DEL, C1
        return f"\\x{o:02x}"
    if unicodedata.category(ch) in _HIDING or 0xD800 <= o <= 0xDFFF:
        return f"\\u{o:04x}" if o <= 0xFFFF else f"\\U{o:08x}"
    return ch


def shown(name: str | bytes) -> str:
    """`name` with every control character (C0, DEL, C1), every byte that is not UTF-8 and
    every character that reorders or hides text written as an escape (\\xNN, \\uNNNN): safe
    to print to a terminal, one line."""
    text = name.decode("utf-8", "surrogateescape") if isinstance(name, bytes) else name
    if text.isprintable() and text.isascii():
        return text  # the common case: nothing to look at character by character
    return "".join(ch if ch.isascii() and ch.isprintable() else _escape(ch) for ch in text)
