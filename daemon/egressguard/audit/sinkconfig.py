"""The `audit.sinks` section of the policy file: parsed and validated here, called from
config.py's `_audit` with its checker (so problems name file, line and field like every other
setting).

    audit:
      sinks:
        - {name: siem, type: syslog, address: "siem.example:6514", transport: tls,
           format: cef, tls: {ca: /etc/egressguard/siem-ca.pem}}
        - {name: splunk, type: hec, url: "https://splunk:8088/services/collector/event",
           token_file: /etc/egressguard/hec.token, index: security}
        - {name: beats, type: file, path: /var/log/egressguard/ship.jsonl, format: ecs}
        - {name: journal, type: stdout}
"""

from __future__ import annotations

import ipaddress
import os
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from egressguard.audit.formats import FORMAT_NAMES
from egressguard.audit.formats.rfc5424 import FACILITIES

SINK_TYPES = ("syslog", "hec", "file", "stdout")
COMMON_KEYS = ("name", "type", "format", "batch", "retry_initial", "retry_max")
TYPE_KEYS = {
    "syslog": ("address", "transport", "tls", "facility", "app_name"),
    "hec": ("url", "token", "token_file", "index", "source", "sourcetype", "host", "tls"),
    "file": ("path",),
    "stdout": (),
}
TLS_KEYS = ("ca", "cert", "key", "server_name", "verify")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class TlsSpec:
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    server_name: str | None = None
    verify: bool = True


@dataclass(frozen=True)
class SinkSpec:
    name: str
    type: str
    format: str = "json"
    batch: int = 500                    # events per delivery
    retry_initial: float = 0.5          # seconds; doubles after each failure ...
    retry_max: float = 30.0             # ... up to this
    address: tuple[str, int] | None = None       # syslog
    transport: str = "tcp"                        # syslog: tcp | tls | udp
    tls: TlsSpec | None = None                    # syslog tls, hec https
    facility: int = FACILITIES["local0"]
    app_name: str = "egressguard"
    url: str = ""                                 # hec
    token: str = field(default="", repr=False)    # hec: never printed
    index: str = ""
    source: str = "egressguard"
    sourcetype: str = ""
    hec_host: str = ""
    path: str = ""                                # file


def parse_sinks(c: Any, node: Any, audit_path: str) -> tuple[SinkSpec, ...]:
    """`c` is config._Checker; `node` the YNode of `audit.sinks`.

    Names and file paths are compared on the raw entries, so a duplicate is reported in the
    same pass as any other problem of the sinks involved."""
    out: list[SinkSpec] = []
    names: dict[str, int] = {}
    paths: dict[str, tuple[str, int]] = {}
    for item, f in c.items(node, "audit.sinks", empty_ok=True):
        spec = _sink(c, item, f, audit_path)
        duplicate = False
        name = _raw_text(item, "name")
        if name is not None:
            if name in names:
                c.issue(item.line, f"{f}.name", f"{name!r} is already the name of the sink "
                                                 f"on line {names[name]}: names must be unique")
                duplicate = True
            names.setdefault(name, item.line)
        path = _raw_text(item, "path") if _raw_text(item, "type") == "file" else None
        if path:
            full = path if os.path.isabs(path) else os.path.normpath(os.path.join(c.base_dir,
                                                                                  path))
            if full in paths:
                other, line = paths[full]
                c.issue(item.value["path"].line, f"{f}.path",
                        f"{full} is also written by the sink {other!r} on line {line}: two "
                        "writers would interleave their events; give each sink its own file")
                duplicate = True
            paths.setdefault(full, (name or "?", item.line))
        if spec is not None and not duplicate:
            out.append(spec)
    return tuple(out)


def _raw_text(item: Any, key: str) -> str | None:
    """The plain string under `key` of a sink entry, before validation; None otherwise."""
    if item.kind != "map":
        return None
    n = item.value.get(key)
    return n.value if n is not None and n.kind == "scalar" and isinstance(n.value, str) \
        else None


def _sink(c: Any, node: Any, f: str, audit_path: str) -> SinkSpec | None:
    if node.kind != "map":
        c.issue(node.line, f, f"expected a mapping (name, type, ...), got {node.type_name}")
        return None
    type_node = node.value.get("type")
    if type_node is None:
        c.issue(node.line, f"{f}.type", f"required: one of {', '.join(SINK_TYPES)}")
        return None
    kind = c.choice(type_node, f"{f}.type", SINK_TYPES)
    if kind is None:
        return None
    m = c.mapping(node, f, COMMON_KEYS + TYPE_KEYS[kind])
    if m is None:
        return None
    before = len(c.issues)
    args: dict[str, Any] = {"type": kind}
    if "name" not in m:
        c.issue(node.line, f"{f}.name", "required (it names the sink's cursor file and its "
                                        "status)")
    else:
        name = c.string(m["name"], f"{f}.name")
        if name is not None and not NAME.fullmatch(name):
            c.issue(m["name"].line, f"{f}.name", f"{name!r}: use letters, digits, '_', '.', "
                                                 "'-' (at most 64, starting with a letter or "
                                                 "digit)")
        args["name"] = name
    if "format" in m:
        args["format"] = c.choice(m["format"], f"{f}.format", FORMAT_NAMES)
    if "batch" in m:
        args["batch"] = _int(c, m["batch"], f"{f}.batch", 1, 10000)
    for key in ("retry_initial", "retry_max"):
        if key in m:
            args[key] = c.duration(m[key], f"{f}.{key}")
    if kind == "syslog":
        _syslog(c, node, m, f, args)
    elif kind == "hec":
        _hec(c, node, m, f, args)
    elif kind == "file":
        if "path" not in m:
            c.issue(node.line, f"{f}.path", "required: the file to append events to")
        else:
            path = c.path(m["path"], f"{f}.path")
            if path is not None and os.path.abspath(path) == os.path.abspath(audit_path):
                c.issue(m["path"].line, f"{f}.path", "is the audit log itself: give another "
                                                     "file")
            args["path"] = path
    if len(c.issues) > before:
        return None
    spec = SinkSpec(**{k: v for k, v in args.items() if v is not None})
    if spec.retry_initial > spec.retry_max:
        c.issue(node.line, f"{f}.retry_initial", "is longer than retry_max")
        return None
    return spec


