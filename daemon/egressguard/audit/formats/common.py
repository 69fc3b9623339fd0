"""What every format needs to know about an audit event: its outcome and severity.

One table, so that OCSF's disposition, CEF's severity, ECS's event.outcome and syslog's
severity agree about the same event.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

SEVERITY_RANK = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}


def action_of(event: dict[str, Any]) -> str:
    """What the guard did: allow, mask, hold, block, approve, deny, expire, or "" (no
    enforcement happened in this event: open, close, daemon events)."""
    kind = event.get("event", "")
    if kind == "flow.block":
        return "block"
    if kind == "flow.hold":
        return "hold"
    if kind == "flow.decision":
        outcome = event.get("outcome") or mapping(event, "decision").get("outcome", "")
        return {"approved": "approve", "denied": "deny", "expired": "expire",
                "aborted": "deny"}.get(str(outcome), "deny")
    if kind in ("udp.refused", "proxy.unknown_origin", "approval.refused"):
        return "block"
    if kind == "flow.detect":
        action = str(event.get("action") or "allow")
        if action == "allow" and event.get("masked"):
            return "mask"
        return action
    return ""


def severity(event: dict[str, Any]) -> str:
    """info | low | medium | high | critical: the worst of what was found and what was done."""
    rank = 0
    for det in event.get("detections") or []:
        if isinstance(det, dict):
            rank = max(rank, SEVERITY_RANK.get(str(det.get("severity")), 2))
    rank = max(rank, {"block": 3, "hold": 2, "deny": 2, "expire": 2, "mask": 1,
                      "approve": 1}.get(action_of(event), 0))
    kind = event.get("event", "")
    if kind in ("audit.chain_reset",):
        rank = 4
    elif kind in ("approval.refused", "proxy.unknown_origin", "flow.upstream_error"):
        rank = max(rank, 2)
    return next(name for name, r in SEVERITY_RANK.items() if r == rank)


def epoch_ms(event: dict[str, Any]) -> int:
    """The event's `time` (RFC 3339) as milliseconds since the epoch (0 when unreadable)."""
    return int(epoch_s(event) * 1000)


def epoch_s(event: dict[str, Any]) -> float:
    t = event.get("time")
    if not isinstance(t, str):
        return 0.0
    try:
        return dt.datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def mapping(event: dict[str, Any], key: str) -> dict[str, Any]:
    v = event.get(key)
    return v if isinstance(v, dict) else {}


def findings(event: dict[str, Any]) -> list[dict[str, Any]]:
    return [d for d in event.get("detections") or [] if isinstance(d, dict)]


def number(value: Any) -> float:
    """A numeric field as a float; 0 for anything that is not a finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    return float(value) if value == value and abs(value) != float("inf") else 0.0
