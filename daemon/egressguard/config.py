"""The daemon's configuration file: YAML in, frozen dataclasses out, every problem reported.

`load_config(path)` either returns a complete, validated `Config` or raises `ConfigError` with
*every* problem found, each naming file, line and field (`policy.yaml:14: rules[2].destination
.cidr[0]: '10.0.0.0/33' is not a valid network`). An operator fixing a policy should see all of
it in one `egressguard check`, not one error per run; and bad input must never produce a
traceback. Validation happens here, once: the policy compiler (`policy/rules.py`) and the rest
of the daemon receive values that are already parsed (durations in seconds, sizes in bytes,
networks, port ranges, uids).

Two things come from outside this file and are injected so tests need no host state:
- `known_detectors`: the detector ids the scanner knows (see `DetectorHook`), used to refuse a
  `detected` entry that would never match (a silently dead rule is a protection that is not
  there);
- `resolve_user`: user name -> uid (default: the system's passwd database via `pwd`).
"""

from __future__ import annotations

import difflib
import fnmatch
import ipaddress
import os
import pwd
import re
from dataclasses import dataclass, field as dc_field, replace as dc_replace
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping, Sequence, Union

import phonenumbers

from egressguard.approvals.settings import (SETTINGS_KEYS, ApprovalSettings, check_quorum_fits,
                                            parse_quorum, parse_settings)
from egressguard.errors import ConfigError, ConfigIssue
from egressguard.ledger.config import LedgerConfig, parse_ledger
from egressguard.tls.config import TlsConfig, parse_tls
from egressguard import opsconfig
from egressguard.model import Action
from egressguard.opsconfig import MetricsConfig
from egressguard.policy import yamlpos
from egressguard.policy.rules import (DETECTOR_CLASSES, DestinationCond, ProcessCond,
                                      RequestCond, RuleSpec, UserRef, detector_ref_matches, glob_problem, is_glob,
                                      parse_network, parse_port)
from egressguard.policy.yamlpos import YNode

MiB = 1024 * 1024
SEVERITIES = ("low", "medium", "high", "critical")
CONFIDENCES = ("low", "medium", "high")          # scan/pack.py CONFIDENCES


# --------------------------------------------------------------------------------------------
# The configuration (public interface)

@dataclass(frozen=True)
class ScopeConfig:
    cgroup: str                                   # relative to the cgroup2 mount, never "/"


@dataclass(frozen=True)
class ProxyConfig:
    listen: tuple[str, int] = ("127.0.0.1", 15001)
    listen6: tuple[str, int] = ("::1", 15001)
    bypass: tuple[str, ...] = ()                  # "127.0.0.1", "127.0.0.1:8080", "[::1]:8080"
    udp: str = "dns-only"                         # dns-only | allow | block
    dns_ports: tuple[int, ...] = (53,)
    mark: int = 0x4547
    sniff_timeout: float = 1.0                    # seconds
    max_held_bytes: int = 16 * MiB
    max_held_total: int = opsconfig.DEFAULT_MAX_HELD_TOTAL   # all flows together


@dataclass(frozen=True)
class ApprovalsConfig:
    socket: str = "/run/egressguard/approvals.sock"
    approvers: tuple[UserRef, ...] = ()
    timeout: float = 120.0                        # seconds: the inline wait (inline_wait)
    on_timeout: str = "deny"                      # deny | allow
    team: ApprovalSettings = ApprovalSettings()   # request TTL, grants, identities, mTLS, chat

    @property
    def approver_uids(self) -> frozenset[int]:
        return frozenset(a.uid for a in self.approvers)


@dataclass(frozen=True)
class AuditConfig:
    path: str = "/var/log/egressguard/audit.jsonl"
    rotate_size: int = 64 * MiB                   # bytes; 0: never rotate
    sinks: tuple[Any, ...] = ()                   # audit.sinkconfig.SinkSpec (issue 4)


@dataclass(frozen=True)
class CustomDetector:
    """A `detectors.custom[]` item as written, plus where it was written.

    The scanner's pack loader validates the semantics (validator names, Hyperscan
    compatibility); `line`, `field` and `key_lines` let it report its own problems as
    `ConfigIssue(config.source, item.line_of("pattern"), item.field + ".pattern", ...)`."""

    id: str
    cls: str
    pattern: str
    validator: str | None = None
    severity: str | None = None
    max_width: int | None = None
    line: int = 0
    field: str = ""                                        # e.g. "detectors.custom[0]"
    key_lines: Mapping[str, int] = dc_field(default_factory=dict)
    raw: Mapping[str, Any] = dc_field(default_factory=dict)   # the item as plain YAML values

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


@dataclass(frozen=True)
class DetectorsConfig:
    packs: tuple[str, ...] = ()                   # absolute paths (relative ones resolved
                                                  # against the config file's directory)
    custom: tuple[CustomDetector, ...] = ()
    disable: tuple[str, ...] = ()                 # detector id globs
    source: str = ""                              # the config file, for the pack loader's issues
    prefixes: Mapping[str, str] = dc_field(default_factory=dict, hash=False)  # path -> id prefix
    phone_region: str = "US"                      # region for national-format phone numbers

    def is_disabled(self, detector_id: str) -> bool:
        return any(fnmatch.fnmatchcase(detector_id, g) for g in self.disable)


