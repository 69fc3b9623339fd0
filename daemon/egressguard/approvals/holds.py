"""Held flows waiting for a human: open, decide, expire, abort. No I/O.

The proxy calls `HoldRegistry.open()` when the policy says hold and awaits `hold.wait()`; the
gRPC service calls `decide()` on behalf of an `Identity` established by the OS
(`peercred.py`). All the rules about *who* may decide live here, so they are tested without
sockets:

* only listed approvers (`approvals.approvers`: user names or "uid:N") may decide;
* the uid that owns the held flow may never decide on it -- root included, and deny as well as
  approve, so the rule is one sentence with no exceptions to reason about;
* a decision needs a non-blank reason (it goes to the audit log);
* a hold is decided once; a late or repeated decision is refused, naming what happened.

Every opening, decision, expiry, abort and refusal is reported through `on_event(name, fields)`
(the daemon wires it to the audit log) *before* the waiting proxy is released, so no flow leaves
on an unrecorded decision. Subscribers (`subscribe()`) get the same life cycle as `HoldEvent`s;
the service uses that for the Watch stream.

Everything runs on the event loop thread; `open()` must be called from a running loop.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from egressguard.approvals.peercred import Identity
from egressguard.model import Decision, Detection, FlowInfo, Verdict

log = logging.getLogger(__name__)

ON_TIMEOUT = ("allow", "deny")
SYSTEM_UID = -1                 # Decision.by_uid when egressguard itself resolved a hold
SYSTEM_USER = "egressguard"
_FINISHED_MEMORY = 1024         # recently resolved holds kept to explain late decisions
MAX_REASON = 2000               # characters of a decision's reason that are recorded
MAX_HOLD_ID = 64                # a real id is 12; longer ones are recorded cut

# Event kinds (HoldEvent.kind) and the audit event names they are reported under.
OPENED, DECIDED, EXPIRED, ABORTED = "opened", "decided", "expired", "aborted"
AUDIT_HOLD = "flow.hold"
AUDIT_DECISION = "flow.decision"
AUDIT_REFUSED = "approval.refused"


class DecisionRefused(Exception):
    """A decision that was not taken. `code` is one of: not_found, already_decided,
    not_approver, self_approval, empty_reason; `message` is meant for the person, as is."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "...[cut]"


def new_hold_id() -> str:
    """'h-' + 10 lowercase base32 characters (50 random bits): short enough to type."""
    return "h-" + base64.b32encode(secrets.token_bytes(7)).decode()[:10].lower()


@dataclass
class PendingHold:
    """One held flow. `decision`/`outcome` are set once, when it is resolved."""

    id: str
    flow: FlowInfo
    verdict: Verdict
    detections: list[Detection]
    opened_at: float                  # wall clock, for people
    deadline: float                   # loop.time() at which it expires
    on_timeout: str
    _future: asyncio.Future[Decision] = field(repr=False, default=None)  # type: ignore[assignment]
    _timer: asyncio.TimerHandle | None = field(repr=False, default=None)
    _registry: HoldRegistry | None = field(repr=False, default=None)
    decision: Decision | None = None
    outcome: str = ""                 # "", "approved", "denied", "expired", "aborted"
    decided_by_pid: int = 0
    decided_at: float = 0.0

    @property
    def owner_uid(self) -> int:
        return self.flow.process.uid

    @property
    def done(self) -> bool:
        return self.decision is not None

    def age_s(self, now: float | None = None) -> float:
        return max(0.0, (time.time() if now is None else now) - self.opened_at)

    def expires_in_s(self) -> float:
        return max(0.0, self.deadline - self._future.get_loop().time())

    async def wait(self) -> Decision:
        """The decision: approval, denial, expiry (timed_out=True) or abort.

        If the waiter itself is cancelled (the proxy is shutting the flow down), the hold is
        aborted rather than left pending for nobody."""
        try:
            return await asyncio.shield(self._future)
        except asyncio.CancelledError:
            if not self.done and self._registry is not None:
                self._registry.cancel(self.id, "the proxy stopped waiting")
            raise


@dataclass(frozen=True)
class HoldEvent:
    """A step in a hold's life, for Watch subscribers."""

    kind: str                         # opened | decided | expired | aborted
    hold: PendingHold
    decision: Decision | None
    time: float


