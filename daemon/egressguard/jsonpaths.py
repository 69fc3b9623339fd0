"""Which JSON field holds a byte range of a request body (`messages[3].content`), sans-IO.

The scanner reports detections as byte offsets in the decoded body; compliance wants to know
the field. `string_spans(body)` walks the JSON text once (bytes, no decoding of the whole
document) and yields every string value's path and byte span; a truncated or invalid document
yields the spans found before the problem. Depth and count are bounded (hostile input).
"""

from __future__ import annotations

import json
import re
from bisect import bisect_right
from typing import Callable

_WS = re.compile(rb"[ \t\r\n]*")
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_SCALAR = re.compile(rb"-?[0-9][0-9.eE+-]*|true|false|null")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_DEPTH = 64
MAX_SPANS = 100_000
MAX_KEY = 64                 # longer keys are cut in paths
Hidden = Callable[[int, int], bool]


class _Stop(Exception):
    pass


def string_spans(body: bytes, hidden: Hidden | None = None) -> list[tuple[int, int, str]]:
    """[(start, end, path)] for every string value, in document order. A key for which
    `hidden(start, end)` is true (a finding lies in it: keys can carry data too) appears as
    `<masked>`, so a path never repeats a secret."""
    out: list[tuple[int, int, str]] = []
    try:
        _value(body, _skip(body, 0), "", 0, out, hidden or (lambda s, e: False))
    except _Stop:
        pass
    return out


def field_at(spans: list[tuple[int, int, str]], start: int, end: int) -> str | None:
    """The path of the string value that contains [start, end) (or overlaps its start)."""
    i = bisect_right([s for s, _, _ in spans], start) - 1
    if i >= 0:
        s, e, path = spans[i]
        if start < e:
            return path
    return None


def _skip(b: bytes, pos: int) -> int:
    m = _WS.match(b, pos)
    return m.end() if m else pos


def _key(path: str, key: str) -> str:
    if len(key) > MAX_KEY:
        key = key[:MAX_KEY] + "..."
    seg = key if _IDENT.match(key) else json.dumps(key)
    return f"{path}.{seg}" if path else seg


def _value(b: bytes, pos: int, path: str, depth: int,
           out: list[tuple[int, int, str]], hidden: Hidden) -> int:
    if depth > MAX_DEPTH or len(out) > MAX_SPANS or pos >= len(b):
        raise _Stop
    c = b[pos:pos + 1]
    if c == b'"':
        m = _STRING.match(b, pos)
        if not m:
            raise _Stop
        out.append((pos + 1, m.end() - 1, path or "$"))
        return m.end()
    if c == b"{":
        pos = _skip(b, pos + 1)
        if b[pos:pos + 1] == b"}":
            return pos + 1
        while True:
            m = _STRING.match(b, pos)
            if not m:
                raise _Stop
            try:
                key = "<masked>" if hidden(pos + 1, m.end() - 1) else json.loads(m.group())
            except ValueError:
                raise _Stop from None
            pos = _skip(b, m.end())
            if b[pos:pos + 1] != b":":
                raise _Stop
            pos = _value(b, _skip(b, pos + 1), _key(path, key), depth + 1, out, hidden)
            pos = _skip(b, pos)
            c = b[pos:pos + 1]
            if c == b"}":
                return pos + 1
            if c != b",":
                raise _Stop
            pos = _skip(b, pos + 1)
    if c == b"[":
        pos = _skip(b, pos + 1)
        if b[pos:pos + 1] == b"]":
            return pos + 1
        i = 0
        while True:
            pos = _skip(b, _value(b, pos, f"{path}[{i}]", depth + 1, out, hidden))
            c = b[pos:pos + 1]
            if c == b"]":
                return pos + 1
            if c != b",":
                raise _Stop
            pos = _skip(b, pos + 1)
            i += 1
    m = _SCALAR.match(b, pos)
    if not m:
        raise _Stop
    return m.end()
