"""Approval requests for held flows: open, wait inline, decide (quorum, scopes, grants), expire.
No sockets; optional write-through persistence (`store.ApprovalStore`).

Agents run unattended and their HTTP clients time out long before a person reads a message, so
an approval is not tied to a connection:

* A held flow *waits inline* for `inline_wait_s` (its `Waiter`). If nobody decides in time the
  connection gets a fast refusal (`Decision(timed_out=True, pending=True)`: the relay resets
  it), but the **request stays pending** until `request_ttl_s`. A client that disconnects only
  detaches its waiter (`flow.aborted`); the request stays too.
* Identical held flows (same process identity, destination, rule and finding fingerprints:
  `scope.request_key`) collapse into one pending request with a counter (`approval.repeat`),
  not a flood of prompts.
* `approve` with scope `once` releases every connection waiting on the request; when none is
  waiting any more, the next identical flow passes once (`approval.use`). A wider scope creates
  a `Grant` (`grant.create`) that answers matching holds until its TTL (capped by
  `max_grant_ttl_s`), each answer audited as `grant.use`. A denial releases the waiters as
  denied and stands for the request's TTL: identical retries are refused at once.

Who may decide (all checked here, for every channel -- Unix socket, mTLS and chat each turn the
caller into an `Identity` with a local uid before calling `decide()`):

* only approvers (`approvals.approvers`, or a rule's own `approvals.approvers`) may decide;
* the uid that owns the held flow may never decide on it -- root included, deny as well as
  approve, break-glass included;
* a decision needs a non-blank reason;
* a rule's quorum (`required: N`) needs N approvals by N different uids (a second vote by the
  same uid is refused); any deny denies;
* break-glass (`break_glass=True`) is refused unless enabled; it completes the approval
  without the quorum and is audited as `approval.break_glass` with severity critical.

Every opening, repeat, vote, decision, grant, use, revoke, expiry, abort and refusal goes to
`on_event(name, fields)` (the daemon wires it to the audit log) *before* it takes effect, so no
flow leaves on an unrecorded decision and an audit failure changes nothing.

Deadlines are monotonic in memory (`time.monotonic()`, the clock the event loop uses); the
store keeps wall-clock expiry, and `start()` turns it back into monotonic deadlines clamped to
the original TTL. Everything runs on the event loop thread.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from egressguard.approvals import codec
from egressguard.approvals.grants import GrantTable
from egressguard.approvals.peercred import Identity
from egressguard.approvals.quorum import ApprovalRules, QuorumSpec
from egressguard.approvals.scope import ONCE, SCOPES, Grant, narrowest, request_key
from egressguard.approvals.store import ApprovalStore
from egressguard.model import Decision, Detection, FlowInfo, Verdict

log = logging.getLogger(__name__)

ON_TIMEOUT = ("allow", "deny")
SYSTEM_UID = -1                 # Decision.by_uid when egressguard itself resolved a hold
SYSTEM_USER = "egressguard"
_FINISHED_MEMORY = 1024         # resolved requests kept to explain late decisions
MAX_PENDING = 10_000           # pending requests; beyond, new ones are refused (fail closed)
MAX_REASON = 2000               # characters of a decision's reason that are recorded
MAX_HOLD_ID = 64                # a real id is 12; longer ones are recorded cut
DEFAULT_GRANT_TTL = 15 * 60.0
DEFAULT_MAX_GRANT_TTL = 8 * 3600.0

# Event kinds (HoldEvent.kind) for Watch subscribers and notifiers.
OPENED, DECIDED, EXPIRED, ABORTED, VOTED = "opened", "decided", "expired", "aborted", "voted"

# Audit event names.
AUDIT_HOLD = "flow.hold"                  # a new approval request
AUDIT_REPEAT = "approval.repeat"          # an identical flow joined a pending request
AUDIT_DECISION = "flow.decision"          # a request approved, denied or expired
AUDIT_VOTE = "approval.vote"              # one approval of a quorum
AUDIT_BREAK_GLASS = "approval.break_glass"
AUDIT_REFUSED = "approval.refused"        # a decision (or revoke) that was not taken
AUDIT_USE = "approval.use"                # a later flow used an unused `once` approval
AUDIT_UNUSED = "approval.unused_expired"  # a `once` approval nobody used before its TTL
AUDIT_DENIED_RETRY = "approval.denied_retry"   # an identical retry of a denied request
AUDIT_OVERFLOW = "approval.overflow"      # too many pending requests: refused, not queued
AUDIT_WAIT_EXPIRED = "flow.wait_expired"  # inline wait over: connection refused, request stays
AUDIT_ABORTED = "flow.aborted"            # a held connection went away (client, stop, restart)
# grant.create, grant.use, grant.revoke, grant.expire: see grants.py

# Request states (ApprovalRequest.state).
PENDING, APPROVED_UNUSED, APPROVED, DENIED, DONE = (
    "pending", "approved-unused", "approved", "denied", "expired")
_LIVE_STATES = (PENDING, APPROVED_UNUSED, DENIED)


class DecisionRefused(Exception):
    """A decision that was not taken. `code` is one of: not_found, already_decided,
    not_approver, self_approval, empty_reason, already_voted, bad_scope, bad_ttl,
    break_glass_disabled; `message` is meant for the person, as is."""

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
class Vote:
    who: Identity
    reason: str
    scope: str
    ttl_s: float | None
    at: float
    break_glass: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"who": self.who.to_dict(), "reason": self.reason, "scope": self.scope,
                "ttl_s": self.ttl_s, "at": self.at, "break_glass": self.break_glass}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "Vote":
        w = d["who"]
        who = Identity(uid=w["uid"], gid=-1, pid=w.get("pid", 0), user=w["user"],
                       channel=w.get("channel", "unix"), principal=w.get("principal", ""))
        return Vote(who, d["reason"], d["scope"], d["ttl_s"], d["at"], d.get("break_glass", False))


@dataclass
class ApprovalRequest:
    """One approval request (what `egressctl pending` shows as a hold). `flow` is the first
    flow that asked; identical later ones only add to `count`."""

    id: str
    key: str
    flow: FlowInfo
    verdict: Verdict
    detections: list[Detection]
    opened_at: float                  # wall clock, for people and the store
    expires_at: float                 # wall clock
    ttl_s: float
    deadline: float                   # time.monotonic() at which the request expires
    on_timeout: str
    required: int = 1
    count: int = 1
    state: str = PENDING
    outcome: str = ""                 # "", "approved", "denied", "expired"
    decision: Decision | None = None
    votes: dict[int, Vote] = field(default_factory=dict)
    scope: str = ""
    grant_id: str = ""
    decided_by_pid: int = 0
    decided_at: float = 0.0
    waiters: list["Waiter"] = field(default_factory=list, repr=False)
    _timer: asyncio.TimerHandle | None = field(default=None, repr=False)

    @property
    def owner_uid(self) -> int:
        return self.flow.process.uid

    @property
    def done(self) -> bool:
        return self.state != PENDING

    def age_s(self, now: float | None = None) -> float:
        return max(0.0, (time.time() if now is None else now) - self.opened_at)

    def expires_in_s(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def to_store(self) -> dict[str, Any]:
        return {
            "id": self.id, "key": self.key, "flow": self.flow.to_dict(),
            "verdict": self.verdict.to_dict(),
            "detections": [d.to_dict() for d in self.detections],
            "opened_at": self.opened_at, "expires_at": self.expires_at, "ttl_s": self.ttl_s,
            "on_timeout": self.on_timeout, "required": self.required, "count": self.count,
            "state": self.state, "outcome": self.outcome,
            "decision": codec.decision_dict(self.decision) if self.decision else None,
            "votes": [v.to_dict() for v in self.votes.values()], "scope": self.scope,
            "grant_id": self.grant_id, "decided_at": self.decided_at,
        }


# The service and older callers call a request a hold.
PendingHold = ApprovalRequest


class Waiter:
    """One held connection waiting inline on a request."""

    def __init__(self, registry: "HoldRegistry", request: ApprovalRequest | None,
                 flow: FlowInfo, future: asyncio.Future[Decision]) -> None:
        self.registry = registry
        self.request = request
        self.flow = flow
        self.since = time.time()
        self._future = future
        self._timer: asyncio.TimerHandle | None = None

    @property
    def id(self) -> str:
        """The request id (several waiters can share one)."""
        return self.request.id if self.request else ""

    @property
    def done(self) -> bool:
        return self._future.done()

    async def wait(self) -> Decision:
        """This connection's answer: approval, denial, refusal after the inline wait
        (timed_out, the request stays pending) or abort. A cancelled waiter (the proxy is
        shutting the flow down) detaches; the request stays pending."""
        try:
            return await asyncio.shield(self._future)
        except asyncio.CancelledError:
            self.detach("the proxy stopped waiting")
            raise

    def detach(self, why: str) -> None:
        """The connection went away: record it, leave the request pending. Idempotent."""
        self.registry._detach(self, why)


@dataclass(frozen=True)
class HoldEvent:
    """A step in a request's life, for Watch subscribers and notifiers."""

    kind: str                         # opened | decided | expired | voted
    hold: ApprovalRequest
    decision: Decision | None
    time: float


