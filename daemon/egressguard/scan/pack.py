"""Detector packs: YAML data -> validated `DetectorSpec`s.

Every detector is checked here, before the engine is built, so an operator sees one line per
problem naming the file, line and field (`ConfigError`), never a Hyperscan traceback at start-up.
A pattern must be acceptable to BOTH engines with the same meaning: Hyperscan finds where a
match ends (streaming, no start-of-match), Python `re` then finds where it starts. That is why
anchors, word boundaries, lookaround and backreferences are refused (Hyperscan either rejects
them or evaluates them differently at a stream edge), and why every pattern has a bounded width:
the width is how far back a match can reach, i.e. how many bytes the stream must hold back.

Pack file format (see packs/builtin.yaml for the field reference)::

    version: 1
    detectors:
      - {id: ..., class: secret|pii, pattern: ..., ...}
"""

from __future__ import annotations

import functools
import re
import re._constants as sre_constants
import re._parser as sre_parser
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hyperscan
import yaml

from ..errors import ConfigError, ConfigIssue
from . import validators
from .allow import Allowlist

BUILTIN_PACK = Path(__file__).with_name("packs") / "builtin.yaml"

#: Widest span any detector may report; also the largest possible stream hold-back + 1.
MAX_WIDTH = 4096
#: Widest `not_after` lookahead (bytes a candidate may wait for before it is decided).
MAX_LOOKAHEAD = 8
#: Most context bytes a validator may ask for before the match.
MAX_CONTEXT = 256

CLASSES = ("secret", "pii")
SEVERITIES = ("low", "medium", "high", "critical")
#: How sure a finding is: a detector's base confidence, raised one step by a validator that
#: accepted it and one step by a keyword near it (see DetectorSpec.confidence).
CONFIDENCES = ("low", "medium", "high")
#: Keywords are looked for this far before a match (and inside it) when the detector does not
#: set context_before itself.
KEYWORD_CONTEXT = 64
FLAGS = ("caseless",)

_ID_RE = re.compile(r"^[a-z][a-z0-9_-]*(?:\.[a-z0-9_-]+)*$")
MAX_ID_LENGTH = 96
_FIELDS = frozenset({
    "id", "class", "description", "pattern", "not_before", "not_after", "max_width",
    "context_before", "validator", "params", "severity", "flags", "keep_longest", "truncate",
    "prefilter", "confidence", "keywords", "hint_keywords", "entropy", "secret_group", "allow",
    "stopwords",
})
# sre opcodes that have no faithful Hyperscan-streaming equivalent.
_FORBIDDEN_OPS = {
    sre_constants.AT: "anchors and word boundaries (^ $ \\A \\Z \\b \\B): use not_before/not_after",
    sre_constants.ASSERT: "lookahead/lookbehind: use not_before/not_after",
    sre_constants.ASSERT_NOT: "lookahead/lookbehind: use not_before/not_after",
    sre_constants.GROUPREF: "backreferences",
    sre_constants.GROUPREF_EXISTS: "conditional groups",
}


@dataclass(frozen=True)
class DetectorSpec:
    """One validated detector. Widths are in bytes (patterns are ASCII)."""

    id: str
    cls: str                                   # "secret" | "pii"
    pattern: str                               # the core match (no boundaries)
    description: str = ""
    severity: str = "high"
    validator: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)
    max_width: int | None = None               # cap for unbounded/very wide patterns
    not_before: str | None = None              # a [character class] that must not precede
    not_after: str | None = None               # a small regex that must not follow
    context_before: int = 0                    # bytes before the match given to the validator
    caseless: bool = False
    keep_longest: bool = False                 # drop matches contained in a longer one
    truncate: bool = False                     # report a max-width match even if it could grow
    prefilter: str | None = None               # cheaper Hyperscan expression (see below)
    confidence: str = "medium"                 # base confidence (low | medium | high)
    keywords: tuple[bytes, ...] = ()           # lower-case; one must occur near the match
    hint_keywords: tuple[bytes, ...] = ()      # lower-case; raise confidence when near
    min_entropy: float | None = None           # Shannon entropy of the secret, bits per byte
    secret_group: int | None = None            # None: the whole match is the secret; 0: the
                                               # first group that matched (gitleaks); n: group n
    allowlists: tuple[Allowlist, ...] = ()     # values that are known not to be secrets
    require_digit: bool = False                # gitleaks' generic-* rules: a secret has a digit
    fold_after: str | None = None              # a class of the bytes that may follow a match
                                               # (imported terminators): Hyperscan requires one

    @property
    def width(self) -> int:
        """Widest span this detector can report (the capped regex width)."""
        lo, hi = _widths(self.pattern)
        return min(hi, self.max_width) if self.max_width else hi

    @property
    def report_id(self) -> str:
        """The id findings carry: an imported rule split into alternatives is compiled as
        `id#2`, `id#3`, ... (ids must be unique in the engine) but reported as `id`."""
        return self.id.split("#", 1)[0]

    @property
    def lookahead(self) -> int:
        """How many bytes after a match must be seen before the match can be decided."""
        return _widths(self.not_after)[1] if self.not_after else 0