def _syslog(c: Any, node: Any, m: dict[str, Any], f: str, args: dict[str, Any]) -> None:
    if "address" not in m:
        c.issue(node.line, f"{f}.address", 'required: "host:port" of the syslog receiver')
    else:
        args["address"] = _address(c, m["address"], f"{f}.address")
    transport = "tcp"
    if "transport" in m:
        transport = c.choice(m["transport"], f"{f}.transport", ("tcp", "tls", "udp")) or "tcp"
        args["transport"] = transport
    if "tls" in m:
        if transport != "tls":
            c.issue(m["tls"].line, f"{f}.tls", "only used with transport: tls")
        else:
            args["tls"] = _tls(c, m["tls"], f"{f}.tls")
    elif transport == "tls":
        args["tls"] = TlsSpec()
    if "facility" in m:
        fac = c.choice(m["facility"], f"{f}.facility", tuple(FACILITIES))
        args["facility"] = FACILITIES[fac] if fac else None
    if "app_name" in m:
        args["app_name"] = c.string(m["app_name"], f"{f}.app_name")


def _hec(c: Any, node: Any, m: dict[str, Any], f: str, args: dict[str, Any]) -> None:
    if "url" not in m:
        c.issue(node.line, f"{f}.url", "required: e.g. https://splunk:8088/services/collector"
                                       "/event")
    else:
        url = c.string(m["url"], f"{f}.url")
        parts = urllib.parse.urlsplit(url) if url else None
        if url is not None and (parts is None or parts.scheme not in ("http", "https")
                                or not parts.hostname):
            c.issue(m["url"].line, f"{f}.url", f"{url!r} is not an http:// or https:// URL")
        elif url is not None and parts is not None and parts.path in ("", "/"):
            url = url.rstrip("/") + "/services/collector/event"
        args["url"] = url
    if ("token" in m) == ("token_file" in m):
        c.issue(node.line, f"{f}.token", "give exactly one of token or token_file")
    elif "token" in m:
        args["token"] = c.string(m["token"], f"{f}.token")
    else:
        path = c.path(m["token_file"], f"{f}.token_file")
        if path is not None:
            try:
                with open(path, encoding="utf-8") as fh:
                    args["token"] = fh.read().strip()
            except OSError as exc:
                c.issue(m["token_file"].line, f"{f}.token_file",
                        f"cannot read {path}: {exc.strerror or exc}")
            else:
                if not args["token"]:
                    c.issue(m["token_file"].line, f"{f}.token_file", f"{path} is empty")
    for key, dest in (("index", "index"), ("source", "source"), ("sourcetype", "sourcetype"),
                      ("host", "hec_host")):
        if key in m:
            args[dest] = c.string(m[key], f"{f}.{key}")
    if "tls" in m:
        args["tls"] = _tls(c, m["tls"], f"{f}.tls")


def _tls(c: Any, node: Any, f: str) -> TlsSpec | None:
    m = c.mapping(node, f, TLS_KEYS)
    if m is None:
        return None
    args: dict[str, Any] = {}
    for key in ("ca", "cert", "key"):
        if key in m:
            path = c.path(m[key], f"{f}.{key}")
            if path is not None and not os.path.isfile(path):
                c.issue(m[key].line, f"{f}.{key}", f"{path}: no such file")
            args[key] = path
    if ("cert" in m) != ("key" in m):
        c.issue(node.line, f"{f}.cert", "a client certificate needs both cert and key")
    if "server_name" in m:
        args["server_name"] = c.string(m["server_name"], f"{f}.server_name")
    if "verify" in m:
        v = m["verify"].value if m["verify"].kind == "scalar" else None
        if not isinstance(v, bool):
            c.issue(m["verify"].line, f"{f}.verify", "expected true or false")
        else:
            args["verify"] = v
    return TlsSpec(**{k: v for k, v in args.items() if v is not None})


def _address(c: Any, node: Any, f: str) -> tuple[str, int] | None:
    s = c.string(node, f)
    if s is None:
        return None
    m = re.fullmatch(r"\[([^\]]+)\]:(\d+)", s) or re.fullmatch(r"([^:\[\]\s]+):(\d+)", s)
    if m is None:
        c.issue(node.line, f, f'{s!r} is not "host:port" (or "[ipv6]:port")')
        return None
    host, port = m.group(1), int(m.group(2))
    if s.startswith("["):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            c.issue(node.line, f, f"{host!r} is not an IPv6 address")
            return None
    if not 1 <= port <= 65535:
        c.issue(node.line, f, f"{s!r}: port must be 1-65535")
        return None
    return host, port


def _int(c: Any, node: Any, f: str, lo: int, hi: int) -> int | None:
    v = node.value if node.kind == "scalar" else None
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        c.issue(node.line, f, f"{node.plain()!r}: expected a whole number from {lo} to {hi}")
        return None
    return v