@dataclass(frozen=True)
class Config:
    source: str
    scope: ScopeConfig
    proxy: ProxyConfig = ProxyConfig()
    approvals: ApprovalsConfig = ApprovalsConfig()
    audit: AuditConfig = AuditConfig()
    state_dir: str = "/var/lib/egressguard"
    default_action: Action = Action.ALLOW
    detectors: DetectorsConfig = DetectorsConfig()
    rules: tuple[RuleSpec, ...] = ()
    tls: TlsConfig = TlsConfig()
    ledger: LedgerConfig = LedgerConfig()
    failure_mode: str = "closed"                  # closed | open (see opsconfig.py)
    metrics: MetricsConfig = MetricsConfig()


# The hook that tells us which detector ids exist: a fixed set, or a function of the
# `detectors` section (so built-ins + packs + custom can be computed by the scanner). It must
# return every id that exists, *before* `detectors.disable` is applied (we apply it, so we can
# also report a `disable` glob that matches nothing). It may raise ConfigError: its issues are
# merged into ours (the pack loader's own problems, with their lines); then it is asked again
# without the custom detectors, so the rules' references are still checked in the same pass.
DetectorHook = Union[Callable[[DetectorsConfig], Iterable[str]], Iterable[str], None]
UserResolver = Callable[[str], "int | None"]


def system_user(name: str) -> int | None:
    """The default UserResolver: the host's passwd database."""
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


def load_config(path: str | os.PathLike[str], known_detectors: DetectorHook = None, *,
                resolve_user: UserResolver = system_user) -> Config:
    """Read and validate `path`. Raises ConfigError listing every problem."""
    config, issues = _load(path, known_detectors, resolve_user)
    if issues or config is None:
        raise ConfigError(issues)
    return config


def check_config(path: str | os.PathLike[str], known_detectors: DetectorHook = None, *,
                 resolve_user: UserResolver = system_user) -> list[ConfigIssue]:
    """Every problem in `path` (empty list: the file is valid). For `egressguard check`."""
    return _load(path, known_detectors, resolve_user)[1]


def config_from_text(text: str, source: str = "<config>", known_detectors: DetectorHook = None,
                     *, resolve_user: UserResolver = system_user,
                     base_dir: str | None = None) -> Config:
    """Like load_config, from a string (tests, `egressguard check -`)."""
    config, issues = _parse(text, source, base_dir or os.getcwd(), known_detectors, resolve_user)
    if issues or config is None:
        raise ConfigError(issues)
    return config


def _load(path: str | os.PathLike[str], known: DetectorHook,
          resolve_user: UserResolver) -> tuple[Config | None, list[ConfigIssue]]:
    source = os.fspath(path)
    try:
        with open(source, "rb") as f:
            data = f.read()
    except OSError as exc:
        return None, [ConfigIssue(source, None, "", f"cannot read: {exc.strerror or exc}")]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        return None, [ConfigIssue(source, line, "", "not valid UTF-8")]
    base_dir = os.path.dirname(os.path.abspath(source))
    return _parse(text, source, base_dir, known, resolve_user)


# --------------------------------------------------------------------------------------------
# The schema walk

def _parse(text: str, source: str, base_dir: str, known: DetectorHook,
           resolve_user: UserResolver) -> tuple[Config | None, list[ConfigIssue]]:
    try:
        root, problems = yamlpos.load(text)
    except yamlpos.YamlSyntaxError as exc:
        msg = f"column {exc.col}: {exc.message}" if exc.col else exc.message
        return None, [ConfigIssue(source, exc.line, "", f"invalid YAML: {msg}")]
    c = _Checker(source, resolve_user, base_dir)
    for p in problems:
        c.issue(p.line, "", p.message)
    if root is None:
        c.issue(None, "", "the file is empty (scope.cgroup at least is required)")
        return None, c.issues
    top = c.mapping(root, "", TOP_KEYS)
    if top is None:
        return None, c.issues

    scope = _scope(c, top.get("scope"), root)
    proxy = _proxy(c, top.get("proxy"))
    approvals = _approvals(c, top.get("approvals"))
    audit = _audit(c, top.get("audit"))
    state_dir = c.path(top["state_dir"], "state_dir") if "state_dir" in top \
        else Config.state_dir
    default_action = Action.ALLOW
    if "default_action" in top:
        default_action = c.choice(top["default_action"], "default_action",
                                  ("allow", "block", "hold"), Action, hint={
                                      "mask": "mask needs `detected`: use it in a rule"})
    detectors, refs_checkable, broken_ids = _detectors(c, top.get("detectors"), source,
                                                       base_dir)
    rules = _rules(c, top.get("rules"))
    tls = parse_tls(c, top.get("tls"), _process_cond)
    ledger = parse_ledger(c, top.get("ledger"))
    failure_mode = opsconfig.failure_mode(c, top.get("failure_mode"))
    metrics = opsconfig.metrics(c, top.get("metrics"))

    _cross_checks(c, top, rules, default_action, approvals)
    if refs_checkable and known is not None:
        _check_detector_refs(c, known, detectors, rules, broken_ids)

    if c.issues:
        return None, c.issues
    return Config(
        source=source, scope=scope, proxy=proxy, approvals=approvals, audit=audit,
        state_dir=state_dir, default_action=default_action or Action.ALLOW, detectors=detectors,
        rules=tuple(r for _, r, _ in rules), tls=tls, ledger=ledger, failure_mode=failure_mode,
        metrics=metrics,
    ), []