# `prefilter: pattern` in a pack: use the detector's own pattern without the folded
# `not_before` boundary (Hyperscan is about twice as fast on text without the leading
# class; the boundary is still checked when the candidate is re-matched).
PREFILTER_BARE_PATTERN = "pattern"


def folds_not_after(spec: DetectorSpec) -> bool:
    """True when `not_after` is one plain character class, so Hyperscan itself can require a
    byte outside it after the match (see hyperscan_expression). A truncating detector is
    never folded: it must hear about a match that is followed by more token bytes."""
    if spec.truncate:
        return False
    if spec.fold_after:
        return True
    if not spec.not_after:
        return False
    text = spec.not_after
    if not (text.startswith("[") and text.endswith("]") and not text.startswith("[^")):
        return False
    parsed = sre_parser.parse(text)
    if not (len(parsed) == 1 and parsed[0][0] is sre_constants.IN and _widths(text) == (1, 1)):
        return False
    from .idle import _class_bytes
    # A class of every byte (an imported rule's "end of text") leaves nothing to fold.
    return len(_class_bytes(parsed[0][1])) < 256


def hyperscan_expression(spec: DetectorSpec) -> bytes:
    """The expression compiled into the stream database for `spec`.

    The boundaries are folded in as consumed bytes, so that a long run of token bytes yields
    ONE candidate instead of one per byte (a 4 KiB JWT would otherwise report ~700 ends):
    `not_before` as "stream start or a byte outside the class" before the match, and a
    single-class `not_after` as "a byte outside the class" after it. A match reported that
    way ends one byte after the real match; a match that ends exactly at the end of the
    stream has no such byte, so the engine tries those explicitly at close()."""
    if spec.prefilter:
        # A cheaper expression whose matches END wherever the detector's can (a superset of
        # its end offsets, e.g. only the "@domain" part of an e-mail): Hyperscan finds
        # candidate ends with it, and the pattern, boundaries and validator decide as always.
        core = f"(?:{spec.prefilter})"
    else:
        core = f"(?:{spec.pattern})"
        if spec.not_before:
            core = f"(?:^|[^{spec.not_before[1:-1]}]){core}"
    if spec.fold_after and not spec.truncate:
        # Only bytes that may follow a match (gitleaks' terminator group, whose not_after is
        # an alternation): a run of token bytes gives one candidate, not one per byte.
        core = f"{core}{spec.fold_after}"
    elif folds_not_after(spec):
        core = f"{core}[^{spec.not_after[1:-1]}]"
    return core.encode("ascii")


def hyperscan_flags(spec: DetectorSpec) -> int:
    return hyperscan.HS_FLAG_CASELESS if spec.caseless else 0


# ------------------------------------------------------------------------------ loading

def load_pack(path: str | Path | None = None, prefix: str | None = None) -> list[DetectorSpec]:
    """Load and validate a pack file (None: the built-in pack; `*.toml`: a gitleaks config,
    whose ids get `prefix`, default secret.gitleaks). Raises ConfigError."""
    if path is None:
        return list(_builtin())
    from . import gitleaks
    if gitleaks.is_gitleaks_file(path):
        return list(gitleaks.load_gitleaks(path, prefix).specs)
    return _load_file(Path(path))


