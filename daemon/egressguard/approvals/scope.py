"""What an approval covers: request identity (dedup), approval scopes and grants. Pure.

An agent's HTTP client retries; each retry is a new connection. So an approval is not tied to a
connection but to a *request key*: the same process identity, the same destination, the same
rule and the same findings (by keyed fingerprint, never by value). Identical held flows collapse
into one pending request with a counter, and a `once` approval given after the client gave up
lets the next identical flow through, once.

"Process identity" is what survives a retry and what a person can judge: the uid, the
executable, the systemd unit and the container. The pid and the command line are not part of
it (a retry is often a new process with other arguments).

A wider approval is a `Grant`: `process-destination` (this process identity to this destination)
or `process` (this process identity anywhere), for a TTL. A grant answers only the hold
question, and only for holds by the rule that held the approved request: the flow is still
scanned and audited (`grant.use`), and block and mask rules still apply to it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from egressguard.model import Destination, Detection, FlowInfo, Process

ONCE = "once"
PROCESS_DESTINATION = "process-destination"
PROCESS = "process"
SCOPES = (ONCE, PROCESS_DESTINATION, PROCESS)
_WIDTH = {ONCE: 0, PROCESS_DESTINATION: 1, PROCESS: 2}


def narrowest(scopes: Iterable[str]) -> str:
    """The scope every approver agreed to (quorum: the narrowest one voted)."""
    return min(scopes, key=lambda s: _WIDTH[s])


@dataclass(frozen=True)
class ProcessKey:
    uid: int
    exe: str
    unit: str
    container: str

    @staticmethod
    def of(p: Process) -> "ProcessKey":
        return ProcessKey(p.uid, p.exe, p.systemd_unit, p.container_id)

    def describe(self) -> str:
        where = "".join(f", {k} {v}" for k, v in (("unit", self.unit),
                                                 ("container", self.container[:12])) if v)
        return f"uid {self.uid} {self.exe or '?'}{where}"


@dataclass(frozen=True)
class DestinationKey:
    ip: str
    port: int
    host: str

    @staticmethod
    def of(d: Destination) -> "DestinationKey":
        return DestinationKey(d.ip, d.port, d.host.lower())

    def describe(self) -> str:
        addr = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"{self.host}:{self.port} ({self.ip})" if self.host else f"{addr}:{self.port}"


def request_key(flow: FlowInfo, rule: str, detections: Iterable[Detection]) -> str:
    """A stable digest of (process identity, destination, rule, finding fingerprints)."""
    body = {
        "process": asdict(ProcessKey.of(flow.process)),
        "destination": asdict(DestinationKey.of(flow.destination)),
        "rule": rule,
        "fingerprints": sorted({d.fingerprint for d in detections}),
    }
    raw = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(raw).hexdigest()[:32]


def new_grant_id() -> str:
    """'g-' + 10 lowercase base32 characters, like hold ids."""
    return "g-" + base64.b32encode(secrets.token_bytes(7)).decode()[:10].lower()


@dataclass
class Grant:
    """A standing approval. Wall-clock times are for people and the store; `deadline` is the
    monotonic (loop.time()) expiry that actually decides, so a clock jump changes nothing."""

    id: str
    scope: str                           # process-destination | process
    rule: str                            # only holds by this rule are answered
    process: ProcessKey
    destination: DestinationKey | None   # None for scope `process`
    request_id: str
    approvers: list[dict[str, Any]]      # who approved (Identity.to_dict())
    reason: str
    created_at: float
    expires_at: float
    ttl_s: float
    deadline: float = 0.0
    uses: int = 0
    revoked: dict[str, Any] | None = None   # {"who":..., "reason":..., "at":...}
    capped: bool = False                 # the TTL asked for was cut to max_grant_ttl
    meta: dict[str, Any] = field(default_factory=dict)

    def matches(self, flow: FlowInfo, rule: str) -> bool:
        if self.revoked is not None or rule != self.rule:
            return False
        if ProcessKey.of(flow.process) != self.process:
            return False
        return self.destination is None or DestinationKey.of(flow.destination) == self.destination

    def describe(self) -> str:
        where = f" -> {self.destination.describe()}" if self.destination else " -> anywhere"
        return f"{self.process.describe()}{where} (rule {self.rule})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "grant_id": self.id, "scope": self.scope, "rule": self.rule,
            "process": asdict(self.process),
            "destination": asdict(self.destination) if self.destination else None,
            "request_id": self.request_id, "approvers": self.approvers, "reason": self.reason,
            "created_at": self.created_at, "expires_at": self.expires_at, "ttl_s": self.ttl_s,
            "uses": self.uses, "revoked": self.revoked, "capped": self.capped,
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "Grant":
        dest = d.get("destination")
        return Grant(id=d["grant_id"], scope=d["scope"], rule=d["rule"],
                     process=ProcessKey(**d["process"]),
                     destination=DestinationKey(**dest) if dest else None,
                     request_id=d["request_id"], approvers=list(d["approvers"]),
                     reason=d["reason"], created_at=d["created_at"],
                     expires_at=d["expires_at"], ttl_s=d["ttl_s"], uses=d.get("uses", 0),
                     revoked=d.get("revoked"), capped=d.get("capped", False))
