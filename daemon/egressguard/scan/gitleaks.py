"""Import gitleaks configuration files (TOML) as detector packs.

Security teams keep secret-detection rules in gitleaks' format, so a `detectors.packs` entry
ending in `.toml` is read as one. Each `[[rules]]` entry becomes a `DetectorSpec` with the id
`<prefix>.<rule id>` (prefix `secret.gitleaks` unless the policy sets one), class `secret`:

- `regex` is translated from Go RE2 to Python syntax (re2.py). A word boundary or anchor at
  the very start or end becomes the detector's `not_before` / `not_after` (what the streaming
  scanner can check); gitleaks' usual terminator group `(?:[\\x60'"\\s;]|\\\\[nr]|$)` becomes a
  `not_after` that refuses any other byte. One anywhere else cannot be streamed: the rule is
  skipped, with that reason. A pattern with a top-level `|` is split into one detector per
  alternative (internal ids `<id>#2`, ...), all reported under the rule's id.
- `secretGroup` picks the reported span (default: the first group that matched, as gitleaks);
  `entropy` is the Shannon entropy of that span; `keywords` must occur (case-insensitive) in
  the match or the 64 bytes before it; rules named `generic*` also need a digit, as in gitleaks.
- `allowlists` / `allowlist` (rule-level and global, with `regexTarget`, `regexes`, `stopwords`
  and `condition`) suppress findings. `paths` and `commits` do not exist in a byte stream;
  see allow.py for what that means per condition.
- `[extend]` with `path` loads that file first; rules with the same id are merged (this
  file's fields win, allowlists add up) and `disabledRules` are dropped. `useDefault` needs
  gitleaks' own default file, which egressguard does not ship: point `path` at it instead.

Rules that cannot be imported (a path-only rule, a construct with no streaming equivalent,
a pattern Hyperscan rejects) are returned as `Skipped` with the rule id and the reason;
`egressguard check` prints each of them. Nothing here raises on a bad rule, only on a file
that is not a gitleaks config at all (ConfigError naming the file and line).
"""

from __future__ import annotations

import functools
import re
import re._constants as C
import re._parser as P
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ConfigIssue
from . import re2
from .allow import TARGETS, Allowlist
from .idle import _walk
from .pack import KEYWORD_CONTEXT, MAX_WIDTH, DetectorSpec, _widths, detectors_from_config

DEFAULT_PREFIX = "secret.gitleaks"
ALTERNATIVE_MARK = "#"
_WORD = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_ALL = frozenset(range(256))
_MAX_EXTEND_DEPTH = 2
_RULE_KEYS = frozenset({"id", "description", "regex", "secretGroup", "entropy", "keywords",
                        "allowlist", "allowlists", "path", "tags", "skipReport", "required"})


@dataclass(frozen=True)
class Skipped:
    """A rule that was not imported, and why (shown by `egressguard check`)."""

    rule_id: str
    line: int | None
    reason: str


@dataclass(frozen=True)
class GitleaksPack:
    specs: tuple[DetectorSpec, ...]
    skipped: tuple[Skipped, ...]
    rule_count: int                      # rules in the file after [extend] merging
    notes: tuple[str, ...] = field(default=())   # allowlist parts that could not be honoured


def is_gitleaks_file(path: str | Path) -> bool:
    return str(path).endswith(".toml")


def load_gitleaks(path: str | Path, prefix: str | None = None) -> GitleaksPack:
    """Read and translate a gitleaks config file. Raises ConfigError for an unreadable file."""
    full = Path(path).resolve()
    try:
        stamp = full.stat().st_mtime_ns        # a reloaded, edited file is read again
    except OSError:
        stamp = 0
    return _load_cached(str(full), prefix or DEFAULT_PREFIX, stamp)


@functools.lru_cache(maxsize=16)
def _load_cached(path: str, prefix: str, _stamp: int) -> GitleaksPack:
    rules, global_allow, lines = _read_config(Path(path), 0)
    notes: list[str] = []
    shared = tuple(a for a in (_allowlist(x, notes, "global allowlist") for x in global_allow) if a)
    specs: list[DetectorSpec] = []
    skipped: list[Skipped] = []
    for rule in rules:
        rid = str(rule.get("id") or "")
        try:
            specs.extend(_rule_specs(rule, prefix, shared, global_allow, notes))
        except _Skip as exc:
            skipped.append(Skipped(rid or "(no id)", lines.get(rid), str(exc)))
    return GitleaksPack(tuple(specs), tuple(skipped), len(rules), tuple(notes))


