"""Facts about a detector's pattern that the idle flush needs (see ScanStream.flush_idle).

- `charset`: every byte a match can contain. A match that reaches the end of the data seen so
  far lies inside the longest suffix made only of such bytes, so the (slower) partial-match
  search runs on that suffix only (usually a few bytes), found with `bytes.rstrip`.
- `anchor_length`: how many leading positions of every match are a literal or a small class
  ("AKIA", "gh[pousr]_", "sk-ant-"). A partial match that already holds that prefix is
  distinctive enough to keep holding when the writer pauses; one that does not ("s", "gh") is
  released, so ordinary text never stalls.

Both read the pattern with Python's own regex parser (`re._parser`), the same one pack.py uses
for widths; the pack already refuses constructs (anchors, lookaround) these do not handle.
"""

from __future__ import annotations


from re import _constants as C  # type: ignore[attr-defined]
from re import _parser as P     # type: ignore[attr-defined]

ALL = frozenset(range(256))
_CATEGORIES = {
    C.CATEGORY_DIGIT: frozenset(b"0123456789"),
    C.CATEGORY_SPACE: frozenset(b" \t\n\r\f\v"),
    C.CATEGORY_WORD: frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"),
}
_CATEGORIES[C.CATEGORY_NOT_DIGIT] = ALL - _CATEGORIES[C.CATEGORY_DIGIT]
_CATEGORIES[C.CATEGORY_NOT_SPACE] = ALL - _CATEGORIES[C.CATEGORY_SPACE]
_CATEGORIES[C.CATEGORY_NOT_WORD] = ALL - _CATEGORIES[C.CATEGORY_WORD]
SMALL_CLASS = 8          # a class of at most this many bytes counts as part of a literal prefix


def _class_bytes(items: list) -> frozenset[int]:
    out: set[int] = set()
    negate = False
    for op, av in items:
        if op is C.NEGATE:
            negate = True
        elif op is C.LITERAL:
            out.add(av)
        elif op is C.RANGE:
            out.update(range(av[0], av[1] + 1))
        elif op is C.CATEGORY:
            out.update(_CATEGORIES.get(av, ALL))
        else:
            out.update(ALL)
    return frozenset(ALL - out) if negate else frozenset(out)


def _walk(seq: P.SubPattern | list) -> set[int]:
    out: set[int] = set()
    for op, av in seq:
        if op is C.LITERAL:
            out.add(av)
        elif op is C.NOT_LITERAL:
            out.update(ALL - {av})
        elif op is C.ANY:
            out.update(ALL)
        elif op is C.IN:
            out.update(_class_bytes(av))
        elif op is C.BRANCH:
            for branch in av[1]:
                out.update(_walk(branch))
        elif op is C.SUBPATTERN:
            out.update(_walk(av[-1]))
        elif op in (C.MAX_REPEAT, C.MIN_REPEAT, C.POSSESSIVE_REPEAT):
            out.update(_walk(av[2]))
        elif op is C.ATOMIC_GROUP:
            out.update(_walk(av))
        else:
            out.update(ALL)          # unknown construct: assume anything (never unsafe)
    return out


def charset(pattern: str, caseless: bool = False) -> bytes:
    """Every byte that can occur in a match of `pattern`, as a bytes object for rstrip()."""
    found = _walk(P.parse(pattern))
    if caseless:
        found |= {ord(chr(b).swapcase()) for b in list(found) if chr(b).isalpha() and b < 128}
    return bytes(sorted(found))


def _prefix(seq: P.SubPattern | list) -> tuple[int, bool]:
    """(length of the literal-ish prefix, whether the whole sequence was literal-ish)."""
    n = 0
    for op, av in seq:
        if op is C.LITERAL:
            n += 1
        elif op is C.IN and len(_class_bytes(av)) <= SMALL_CLASS:
            n += 1
        elif op is C.SUBPATTERN:
            k, whole = _prefix(av[-1])
            n += k
            if not whole:
                return n, False
        elif op is C.BRANCH:
            parts = [_prefix(b) for b in av[1]]
            n += min(k for k, _ in parts)
            if not all(w for _, w in parts) or len({k for k, _ in parts}) != 1:
                return n, False
        else:
            return n, False
    return n, True


def anchor_length(pattern: str) -> int:
    """Length of the distinctive prefix every match of `pattern` starts with (0 if none)."""
    return _prefix(P.parse(pattern))[0]