TOP_KEYS = ("scope", "proxy", "approvals", "audit", "state_dir", "default_action", "detectors",
            "rules", "tls", "ledger", "failure_mode", "metrics")
PROXY_KEYS = ("listen", "listen6", "bypass", "udp", "dns_ports", "mark", "sniff_timeout",
              "max_held_bytes", "max_held_total")
APPROVAL_KEYS = ("socket", "approvers", "timeout", "on_timeout") + SETTINGS_KEYS
DETECTOR_KEYS = ("packs", "custom", "disable", "phone_region")
CUSTOM_KEYS = ("id", "class", "pattern", "validator", "severity", "max_width", "keywords",
               "entropy", "confidence")
RULE_KEYS = ("name", "process", "destination", "detected", "action", "reason", "approvals",
             "min_confidence", "severity", "request")
PROCESS_KEYS = ("exe", "comm", "user", "unit", "cgroup")
DEST_KEYS = ("cidr", "port", "host", "provider", "alpn")


def _scope(c: "_Checker", node: YNode | None, root: YNode) -> ScopeConfig:
    if node is None:
        c.issue(root.line, "scope", "required: scope: {cgroup: /your-agents-cgroup}")
        return ScopeConfig("")
    m = c.mapping(node, "scope", ("cgroup",))
    if m is None:
        return ScopeConfig("")
    if "cgroup" not in m:
        c.issue(node.line, "scope.cgroup", "required (a path under the cgroup2 mount, e.g. "
                                           "/ai-agents)")
        return ScopeConfig("")
    path = c.string(m["cgroup"], "scope.cgroup")
    if path is None:
        return ScopeConfig("")
    parts = [p for p in path.split("/") if p]
    if not path.startswith("/"):
        c.issue(m["cgroup"].line, "scope.cgroup",
                f"{path!r} must start with '/' (it is relative to the cgroup2 mount)")
    elif any(p in (".", "..") for p in parts):
        c.issue(m["cgroup"].line, "scope.cgroup", f"{path!r} must not contain '.' or '..'")
    elif not parts:
        c.issue(m["cgroup"].line, "scope.cgroup",
                "refusing the root cgroup '/': it would redirect every connection of this "
                "host, egressguard's own included; create a child cgroup for the agents")
    return ScopeConfig("/" + "/".join(parts))


def _proxy(c: "_Checker", node: YNode | None) -> ProxyConfig:
    if node is None:
        return ProxyConfig()
    m = c.mapping(node, "proxy", PROXY_KEYS)
    if m is None:
        return ProxyConfig()
    d = ProxyConfig()
    listen = c.listen(m["listen"], "proxy.listen", 4) if "listen" in m else d.listen
    listen = listen or d.listen
    listen6 = (c.listen(m["listen6"], "proxy.listen6", 6) if "listen6" in m else None) \
        or ("::1", listen[1])
    bypass = tuple(b for b in (c.bypass(n, f) for n, f in c.items(m.get("bypass"),
                                                                  "proxy.bypass", empty_ok=True))
                   if b)
    udp = c.choice(m["udp"], "proxy.udp", ("dns-only", "allow", "block")) if "udp" in m \
        else d.udp
    dns_ports = d.dns_ports
    if "dns_ports" in m:
        ports = []
        for n, f in c.items(m["dns_ports"], "proxy.dns_ports", empty_ok=True):
            if isinstance(n.value, bool) or not isinstance(n.value, int) or \
                    not 1 <= n.value <= 65535:
                c.issue(n.line, f, f"{n.value!r} is not a port (1-65535)")
            else:
                ports.append(n.value)
        dns_ports = tuple(ports)
    mark = d.mark
    if "mark" in m:
        v = m["mark"].value
        if m["mark"].kind != "scalar" or isinstance(v, bool) or not isinstance(v, int) \
                or not 1 <= v <= 0xFFFFFFFF:
            c.issue(m["mark"].line, "proxy.mark",
                    f"{m['mark'].plain()!r} is not a socket mark (an integer 1-0xffffffff)")
        else:
            mark = v
    sniff = c.duration(m["sniff_timeout"], "proxy.sniff_timeout") if "sniff_timeout" in m \
        else None
    held = c.size(m["max_held_bytes"], "proxy.max_held_bytes") if "max_held_bytes" in m \
        else None
    held = held or d.max_held_bytes
    return ProxyConfig(listen=listen, listen6=listen6, bypass=bypass, udp=udp or d.udp,
                       dns_ports=dns_ports, mark=mark, sniff_timeout=sniff or d.sniff_timeout,
                       max_held_bytes=held,
                       max_held_total=opsconfig.max_held_total(c, m.get("max_held_total"), held))


