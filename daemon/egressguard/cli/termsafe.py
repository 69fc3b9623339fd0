"""Text from a guarded process, made safe to print on an approver's terminal.

What `egressctl` shows about a held flow comes largely from the process being held: its
command line (argv[0] included, which a process chooses freely), its executable's path, the
host name it sent. A hostile agent can put escape sequences there that clear the screen,
move the cursor or rewrite earlier lines, and so show the approver a different hold than
the one they approve ("who: alice, data: none"), or newlines that forge extra lines. So
every line `egressctl` prints in text mode goes through `printable()`: control characters,
Unicode format characters (bidi overrides, zero-width characters) and line separators are
shown as visible escapes. JSON output needs nothing: `json.dumps` escapes them already.
"""

from __future__ import annotations

import unicodedata

_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_DIGITS = {"x": 2, "u": 4, "U": 8}


def _escape(ch: str) -> str:
    """Python's own escape forms: \\n, \\x1b, \\u202e, \\U000e0001."""
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    form = "x" if code < 0x100 else "u" if code < 0x10000 else "U"
    return f"\\{form}{code:0{_DIGITS[form]}x}"


def printable(text: str) -> str:
    """`text` with every character that could act on a terminal replaced by an escape."""
    if text.isprintable():            # fast path: the common case has nothing to escape
        return text
    return "".join(_escape(ch) if ch != " " and unicodedata.category(ch) in _UNSAFE_CATEGORIES
                   else ch for ch in text)
