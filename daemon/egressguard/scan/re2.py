"""Go RE2 regular expressions (gitleaks rules) -> Python `re` syntax with the same meaning on bytes.

gitleaks writes its rules for Go's `regexp` package. Most of the syntax is shared with Python,
but not all of it, and a rule that compiles in both can still mean different things:

- `(?i)` in the middle of a pattern applies from there to the end of the enclosing group
  (across `|` too); Python 3.11 refuses global flags anywhere but at the start. They become
  scoped groups `(?i:...)`, closed at the enclosing `)` and around every `|`.
- `\\z` (end of text) is Python's `\\Z`; Go's `\\Z` does not exist.
- `(?P<name>...)` and `(?<name>...)` become plain capturing groups (same numbering).
- `\\Q...\\E` quotes a literal; Python has no such thing, so it is escaped byte by byte.
- `\\s` is `[\\t\\n\\f\\r ]` in Go (no `\\v`), spelled out so both engines agree.
- POSIX classes `[[:alpha:]]` are expanded (Python reads `[[:alpha:]]` as a set of characters).
- Non-ASCII literals become their UTF-8 bytes; the scanner matches bytes.
- `\\x{...}` escapes become `\\xNN` when they are ASCII.

What cannot be translated raises `Untranslatable` with the reason: Unicode classes (`\\p{..}`),
non-ASCII bytes inside a character class (a UTF-8 character is several bytes, a class
matches one), `\\C`, the ungreedy flag `U`, octal escapes and anything the tokenizer does not
know. Anchors and word boundaries are kept as written; gitleaks.py decides which of them the
streaming scanner can express (at the very start or end of a pattern) and refuses the rest.
"""

from __future__ import annotations

import string


class Untranslatable(ValueError):
    """A Go regex construct with no faithful Python/Hyperscan byte-level equivalent."""


_GO_SPACE = b"\t\n\f\r "
_POSIX: dict[str, bytes] = {
    "alnum": (string.ascii_letters + string.digits).encode(),
    "alpha": string.ascii_letters.encode(),
    "ascii": bytes(range(128)),
    "blank": b" \t",
    "cntrl": bytes(range(32)) + b"\x7f",
    "digit": string.digits.encode(),
    "graph": bytes(range(33, 127)),
    "lower": string.ascii_lowercase.encode(),
    "print": bytes(range(32, 127)),
    "punct": string.punctuation.encode(),
    "space": b" \t\n\r\f\v",
    "upper": string.ascii_uppercase.encode(),
    "word": (string.ascii_letters + string.digits + "_").encode(),
    "xdigit": b"0123456789abcdefABCDEF",
}
_SAFE = frozenset((string.ascii_letters + string.digits).encode())


def byte_escape(b: int) -> str:
    """One byte as Python regex text: letters and digits as themselves, anything else \\xNN."""
    return chr(b) if b in _SAFE else f"\\x{b:02x}"


def class_text(members: set[int] | frozenset[int], negate: bool = False) -> str:
    """A character class for a set of bytes, as compact ranges."""
    items: list[str] = []
    ordered = sorted(members)
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        lo, hi = ordered[i], ordered[j]
        if hi - lo >= 2:
            items.append(f"{byte_escape(lo)}-{byte_escape(hi)}")
        else:
            items.extend(byte_escape(b) for b in range(lo, hi + 1))
        i = j + 1
    return "[" + ("^" if negate else "") + "".join(items) + "]"