# ------------------------------------------------------------------------------ the file

def _read_config(path: Path, depth: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]],
                                                   dict[str, int]]:
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigIssue(file, None, "", f"cannot read gitleaks config: {exc}")])
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        raise ConfigError([ConfigIssue(file, int(m.group(1)) if m else None, "",
                                       f"invalid TOML: {exc}")])
    lines = {m.group(1): text.count("\n", 0, m.start()) + 1
             for m in re.finditer(r'(?m)^\s*id\s*=\s*["\']([^"\']+)["\']', text)}
    rules = data.get("rules", [])
    if not isinstance(rules, list) or not all(isinstance(r, dict) for r in rules):
        raise ConfigError([ConfigIssue(file, None, "rules", "must be an array of [[rules]] tables")])
    global_allow = _as_list(data.get("allowlists")) + _as_list(data.get("allowlist"))
    extend = data.get("extend") or {}
    if not isinstance(extend, dict):
        raise ConfigError([ConfigIssue(file, None, "extend", "must be a table")])
    if extend.get("useDefault"):
        raise ConfigError([ConfigIssue(
            file, _line_of(text, "useDefault"), "extend.useDefault",
            "egressguard does not ship gitleaks' default rules: set extend.path to a copy of "
            "gitleaks.toml instead")])
    if extend.get("path"):
        if depth >= _MAX_EXTEND_DEPTH:
            raise ConfigError([ConfigIssue(file, _line_of(text, "path"), "extend.path",
                                           f"extends nest deeper than {_MAX_EXTEND_DEPTH}")])
        base_path = Path(extend["path"])
        if not base_path.is_absolute():
            base_path = path.parent / base_path
        base_rules, base_allow, base_lines = _read_config(base_path, depth + 1)
        disabled = set(extend.get("disabledRules") or ())
        rules = _merge(base_rules, rules, disabled)
        global_allow = base_allow + global_allow
        lines = {**base_lines, **lines}
    return rules, global_allow, lines


def _merge(base: list[dict[str, Any]], own: list[dict[str, Any]],
           disabled: set[str]) -> list[dict[str, Any]]:
    """gitleaks' [extend]: base rules unless disabled; a rule redefined here overrides the
    base's fields, and its allowlists are added to the base's."""
    by_id = {r.get("id"): r for r in own}
    out: list[dict[str, Any]] = []
    for rule in base:
        rid = rule.get("id")
        if rid in disabled:
            continue
        mine = by_id.pop(rid, None)
        if mine is None:
            out.append(rule)
            continue
        merged = {**rule, **{k: v for k, v in mine.items() if v not in (None, "", [], 0)}}
        merged["allowlists"] = (_rule_allowlists(rule) + _rule_allowlists(mine))
        merged.pop("allowlist", None)
        out.append(merged)
    out.extend(r for r in own if r.get("id") in by_id)
    return out