def pack_warnings(detectors_cfg: Any) -> list[ConfigIssue]:
    """Rules of imported gitleaks packs that were skipped, one issue each with the rule id and
    the reason, for `egressguard check` (and the daemon's start-up log) to show."""
    from . import gitleaks
    out = []
    for path in detectors_cfg.packs:
        if not gitleaks.is_gitleaks_file(path):
            continue
        try:
            imported = gitleaks.load_gitleaks(path, _prefix_of(detectors_cfg, path))
        except ConfigError:
            continue                  # reported as an error by all_detectors
        for s in imported.skipped:
            out.append(ConfigIssue(str(path), s.line, f"rules[id={s.rule_id}]",
                                   f"not imported: {s.reason}"))
    return out


def _prefix_of(detectors_cfg: Any, path: str) -> str | None:
    prefixes = getattr(detectors_cfg, "prefixes", None) or {}
    return prefixes.get(path)


@functools.lru_cache(maxsize=1)
def _builtin() -> tuple[DetectorSpec, ...]:
    return tuple(_load_file(BUILTIN_PACK))


def _load_file(path: Path) -> list[DetectorSpec]:
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigIssue(file, None, "", f"cannot read detector pack: {exc}")])
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        raise ConfigError([ConfigIssue(file, line, "", f"invalid YAML: {getattr(exc, 'problem', exc)}")])
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError([ConfigIssue(file, _line(root), "", "a detector pack is a mapping with `detectors:`")])
    top = _mapping(root)
    issues: list[ConfigIssue] = []
    version = top.get("version")
    if version is not None and _scalar(version[1]) != 1:
        issues.append(ConfigIssue(file, _line(version[1]), "version", "only version 1 is supported"))
    for key, (knode, _) in top.items():
        if key not in ("version", "detectors"):
            issues.append(ConfigIssue(file, _line(knode), key, "unknown field (expected version, detectors)"))
    if "detectors" not in top:
        issues.append(ConfigIssue(file, _line(root), "detectors", "missing: the list of detectors"))
        raise ConfigError(issues)
    try:
        specs = detectors_from_config(top["detectors"][1], file, field_prefix="detectors")
    except ConfigError as exc:
        issues.extend(exc.issues)
        specs = []
    if issues:
        raise ConfigError(issues)
    return specs


def detectors_from_config(items: Any, file: str, field_prefix: str = "detectors") -> list[DetectorSpec]:
    """Validate detector declarations (a pack's list, or custom detectors in a policy file).

    `items` is either a YAML node (from `yaml.compose`, so problems carry line numbers) or
    plain data (a list of dicts, problems then have no line). Every problem is collected and
    raised together as one ConfigError."""
    issues: list[ConfigIssue] = []
    specs: list[DetectorSpec] = []
    if isinstance(items, yaml.Node):
        if not isinstance(items, yaml.SequenceNode):
            raise ConfigError([ConfigIssue(file, _line(items), field_prefix, "must be a list of detectors")])
        entries: Iterable[tuple[Any, int | None]] = [(n, _line(n)) for n in items.value]
    elif isinstance(items, list):
        entries = [(x, None) for x in items]
    else:
        raise ConfigError([ConfigIssue(file, None, field_prefix, "must be a list of detectors")])
    seen: dict[str, str] = {}
    for index, (item, line) in enumerate(entries):
        where = f"{field_prefix}[{index}]"
        raw_id = _raw_id(item)
        if raw_id is not None and raw_id in seen:
            issues.append(ConfigIssue(file, line, f"{where}.id",
                                      f"duplicate detector id {raw_id!r} (first at {seen[raw_id]})"))
            continue
        if raw_id is not None:
            seen[raw_id] = where
        spec = _spec_from_item(item, line, file, where, issues)
        if spec is not None:
            specs.append(spec)
    if issues:
        raise ConfigError(issues)
    return specs


# ------------------------------------------------------------------------------ one detector

def _raw_id(item: Any) -> str | None:
    """The declared id of an entry, valid or not (for duplicate detection)."""
    if isinstance(item, yaml.MappingNode):
        entry = _mapping(item).get("id")
        value = _to_python(entry[1]) if entry else None
    elif isinstance(item, Mapping):
        value = item.get("id")
    else:
        value = None
    return value if isinstance(value, str) else None