def _approvals(c: "_Checker", node: YNode | None) -> ApprovalsConfig:
    d = ApprovalsConfig()
    if node is None:
        return d
    m = c.mapping(node, "approvals", APPROVAL_KEYS)
    if m is None:
        return d
    socket = c.path(m["socket"], "approvals.socket") if "socket" in m else d.socket
    resolved = [c.user(n, f) for n, f in c.items(m.get("approvers"), "approvals.approvers",
                                                  empty_ok=True)]
    approvers = tuple(u for u in resolved if u)
    if len(approvers) < len(resolved):
        c.incomplete.add("approvals.approvers")
    timeout = c.duration(m["timeout"], "approvals.timeout") if "timeout" in m else None
    on_timeout = c.choice(m["on_timeout"], "approvals.on_timeout", ("deny", "allow")) \
        if "on_timeout" in m else None
    team = parse_settings(c, m)
    return ApprovalsConfig(socket=socket or d.socket, approvers=approvers,
                           timeout=team.inline_wait or timeout or d.timeout,
                           on_timeout=on_timeout or d.on_timeout, team=team)


def _audit(c: "_Checker", node: YNode | None) -> AuditConfig:
    from egressguard.audit.sinkconfig import parse_sinks
    if node is None:
        return AuditConfig()
    m = c.mapping(node, "audit", ("path", "rotate_size", "sinks"))
    if m is None:
        return AuditConfig()
    path = (c.path(m["path"], "audit.path") if "path" in m else None) or AuditConfig.path
    rotate = AuditConfig.rotate_size
    if "rotate_size" in m:
        rotate = 0 if m["rotate_size"].value == 0 else c.size(m["rotate_size"],
                                                               "audit.rotate_size")
    sinks = parse_sinks(c, m["sinks"], path) if "sinks" in m else ()
    return AuditConfig(path=path, rotate_size=rotate if rotate is not None else 0, sinks=sinks)


def _detectors(c: "_Checker", node: YNode | None, source: str,
               base_dir: str) -> tuple[DetectorsConfig, bool, frozenset[str]]:
    """Returns (section, refs checkable, ids of broken custom entries).

    The detector cross-checks (the pack loader's own checks of custom detectors, and the
    rules' references) run in the same pass as everything else, so `check` lists every
    problem at once. A custom entry with its own problem is left out of the section but its
    id still counts as declared, so no rule referring to it gets a false follow-on issue. Only
    a section that is not a mapping, or a pack that cannot be found, makes the ids unknowable:
    then the cross-checks are skipped (guessing would add false issues)."""
    if node is None:
        return DetectorsConfig(source=source), True, frozenset()
    m = c.mapping(node, "detectors", DETECTOR_KEYS)
    if m is None:
        return DetectorsConfig(source=source), False, frozenset()
    before = len(c.issues)
    packs: list[str] = []
    prefixes: dict[str, str] = {}
    for n, f in c.items(m.get("packs"), "detectors.packs", empty_ok=True):
        prefix = None
        if n.kind == "map":             # {path: rules.toml, prefix: secret.acme}
            pm = c.mapping(n, f, ("path", "prefix"))
            if pm is None or "path" not in pm:
                c.issue(n.line, f + ".path", "required: the pack file")
                continue
            if "prefix" in pm:
                prefix = c.string(pm["prefix"], f + ".prefix")
                if prefix is not None and not _DETECTOR_ID.match(prefix):
                    c.issue(pm["prefix"].line, f + ".prefix",
                            f"{prefix!r} must look like 'secret.acme' (words joined by dots)")
            n, f = pm["path"], f + ".path"
        p = c.string(n, f)
        if p is None:
            continue
        full = p if os.path.isabs(p) else os.path.normpath(os.path.join(base_dir, p))
        if not os.path.isfile(full):
            c.issue(n.line, f, f"no such file: {full}")
        packs.append(full)
        if prefix:
            prefixes[full] = prefix.lower()
    packs_ok = len(c.issues) == before
    custom: list[CustomDetector] = []
    seen: dict[str, int] = {}
    broken: set[str] = set()
    for n, f in c.items(m.get("custom"), "detectors.custom", empty_ok=True):
        det = _custom_detector(c, n, f)
        if det is None:
            raw_id = n.value.get("id") if n.kind == "map" else None
            if raw_id is not None and raw_id.kind == "scalar" and isinstance(raw_id.value, str):
                broken.add(raw_id.value)
            continue
        if det.id in seen:
            c.issue(det.line_of("id"), f + ".id",
                    f"duplicate detector id {det.id!r} (first on line {seen[det.id]})")
        seen.setdefault(det.id, det.line_of("id"))
        custom.append(det)
    disable: list[str] = []
    for n, f in c.items(m.get("disable"), "detectors.disable", empty_ok=True):
        g = c.glob(n, f)
        if g is not None:
            disable.append(g)
    region = "US"
    if "phone_region" in m:
        region = (c.string(m["phone_region"], "detectors.phone_region") or "US").upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            c.issue(m["phone_region"].line, "detectors.phone_region",
                    f"{region!r} is not a region code (e.g. US, GB, DE)")
            region = "US"
    return (DetectorsConfig(tuple(packs), tuple(custom), tuple(disable), source,
                            MappingProxyType(prefixes), region),
            packs_ok, frozenset(broken))


_DETECTOR_ID = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)+$")