class _Translator:
    def __init__(self, go: str):
        self.src = go
        self.i = 0
        self.out: list[str] = []
        # One entry per open group (the root first): the flag strings of the scoped groups
        # opened by `(?flags)` inside it, which must be closed at its `)` and around `|`.
        self.scoped: list[list[str]] = [[]]

    def run(self) -> str:
        while self.i < len(self.src):
            ch = self.src[self.i]
            if ch == "\\":
                self._escape()
            elif ch == "[":
                self._class()
            elif ch == "(":
                self._open()
            elif ch == ")":
                if len(self.scoped) == 1:
                    raise Untranslatable("unbalanced ')'")
                self.out.append(")" * len(self.scoped.pop()) + ")")
                self.i += 1
            elif ch == "|":
                flags = self.scoped[-1]
                self.out.append(")" * len(flags) + "|" + "".join(f"(?{f}:" for f in flags))
                self.i += 1
            elif ord(ch) > 127:
                self._literal_text(ch)
                self.i += 1
            else:
                self.out.append(ch)
                self.i += 1
        if len(self.scoped) != 1:
            raise Untranslatable("unbalanced '('")
        self.out.append(")" * len(self.scoped[0]))
        return "".join(self.out)

    # ------------------------------------------------------------------ pieces

    def _literal_text(self, text: str) -> None:
        encoded = text.encode("utf-8")
        body = "".join(byte_escape(b) for b in encoded)
        self.out.append(f"(?:{body})" if len(encoded) > 1 else body)

    def _escape(self) -> None:
        src, i = self.src, self.i
        if i + 1 >= len(src):
            raise Untranslatable("trailing backslash")
        c = src[i + 1]
        self.i = i + 2
        if c == "Q":
            end = src.find("\\E", self.i)
            literal = src[self.i:] if end < 0 else src[self.i:end]
            self.i = len(src) if end < 0 else end + 2
            if literal:
                self._literal_text_group(literal)
        elif c == "z":
            self.out.append("\\Z")
        elif c in "AbB":
            self.out.append("\\" + c)
        elif c == "s":
            self.out.append(class_text(set(_GO_SPACE)))
        elif c == "S":
            self.out.append(class_text(set(_GO_SPACE), negate=True))
        elif c in "dDwW":
            self.out.append("\\" + c)
        elif c in "pP":
            raise Untranslatable("Unicode character classes (\\p{...}) have no byte equivalent")
        elif c == "C":
            raise Untranslatable("\\C (any byte) is not supported")
        elif c == "x":
            self.out.append(byte_escape(self._hex()))
        elif c.isdigit():
            raise Untranslatable(f"octal escape or backreference \\{c}")
        elif c in "afnrtv":
            self.out.append("\\" + c)
        elif c.isalnum():
            raise Untranslatable(f"unknown escape \\{c}")
        else:
            self.out.append(byte_escape(ord(c)) if ord(c) < 128 else self._bad_non_ascii())

    def _literal_text_group(self, text: str) -> None:
        encoded = text.encode("utf-8")
        self.out.append("(?:" + "".join(byte_escape(b) for b in encoded) + ")")

    @staticmethod
    def _bad_non_ascii() -> str:
        raise Untranslatable("escaped non-ASCII character")

    def _hex(self) -> int:
        src = self.src
        if src[self.i:self.i + 1] == "{":
            end = src.find("}", self.i)
            if end < 0:
                raise Untranslatable("unterminated \\x{...}")
            value = int(src[self.i + 1:end] or "x", 16)
            self.i = end + 1
        else:
            value = int(src[self.i:self.i + 2], 16)
            self.i += 2
        if value > 127:
            raise Untranslatable(f"\\x{{{value:x}}} is not an ASCII character")
        return value

    def _class(self) -> None:
        src = self.src
        i = self.i + 1
        negate = src[i:i + 1] == "^"
        if negate:
            i += 1
        members: set[int] = set()
        first = True
        while True:
            if i >= len(src):
                raise Untranslatable("unterminated character class")
            ch = src[i]
            if ch == "]" and not first:
                i += 1
                break
            first = False
            if src.startswith("[:", i):
                end = src.find(":]", i)
                if end < 0:
                    raise Untranslatable("unterminated POSIX class")
                name = src[i + 2:end]
                neg = name.startswith("^")
                chars = _POSIX.get(name.lstrip("^"))
                if chars is None:
                    raise Untranslatable(f"unknown POSIX class [:{name}:]")
                members |= (set(range(256)) - set(chars)) if neg else set(chars)
                i = end + 2
                continue
            lo, i, group = self._class_atom(i)
            if group is not None:
                members |= group
                continue
            if src[i:i + 1] == "-" and src[i + 1:i + 2] not in ("]", ""):
                hi, j, hi_group = self._class_atom(i + 1)
                if hi_group is not None:
                    raise Untranslatable("a range cannot end in a class escape")
                if hi < lo:
                    raise Untranslatable("character class range is backwards")
                members |= set(range(lo, hi + 1))
                i = j
            else:
                members.add(lo)
        self.i = i
        if not members:
            raise Untranslatable("empty character class")
        self.out.append(class_text(members, negate))

    def _class_atom(self, i: int) -> tuple[int, int, set[int] | None]:
        """(byte, next index, None) or (0, next index, set of bytes for \\d \\s ...)."""
        src = self.src
        ch = src[i]
        if ord(ch) > 127:
            raise Untranslatable("non-ASCII character inside a character class (a class matches "
                                 "one byte, a UTF-8 character is several)")
        if ch != "\\":
            return ord(ch), i + 1, None
        if i + 1 >= len(src):
            raise Untranslatable("trailing backslash")
        c = src[i + 1]
        sets = {
            "d": set(b"0123456789"), "s": set(_GO_SPACE),
            "w": set(_POSIX["word"]),
        }
        if c in sets:
            return 0, i + 2, sets[c]
        if c in "DSW":
            return 0, i + 2, set(range(256)) - sets[c.lower()]
        if c in "pP":
            raise Untranslatable("Unicode character classes (\\p{...}) have no byte equivalent")
        if c == "x":
            saved = self.i
            self.i = i + 2
            value = self._hex()
            j, self.i = self.i, saved
            return value, j, None
        simple = {"a": 7, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11}
        if c in simple:
            return simple[c], i + 2, None
        if c.isalnum():
            raise Untranslatable(f"unknown escape \\{c} in a character class")
        return ord(c), i + 2, None

    def _open(self) -> None:
        src, i = self.src, self.i
        if not src.startswith("(?", i):
            self.out.append("(")
            self.scoped.append([])
            self.i = i + 1
            return
        if src.startswith("(?P<", i) or (src.startswith("(?<", i) and src[i + 3:i + 4] not in "=!"):
            end = src.find(">", i)
            if end < 0:
                raise Untranslatable("unterminated group name")
            self.out.append("(")
            self.scoped.append([])
            self.i = end + 1
            return
        j = i + 2
        while j < len(src) and (src[j].isalpha() or src[j] == "-"):
            j += 1
        flags = src[i + 2:j]
        end = src[j:j + 1]
        if end not in (")", ":"):
            raise Untranslatable(f"unsupported group syntax {src[i:j + 1]!r} (lookaround and "
                                 "backreferences do not exist in RE2)")
        if "U" in flags:
            raise Untranslatable("the ungreedy flag (?U) is not supported")
        if any(f not in "imsU-" for f in flags):
            raise Untranslatable(f"unknown flags (?{flags})")
        if end == ":":
            self.out.append(f"(?{flags}:" if flags else "(?:")
            self.scoped.append([])
        elif flags:
            self.out.append(f"(?{flags}:")
            self.scoped[-1].append(flags)
        self.i = j + 1


def translate(go_pattern: str) -> str:
    """A Go RE2 pattern in Python `re` syntax (anchors kept). Raises Untranslatable."""
    return _Translator(go_pattern).run()
