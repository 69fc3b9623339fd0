"""The `tls:` section of the configuration (parsed with config.py's checker, so problems name
file, line and field like every other section)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from egressguard.policy.rules import ProcessCond

TLS_KEYS = ("intercept", "on_intercept_failure", "intercept_failure_ttl", "upstream_ca_file",
            "max_decoded_body")
INTERCEPT_KEYS = ("hosts", "processes")


@dataclass(frozen=True)
class TlsConfig:
    hosts: tuple[str, ...] = ()                  # SNI globs to open (empty: no interception)
    processes: tuple[ProcessCond, ...] = ()      # and only for these processes (empty: all)
    on_intercept_failure: str = "block"          # block | passthrough
    upstream_ca_file: str | None = None          # extra CA bundle for upstream verification
    max_decoded_body: int = 16 * 1024 * 1024
    intercept_failure_ttl: float = 3600.0       # how long one identity's refusal is remembered

    @property
    def enabled(self) -> bool:
        return bool(self.hosts)


def parse_tls(c: Any, node: Any, process_cond: Any) -> TlsConfig:
    """`c` is config._Checker; `process_cond(c, node, field)` parses a rule's `process:`."""
    d = TlsConfig()
    if node is None:
        return d
    m = c.mapping(node, "tls", TLS_KEYS)
    if m is None:
        return d
    hosts: list[str] = []
    procs: list[ProcessCond] = []
    if "intercept" in m:
        im = c.mapping(m["intercept"], "tls.intercept", INTERCEPT_KEYS)
        if im is not None:
            for n, f in c.items(im.get("hosts"), "tls.intercept.hosts"):
                g = c.glob(n, f, host=True)
                if g is not None:
                    hosts.append(g.lower().rstrip("."))
            if "hosts" not in im:
                c.issue(m["intercept"].line, "tls.intercept.hosts",
                        "required: the SNI names to intercept, e.g. ['api.openai.com']")
            for n, f in c.items(im.get("processes"), "tls.intercept.processes"):
                p = process_cond(c, n, f)
                if p is not None:
                    procs.append(p)
    failure = d.on_intercept_failure
    if "on_intercept_failure" in m:
        failure = c.choice(m["on_intercept_failure"], "tls.on_intercept_failure",
                           ("block", "passthrough")) or failure
    ttl = d.intercept_failure_ttl
    if "intercept_failure_ttl" in m:
        ttl = c.duration(m["intercept_failure_ttl"], "tls.intercept_failure_ttl") or ttl
    ca_file = None
    if "upstream_ca_file" in m:
        ca_file = c.path(m["upstream_ca_file"], "tls.upstream_ca_file")
        if ca_file is not None:
            import os
            if not os.path.isfile(ca_file):
                c.issue(m["upstream_ca_file"].line, "tls.upstream_ca_file",
                        f"no such file: {ca_file}")
    size = d.max_decoded_body
    if "max_decoded_body" in m:
        size = c.size(m["max_decoded_body"], "tls.max_decoded_body") or size
    return TlsConfig(tuple(hosts), tuple(procs), failure, ca_file, size, ttl)