def _custom_detector(c: "_Checker", node: YNode, f: str) -> CustomDetector | None:
    m = c.mapping(node, f, CUSTOM_KEYS)
    if m is None:
        return None
    ok = True
    for key in ("id", "class", "pattern"):
        if key not in m:
            c.issue(node.line, f"{f}.{key}", "required")
            ok = False
    vals: dict[str, Any] = {}
    for key in ("id", "class", "pattern", "validator", "severity"):
        if key in m:
            vals[key] = c.string(m[key], f"{f}.{key}")
            ok = ok and vals[key] is not None
    if vals.get("id") and not _DETECTOR_ID.match(vals["id"]):
        c.issue(m["id"].line, f"{f}.id", f"{vals['id']!r} must look like 'custom.name' "
                                         "(letters, digits, '_', '-', at least one '.')")
        ok = False
    if vals.get("class") and vals["class"] not in DETECTOR_CLASSES:
        c.issue(m["class"].line, f"{f}.class",
                f"{vals['class']!r} is not a class (one of: {', '.join(sorted(DETECTOR_CLASSES))})")
        ok = False
    if vals.get("severity") and vals["severity"] not in SEVERITIES:
        c.issue(m["severity"].line, f"{f}.severity",
                f"{vals['severity']!r} is not a severity (one of: {', '.join(SEVERITIES)})")
        ok = False
    if vals.get("pattern") is not None:
        try:
            re.compile(vals["pattern"].encode())
        except (re.error, ValueError) as exc:
            c.issue(m["pattern"].line, f"{f}.pattern", f"invalid regular expression: {exc}")
            ok = False
        if vals["pattern"] == "":
            c.issue(m["pattern"].line, f"{f}.pattern", "empty pattern")
            ok = False
    max_width = None
    if "max_width" in m:
        v = m["max_width"].value
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            c.issue(m["max_width"].line, f"{f}.max_width",
                    f"{m['max_width'].plain()!r} is not a positive integer")
            ok = False
        else:
            max_width = v
    if not ok:
        return None
    return CustomDetector(
        id=vals["id"], cls=vals["class"], pattern=vals["pattern"],
        validator=vals.get("validator"), severity=vals.get("severity"), max_width=max_width,
        line=node.line, field=f, key_lines=MappingProxyType(dict(node.key_lines)),
        raw=MappingProxyType(node.plain()))


def _rules(c: "_Checker", node: YNode | None) -> list[tuple[int, RuleSpec, YNode]]:
    """Valid rules with their index in the file (so later checks name the right rules[i])."""
    out: list[tuple[int, RuleSpec, YNode]] = []
    if node is None:
        return out
    if node.kind != "seq":
        c.issue(node.line, "rules", f"expected a list of rules, got {node.type_name}")
        return out
    names: dict[str, int] = {}
    for i, rn in enumerate(node.value):
        f = f"rules[{i}]"
        rule = _rule(c, rn, f, names)
        if rule is not None:
            out.append((i, rule, rn))
    return out


def _rule(c: "_Checker", node: YNode, f: str, names: dict[str, int]) -> RuleSpec | None:
    m = c.mapping(node, f, RULE_KEYS)
    if m is None:
        return None
    ok = True
    name = ""
    if "name" not in m:
        c.issue(node.line, f"{f}.name", "required (a unique name for the rule)")
        ok = False
    else:
        name = c.string(m["name"], f"{f}.name") or ""
        if not name:
            ok = False
            if m["name"].value == "":
                c.issue(m["name"].line, f"{f}.name", "empty name")
        elif name == "default":
            c.issue(m["name"].line, f"{f}.name",
                    "'default' is reserved (it names the default_action verdict)")
            ok = False
        elif name in names:
            c.issue(m["name"].line, f"{f}.name",
                    f"duplicate rule name {name!r} (first on line {names[name]})")
            ok = False
        else:
            names[name] = m["name"].line
    action = None
    if "action" not in m:
        c.issue(node.line, f"{f}.action", "required (allow, block, mask or hold)")
    else:
        action = c.choice(m["action"], f"{f}.action", ("allow", "block", "mask", "hold"), Action)
    detected: tuple[str, ...] | None = None
    if "detected" in m:
        refs = []
        for n, ff in c.items(m["detected"], f"{f}.detected"):
            g = c.glob(n, ff)
            if g is not None:
                refs.append((g, n.line, ff))
        detected = tuple(g for g, _, _ in refs)
    if action is Action.MASK and "detected" not in m:
        c.issue(m["action"].line, f"{f}.action",
                "mask needs `detected` (which detections to mask)")
        ok = False
    process = _process_cond(c, m["process"], f"{f}.process") if "process" in m else None
    dest = _dest_cond(c, m["destination"], f"{f}.destination") if "destination" in m else None
    reason = ""
    if "reason" in m:
        reason = c.string(m["reason"], f"{f}.reason") or ""
    quorum = parse_quorum(c, m["approvals"], f"{f}.approvals") if "approvals" in m else None
    if quorum is not None and action is not None and action is not Action.HOLD:
        c.issue(m["approvals"].line, f"{f}.approvals",
                "only a hold rule has approvals (this rule's action is "
                f"{action.value})")
    min_confidence, severity = _finding_filters(c, m, f)
    if (min_confidence or severity) and "detected" not in m:
        c.issue(node.line, f"{f}.detected", "min_confidence and severity filter findings: "
                                            "say which with `detected` (e.g. [secret, pii])")
        ok = False
    request = None
    if "request" in m:
        from egressguard.catalog.conditions import parse_request_cond
        request = parse_request_cond(c, m["request"], f"{f}.request")
        if "detected" in m:
            c.issue(m["request"].line, f"{f}.request",
                    "a rule has `request` or `detected`, not both: write two rules")
            ok = False
        if action is Action.MASK:
            c.issue(m["action"].line, f"{f}.action", "a request rule cannot mask")
            ok = False
    if not ok or action is None:
        return None
    return RuleSpec(name=name, action=action, process=process, destination=dest,
                    detected=detected, reason=reason, line=node.line, approvals=quorum,
                    min_confidence=min_confidence, severity=severity,
                    request=request)