def _as_list(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if isinstance(value, dict):
        return [value]
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _rule_allowlists(rule: dict[str, Any]) -> list[dict[str, Any]]:
    return _as_list(rule.get("allowlists")) + _as_list(rule.get("allowlist"))


def _line_of(text: str, key: str) -> int | None:
    m = re.search(rf"(?m)^\s*{re.escape(key)}\s*=", text)
    return text.count("\n", 0, m.start()) + 1 if m else None


# ------------------------------------------------------------------------------ one rule

class _Skip(Exception):
    pass


def _rule_specs(rule: dict[str, Any], prefix: str, shared: tuple[Allowlist, ...],
                global_raw: list[dict[str, Any]], notes: list[str]) -> list[DetectorSpec]:
    rid = rule.get("id")
    if not isinstance(rid, str) or not rid:
        raise _Skip("the rule has no id")
    unknown = sorted(set(rule) - _RULE_KEYS)
    if rule.get("required"):
        raise _Skip("composite rules ([[rules.required]]) are not supported")
    regex = rule.get("regex")
    if not regex:
        if rule.get("path"):
            raise _Skip("matches file names only (path): a byte stream has no file name")
        raise _Skip("the rule has no regex")
    if rule.get("path"):
        raise _Skip("also requires a file name (path): a byte stream has no file name")
    if not isinstance(regex, str):
        raise _Skip("regex must be a string")
    det_id = f"{prefix}.{rid.lower()}"
    allow = list(shared)
    for raw in global_raw:
        targets = raw.get("targetRules")
        if targets and rid in targets:
            extra = _allowlist(raw, notes, f"global allowlist for {rid}", targeted=True)
            if extra:
                allow.append(extra)
    for raw in _rule_allowlists(rule):
        a = _allowlist(raw, notes, f"rule {rid}")
        if a:
            allow.append(a)
    keywords = [k for k in rule.get("keywords") or () if isinstance(k, str) and k]
    entropy = rule.get("entropy")
    group = rule.get("secretGroup")
    try:
        caseless, alternatives = _translate(regex)
    except re2.Untranslatable as exc:
        raise _Skip(f"regex: {exc}") from None
    specs = []
    group_base = 0
    for n, (pattern, not_before, not_after, groups, fold) in enumerate(alternatives, 1):
        local_group = _local_group(group, group_base, groups)
        group_base += groups
        item: dict[str, Any] = {
            "id": det_id if n == 1 else f"{det_id}.alt{n}",
            "class": "secret", "pattern": pattern, "severity": "high",
            "description": str(rule.get("description") or "")[:200],
            "context_before": KEYWORD_CONTEXT,
        }
        if caseless:
            item["flags"] = ["caseless"]
        if not_before:
            item["not_before"] = not_before
        if not_after:
            item["not_after"] = not_after
        else:
            item["keep_longest"] = True     # a run of token bytes: report the longest once
        if keywords:
            item["keywords"] = keywords
        if isinstance(entropy, (int, float)) and not isinstance(entropy, bool) and entropy > 0:
            item["entropy"] = min(float(entropy), 8.0)
        if local_group is not None:
            item["secret_group"] = local_group
        lo, hi = _widths(pattern)
        if hi > MAX_WIDTH:
            item["max_width"] = MAX_WIDTH
        try:
            (spec,) = detectors_from_config([item], "<gitleaks>", "rule")
        except ConfigError as exc:
            raise _Skip("; ".join(_reason(i.message) for i in exc.issues)) from None
        specs.append(replace(spec, id=item["id"], allowlists=tuple(allow),
                             require_digit=rid.startswith("generic"), fold_after=fold))
    if unknown:
        notes.append(f"rule {rid}: ignored fields {', '.join(unknown)}")
    return [_report_as(s, det_id) for s in specs]


def _reason(message: str) -> str:
    if "anchors and word boundaries" in message:
        return ("a word boundary or anchor in the middle of the pattern: the streaming scanner "
                "checks boundaries only at a match's start and end")
    return message.split(": ", 1)[1] if message.startswith("detector '") else message


def _report_as(spec: DetectorSpec, det_id: str) -> DetectorSpec:
    """Alternatives are compiled separately but reported under the rule's id."""
    if spec.id == det_id:
        return spec
    return replace(spec, id=det_id + ALTERNATIVE_MARK + spec.id.rsplit(".alt", 1)[1])


def _local_group(group: Any, base: int, count: int) -> int | None:
    if not count:
        return None
    if isinstance(group, int) and not isinstance(group, bool) and group > 0:
        local = group - base
        return local if 1 <= local <= count else 0
    return 0


def _allowlist(raw: dict[str, Any], notes: list[str], where: str,
               targeted: bool = False) -> Allowlist | None:
    """One gitleaks allowlist table, compiled; None when it has nothing a stream can check."""
    if raw.get("targetRules") and not targeted:
        return None                      # applied per rule, see _rule_specs
    condition = str(raw.get("condition") or "OR").lower()
    if condition not in ("or", "and"):
        notes.append(f"{where}: unknown condition {raw.get('condition')!r}, using OR")
        condition = "or"
    target = str(raw.get("regexTarget") or "secret").lower()
    if target not in TARGETS:
        notes.append(f"{where}: unknown regexTarget {target!r}, using secret")
        target = "secret"
    regexes = []
    for text in raw.get("regexes") or ():
        try:
            regexes.append(re.compile(re2.translate(str(text)).encode("ascii")))
        except (re2.Untranslatable, re.error) as exc:
            notes.append(f"{where}: allowlist regex not used ({exc})")
    stopwords = tuple(str(w).lower().encode("utf-8") for w in raw.get("stopwords") or () if w)
    stream_blind = bool(raw.get("paths") or raw.get("commits"))
    if not regexes and not stopwords:
        return None
    never = stream_blind and condition == "and"
    return Allowlist(tuple(regexes), target, stopwords, condition, never)


# ------------------------------------------------------------------------------ regex shape

def _translate(go: str) -> tuple[bool, list[tuple[str, str | None, str | None, int,
                                                   str | None]]]:
    """(caseless, [(pattern, not_before, not_after, group count, fold_after) per top-level
    alternative])."""
    caseless = False
    if go.startswith("(?i)"):
        caseless, go = True, go[4:]
    text = re2.translate(go)
    out = []
    for alt in _split_top(text, "|"):
        pattern, not_before, not_after, fold = _boundaries(alt, caseless)
        if not pattern:
            raise re2.Untranslatable("an alternative is only an anchor")
        try:
            groups = re.compile(pattern).groups
        except re.error as exc:
            raise re2.Untranslatable(f"invalid after translation: {exc}") from None
        out.append((pattern, not_before, not_after, groups, fold))
    return caseless, out


def _boundaries(p: str, caseless: bool = False) -> tuple[str, str | None, str | None,
                                                          str | None]:
    """Move a leading/trailing word boundary, anchor or terminator group into not_before /
    not_after (see the module docstring). A `\\b` right inside the first or last group, or
    right before a terminator that already refuses word bytes, is implied and dropped.
    The fourth value is the class of bytes that may start a follower (`fold_after`) when
    not_after is an alternation that Hyperscan cannot fold as it is."""
    not_before = not_after = fold = None
    atoms = _atoms(p)
    if atoms:
        s, e = atoms[0]
        head = p[s:e]
        if head == "\\b":
            not_before, p = class_of(_WORD), p[e:]
        elif head in ("^", "\\A"):
            not_before, p = class_of(_ALL - {10}), p[e:]
        elif head.startswith("(") and head.endswith(")"):
            alts = _group_alternatives(head)
            if alts and len(alts) > 1 and any(a in ("^", "\\A") for a in alts):
                allowed = _byte_sets([a for a in alts if a not in ("^", "\\A")], caseless)
                if allowed is not None and all(len(x) == 1 for x in allowed):
                    ok = set().union(*(x[0] for x in allowed)) | {10}
                    not_before, p = class_of(_ALL - ok), p[e:]
    p = _drop_optional_lead(p)
    atoms = _atoms(p)
    if atoms and (not_before is None or not_before == class_of(_WORD)):
        s, e = atoms[0]
        head = p[s:e]
        inner = _group_open_len(head) if head.startswith("(") and head.endswith(")") else 0
        if inner and head[inner:inner + 2] == "\\b":
            not_before, p = class_of(_WORD), p[:s + inner] + p[s + inner + 2:]
    atoms = _atoms(p)
    if atoms:
        s, e = atoms[-1]
        tail = p[s:e]
        if tail == "\\b":
            not_after, p = class_of(_WORD), p[:s]
        elif tail in ("$", "\\Z"):
            not_after, p = ("[\\x00-\\xff]" if tail == "\\Z" else "[^\\r\\n]"), p[:s]
        elif tail.startswith("(") and tail.endswith(")"):
            alts = _group_alternatives(tail)
            if alts and any(a in ("$", "\\Z") for a in alts):
                rest = [class_of(_ALL - _WORD) if a == "\\b" else a
                        for a in alts if a not in ("$", "\\Z")]
                refuse = _refusal(rest, caseless)
                if refuse is not None:
                    not_after, p = refuse[0] or None, p[:s]
                    if not_after and "|" in not_after:
                        fold = class_of(refuse[1])
    atoms = _atoms(p)
    if atoms:
        s, e = atoms[-1]
        tail = p[s:e]
        if tail.startswith("(") and tail.endswith(")") and _group_open_len(tail):
            open_len = _group_open_len(tail)
            alts = _split_top(tail[open_len:-1], "|")
            trimmed = [a[:-2] if a.endswith("\\b") and not a.endswith("\\\\b") else a
                       for a in alts]
            if trimmed != alts:
                p = p[:s] + tail[:open_len] + "|".join(trimmed) + ")" + p[e:]
                not_after = not_after or class_of(_WORD)
    return p, not_before, not_after, fold


def _drop_optional_lead(p: str) -> str:
    """Drop leading atoms that may match nothing (gitleaks' `[\\w.-]{0,50}?` before a key
    name): they never decide whether a rule matches nor where its secret is, but re-matching
    them from every start position is what made keyword rules slow (a 50x lazy loop per
    byte of the window). Keywords are still looked for in the bytes before the match."""
    while True:
        atoms = _atoms(p)
        if len(atoms) < 2:
            return p
        s, e = atoms[0]
        head = p[s:e]
        if not re.fullmatch(r"(?:\[[^\]]*\]|\\.|[^()\[\\])(?:\*\??|\?\??|\{0,\d*\}\??)", head):
            return p
        p = p[e:]


def class_of(members: frozenset[int] | set[int]) -> str:
    return re2.class_text(set(members))


def _refusal(alts: list[str], caseless: bool = False) -> tuple[str, frozenset[int]] | None:
    """A not_after regex that matches exactly when none of `alts` (1-byte classes and 2-byte
    sequences) matches the next bytes ("" when every byte is allowed), and the set of bytes
    an allowed follower can start with; None if not expressible."""
    seqs = _byte_sets(alts, caseless)
    if seqs is None or any(len(s) > 2 for s in seqs):
        return None
    singles: set[int] = set()
    pairs: dict[frozenset[int], set[int]] = {}
    for seq in seqs:
        if len(seq) == 1:
            singles |= seq[0]
        else:
            pairs.setdefault(frozenset(seq[0]), set()).update(seq[1])
    firsts = set(singles)
    for a in pairs:
        firsts |= a
    parts = []
    if _ALL - firsts:
        parts.append(re2.class_text(_ALL - firsts))
    seen: set[int] = set()
    for a, b in pairs.items():
        a_only = set(a) - singles
        if a_only & seen:
            return None
        seen |= a_only
        if a_only and _ALL - b:
            parts.append(re2.class_text(a_only) + re2.class_text(_ALL - b))
    return "|".join(parts), frozenset(firsts)


def _byte_sets(alts: list[str], caseless: bool = False) -> list[list[set[int]]] | None:
    """Each alternative as a sequence of one-byte sets, or None if one is not that simple.
    Under (?i) a set holds both cases: the complements built from it must refuse both, or
    Python's case-insensitive class matching lets the other case through."""
    out = []
    for alt in alts:
        try:
            parsed = P.parse(alt)
        except re.error:
            return None
        seq = []
        for op, av in parsed:
            if op not in (C.LITERAL, C.IN, C.NOT_LITERAL):
                return None
            found = _walk([(op, av)])
            if caseless:
                found |= {ord(chr(b).swapcase()) for b in found if chr(b).isalpha() and b < 128}
            seq.append(found)
        if not seq:
            return None
        out.append(seq)
    return out


def _group_open_len(group: str) -> int:
    """Length of a group's opening: "(" or "(?:" or "(?i:" ..."""
    if group.startswith("(?"):
        colon = group.find(":")
        return colon + 1 if colon > 0 else 0
    return 1


def _group_alternatives(group: str) -> list[str] | None:
    open_len = _group_open_len(group)
    if not open_len:
        return None
    return _split_top(group[open_len:-1], "|")


def _split_top(p: str, sep: str) -> list[str]:
    """Split at top-level `sep` characters (outside groups, classes and escapes)."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(p):
        ch = p[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "[":
            i = _class_end(p, i)
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(p[start:i])
            start = i + 1
        i += 1
    parts.append(p[start:])
    return parts


def _class_end(p: str, i: int) -> int:
    j = i + 1
    if p[j:j + 1] == "^":
        j += 1
    if p[j:j + 1] == "]":
        j += 1
    while j < len(p) and p[j] != "]":
        j += 2 if p[j] == "\\" else 1
    return j + 1


def _atoms(p: str) -> list[tuple[int, int]]:
    """Top-level atoms of a Python pattern with their quantifiers, as (start, end)."""
    out = []
    i = 0
    while i < len(p):
        s = i
        ch = p[i]
        if ch == "\\":
            i += 4 if p[i + 1:i + 2] == "x" else 2
        elif ch == "[":
            i = _class_end(p, i)
        elif ch == "(":
            depth = 0
            while i < len(p):
                c = p[i]
                if c == "\\":
                    i += 2
                    continue
                if c == "[":
                    i = _class_end(p, i)
                    continue
                depth += c == "("
                depth -= c == ")"
                i += 1
                if depth == 0:
                    break
        else:
            i += 1
        if i < len(p) and p[i] in "*+?{":
            if p[i] == "{":
                close = p.find("}", i)
                i = close + 1 if close > 0 else i + 1
            else:
                i += 1
            if i < len(p) and p[i] == "?":
                i += 1
        out.append((s, i))
    return out