class _Fields:
    """A detector entry as {name: (value, line)}, from a YAML node or a plain dict."""

    def __init__(self, item: Any, line: int | None):
        self.line = line
        self.values: dict[str, tuple[Any, int | None]] = {}
        if isinstance(item, yaml.MappingNode):
            for key, (knode, vnode) in _mapping(item).items():
                self.values[key] = (_to_python(vnode), _line(vnode))
        elif isinstance(item, Mapping):
            self.values = {str(k): (v, line) for k, v in item.items()}
        else:
            raise TypeError

    def get(self, name: str, default: Any = None) -> tuple[Any, int | None]:
        return self.values.get(name, (default, self.line))


def _spec_from_item(item: Any, line: int | None, file: str, where: str,
                    issues: list[ConfigIssue]) -> DetectorSpec | None:
    try:
        f = _Fields(item, line)
    except TypeError:
        issues.append(ConfigIssue(file, line, where, "must be a mapping (id, class, pattern, ...)"))
        return None
    before = len(issues)

    def bad(name: str, message: str, line_from: str | None = None) -> None:
        line_of = f.get(line_from or name.split(".")[0])[1]
        issues.append(ConfigIssue(file, line_of, f"{where}.{name}", message))

    for name in f.values:
        if name not in _FIELDS:
            bad(name, f"unknown field (known: {', '.join(sorted(_FIELDS))})")
    det_id = _check_id(f, bad)
    label = f"detector {det_id!r}" if det_id else "detector"
    cls = _check_choice(f, "class", CLASSES, None, bad)
    severity = _check_choice(f, "severity", SEVERITIES, "high", bad)
    pattern = _check_pattern(f, label, bad)
    max_width = _check_int(f, "max_width", 1, MAX_WIDTH, bad)
    context = _check_int(f, "context_before", 0, MAX_CONTEXT, bad) or 0
    not_before = _check_not_before(f, label, bad)
    not_after = _check_not_after(f, label, bad)
    validator, params = _check_validator(f, bad)
    caseless = _check_flags(f, bad)
    keep_longest = _check_bool(f, "keep_longest", bad)
    truncate = _check_bool(f, "truncate", bad)
    prefilter, _ = f.get("prefilter")
    if prefilter is not None and (not isinstance(prefilter, str) or not prefilter.isascii()):
        bad("prefilter", "must be an ASCII regular expression")
        prefilter = None
    if prefilter == PREFILTER_BARE_PATTERN:
        prefilter = pattern
    confidence = _check_choice(f, "confidence", CONFIDENCES, "medium", bad)
    keywords = _check_words(f, "keywords", bad)
    hints = _check_words(f, "hint_keywords", bad)
    stopwords = _check_words(f, "stopwords", bad)
    min_entropy = _check_entropy(f, bad)
    secret_group = _check_int(f, "secret_group", 0, 99, bad)
    allow = _check_allow(f, label, bad)
    if (keywords or hints) and not context:
        context = KEYWORD_CONTEXT
    description, _ = f.get("description", "")
    if not isinstance(description, str):
        bad("description", "must be a string")
        description = ""
    if pattern is not None:
        _check_width(pattern, max_width, label, bad)
    if len(issues) > before:
        return None
    spec = DetectorSpec(
        id=det_id, cls=cls, pattern=pattern, description=description, severity=severity,
        validator=validator, params=params, max_width=max_width, not_before=not_before,
        not_after=not_after, context_before=context, caseless=caseless,
        keep_longest=keep_longest, truncate=truncate, prefilter=prefilter,
        confidence=confidence, keywords=keywords, hint_keywords=hints, min_entropy=min_entropy,
        secret_group=secret_group,
        allowlists=(Allowlist(regexes=allow, stopwords=stopwords),) if allow or stopwords else (),
    )
    if secret_group and pattern is not None and re.compile(pattern).groups < secret_group:
        bad("secret_group", f"{label}: the pattern has fewer than {secret_group} groups")
    _check_hyperscan(spec, label, bad)
    return None if len(issues) > before else spec