def _finding_filters(c: "_Checker", m: dict[str, YNode],
                     f: str) -> tuple[str | None, tuple[str, ...]]:
    """`min_confidence: medium` and `severity: [high, critical]` of a content rule."""
    min_confidence = None
    if "min_confidence" in m:
        min_confidence = c.choice(m["min_confidence"], f"{f}.min_confidence", CONFIDENCES)
    severity = tuple(v for v in (c.choice(n, ff, SEVERITIES) for n, ff in
                                 c.items(m.get("severity"), f"{f}.severity")) if v)
    return min_confidence, severity


def _process_cond(c: "_Checker", node: YNode, f: str) -> ProcessCond | None:
    m = c.mapping(node, f, PROCESS_KEYS)
    if m is None:
        return None
    globs: dict[str, tuple[str, ...]] = {}
    for key in ("exe", "comm", "unit", "cgroup"):
        if key in m:
            globs[key] = tuple(g for g in (c.glob(n, ff) for n, ff in
                                           c.items(m[key], f"{f}.{key}")) if g is not None)
    users: tuple[UserRef, ...] = ()
    if "user" in m:
        users = tuple(u for u in (c.user(n, ff) for n, ff in c.items(m["user"], f"{f}.user"))
                      if u)
    return ProcessCond(user=users, **globs)


def _dest_cond(c: "_Checker", node: YNode, f: str) -> DestinationCond | None:
    m = c.mapping(node, f, DEST_KEYS)
    if m is None:
        return None
    cidrs, ports, hosts = [], [], []
    for n, ff in c.items(m.get("cidr"), f"{f}.cidr", absent_ok=True):
        v = parse_network(n.value if n.kind == "scalar" else n.plain())
        if isinstance(v, str):
            c.issue(n.line, ff, v)
        else:
            cidrs.append(v)
    for n, ff in c.items(m.get("port"), f"{f}.port", absent_ok=True):
        p = parse_port(n.value if n.kind == "scalar" else n.plain())
        if isinstance(p, str):
            c.issue(n.line, ff, p)
        else:
            ports.append(p)
    for n, ff in c.items(m.get("host"), f"{f}.host", absent_ok=True):
        g = c.glob(n, ff, host=True)
        if g is not None:
            hosts.append(g.lower().rstrip("."))
    from egressguard.catalog.conditions import parse_providers
    providers = parse_providers(c, m.get("provider"), f"{f}.provider")
    alpn = tuple(g for g in (c.glob(n, ff) for n, ff in c.items(m.get("alpn"), f"{f}.alpn",
                                                               absent_ok=True)) if g)
    return DestinationCond(tuple(cidrs), tuple(ports), tuple(hosts), providers, alpn)


def _cross_checks(c: "_Checker", top: dict[str, YNode],
                  rules: list[tuple[int, RuleSpec, YNode]],
                  default_action: Action | None, approvals: ApprovalsConfig) -> None:
    """Problems that need more than one field."""
    holds = [n.line for _, r, n in rules if r.action is Action.HOLD]
    if default_action is Action.HOLD:
        holds.insert(0, top["default_action"].line)
    if holds and not approvals.approvers and "approvals" not in c.bad_sections:
        line = top["approvals"].line if "approvals" in top else holds[0]
        c.issue(line, "approvals.approvers",
                "the policy holds flows but nobody may approve them: list approvers")
    for i, r, n in rules:
        # an incomplete global list (e.g. a user missing on this host) is reported already
        if r.approvals is not None and "approvals.approvers" not in c.incomplete:
            check_quorum_fits(c, n.line, f"rules[{i}].approvals", r.approvals,
                              len({a.uid for a in approvals.approvers}))


