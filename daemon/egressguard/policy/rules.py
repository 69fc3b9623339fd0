"""Rules: what the configuration says (specs) and the matchers compiled from it.

config.py turns YAML into the frozen `RuleSpec`s below (already validated: networks parsed,
ports as ranges, user names resolved to uids). `CompiledRule` turns a spec into matchers once
(every glob list becomes one regular expression, CIDRs stay `ip_network`s) so evaluation per
connection is just a few `re.match` / membership tests and never touches the system.

The small value checkers (`glob_problem`, `parse_port`, `parse_network`) live here too, because
"what is a valid glob" and "how a glob matches" must never disagree.

Matching conventions (documented for operators in the README):
- globs use shell syntax (`*`, `?`, `[abc]`, `[!abc]`); `*` also matches `/`; a glob must match
  the whole value;
- host globs are case-insensitive and a trailing dot on the host is ignored;
- a condition on a field the daemon does not know (empty host, empty exe, uid -1) never matches;
- IPv4-mapped IPv6 destinations (::ffff:a.b.c.d) match IPv4 networks.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Iterable

from egressguard.model import Action, Destination, Detection, Process

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DETECTOR_CLASSES = frozenset({"secret", "pii"})
CONFIDENCE_ORDER = {"low": 0, "medium": 1, "high": 2}
_GLOB_CHARS = set("*?[")
_HOST_CHARS = re.compile(r"^[A-Za-z0-9._*?\[\]!-]+$")


# --------------------------------------------------------------------------------------------
# Specs (what config.py produces)

@dataclass(frozen=True)
class UserRef:
    """A user as written in the config (`spec`: "alice", "uid:0" or 0) and its uid."""

    spec: str
    uid: int
    name: str = ""          # the resolved user name, "" when given as a uid


@dataclass(frozen=True)
class ProcessCond:
    exe: tuple[str, ...] = ()
    comm: tuple[str, ...] = ()
    user: tuple[UserRef, ...] = ()
    unit: tuple[str, ...] = ()
    cgroup: tuple[str, ...] = ()


@dataclass(frozen=True)
class DestinationCond:
    cidr: tuple[Network, ...] = ()
    port: tuple[tuple[int, int], ...] = ()      # inclusive ranges
    host: tuple[str, ...] = ()
    provider: tuple[str, ...] = ()              # endpoint catalog provider id globs
    alpn: tuple[str, ...] = ()                  # globs on the protocols the ClientHello offered


@dataclass(frozen=True)
class RequestCond:
    """Conditions on one intercepted HTTP request (endpoint catalog labels)."""

    kind: tuple[str, ...] = ()                  # chat, embeddings, files, fine_tuning, ...
    cls: tuple[str, ...] = ()                   # inference, dataset_export, other


@dataclass(frozen=True)
class RuleSpec:
    """One `rules[]` entry. `detected` is None for connect-time rules."""

    name: str
    action: Action
    process: ProcessCond | None = None
    destination: DestinationCond | None = None
    detected: tuple[str, ...] | None = None
    reason: str = ""
    line: int = 0           # line of the rule in the config file, for messages
    min_confidence: str | None = None     # findings below this confidence do not match
    severity: tuple[str, ...] = ()        # if given, only findings of these severities match
    approvals: Any = None   # approvals.quorum.QuorumSpec: this hold rule's approvers/quorum
    request: RequestCond | None = None   # a request rule: decided per intercepted request

    @property
    def is_content_rule(self) -> bool:
        return self.detected is not None


# --------------------------------------------------------------------------------------------
# Value checks shared with config.py

def glob_problem(pattern: str, *, host: bool = False) -> str | None:
    """Why `pattern` is not a usable glob, or None. fnmatch accepts almost anything (an unclosed
    '[' silently becomes a literal), so we catch the typos it would hide."""
    if pattern == "":
        return "empty pattern"
    i = 0
    while i < len(pattern):
        if pattern[i] == "[":
            j = i + 1
            if pattern[j:j + 1] == "!":
                j += 1
            if pattern[j:j + 1] == "]":
                j += 1
            close = pattern.find("]", j)
            if close < 0:
                return "unclosed '[' in pattern"
            i = close
        i += 1
    if host:
        if "://" in pattern or "/" in pattern:
            return "a host pattern is a name like '*.example.com', not a URL"
        if ":" in pattern:
            return "a host pattern has no port: put ports in destination.port"
        if not _HOST_CHARS.match(pattern):
            return "a host pattern may only contain letters, digits, '.', '-', '_' and * ? [ ]"
    return None


def is_glob(pattern: str) -> bool:
    return any(c in _GLOB_CHARS for c in pattern)


def parse_port(value: object) -> tuple[int, int] | str:
    """An int, "443" or "8000-8100" -> inclusive (lo, hi); otherwise the problem as a string."""
    if isinstance(value, bool):
        return f"{value!r} is not a port"
    if isinstance(value, int):
        lo = hi = value
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", value)
        if not m:
            return f"{value!r} is not a port or a range like '8000-8100'"
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
    else:
        return f"{value!r} is not a port"
    for p in (lo, hi):
        if not 1 <= p <= 65535:
            return f"{value!r}: ports are 1-65535"
    if lo > hi:
        return f"{value!r}: range is backwards"
    return lo, hi


def parse_network(value: object) -> Network | str:
    """"10.0.0.0/8", "2001:db8::/32" or a bare address (a /32 or /128) -> network, or a problem."""
    if not isinstance(value, str):
        return f"{value!r} is not a network (write it as a string like '10.0.0.0/8')"
    try:
        return ipaddress.ip_network(value.strip(), strict=True)
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        return f"{value!r} is not a valid network"
    return f"{value!r} has host bits set (did you mean '{loose}'?)"


def detector_ref_matches(ref: str, detector_id: str, detector_cls: str) -> bool:
    """A `detected` item is a bare class ("secret", "pii": every detector of that class, custom
    ones included) or an id / glob on detector ids ("pii.email", "secret.*")."""
    if "." not in ref and not is_glob(ref):
        return detector_cls == ref
    return fnmatch.fnmatchcase(detector_id, ref)


# --------------------------------------------------------------------------------------------
# Compiled matchers

def _compile_globs(patterns: Iterable[str], *, ignore_case: bool = False) -> re.Pattern[str] | None:
    pats = list(patterns)
    if not pats:
        return None
    flags = re.IGNORECASE if ignore_case else 0
    return re.compile("|".join(fnmatch.translate(p) for p in pats), flags)


def _glob_match(rx: re.Pattern[str] | None, value: str) -> bool:
    """A missing condition matches everything; an unknown ("") value matches no condition."""
    if rx is None:
        return True
    return bool(value) and rx.match(value) is not None


def _normalize_ip(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


class CompiledRule:
    """A RuleSpec compiled for matching. Immutable after construction."""

    __slots__ = ("spec", "_exe", "_comm", "_uids", "_unit", "_cgroup",
                 "_cidr", "_port", "_host", "_provider", "_kind", "_cls", "_alpn")

    def __init__(self, spec: RuleSpec):
        self.spec = spec
        p = spec.process or ProcessCond()
        d = spec.destination or DestinationCond()
        self._exe = _compile_globs(p.exe)
        self._comm = _compile_globs(p.comm)
        self._uids = frozenset(u.uid for u in p.user) if p.user else None
        self._unit = _compile_globs(p.unit)
        self._cgroup = _compile_globs(p.cgroup)
        self._cidr = d.cidr
        self._port = d.port
        self._host = _compile_globs(d.host, ignore_case=True)
        self._provider = _compile_globs(d.provider)
        self._alpn = _compile_globs(d.alpn)
        r = spec.request or RequestCond()
        self._kind = _compile_globs(r.kind)
        self._cls = _compile_globs(r.cls)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def action(self) -> Action:
        return self.spec.action

    @property
    def is_content_rule(self) -> bool:
        return self.spec.detected is not None

    @property
    def uses_host(self) -> bool:
        """The rule needs the name (SNI/Host): the provider is known from the name too."""
        return self._host is not None or self._provider is not None or self._alpn is not None

    @property
    def is_request_rule(self) -> bool:
        return self.spec.request is not None and self.spec.detected is None

    def matches_request(self, info: "object") -> bool:
        """`info` is a catalog.RequestInfo (kind, cls)."""
        return (_glob_match(self._kind, getattr(info, "kind", ""))
                and _glob_match(self._cls, getattr(info, "cls", "")))

    def matches_flow(self, process: Process, dest: Destination) -> bool:
        """Every given process/destination condition holds (`detected` is not looked at)."""
        return self._matches_process(process) and self._matches_destination(dest)

    def _matches_process(self, p: Process) -> bool:
        if self._uids is not None and (p.uid < 0 or p.uid not in self._uids):
            return False
        return (_glob_match(self._exe, p.exe) and _glob_match(self._comm, p.comm)
                and _glob_match(self._unit, p.systemd_unit)
                and _glob_match(self._cgroup, p.cgroup_path))

    def _matches_destination(self, d: Destination) -> bool:
        if self._port and not any(lo <= d.port <= hi for lo, hi in self._port):
            return False
        if self._cidr:
            addr = _normalize_ip(d.ip)
            if addr is None or not any(addr.version == n.version and addr in n
                                       for n in self._cidr):
                return False
        if self._provider is not None and not _glob_match(self._provider, d.provider):
            return False
        if self._alpn is not None and not any(_glob_match(self._alpn, p) for p in d.alpn):
            return False
        if self._host is not None:
            return _glob_match(self._host, d.host.rstrip("."))
        return True

    def matches_detection(self, det: Detection) -> bool:
        spec = self.spec
        if spec.severity and det.severity not in spec.severity:
            return False
        if (spec.min_confidence is not None and CONFIDENCE_ORDER.get(det.confidence, 0)
                < CONFIDENCE_ORDER[spec.min_confidence]):
            return False
        refs = spec.detected or ()
        return any(detector_ref_matches(r, det.detector, det.cls) for r in refs)

    def __repr__(self) -> str:
        return f"CompiledRule({self.spec.name!r}, {self.spec.action.value})"