def _check_id(f: _Fields, bad) -> str:
    value, _ = f.get("id")
    if value is None:
        bad("id", "missing: a detector id such as secret.internal_token")
        return ""
    if not isinstance(value, str) or len(value) > MAX_ID_LENGTH or not _ID_RE.match(value):
        bad("id", "must be lower-case words joined by dots, e.g. secret.internal_token")
        return ""
    return value


def _check_choice(f: _Fields, name: str, choices: tuple[str, ...], default: str | None, bad) -> str:
    value, _ = f.get(name, default)
    if value is None:
        bad(name, f"missing: one of {', '.join(choices)}")
        return ""
    if value not in choices:
        bad(name, f"must be one of {', '.join(choices)}")
        return ""
    return value


def _check_int(f: _Fields, name: str, lo: int, hi: int, bad) -> int | None:
    value, _ = f.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        bad(name, f"must be an integer from {lo} to {hi}")
        return None
    return value


def _check_bool(f: _Fields, name: str, bad) -> bool:
    value, _ = f.get(name, False)
    if not isinstance(value, bool):
        bad(name, "must be true or false")
        return False
    return value


def _check_words(f: _Fields, name: str, bad) -> tuple[bytes, ...]:
    value, _ = f.get(name, [])
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if (not isinstance(value, list)
            or not all(isinstance(v, str) and v and v.isascii() for v in value)):
        bad(name, "must be a list of non-empty ASCII words")
        return ()
    return tuple(v.lower().encode("ascii") for v in value)


def _check_entropy(f: _Fields, bad) -> float | None:
    value, _ = f.get("entropy")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 8:
        bad("entropy", "must be a number of bits per byte from 0 to 8")
        return None
    return float(value)


def _check_allow(f: _Fields, label: str, bad) -> tuple[re.Pattern[bytes], ...]:
    """`allow`: regexes on the secret; a match suppresses the finding (an allowlist)."""
    value, _ = f.get("allow", [])
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.isascii() for v in value):
        bad("allow", f"{label}: must be a list of ASCII regular expressions")
        return ()
    out = []
    for item in value:
        try:
            out.append(re.compile(item.encode("ascii")))
        except re.error as exc:
            bad("allow", f"{label}: invalid regex {item!r}: {exc}")
    return tuple(out)


def _check_flags(f: _Fields, bad) -> bool:
    value, _ = f.get("flags", [])
    if not isinstance(value, list) or any(v not in FLAGS for v in value):
        bad("flags", f"must be a list of: {', '.join(FLAGS)}")
        return False
    return "caseless" in value


def _compile_py(pattern: str, label: str, name: str, bad) -> Any:
    try:
        with warnings.catch_warnings():
            # "Possible nested set": [[:alpha:]] is a POSIX class to Hyperscan but a plain
            # set of characters to Python, so the two engines would disagree.
            warnings.simplefilter("error", FutureWarning)
            return sre_parser.parse(pattern)
    except FutureWarning:
        bad(name, f"{label}: POSIX classes like [[:alpha:]] mean different things to "
                  "Hyperscan and Python: spell the class out, e.g. [A-Za-z]")
    except re.error as exc:
        bad(name, f"{label}: invalid regex: {exc}")
    except RecursionError:
        bad(name, f"{label}: invalid regex: nested too deeply")
    return None


def _check_pattern(f: _Fields, label: str, bad) -> str | None:
    value, _ = f.get("pattern")
    if value is None:
        bad("pattern", f"{label}: missing: the regex to match")
        return None
    if not isinstance(value, str) or not value:
        bad("pattern", f"{label}: must be a non-empty string")
        return None
    if not value.isascii():
        bad("pattern", f"{label}: must be ASCII (escape other bytes as \\xNN)")
        return None
    if re.match(r"\(\?[aiLmsux]+\)", value):
        # Python applies a leading (?i) to the whole pattern, but the engine wraps patterns
        # in groups and boundaries, where a global flag is an error: make the scope explicit.
        bad("pattern", f"{label}: global inline flags such as (?i) are not supported: use "
                       "flags: [caseless], or a scoped group such as (?i:...)")
        return None
    parsed = _compile_py(value, label, "pattern", bad)
    if parsed is None:
        return None
    forbidden = _forbidden(parsed)
    if forbidden:
        bad("pattern", f"{label}: not supported in streaming patterns: {forbidden}")
        return None
    return value