def _check_detector_refs(c: "_Checker", known: DetectorHook, detectors: DetectorsConfig,
                         rules: list[tuple[int, RuleSpec, YNode]],
                         broken_ids: frozenset[str] = frozenset()) -> None:
    if callable(known):
        try:
            ids = set(known(detectors))
        except ConfigError as exc:
            c.issues.extend(exc.issues)     # e.g. a custom detector the pack loader refuses
            try:                            # the rest still answers the rules' references
                ids = set(known(dc_replace(detectors, custom=())))
            except ConfigError:
                return                      # a pack's own problem: its ids are unknowable
    else:
        ids = set(known)  # type: ignore[arg-type]
    ids.update(d.id for d in detectors.custom)
    ids.update(broken_ids)                  # reported already; not "unknown" to the rules
    custom_cls = {d.id: d.cls for d in detectors.custom}

    disabled = {i for i in ids if detectors.is_disabled(i)}
    enabled = ids - disabled
    classes = {custom_cls.get(i, i.split(".", 1)[0]) for i in enabled}
    all_classes = DETECTOR_CLASSES | {custom_cls.get(i, i.split(".", 1)[0]) for i in ids}

    section = c.top_lines.get("detectors")
    for i, g in enumerate(detectors.disable):
        if not any(fnmatch.fnmatchcase(x, g) for x in ids):
            c.issue(c.item_lines.get(f"detectors.disable[{i}]", section), f"detectors.disable[{i}]",
                    f"{g!r} matches no known detector{_suggest(g, ids)}")

    for ri, rule, rnode in rules:
        for j, ref in enumerate(rule.detected or ()):
            f = f"rules[{ri}].detected[{j}]"
            line = c.item_lines.get(f, rnode.line)
            if "." not in ref and not is_glob(ref):
                if ref not in all_classes:
                    c.issue(line, f, f"{ref!r} is neither a detector class "
                                     f"({', '.join(sorted(all_classes))}) nor a detector id"
                                     f"{_suggest(ref, ids | all_classes)}")
                elif ref not in classes:
                    c.issue(line, f, f"every {ref!r} detector is disabled: the rule can never "
                                     "match")
                continue
            hits = {x for x in ids if detector_ref_matches(ref, x, "")}
            if not hits:
                c.issue(line, f, f"{ref!r} matches no known detector{_suggest(ref, ids)}")
            elif not hits & enabled:
                c.issue(line, f, f"{ref!r} only matches disabled detectors: the rule can never "
                                 "match")


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --------------------------------------------------------------------------------------------
# Typed field readers that record issues instead of raising

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB)?\s*$")
_SIZE_UNITS = {"B": 1, "KiB": 1024, "MiB": MiB, "GiB": 1024 * MiB, None: 1}


