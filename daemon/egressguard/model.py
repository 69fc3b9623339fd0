"""The nouns every part of egressguard shares: processes, destinations, detections, verdicts.

These are plain dataclasses with no I/O, so the policy evaluator, the relay state machine, the
audit writer and the approval service can all be tested by building literals. Nothing here may
ever hold a raw secret: a `Detection` carries offsets (to mask bytes in flight), a masked preview
and a keyed fingerprint, never the matched text.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import asdict, dataclass, field
from typing import Any


class Action(str, enum.Enum):
    """What the policy wants done with a flow (or with the content seen so far)."""

    ALLOW = "allow"
    BLOCK = "block"
    MASK = "mask"
    HOLD = "hold"


class FlowState(str, enum.Enum):
    """Flow life cycle (design.md): every transition is one audit event."""

    ACCEPTED = "accepted"
    INSPECTING = "inspecting"
    FORWARDING = "forwarding"
    HELD = "held"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    BLOCKED = "blocked"
    CLOSED = "closed"


def host_port(host: str, port: int | str) -> str:
    """`host:port`, with an IPv6 address in brackets (`[::1]:9464`) so it reads as one, and
    works in a URL."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class Process:
    """Who opened the connection. pid/uid/gid/comm/cgroup_id come from the kernel at connect time
    (exact, no /proc race); exe/cmdline/user/unit/container are filled from /proc right after.

    `pid` is the process id as `ps` shows it (the kernel's tgid); `tgid` repeats it for
    consumers that use the kernel's name."""

    pid: int
    tgid: int = 0
    uid: int = -1
    gid: int = -1
    comm: str = ""
    cgroup_id: int = 0
    exe: str = ""
    cmdline: tuple[str, ...] = ()
    user: str = ""
    cgroup_path: str = ""
    systemd_unit: str = ""
    container_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cmdline"] = list(self.cmdline)
        return d


@dataclass(frozen=True)
class Destination:
    """Where the process wanted to go (the original destination before the redirect).

    `host` is the name seen in the first bytes (TLS SNI or HTTP Host), empty when unknown;
    `provider` the AI provider the endpoint catalog names for it (catalog/endpoints.yaml)."""

    ip: str
    port: int
    host: str = ""
    transport: str = "tcp"
    provider: str = ""
    alpn: tuple[str, ...] = ()          # protocols the TLS ClientHello offered

    @property
    def address(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        return ipaddress.ip_address(self.ip)

    def to_dict(self) -> dict[str, Any]:
        d = {"ip": self.ip, "port": self.port, "host": self.host, "transport": self.transport}
        if self.provider:
            d["provider"] = self.provider
        if self.alpn:
            d["alpn"] = list(self.alpn)
        return d


@dataclass(frozen=True)
class Detection:
    """One validated finding in a byte stream.

    `start`/`end` are absolute byte offsets in the direction's stream (end exclusive), used to
    mask bytes in flight. `preview` is already masked (e.g. ``AKIA************MPLE``) and
    `fingerprint` is an HMAC of the raw value under the host key, so the same secret can be
    correlated across events without being stored anywhere."""

    detector: str          # e.g. "secret.aws_access_key_id"
    cls: str               # "secret" or "pii"
    start: int
    end: int
    preview: str
    fingerprint: str
    severity: str = "high"
    confidence: str = "medium"     # low | medium | high (scan/pack.py CONFIDENCES)

    def to_dict(self) -> dict[str, Any]:
        return {
            "detector": self.detector,
            "class": self.cls,
            "offset": self.start,
            "length": self.end - self.start,
            "preview": self.preview,
            "fingerprint": self.fingerprint,
            "severity": self.severity,
            "confidence": self.confidence,
        }


@dataclass(frozen=True)
class Verdict:
    """A policy decision and the reason for it (the rule that matched, or the default)."""

    action: Action
    rule: str            # rule name, or "default"
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action.value, "rule": self.rule, "reason": self.reason}


@dataclass(frozen=True)
class Decision:
    """A human decision on a held flow. `by` is established by the OS (SO_PEERCRED), never
    claimed by the client."""

    approved: bool
    by_uid: int
    by_user: str
    reason: str
    timed_out: bool = False
    aborted: bool = False       # the client went away or egressguard stopped: nobody decided
    # Approvals for a team (approvals/holds.py): the request this decision belongs to, and
    # whether that request is still pending after it (an inline wait that ran out, or one vote
    # of a quorum). The refusal an intercepted HTTP client gets names `request_id`.
    request_id: str = ""
    pending: bool = False
    scope: str = ""             # once | process-destination | process (approvals/scope.py)
    grant_id: str = ""          # the grant that let the flow through, or that was created

    @property
    def outcome(self) -> str:
        if self.timed_out:
            return "expired"
        if self.aborted:
            return "aborted"
        if self.pending:
            return "voted"
        return "approved" if self.approved else "denied"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "outcome": self.outcome,
            "by": self.by_user if not (self.timed_out or self.aborted) else "egressguard",
            "by_uid": self.by_uid,
            "reason": self.reason,
        }
        for key in ("request_id", "scope", "grant_id"):
            if getattr(self, key):
                d[key] = getattr(self, key)
        if self.pending:
            d["request_pending"] = True
        return d


@dataclass
class FlowInfo:
    """What the rest of the system knows about a flow: identity, destination, state, findings.

    The proxy owns the live flow; the approval service, audit and `egressctl flows` read this
    snapshot-friendly view of it."""

    flow_id: str
    process: Process
    destination: Destination
    opened_at: float                      # wall clock (time.time())
    state: FlowState = FlowState.ACCEPTED
    verdict: Verdict | None = None
    detections: list[Detection] = field(default_factory=list)
    bytes_up: int = 0
    bytes_down: int = 0
    bytes_delivered: int = 0              # bytes the destination was sent (after masks)
    intercepted: bool = False             # TLS opened: bytes are the decrypted HTTP stream
    tls_passthrough: str = ""             # why a flow selected for interception passed unopened

    def to_dict(self) -> dict[str, Any]:
        return {
            "flow_id": self.flow_id,
            "process": self.process.to_dict(),
            "destination": self.destination.to_dict(),
            "opened_at": self.opened_at,
            "state": self.state.value,
            "verdict": self.verdict.to_dict() if self.verdict else None,
            "detections": [d.to_dict() for d in self.detections],
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
            "bytes_delivered": self.bytes_delivered,
            "intercepted": self.intercepted,
            "tls_passthrough": self.tls_passthrough,
        }