def _check_width(pattern: str, max_width: int | None, label: str, bad) -> None:
    lo, hi = _widths(pattern)
    if lo == 0:
        bad("pattern", f"{label}: can match the empty string")
    elif hi > MAX_WIDTH and max_width is None:
        what = "is unbounded" if hi >= sre_constants.MAXREPEAT else f"can be {hi} bytes wide"
        bad("max_width", f"{label}: the pattern {what}: set max_width (at most {MAX_WIDTH})",
            line_from="pattern")
    elif max_width is not None and max_width < lo:
        bad("max_width", f"{label}: smaller than the shortest possible match ({lo})")


def _check_not_before(f: _Fields, label: str, bad) -> str | None:
    value, _ = f.get("not_before")
    if value is None:
        return None
    message = f"{label}: must be one character class like [A-Za-z0-9_] (not negated)"
    if not (isinstance(value, str) and value.isascii() and len(value) >= 3
            and value.startswith("[") and value.endswith("]") and not value.startswith("[^")):
        bad("not_before", message)
        return None
    parsed = _compile_py(value, label, "not_before", bad)
    if parsed is None:
        return None
    if len(parsed) != 1 or parsed[0][0] is not sre_constants.IN or _widths(value) != (1, 1):
        bad("not_before", message)
        return None
    return value


def _check_not_after(f: _Fields, label: str, bad) -> str | None:
    value, _ = f.get("not_after")
    if value is None:
        return None
    if not isinstance(value, str) or not value or not value.isascii():
        bad("not_after", f"{label}: must be a non-empty ASCII regex")
        return None
    parsed = _compile_py(value, label, "not_after", bad)
    if parsed is None:
        return None
    forbidden = _forbidden(parsed)
    lo, hi = _widths(value)
    if forbidden:
        bad("not_after", f"{label}: not supported: {forbidden}")
    elif lo == 0 or hi > MAX_LOOKAHEAD:
        bad("not_after", f"{label}: must match 1 to {MAX_LOOKAHEAD} bytes")
    else:
        return value
    return None


def _check_validator(f: _Fields, bad) -> tuple[str | None, dict[str, Any]]:
    name, _ = f.get("validator")
    params, _ = f.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        bad("params", "must be a mapping")
        params = {}
    if name is None:
        if params:
            bad("params", "given without a validator")
        return None, {}
    if name not in validators.VALIDATORS:
        bad("validator", f"unknown validator {name!r} (known: {', '.join(sorted(validators.VALIDATORS))})")
        return None, {}
    for key, message in validators.check_params(name, params):
        bad(f"params.{key}", message)
    return name, dict(params)


def _check_hyperscan(spec: DetectorSpec, label: str, bad) -> None:
    """Compile the detector alone in stream mode, so a rejection names this detector."""
    for name, expression in (("pattern", hyperscan_expression(spec)),):
        try:
            _hs_compile_one(expression, hyperscan_flags(spec))
        except hyperscan.error as exc:
            bad(name, f"{label}: Hyperscan rejects it: {_hs_message(exc)}")
    try:
        re.compile(spec.pattern.encode("ascii"))
        if spec.not_after:
            re.compile(spec.not_after.encode("ascii"))
    except re.error as exc:  # pragma: no cover - parse() above already accepted it
        bad("pattern", f"{label}: invalid regex: {exc}")


@functools.lru_cache(maxsize=256)
def _hs_compile_one(expression: bytes, flags: int) -> None:
    db = hyperscan.Database(mode=hyperscan.HS_MODE_STREAM)
    db.compile(expressions=[expression], ids=[0], elements=1, flags=[flags])


def _hs_message(exc: Exception) -> str:
    text = str(exc.args[0] if exc.args else exc)
    if isinstance(exc.args[0] if exc.args else None, bytes):
        text = exc.args[0].decode("utf-8", "replace")
    return text


# ------------------------------------------------------------------------------ helpers