class _Checker:
    """Collects ConfigIssues. Every reader returns None (and records an issue) on bad input."""

    def __init__(self, source: str, resolve_user: UserResolver, base_dir: str):
        self.source = source
        self.base_dir = base_dir
        self.resolve_user = resolve_user
        self.issues: list[ConfigIssue] = []
        self.top_lines: dict[str, int] = {}
        self.item_lines: dict[str, int] = {}
        self.bad_sections: set[str] = set()
        # lists that lost entries to issues reported already (e.g. a user missing here):
        # checks that count their entries would only add follow-on noise
        self.incomplete: set[str] = set()

    def issue(self, line: int | None, field_: str, message: str) -> None:
        self.issues.append(ConfigIssue(self.source, line, field_, message))
        if field_:
            self.bad_sections.add(field_.split(".", 1)[0].split("[", 1)[0])

    def mapping(self, node: YNode, f: str, allowed: Sequence[str]) -> dict[str, YNode] | None:
        if node.kind != "map":
            if node.kind == "scalar" and node.value is None:
                self.issue(node.line, f, f"is empty: expected a mapping with keys "
                                         f"{', '.join(allowed)}")
            else:
                self.issue(node.line, f, f"expected a mapping, got {node.type_name}")
            return None
        for key in node.value:
            if key not in allowed:
                self.issue(node.key_lines[key], f"{f}.{key}" if f else key,
                           f"unknown key{_suggest(key, allowed)}")
        if not f:
            self.top_lines = dict(node.key_lines)
        return {k: v for k, v in node.value.items() if k in allowed}

    def items(self, node: YNode | None, f: str, *, empty_ok: bool = False,
              absent_ok: bool = True) -> list[tuple[YNode, str]]:
        """A list (or, as a shorthand, a single scalar) -> [(item node, field path)].

        An empty list is refused for rule conditions (`port: []` would match nothing, which is
        never what was meant) and allowed for lists like `bypass`."""
        if node is None:
            return []
        if node.kind == "seq":
            if not node.value and not empty_ok:
                self.issue(node.line, f, "empty list: give at least one item or remove the key")
            out = [(n, f"{f}[{i}]") for i, n in enumerate(node.value)]
        elif node.kind == "scalar" and node.value is not None:
            out = [(node, f"{f}[0]")]
        elif node.kind == "scalar" and empty_ok:
            return []
        else:
            self.issue(node.line, f, f"expected a list, got {node.type_name}")
            return []
        for n, ff in out:
            self.item_lines[ff] = n.line
        return out

    def string(self, node: YNode, f: str) -> str | None:
        if node.kind != "scalar" or not isinstance(node.value, str):
            self.issue(node.line, f, f"expected a string, got {node.type_name}")
            return None
        return node.value

    def path(self, node: YNode, f: str) -> str | None:
        """A path; a relative one is taken relative to the config file's directory (so a demo
        config can keep its state beside it), never to the daemon's working directory."""
        s = self.string(node, f)
        if s is None:
            return None
        if s == "":
            self.issue(node.line, f, "empty path")
            return None
        return s if os.path.isabs(s) else os.path.normpath(os.path.join(self.base_dir, s))

    def choice(self, node: YNode, f: str, choices: Sequence[str], conv: Callable[[str], Any]
               = str, hint: Mapping[str, str] | None = None) -> Any:
        v = node.value if node.kind == "scalar" else None
        if isinstance(v, str) and v in choices:
            return conv(v)
        shown = node.plain()
        if isinstance(v, str) and hint and v in hint:
            self.issue(node.line, f, f"{v!r}: {hint[v]}")
        elif isinstance(v, bool):
            self.issue(node.line, f, f"got a YAML boolean (did you write on/off/yes/no?); "
                                     f"expected one of: {', '.join(choices)}")
        else:
            self.issue(node.line, f, f"{shown!r} is not one of: {', '.join(choices)}"
                                     f"{_suggest(str(v), choices) if isinstance(v, str) else ''}")
        return None

    def glob(self, node: YNode, f: str, *, host: bool = False) -> str | None:
        s = self.string(node, f)
        if s is None:
            return None
        problem = glob_problem(s, host=host)
        if problem:
            self.issue(node.line, f, f"{s!r}: {problem}")
            return None
        return s

    def duration(self, node: YNode, f: str) -> float | None:
        v = node.value if node.kind == "scalar" else None
        secs: float | None = None
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            secs = float(v)
        elif isinstance(v, str) and (m := _DURATION.match(v)):
            secs = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        if secs is None or secs != secs or secs in (float("inf"),):
            self.issue(node.line, f, f"{node.plain()!r} is not a duration "
                                     "(e.g. 500ms, 1s, 2m, 1h, or a number of seconds)")
            return None
        if secs <= 0:
            self.issue(node.line, f, f"{node.plain()!r}: must be more than zero")
            return None
        return secs

    def size(self, node: YNode, f: str) -> int | None:
        v = node.value if node.kind == "scalar" else None
        n: int | None = None
        if isinstance(v, int) and not isinstance(v, bool):
            n = v
        elif isinstance(v, str) and (m := _SIZE.match(v)):
            n = int(m.group(1)) * _SIZE_UNITS[m.group(2)]
        if n is None:
            self.issue(node.line, f, f"{node.plain()!r} is not a size "
                                     "(e.g. 64KiB, 16MiB, 1GiB, or a number of bytes)")
            return None
        if n <= 0:
            self.issue(node.line, f, f"{node.plain()!r}: must be more than zero")
            return None
        return n

    def listen(self, node: YNode, f: str, family: int,
               role: str = "the proxy") -> tuple[str, int] | None:
        s = self.string(node, f)
        if s is None:
            return None
        port_eg = 9464 if role == "metrics" else 15001     # not the proxy's port for metrics
        example = f"127.0.0.1:{port_eg}" if family == 4 else f"[::1]:{port_eg}"
        m = re.fullmatch(r"\[([^\]]+)\]:(\d+)" if family == 6 else r"([^:\[\]]+):(\d+)", s)
        try:
            addr = ipaddress.ip_address(m.group(1)) if m else None
        except ValueError:
            addr = None
        if m is None or addr is None or addr.version != family:
            self.issue(node.line, f, f"{s!r} is not an IPv{family} address:port like {example!r}")
            return None
        port = int(m.group(2))
        if not 1 <= port <= 65535:
            self.issue(node.line, f, f"{s!r}: port must be 1-65535")
            return None
        if not addr.is_loopback:
            # The probes send guarded connections here; a non-loopback listener would also
            # expose the proxy (and the agents' traffic) to the network.
            self.issue(node.line, f, f"{s!r}: {role} must listen on a loopback address, "
                                     f"e.g. {example!r}")
            return None
        return str(addr), port

    def bypass(self, node: YNode, f: str) -> str | None:
        """A loopback address or address:port. Anything else is refused: a non-loopback bypass
        would let guarded processes talk to the world unscanned."""
        s = self.string(node, f)
        if s is None:
            return None
        host, port = s, None
        if m := re.fullmatch(r"\[([^\]]+)\]:(\d+)", s):
            host, port = m.group(1), int(m.group(2))
        elif s.count(":") == 1:
            host, _, p = s.partition(":")
            port = int(p) if p.isdigit() else -1
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            self.issue(node.line, f, f"{s!r} is not an IP address or address:port")
            return None
        if port is not None and not 1 <= port <= 65535:
            self.issue(node.line, f, f"{s!r}: port must be 1-65535")
            return None
        if not addr.is_loopback:
            self.issue(node.line, f, f"{s!r} is not a loopback address: only loopback may "
                                     "bypass the proxy")
            return None
        return s

    def user(self, node: YNode, f: str) -> UserRef | None:
        v = node.value if node.kind == "scalar" else None
        if isinstance(v, int) and not isinstance(v, bool):
            if v < 0:
                self.issue(node.line, f, f"{v!r} is not a uid")
                return None
            return UserRef(str(v), v)
        if not isinstance(v, str) or not v:
            self.issue(node.line, f, f"expected a user name or uid:N, got {node.type_name}")
            return None
        if m := re.fullmatch(r"uid:(\d+)", v):
            return UserRef(v, int(m.group(1)))
        if v.startswith("uid:"):
            self.issue(node.line, f, f"{v!r}: write uid:N with a number")
            return None
        uid = self.resolve_user(v)
        if uid is None:
            self.issue(node.line, f, f"no such user {v!r} on this host (use uid:N for a uid)")
            return None
        return UserRef(v, uid, v)
