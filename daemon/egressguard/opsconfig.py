"""The configuration keys for running egressguard as a service: `failure_mode`, `metrics`,
and the total held-buffer cap (`proxy.max_held_total`).

Parsed with config.py's checker (same file:line: field: message issues), kept apart so the
policy schema in config.py stays about policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from egressguard.policy.yamlpos import YNode

if TYPE_CHECKING:
    from egressguard.config import _Checker

FAILURE_MODES = ("closed", "open")
DEFAULT_MAX_HELD_TOTAL = 256 * 1024 * 1024
METRICS_KEYS = ("listen",)


@dataclass(frozen=True)
class MetricsConfig:
    listen: tuple[str, int] | None = None     # None: no metrics endpoint


def failure_mode(c: "_Checker", node: YNode | None) -> str:
    if node is None:
        return "closed"
    return c.choice(node, "failure_mode", FAILURE_MODES, hint={
        "fail-open": "write open", "fail-closed": "write closed"}) or "closed"


def metrics(c: "_Checker", node: YNode | None) -> MetricsConfig:
    if node is None or (node.kind == "scalar" and node.value is None):
        return MetricsConfig()
    m = c.mapping(node, "metrics", METRICS_KEYS)
    if m is None or "listen" not in m:
        return MetricsConfig()
    return MetricsConfig(listen=_loopback_endpoint(c, m["listen"], "metrics.listen"))


def _loopback_endpoint(c: "_Checker", node: YNode, f: str) -> tuple[str, int] | None:
    """'127.0.0.1:9464' or '[::1]:9464', loopback only: metrics name destinations and rules,
    which are not for the network."""
    text = node.value if node.kind == "scalar" and isinstance(node.value, str) else ""
    return c.listen(node, f, 6 if text.startswith("[") else 4, role="metrics")


def max_held_total(c: "_Checker", node: YNode | None, per_flow: int) -> int:
    """The cap on all flows' held bytes together. Must be at least the per-flow cap, or one
    flow alone could starve the rest."""
    if node is None:
        return max(DEFAULT_MAX_HELD_TOTAL, per_flow)
    total = c.size(node, "proxy.max_held_total")
    if total is None:
        return DEFAULT_MAX_HELD_TOTAL
    if total < per_flow:
        c.issue(node.line, "proxy.max_held_total",
                f"{node.plain()!r} is less than proxy.max_held_bytes ({per_flow} bytes): the "
                "total cap must hold at least one full flow")
    return total