@functools.lru_cache(maxsize=1024)
def _widths(pattern: str) -> tuple[int, int]:
    """(min, max) width of a regex; max is MAXREPEAT-ish when unbounded."""
    lo, hi = sre_parser.parse(pattern).getwidth()
    return int(lo), int(hi)


def _forbidden(parsed: Any) -> str | None:
    """The first construct in a parsed regex that streaming cannot honour, described."""
    for op, arg in parsed:
        if op in _FORBIDDEN_OPS:
            return _FORBIDDEN_OPS[op]
        for sub in _subpatterns(op, arg):
            found = _forbidden(sub)
            if found:
                return found
    return None


def _subpatterns(op: Any, arg: Any) -> list[Any]:
    if op is sre_constants.SUBPATTERN:
        return [arg[-1]]
    if op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT, sre_constants.POSSESSIVE_REPEAT):
        return [arg[2]]
    if op is sre_constants.BRANCH:
        return list(arg[1])
    if op is sre_constants.ATOMIC_GROUP:
        return [arg]
    return []


def _mapping(node: yaml.MappingNode) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    return {str(_scalar(k)): (k, v) for k, v in node.value}


def _scalar(node: yaml.Node) -> Any:
    return _to_python(node)


def _to_python(node: yaml.Node) -> Any:
    """Construct plain Python data from a composed node (safe types only)."""
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    except yaml.YAMLError:
        return getattr(node, "value", None)
    finally:
        loader.dispose()


def _line(node: yaml.Node | None) -> int | None:
    return node.start_mark.line + 1 if node is not None and node.start_mark else None


def all_detectors(detectors_cfg: Any) -> list[DetectorSpec]:
    """Every detector a configuration declares, before `detectors.disable` is applied: the
    built-in pack, then `detectors.packs` in order, then `detectors.custom`.

    `detectors_cfg` is a `config.DetectorsConfig` (typed loosely to keep scan/ free of config
    imports). Problems in custom detectors are reported against the policy file, with the line
    of the offending key; duplicate ids across packs are refused with both places named."""
    specs = list(load_pack(None))
    origin = {s.id: "the built-in pack" for s in specs}
    issues: list[ConfigIssue] = []
    for path in detectors_cfg.packs:
        try:
            extra = load_pack(path, _prefix_of(detectors_cfg, path))
        except ConfigError as exc:
            issues.extend(exc.issues)
            continue
        for spec in extra:
            if spec.id in origin:
                issues.append(ConfigIssue(path, None, spec.id,
                                          f"detector id already defined in {origin[spec.id]}"))
            else:
                origin[spec.id] = path
                specs.append(spec)
    custom = list(detectors_cfg.custom)
    if custom:
        try:
            declared = detectors_from_config([dict(c.raw) for c in custom],
                                             detectors_cfg.source, "detectors.custom")
        except ConfigError as exc:
            issues.extend(_with_custom_lines(exc.issues, custom))
            declared = []
        for spec, item in zip(declared, custom):
            if spec.id in origin:
                issues.append(ConfigIssue(detectors_cfg.source, item.line_of("id"),
                                          f"{item.field}.id",
                                          f"detector id already defined in {origin[spec.id]}"))
            else:
                origin[spec.id] = detectors_cfg.source
                specs.append(spec)
    if issues:
        raise ConfigError(issues)
    return specs


def _with_custom_lines(issues: list[ConfigIssue], custom: list[Any]) -> list[ConfigIssue]:
    """detectors_from_config saw plain dicts (no lines): put back the policy file's lines."""
    out = []
    for issue in issues:
        m = re.match(r"detectors\.custom\[(\d+)\](?:\.(\w+))?", issue.field)
        if m and int(m.group(1)) < len(custom):
            item = custom[int(m.group(1))]
            line = item.line_of(m.group(2)) if m.group(2) else item.line
            out.append(ConfigIssue(issue.file, line or issue.line, issue.field, issue.message))
        else:
            out.append(issue)
    return out


def enabled_detectors(detectors_cfg: Any) -> list[DetectorSpec]:
    """`all_detectors` minus those matched by `detectors.disable`."""
    return [s for s in all_detectors(detectors_cfg)
            if not detectors_cfg.is_disabled(s.report_id)]