class HoldRegistry:
    """Approval requests, grants and the rules for deciding them (see the module docstring)."""

    def __init__(self, approvers: list[str], timeout_s: float, on_timeout: str,
                 on_event: Callable[[str, dict[str, Any]], None], *,
                 request_ttl_s: float | None = None,
                 quorums: Mapping[str, QuorumSpec] | None = None, break_glass: bool = False,
                 grant_ttl_s: float = DEFAULT_GRANT_TTL,
                 max_grant_ttl_s: float = DEFAULT_MAX_GRANT_TTL,
                 store: ApprovalStore | None = None,
                 redact: Callable[[str], str] | None = None) -> None:
        if on_timeout not in ON_TIMEOUT:
            raise ValueError(f"on_timeout must be one of {', '.join(ON_TIMEOUT)}, not {on_timeout!r}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, not {timeout_s!r}")
        self.set_approvers(approvers, quorums)
        self.timeout_s = float(timeout_s)            # the inline wait
        self.request_ttl_s = max(float(request_ttl_s or timeout_s), self.timeout_s)
        self.on_timeout = on_timeout
        self.break_glass = break_glass
        self.store = store
        self._on_event = on_event
        # A reason is free text from a person ("ok, AKIA... is the test key"): it is recorded
        # and shown, so it goes through the detectors first, like a command line.
        self._redact = redact or (lambda text: text)
        self._requests: dict[str, ApprovalRequest] = {}       # live (pending/unused/denied)
        self._by_key: dict[str, ApprovalRequest] = {}
        self._finished: OrderedDict[str, ApprovalRequest] = OrderedDict()
        self._grants = GrantTable(on_event, grant_ttl_s, max_grant_ttl_s, store)
        self._subscribers: list[Callable[[HoldEvent], None]] = []

    def set_approvers(self, approvers: list[str],
                      quorums: Mapping[str, QuorumSpec] | None = None) -> None:
        """Who may decide, and how many per rule, from now on (a policy reload changes it;
        pending requests stay and are judged by the new rules)."""
        self.rules = ApprovalRules(approvers, quorums)
        self.approvers = list(approvers)

    # -- queries -------------------------------------------------------------------------------

    def pending(self) -> list[ApprovalRequest]:
        """Requests waiting for a decision, oldest first."""
        return sorted((r for r in self._requests.values() if r.state == PENDING),
                      key=lambda r: r.opened_at)

    def get(self, hold_id: str) -> ApprovalRequest | None:
        """A live or recently resolved request."""
        return self._requests.get(hold_id) or self._finished.get(hold_id)

    def grants(self) -> list[Grant]:
        """Live grants, oldest first."""
        return self._grants.live()

    def is_approver(self, who: Identity) -> bool:
        return self.rules.is_any_approver(who)

    def may_view(self, who: Identity, owner_uid: int) -> bool:
        """Approvers see every request and flow; anyone else sees only flows their uid owns."""
        return self.is_approver(who) or who.uid == owner_uid

    def subscribe(self, callback: Callable[[HoldEvent], None]) -> Callable[[], None]:
        """Call `callback` for every HoldEvent from now on; returns the unsubscribe function.
        Callbacks run synchronously on the loop and must not block or raise."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)
        return unsubscribe

    def record_refusal(self, fields: dict[str, Any]) -> None:
        """Audit a refusal that happened before a decision could be asked for (an unknown
        mTLS or chat identity, a bad chat signature): who tried, through which channel, why."""
        self._on_event(AUDIT_REFUSED, fields)

    # -- start: resume from the store ---------------------------------------------------------

    def start(self) -> None:
        """Resume what the store holds (call once, inside the running loop): connections held
        at the last stop are recorded as `flow.aborted`; live requests and grants get their
        timers back; what expired while the daemon was down expires now."""
        if self.store is None:
            return
        for w in self.store.take_waiters():
            self._on_event(AUDIT_ABORTED, {
                "flow_id": w["flow_id"], "hold_id": w["request_id"],
                "process": w.get("process"), "destination": w.get("destination"),
                "reason": "egressguard restarted: the held connection was lost; the request "
                          "stays pending"})
        now_w, now_m = time.time(), time.monotonic()
        for body in self.store.live_requests():
            req = self._request_from_store(body, now_w, now_m)
            self._requests[req.id] = req
            self._by_key[req.key] = req
            self._arm_request(req)
        self._grants.restore(self.store.live_grants(), now_w, now_m, _remaining)

    def _request_from_store(self, b: dict[str, Any], now_w: float,
                            now_m: float) -> ApprovalRequest:
        req = ApprovalRequest(
            id=b["id"], key=b["key"], flow=codec.flow_from(b["flow"]),
            verdict=codec.verdict_from(b["verdict"]),
            detections=[codec.detection_from(d) for d in b["detections"]],
            opened_at=b["opened_at"], expires_at=b["expires_at"], ttl_s=b["ttl_s"],
            deadline=now_m + _remaining(b["expires_at"], b["ttl_s"], now_w),
            on_timeout=b["on_timeout"], required=b["required"], count=b["count"],
            state=b["state"], outcome=b["outcome"],
            decision=codec.decision_from(b["decision"]) if b.get("decision") else None,
            scope=b.get("scope", ""), grant_id=b.get("grant_id", ""),
            decided_at=b.get("decided_at", 0.0))
        for v in b.get("votes", []):
            vote = Vote.from_dict(v)
            req.votes[vote.who.uid] = vote
        return req

    # -- a held flow ---------------------------------------------------------------------------

    def open(self, flow: FlowInfo, verdict: Verdict, detections: list[Detection]) -> Waiter:
        """Hold `flow`: answered at once by a matching grant, an unused `once` approval or a
        standing denial; otherwise joins the identical pending request or opens a new one, and
        waits inline for up to timeout_s. Must run inside the event loop."""
        loop = asyncio.get_running_loop()
        detections = list(detections)
        key = request_key(flow, verdict.rule, detections)
        grant = self._grants.find(flow, verdict.rule)
        if grant is not None:
            return self._use_grant(loop, grant, flow, verdict, detections)
        known = self._by_key.get(key)
        if known is not None and known.state == APPROVED_UNUSED:
            return self._use_once(loop, known, flow, detections)
        if known is not None and known.state == DENIED:
            return self._refuse_retry(loop, known, flow)
        if known is not None and known.state == PENDING:
            self._on_event(AUDIT_REPEAT, {
                "hold_id": known.id, "flow_id": flow.flow_id, "count": known.count + 1,
                "rule": verdict.rule, "detections": [d.to_dict() for d in detections]})
            known.count += 1
            self._save(known)
            return self._attach(loop, known, flow)
        if sum(1 for r in self._requests.values() if r.state == PENDING) >= MAX_PENDING:
            # Requests outlive connections, so an agent could pile them up without bound:
            # past the cap a new one is refused at once (the flow is reset), never let through.
            self._on_event(AUDIT_OVERFLOW, {"flow_id": flow.flow_id, "rule": verdict.rule,
                                            "pending": MAX_PENDING})
            return self._answered(loop, None, flow, Decision(
                approved=False, by_uid=SYSTEM_UID, by_user=SYSTEM_USER,
                reason=f"too many pending approval requests ({MAX_PENDING}); refused"))
        return self._attach(loop, self._new_request(key, flow, verdict, detections), flow)

    def _new_request(self, key: str, flow: FlowInfo, verdict: Verdict,
                     detections: list[Detection]) -> ApprovalRequest:
        hold_id = new_hold_id()
        while self.get(hold_id) is not None:
            hold_id = new_hold_id()
        now_w = time.time()
        req = ApprovalRequest(
            id=hold_id, key=key, flow=flow, verdict=verdict, detections=detections,
            opened_at=now_w, expires_at=now_w + self.request_ttl_s, ttl_s=self.request_ttl_s,
            deadline=time.monotonic() + self.request_ttl_s, on_timeout=self.on_timeout,
            required=self.rules.required_for(verdict.rule))
        self._on_event(AUDIT_HOLD, {
            "hold_id": hold_id,
            "flow_id": flow.flow_id,
            "process": flow.process.to_dict(),
            "destination": flow.destination.to_dict(),
            "detections": [d.to_dict() for d in detections],
            "rule": verdict.rule,
            "reason": verdict.reason,
            "timeout_s": self.timeout_s,
            "request_ttl_s": self.request_ttl_s,
            "required": req.required,
            "on_timeout": self.on_timeout,
        })
        self._requests[hold_id] = req
        self._by_key[key] = req
        self._save(req)
        self._arm_request(req)
        self._publish(OPENED, req, None)
        return req

    def _attach(self, loop: asyncio.AbstractEventLoop, req: ApprovalRequest,
                flow: FlowInfo) -> Waiter:
        waiter = Waiter(self, req, flow, loop.create_future())
        waiter._timer = loop.call_later(self.timeout_s, self._wait_expired, waiter)
        req.waiters.append(waiter)
        if self.store is not None:
            self.store.add_waiter(flow.flow_id, req.id, waiter.since, {
                "process": flow.process.to_dict(), "destination": flow.destination.to_dict()})
        return waiter

    def _answered(self, loop: asyncio.AbstractEventLoop, req: ApprovalRequest | None,
                  flow: FlowInfo, decision: Decision) -> Waiter:
        future: asyncio.Future[Decision] = loop.create_future()
        future.set_result(decision)
        return Waiter(self, req, flow, future)

    def _use_grant(self, loop: asyncio.AbstractEventLoop, grant: Grant, flow: FlowInfo,
                   verdict: Verdict, detections: list[Detection]) -> Waiter:
        self._grants.use(grant, flow, verdict.rule, detections)
        last = grant.approvers[-1] if grant.approvers else {"uid": SYSTEM_UID, "user": SYSTEM_USER}
        return self._answered(loop, None, flow, Decision(
            approved=True, by_uid=int(last["uid"]),
            by_user=", ".join(str(a["user"]) for a in grant.approvers),
            reason=f"grant {grant.id}: {grant.reason}", request_id=grant.request_id,
            scope=grant.scope, grant_id=grant.id))

    def _use_once(self, loop: asyncio.AbstractEventLoop, req: ApprovalRequest, flow: FlowInfo,
                  detections: list[Detection]) -> Waiter:
        assert req.decision is not None
        self._on_event(AUDIT_USE, {
            "hold_id": req.id, "flow_id": flow.flow_id, "scope": ONCE,
            "detections": [d.to_dict() for d in detections],
            "approved_by": req.decision.by_user, "reason": req.decision.reason})
        req.state = APPROVED
        self._retire(req)
        return self._answered(loop, req, flow, req.decision)

    def _refuse_retry(self, loop: asyncio.AbstractEventLoop, req: ApprovalRequest,
                      flow: FlowInfo) -> Waiter:
        assert req.decision is not None
        self._on_event(AUDIT_DENIED_RETRY, {
            "hold_id": req.id, "flow_id": flow.flow_id, "denied_by": req.decision.by_user,
            "reason": req.decision.reason})
        return self._answered(loop, req, flow, req.decision)

    def _wait_expired(self, waiter: Waiter) -> None:
        req = waiter.request
        if waiter.done or req is None:
            return
        if self.on_timeout == "allow":
            # The operator chose to fail open after the inline wait: the request is resolved.
            self._expire_request(req)
            return
        decision = Decision(
            approved=False, by_uid=SYSTEM_UID, by_user=SYSTEM_USER, timed_out=True,
            reason=(f"no decision within {self.timeout_s:g}s; approval request {req.id} stays "
                    f"pending for {req.expires_in_s():.0f}s: retry after it is approved"),
            request_id=req.id, pending=True)
        try:
            self._on_event(AUDIT_WAIT_EXPIRED, {
                "hold_id": req.id, "flow_id": waiter.flow.flow_id, "inline_wait_s": self.timeout_s,
                "request_expires_in_s": round(req.expires_in_s(), 3)})
        except Exception:
            log.exception("audit hook failed on an inline wait expiry (%s)", req.id)
        self._release(waiter, decision)

    def _detach(self, waiter: Waiter, why: str) -> None:
        req = waiter.request
        if waiter.done or req is None:
            return
        try:
            self._on_event(AUDIT_ABORTED, {"hold_id": req.id, "flow_id": waiter.flow.flow_id,
                                           "reason": f"{why}; the request stays pending"})
        except Exception:
            log.exception("audit hook failed on an abort (%s)", req.id)
        self._release(waiter, Decision(approved=False, by_uid=SYSTEM_UID, by_user=SYSTEM_USER,
                                       reason=f"aborted: {why}", aborted=True,
                                       request_id=req.id, pending=req.state == PENDING))

    def _release(self, waiter: Waiter, decision: Decision) -> None:
        if waiter._timer is not None:
            waiter._timer.cancel()
        req = waiter.request
        if req is not None and waiter in req.waiters:
            req.waiters.remove(waiter)
        if self.store is not None:
            self.store.remove_waiter(waiter.flow.flow_id)
        if not waiter._future.done():
            waiter._future.set_result(decision)

    # -- decisions -----------------------------------------------------------------------------

    def decide(self, hold_id: str, who: Identity, approve: bool, reason: str,
               scope: str = ONCE, ttl_s: float | None = None,
               break_glass: bool = False) -> Decision:
        """Approve (one vote, or the last one a quorum needs) or deny on behalf of `who`;
        raises DecisionRefused (and audits the refusal). A vote that leaves the quorum short
        returns a Decision with pending=True."""
        verb = "approve" if approve else "deny"
        # Both come from the caller, who may be anyone local (the held agent included) and
        # whose refused attempts are audited too: bounded, and scanned like a command line.
        hold_id = self._redact(_clip(hold_id, MAX_HOLD_ID))
        reason = self._redact(_clip(reason, MAX_REASON))
        req = self._requests.get(hold_id)
        try:
            self._check(hold_id, req, who, verb, reason, approve, scope, ttl_s, break_glass)
        except DecisionRefused as refused:
            known = req or self._finished.get(hold_id)
            self._on_event(AUDIT_REFUSED, {
                "hold_id": hold_id,
                "flow_id": known.flow.flow_id if known else None,
                "who": who.to_dict(),
                "attempted": verb + (" (break-glass)" if break_glass else ""),
                "reason": reason,
                "code": refused.code,
                "message": refused.message,
            })
            raise
        assert req is not None
        reason = reason.strip()
        if not approve:
            decision = Decision(approved=False, by_uid=who.uid, by_user=who.user, reason=reason,
                                request_id=req.id)
            self._finish(req, decision, "denied", DENIED, who)
            return decision
        vote = Vote(who, reason, scope, ttl_s, time.time(), break_glass)
        votes = {**req.votes, who.uid: vote}
        if break_glass:
            self._on_event(AUDIT_BREAK_GLASS, {
                "hold_id": req.id, "flow_id": req.flow.flow_id, "who": who.to_dict(),
                "reason": reason, "severity": "critical", "rule": req.verdict.rule,
                "required": req.required, "votes_before": len(req.votes),
                "detections": [d.to_dict() for d in req.detections]})
        elif len(votes) < req.required:
            self._on_event(AUDIT_VOTE, {
                "hold_id": req.id, "flow_id": req.flow.flow_id, "who": who.to_dict(),
                "reason": reason, "scope": scope, "votes": len(votes),
                "required": req.required, "rule": req.verdict.rule})
            req.votes = votes
            self._save(req)
            decision = Decision(approved=False, by_uid=who.uid, by_user=who.user, reason=reason,
                                request_id=req.id, pending=True, scope=scope)
            self._publish(VOTED, req, decision)
            return decision
        counted = [vote] if break_glass else list(votes.values())
        final_scope = narrowest(v.scope for v in counted)
        decision = Decision(approved=True, by_uid=who.uid,
                            by_user=", ".join(v.who.user for v in counted),
                            reason="; ".join(v.reason for v in counted), request_id=req.id,
                            scope=final_scope)
        grant = None
        if final_scope != ONCE:
            grant = self._grants.make(
                scope=final_scope, rule=req.verdict.rule, flow=req.flow, request_id=req.id,
                # who, with what each said: `egressctl grants` shows the votes like pending does
                approvers=[{**v.who.to_dict(), "reason": v.reason, "scope": v.scope, "at": v.at}
                           for v in counted],
                reason="; ".join(v.reason for v in counted),
                ttls=[v.ttl_s for v in counted if v.ttl_s is not None])
            decision = Decision(approved=True, by_uid=decision.by_uid, by_user=decision.by_user,
                                reason=decision.reason, request_id=req.id, scope=final_scope,
                                grant_id=grant.id)
        state = APPROVED if req.waiters or grant is not None else APPROVED_UNUSED
        self._finish(req, decision, "approved", state, who, grant, votes)
        return decision

    def _check(self, hold_id: str, req: ApprovalRequest | None, who: Identity, verb: str,
               reason: str, approve: bool, scope: str, ttl_s: float | None,
               break_glass: bool) -> None:
        if not self.is_approver(who):
            raise DecisionRefused(
                "not_approver",
                f"{who.user} (uid {who.uid}) is not an approver; approvals.approvers lists who "
                "may approve or deny holds")
        if req is None or req.state != PENDING:
            done = req or self._finished.get(hold_id)
            if done is not None and done.decision is not None:
                by = done.decision.by_user
                what = {"approved": f"already approved by {by}", "denied": f"already denied by {by}",
                        "expired": "already expired (no decision in time)"}.get(
                            done.outcome, done.outcome)
                raise DecisionRefused("already_decided", f"hold {hold_id} was {what}")
            raise DecisionRefused("not_found", f"no pending hold {hold_id!r} (see egressctl pending)")
        if who not in self.rules.approvers_for(req.verdict.rule):
            raise DecisionRefused(
                "not_approver",
                f"{who.user} (uid {who.uid}) is not an approver for rule {req.verdict.rule!r} "
                "(its approvals.approvers)")
        if who.uid == req.owner_uid:
            raise DecisionRefused(
                "self_approval",
                f"{who.user} (uid {who.uid}) owns flow {req.flow.flow_id} and cannot decide on "
                f"its own hold, neither approve nor deny (root included); another approver must {verb} it")
        if not reason or not reason.strip():
            raise DecisionRefused("empty_reason",
                                  f"a reason is required to {verb} hold {hold_id} (--reason TEXT)")
        if not approve:
            return
        if scope not in SCOPES:
            raise DecisionRefused("bad_scope", f"scope {scope!r} is not one of: {', '.join(SCOPES)}")
        if ttl_s is not None and not ttl_s > 0:
            raise DecisionRefused("bad_ttl", f"ttl must be more than zero, not {ttl_s!r}")
        if break_glass and not self.break_glass:
            raise DecisionRefused(
                "break_glass_disabled",
                "break-glass is disabled on this host (approvals.break_glass: false)")
        if who.uid in req.votes:
            raise DecisionRefused(
                "already_voted",
                f"{who.user} (uid {who.uid}) already approved hold {hold_id}; it needs "
                f"{req.required} different approvers ({len(req.votes)} so far)")

    def _finish(self, req: ApprovalRequest, decision: Decision, outcome: str, state: str,
                who: Identity | None, grant: Grant | None = None,
                votes: dict[int, Vote] | None = None) -> None:
        """Audit first (an audit failure changes nothing), then release the waiters, then tell
        subscribers."""
        fields: dict[str, Any] = {
            "hold_id": req.id,
            "flow_id": req.flow.flow_id,
            "outcome": outcome,
            "decision": decision.to_dict(),
            "who": who.to_dict() if who else {"uid": SYSTEM_UID, "user": SYSTEM_USER, "pid": 0},
            "reason": decision.reason,
            "rule": req.verdict.rule,
            "count": req.count,
            "released_flows": [w.flow.flow_id for w in req.waiters],
        }
        if outcome == "approved":
            fields["scope"] = decision.scope
            fields["approvers"] = [v.who.to_dict() for v in (votes or req.votes).values()] or (
                [who.to_dict()] if who else [])
            if state == APPROVED_UNUSED:
                fields["once_unused"] = True    # the next identical flow passes once
        self._on_event(AUDIT_DECISION, fields)
        if grant is not None:
            self._grants.add(grant, req.flow.flow_id)
        if votes is not None:
            req.votes = votes
        req.decision = decision
        req.outcome = outcome
        req.state = state
        req.scope = decision.scope
        req.grant_id = decision.grant_id
        req.decided_by_pid = who.pid if who else 0
        req.decided_at = time.time()
        for waiter in list(req.waiters):
            self._release(waiter, decision)
        if state in (APPROVED, DONE):
            self._retire(req)
        else:
            self._save(req)             # unused once / denial: live until the request TTL
        self._publish(EXPIRED if outcome == "expired" else DECIDED, req, decision)

    def _retire(self, req: ApprovalRequest) -> None:
        """The request no longer answers anything: keep it only to explain late decisions."""
        if req._timer is not None:
            req._timer.cancel()
        self._requests.pop(req.id, None)
        if self._by_key.get(req.key) is req:
            del self._by_key[req.key]
        self._finished[req.id] = req
        while len(self._finished) > _FINISHED_MEMORY:
            self._finished.popitem(last=False)
        self._save(req)

    def _arm_request(self, req: ApprovalRequest) -> None:
        loop = asyncio.get_running_loop()
        if req._timer is not None:
            req._timer.cancel()
        req._timer = loop.call_later(max(0.0, req.deadline - time.monotonic()),
                                     self._request_ttl_over, req.id)

    def _request_ttl_over(self, hold_id: str) -> None:
        req = self._requests.get(hold_id)
        if req is None:
            return
        if req.state == PENDING:
            self._expire_request(req)
        elif req.state == APPROVED_UNUSED:
            try:
                self._on_event(AUDIT_UNUSED, {"hold_id": req.id, "flow_id": req.flow.flow_id,
                                              "reason": "no identical flow used the approval"})
            except Exception:
                log.exception("audit hook failed on an unused approval (%s)", req.id)
            req.state = DONE
            self._retire(req)
        else:                                       # a denial that no longer stands
            req.state = DONE
            self._retire(req)

    def _expire_request(self, req: ApprovalRequest) -> None:
        allow = self.on_timeout == "allow"
        decision = Decision(approved=allow, by_uid=SYSTEM_UID, by_user=SYSTEM_USER,
                            reason=(f"no decision within {req.ttl_s:g}s; "
                                    f"on_timeout={self.on_timeout}"),
                            timed_out=True, request_id=req.id)
        try:
            self._finish(req, decision, "expired", DONE, None)
        except Exception:
            # The audit hook failed: the flows must still not wait forever. Resolve without it.
            log.exception("audit hook failed while expiring hold %s", req.id)
            req.decision, req.outcome, req.state = decision, "expired", DONE
            for waiter in list(req.waiters):
                self._release(waiter, decision)
            self._retire(req)
            self._publish(EXPIRED, req, decision)

    # -- grants --------------------------------------------------------------------------------

    def revoke(self, grant_id: str, who: Identity, reason: str) -> Grant:
        """End a grant now. Any approver may revoke (it only takes permission away); a reason
        is required. Raises DecisionRefused (audited)."""
        grant_id = self._redact(_clip(grant_id, MAX_HOLD_ID))
        reason = self._redact(_clip(reason or "", MAX_REASON))
        grant = self._grants.get(grant_id)
        code, message = "", ""
        if not self.is_approver(who):
            code, message = "not_approver", (f"{who.user} (uid {who.uid}) is not an approver; "
                                             "only approvers may revoke grants")
        elif grant is None:
            code, message = "not_found", f"no live grant {grant_id!r} (see egressctl grants)"
        elif not reason or not reason.strip():
            code, message = "empty_reason", f"a reason is required to revoke {grant_id} (--reason TEXT)"
        if code:
            self._on_event(AUDIT_REFUSED, {"grant_id": grant_id, "who": who.to_dict(),
                                           "attempted": "revoke", "reason": reason,
                                           "code": code, "message": message})
            raise DecisionRefused(code, message)
        assert grant is not None
        self._grants.revoke(grant, who.to_dict(), reason.strip())
        return grant

    # -- shutdown ------------------------------------------------------------------------------

    def close(self, why: str = "egressguard is stopping") -> None:
        """Detach every held connection (their clients are reset); requests and grants stay
        (in the store, when there is one)."""
        for req in list(self._requests.values()):
            for waiter in list(req.waiters):
                self._detach(waiter, why)
            if req._timer is not None:
                req._timer.cancel()
        self._grants.close()
        if self.store is not None:
            self.store.close()
            self.store = None

    # -- internals -----------------------------------------------------------------------------

    def _save(self, req: ApprovalRequest) -> None:
        if self.store is not None:
            live = req.state in _LIVE_STATES and req.id in self._requests
            self.store.put_request(req.id, req.state if live else "done", req.expires_at,
                                   req.to_store())

    def _publish(self, kind: str, req: ApprovalRequest, decision: Decision | None) -> None:
        event = HoldEvent(kind=kind, hold=req, decision=decision, time=time.time())
        for cb in list(self._subscribers):
            try:
                cb(event)
            except Exception:
                log.exception("hold event subscriber failed")


def _remaining(expires_at: float, ttl_s: float, now_wall: float) -> float:
    """Seconds left of a stored expiry, never more than the TTL it was given (a clock that
    went backwards while the daemon was down must not stretch it)."""
    return min(max(0.0, expires_at - now_wall), ttl_s)