class HoldRegistry:
    """Pending holds and the rules for deciding them (see the module docstring)."""

    def __init__(self, approvers: list[str], timeout_s: float, on_timeout: str,
                 on_event: Callable[[str, dict[str, Any]], None],
                 redact: Callable[[str], str] | None = None) -> None:
        if on_timeout not in ON_TIMEOUT:
            raise ValueError(f"on_timeout must be one of {', '.join(ON_TIMEOUT)}, not {on_timeout!r}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, not {timeout_s!r}")
        self._approver_names: set[str] = set()
        self._approver_uids: set[int] = set()
        for entry in approvers:
            entry = entry.strip()
            if entry.startswith("uid:"):
                num = entry[4:]
                if not num.isdigit():
                    raise ValueError(f"approver {entry!r}: expected uid:N with N a number")
                self._approver_uids.add(int(num))
            elif entry:
                self._approver_names.add(entry)
        self.approvers = list(approvers)
        self.timeout_s = float(timeout_s)
        self.on_timeout = on_timeout
        self._on_event = on_event
        # A reason is free text from a person ("ok, AKIA... is the test key"): it is recorded
        # and shown, so it goes through the detectors first, like a command line.
        self._redact = redact or (lambda text: text)
        self._pending: dict[str, PendingHold] = {}
        self._finished: OrderedDict[str, PendingHold] = OrderedDict()
        self._subscribers: list[Callable[[HoldEvent], None]] = []

    # -- queries -------------------------------------------------------------------------------

    def pending(self) -> list[PendingHold]:
        """Holds waiting for a decision, oldest first."""
        return sorted(self._pending.values(), key=lambda h: h.opened_at)

    def get(self, hold_id: str) -> PendingHold | None:
        """A pending or recently resolved hold."""
        return self._pending.get(hold_id) or self._finished.get(hold_id)

    def is_approver(self, who: Identity) -> bool:
        return who.uid in self._approver_uids or who.user in self._approver_names

    def may_view(self, who: Identity, owner_uid: int) -> bool:
        """Approvers see every hold and flow; anyone else sees only flows their uid owns."""
        return self.is_approver(who) or who.uid == owner_uid

    def subscribe(self, callback: Callable[[HoldEvent], None]) -> Callable[[], None]:
        """Call `callback` for every HoldEvent from now on; returns the unsubscribe function.
        Callbacks run synchronously on the loop and must not block or raise."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)
        return unsubscribe

    # -- life cycle ----------------------------------------------------------------------------

    def open(self, flow: FlowInfo, verdict: Verdict, detections: list[Detection]) -> PendingHold:
        """Hold `flow`; it expires after timeout_s. Must run inside the event loop."""
        loop = asyncio.get_running_loop()
        hold_id = new_hold_id()
        while hold_id in self._pending or hold_id in self._finished:
            hold_id = new_hold_id()
        hold = PendingHold(id=hold_id, flow=flow, verdict=verdict, detections=list(detections),
                           opened_at=time.time(), deadline=loop.time() + self.timeout_s,
                           on_timeout=self.on_timeout)
        hold._future = loop.create_future()
        hold._registry = self
        hold._timer = loop.call_later(self.timeout_s, self._expire, hold_id)
        self._pending[hold_id] = hold
        self._on_event(AUDIT_HOLD, {
            "hold_id": hold_id,
            "flow_id": flow.flow_id,
            "process": flow.process.to_dict(),
            "destination": flow.destination.to_dict(),
            "detections": [d.to_dict() for d in hold.detections],
            "rule": verdict.rule,
            "reason": verdict.reason,
            "timeout_s": self.timeout_s,
            "on_timeout": self.on_timeout,
        })
        self._publish(OPENED, hold, None)
        return hold

    def decide(self, hold_id: str, who: Identity, approve: bool, reason: str) -> Decision:
        """Approve or deny on behalf of `who`; raises DecisionRefused (and audits the refusal)."""
        verb = "approve" if approve else "deny"
        # Both come from the caller, who may be anyone local (the held agent included) and
        # whose refused attempts are audited too: bounded, and scanned like a command line.
        hold_id = self._redact(_clip(hold_id, MAX_HOLD_ID))
        reason = self._redact(_clip(reason, MAX_REASON))
        hold = self._pending.get(hold_id)
        try:
            self._check(hold_id, hold, who, verb, reason)
        except DecisionRefused as refused:
            known = hold or self._finished.get(hold_id)
            self._on_event(AUDIT_REFUSED, {
                "hold_id": hold_id,
                "flow_id": known.flow.flow_id if known else None,
                "who": who.to_dict(),
                "attempted": verb,
                "reason": reason,
                "code": refused.code,
                "message": refused.message,
            })
            raise
        assert hold is not None
        decision = Decision(approved=approve, by_uid=who.uid, by_user=who.user,
                            reason=reason.strip())
        self._resolve(hold, decision, "approved" if approve else "denied", DECIDED, who)
        return decision

    def cancel(self, hold_id: str, why: str) -> Decision | None:
        """The client went away (or the proxy gave up): resolve the hold as aborted, so nobody
        approves a flow that no longer exists. Unknown or already resolved: no-op, None."""
        hold = self._pending.get(hold_id)
        if hold is None:
            return None
        decision = Decision(approved=False, by_uid=SYSTEM_UID, by_user=SYSTEM_USER,
                            reason=f"aborted: {why}", aborted=True)
        self._resolve(hold, decision, "aborted", ABORTED, None)
        return decision

    def close(self, why: str = "egressguard is stopping") -> None:
        """Abort every pending hold (daemon shutdown)."""
        for hold in list(self._pending.values()):
            self.cancel(hold.id, why)

    # -- internals -----------------------------------------------------------------------------

    def _check(self, hold_id: str, hold: PendingHold | None, who: Identity, verb: str,
               reason: str) -> None:
        if not self.is_approver(who):
            raise DecisionRefused(
                "not_approver",
                f"{who.user} (uid {who.uid}) is not an approver; approvals.approvers lists who "
                "may approve or deny holds")
        if hold is None:
            done = self._finished.get(hold_id)
            if done is not None and done.decision is not None:
                by = done.decision.by_user
                what = {"approved": f"already approved by {by}", "denied": f"already denied by {by}",
                        "expired": "already expired (no decision in time)",
                        "aborted": "aborted: the connection went away"}[done.outcome]
                raise DecisionRefused("already_decided", f"hold {hold_id} was {what}")
            raise DecisionRefused("not_found", f"no pending hold {hold_id!r} (see egressctl pending)")
        if who.uid == hold.owner_uid:
            raise DecisionRefused(
                "self_approval",
                f"{who.user} (uid {who.uid}) owns flow {hold.flow.flow_id} and cannot decide on "
                f"its own hold, neither approve nor deny (root included); another approver must {verb} it")
        if not reason or not reason.strip():
            raise DecisionRefused("empty_reason",
                                  f"a reason is required to {verb} hold {hold_id} (--reason TEXT)")

    def _resolve(self, hold: PendingHold, decision: Decision, outcome: str, kind: str,
                 who: Identity | None) -> None:
        """Audit first, then release the waiter, then tell subscribers."""
        self._on_event(AUDIT_DECISION, {
            "hold_id": hold.id,
            "flow_id": hold.flow.flow_id,
            "outcome": outcome,
            "decision": decision.to_dict(),
            "who": who.to_dict() if who else {"uid": SYSTEM_UID, "user": SYSTEM_USER, "pid": 0},
            "reason": decision.reason,
            "rule": hold.verdict.rule,
        })
        if hold._timer is not None:
            hold._timer.cancel()
        hold.decision = decision
        hold.outcome = outcome
        hold.decided_by_pid = who.pid if who else 0
        hold.decided_at = time.time()
        del self._pending[hold.id]
        self._finished[hold.id] = hold
        while len(self._finished) > _FINISHED_MEMORY:
            self._finished.popitem(last=False)
        if not hold._future.done():
            hold._future.set_result(decision)
        self._publish(kind, hold, decision)

    def _expire(self, hold_id: str) -> None:
        hold = self._pending.get(hold_id)
        if hold is None:
            return
        allow = self.on_timeout == "allow"
        decision = Decision(approved=allow, by_uid=SYSTEM_UID, by_user=SYSTEM_USER,
                            reason=f"no decision within {self.timeout_s:g}s; on_timeout={self.on_timeout}",
                            timed_out=True)
        try:
            self._resolve(hold, decision, "expired", EXPIRED, None)
        except Exception:
            # The audit hook failed: the flow must still not wait forever. Resolve without it.
            log.exception("audit hook failed while expiring hold %s", hold_id)
            if hold_id in self._pending:
                hold.decision, hold.outcome = decision, "expired"
                del self._pending[hold_id]
                self._finished[hold_id] = hold
                if not hold._future.done():
                    hold._future.set_result(decision)
                self._publish(EXPIRED, hold, decision)

    def _publish(self, kind: str, hold: PendingHold, decision: Decision | None) -> None:
        event = HoldEvent(kind=kind, hold=hold, decision=decision, time=time.time())
        for cb in list(self._subscribers):
            try:
                cb(event)
            except Exception:
                log.exception("hold event subscriber failed")
