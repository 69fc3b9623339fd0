"""The approvals gRPC service (egressguard.v1.Approvals) and its server.

Wiring: `start_approval_server(socket_path, registry, flows_provider)` starts a grpc.aio server
on 127.0.0.1:<ephemeral> (never reachable without an identity, see below), registers the
Approvals servicer and grpc health checking, then opens the Unix-socket front door
(`peercred.PeerCredFrontDoor`) that labels every connection with the caller's SO_PEERCRED
identity. Every RPC -- health included -- first maps `context.peer()` to that identity and
refuses with UNAUTHENTICATED when there is none (a direct connection to the internal port).

The servicer only translates: rules about who may decide live in `holds.HoldRegistry`, so a
refusal here is `DecisionRefused` mapped to a status code with the registry's message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from egressguard.approvals._proto import approvals_pb2 as pb
from egressguard.approvals._proto import approvals_pb2_grpc as pb_grpc
from egressguard.approvals import ops as ops_rpc
from egressguard.approvals.holds import (ABORTED, DECIDED, EXPIRED, OPENED, VOTED,
                                         DecisionRefused, HoldEvent, HoldRegistry, PendingHold,
                                         Vote)
from egressguard.approvals.peercred import Identity, PeerCredFrontDoor, PeerTable
from egressguard.approvals.scope import ONCE, Grant
from egressguard.model import Decision, Destination, Detection, FlowInfo, Process

# How a servicer learns who is calling: context -> Identity, or None / a message saying why not
# (refused with UNAUTHENTICATED).
Identify = Callable[[grpc.aio.ServicerContext], "Identity | str | None"]

log = logging.getLogger(__name__)

SERVICE_NAME = "egressguard.v1.Approvals"
WATCH_QUEUE = 1024          # events buffered per Watch stream before it is cut off

_REFUSAL_STATUS = {
    "not_found": grpc.StatusCode.NOT_FOUND,
    "already_decided": grpc.StatusCode.FAILED_PRECONDITION,
    "not_approver": grpc.StatusCode.PERMISSION_DENIED,
    "self_approval": grpc.StatusCode.PERMISSION_DENIED,
    "empty_reason": grpc.StatusCode.INVALID_ARGUMENT,
    "already_voted": grpc.StatusCode.FAILED_PRECONDITION,
    "bad_scope": grpc.StatusCode.INVALID_ARGUMENT,
    "bad_ttl": grpc.StatusCode.INVALID_ARGUMENT,
    "break_glass_disabled": grpc.StatusCode.PERMISSION_DENIED,
}
_KIND = {
    OPENED: pb.HOLD_EVENT_KIND_OPENED,
    DECIDED: pb.HOLD_EVENT_KIND_DECIDED,
    EXPIRED: pb.HOLD_EVENT_KIND_EXPIRED,
    ABORTED: pb.HOLD_EVENT_KIND_ABORTED,
    VOTED: pb.HOLD_EVENT_KIND_VOTED,
}
_OUTCOME = {
    "approved": pb.OUTCOME_APPROVED,
    "denied": pb.OUTCOME_DENIED,
    "expired": pb.OUTCOME_EXPIRED,
    "aborted": pb.OUTCOME_ABORTED,
    "voted": pb.OUTCOME_VOTED,
}
_UNAUTHENTICATED = ("no identity for this connection: connect through the approvals Unix socket "
                    "(identity comes from its peer credentials)")


# -- model -> proto ----------------------------------------------------------------------------

def process_pb(p: Process) -> pb.Process:
    return pb.Process(pid=p.pid, tgid=p.tgid, uid=p.uid, gid=p.gid, comm=p.comm, exe=p.exe,
                      cmdline=list(p.cmdline), user=p.user, unit=p.systemd_unit,
                      container=p.container_id, cgroup_path=p.cgroup_path)


def destination_pb(d: Destination) -> pb.Destination:
    return pb.Destination(ip=d.ip, port=d.port, host=d.host, transport=d.transport,
                          provider=d.provider)


def detection_pb(d: Detection) -> pb.Detection:
    """Masked preview and fingerprint only: the model never holds a raw value either."""
    return pb.Detection(detector=d.detector, data_class=d.cls, offset=d.start,
                        length=d.end - d.start, preview=d.preview, fingerprint=d.fingerprint,
                        severity=d.severity, confidence=d.confidence)


def hold_pb(h: PendingHold) -> pb.Hold:
    return pb.Hold(id=h.id, flow_id=h.flow.flow_id, process=process_pb(h.flow.process),
                   destination=destination_pb(h.flow.destination),
                   detections=[detection_pb(d) for d in h.detections],
                   rule=h.verdict.rule, reason=h.verdict.reason, opened_at=h.opened_at,
                   age_s=h.age_s(), expires_in_s=0.0 if h.done else h.expires_in_s(),
                   on_timeout=h.on_timeout, count=h.count, required=h.required,
                   votes=[vote_pb(v) for v in h.votes.values()], state=h.state,
                   waiting=len(h.waiters))


def vote_pb(v: Vote) -> pb.Vote:
    return pb.Vote(uid=v.who.uid, user=v.who.user, channel=v.who.channel,
                   principal=v.who.principal, reason=v.reason, scope=v.scope, at=v.at)


def decision_pb(h: PendingHold, d: Decision | None = None,
                registry: HoldRegistry | None = None) -> pb.Decision:
    """The decision `d` (default: the request's own) on request `h`."""
    d = d or h.decision
    assert d is not None
    msg = pb.Decision(hold_id=h.id, flow_id=h.flow.flow_id, outcome=_OUTCOME[d.outcome],
                      approved=d.approved, by_uid=d.by_uid, by_user=d.by_user,
                      by_pid=h.decided_by_pid, reason=d.reason, decided_at=h.decided_at,
                      scope=d.scope, grant_id=d.grant_id, votes=len(h.votes),
                      required=h.required)
    grant = next((g for g in registry.grants() if g.id == d.grant_id), None) \
        if registry is not None and d.grant_id else None
    if grant is not None:
        msg.grant_ttl_s = grant.ttl_s
        msg.grant_ttl_capped = grant.capped
    return msg


def event_pb(e: HoldEvent) -> pb.HoldEvent:
    msg = pb.HoldEvent(kind=_KIND[e.kind], hold=hold_pb(e.hold), time=e.time)
    if e.decision is not None:
        msg.decision.CopyFrom(decision_pb(e.hold, e.decision))
    return msg


def grant_pb(g: Grant) -> pb.Grant:
    msg = pb.Grant(id=g.id, scope=g.scope, rule=g.rule, uid=g.process.uid, exe=g.process.exe,
                   unit=g.process.unit, container=g.process.container, request_id=g.request_id,
                   reason=g.reason, created_at=g.created_at, uses=g.uses,
                   expires_in_s=max(0.0, g.deadline - time.monotonic()),
                   approvers=[pb.Vote(uid=int(a["uid"]), user=str(a["user"]),
                                      channel=str(a.get("channel", "unix")),
                                      principal=str(a.get("principal", "")),
                                      reason=str(a.get("reason", "")),   # absent: older grants
                                      scope=str(a.get("scope", "")), at=float(a.get("at", 0.0)))
                              for a in g.approvers])
    if g.destination is not None:
        msg.destination.CopyFrom(pb.Destination(ip=g.destination.ip, port=g.destination.port,
                                                host=g.destination.host, transport="tcp"))
    return msg


def flow_pb(f: FlowInfo) -> pb.Flow:
    msg = pb.Flow(flow_id=f.flow_id, process=process_pb(f.process),
                  destination=destination_pb(f.destination), opened_at=f.opened_at,
                  state=f.state.value, detections=[detection_pb(d) for d in f.detections],
                  bytes_up=f.bytes_delivered, bytes_down=f.bytes_down)   # up: delivered
    if f.verdict is not None:
        msg.verdict.CopyFrom(pb.Verdict(action=f.verdict.action.value, rule=f.verdict.rule,
                                        reason=f.verdict.reason))
    return msg


# -- servicers ---------------------------------------------------------------------------------

def peer_identify(table: PeerTable) -> Identify:
    """Identity of a call that came through the Unix-socket front door."""
    return lambda context: table.lookup(context.peer())


async def _identity(identify: Identify, context: grpc.aio.ServicerContext,
                    message: str = _UNAUTHENTICATED) -> Identity:
    who = identify(context)
    if not isinstance(who, Identity):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, who or message)
        raise AssertionError("unreachable")
    return who


class ApprovalsServicer(pb_grpc.ApprovalsServicer):
    """egressguard.v1.Approvals over a HoldRegistry and a flows provider. `identify` is the
    channel's identity source (SO_PEERCRED via the front door, or the mTLS certificate)."""

    def __init__(self, registry: HoldRegistry, flows_provider: Callable[[], list[FlowInfo]],
                 identify: Identify, unauthenticated: str = _UNAUTHENTICATED,
                 ledger_path: str | None = None,
                 ops: ops_rpc.Operations | None = None) -> None:
        self.registry = registry
        self.flows_provider = flows_provider
        self.identify = identify
        self.unauthenticated = unauthenticated
        self.ledger_path = ledger_path
        self.ops = ops     # Status and Reload: served on the local socket only

    async def _who(self, context: grpc.aio.ServicerContext) -> Identity:
        return await _identity(self.identify, context, self.unauthenticated)

    async def ListPending(self, request: pb.ListPendingRequest,
                          context: grpc.aio.ServicerContext) -> pb.ListPendingResponse:
        who = await self._who(context)
        return pb.ListPendingResponse(holds=[
            hold_pb(h) for h in self.registry.pending() if self.registry.may_view(who, h.owner_uid)])

    async def Watch(self, request: pb.WatchRequest,
                    context: grpc.aio.ServicerContext) -> AsyncIterator[pb.HoldEvent]:
        who = await self._who(context)
        queue: asyncio.Queue[pb.HoldEvent] = asyncio.Queue(maxsize=WATCH_QUEUE)
        overflow = False

        def on_event(e: HoldEvent) -> None:
            nonlocal overflow
            if overflow or not self.registry.may_view(who, e.hold.owner_uid):
                return
            try:
                queue.put_nowait(event_pb(e))       # converted now: a snapshot of that moment
            except asyncio.QueueFull:
                overflow = True                     # the queue is full, so get() wakes up

        # Subscribe and snapshot in one synchronous step: no event can fall between them.
        unsubscribe = self.registry.subscribe(on_event)
        try:
            if request.include_pending:
                for h in self.registry.pending():
                    if self.registry.may_view(who, h.owner_uid):
                        yield pb.HoldEvent(kind=pb.HOLD_EVENT_KIND_OPENED, hold=hold_pb(h),
                                           time=time.time())
            while not overflow:
                item = await queue.get()
                if overflow:
                    break
                yield item
        finally:
            unsubscribe()
        # The stream otherwise ends only when the client goes away or the server stops. A
        # watcher that cannot keep up is cut off loudly rather than shown a history with holes.
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                            "watch stream fell too far behind; reconnect")

    async def Approve(self, request: pb.DecideRequest,
                      context: grpc.aio.ServicerContext) -> pb.DecideResponse:
        return await self._decide(request, context, approve=True)

    async def Deny(self, request: pb.DecideRequest,
                   context: grpc.aio.ServicerContext) -> pb.DecideResponse:
        return await self._decide(request, context, approve=False)

    async def _decide(self, request: pb.DecideRequest, context: grpc.aio.ServicerContext,
                      approve: bool) -> pb.DecideResponse:
        who = await self._who(context)
        try:
            decision = self.registry.decide(
                request.hold_id, who, approve, request.reason, scope=request.scope or ONCE,
                ttl_s=request.ttl_s if request.ttl_s else None,
                break_glass=request.break_glass)
        except DecisionRefused as e:
            await context.abort(_REFUSAL_STATUS.get(e.code, grpc.StatusCode.PERMISSION_DENIED),
                                e.message)
            raise AssertionError("unreachable")
        hold = self.registry.get(request.hold_id)
        assert hold is not None
        return pb.DecideResponse(decision=decision_pb(hold, decision, self.registry))

    async def ListGrants(self, request: pb.ListGrantsRequest,
                         context: grpc.aio.ServicerContext) -> pb.ListGrantsResponse:
        who = await self._who(context)
        return pb.ListGrantsResponse(grants=[
            grant_pb(g) for g in self.registry.grants()
            if self.registry.may_view(who, g.process.uid)])

    async def Revoke(self, request: pb.RevokeRequest,
                     context: grpc.aio.ServicerContext) -> pb.RevokeResponse:
        who = await self._who(context)
        try:
            grant = self.registry.revoke(request.grant_id, who, request.reason)
        except DecisionRefused as e:
            await context.abort(_REFUSAL_STATUS.get(e.code, grpc.StatusCode.PERMISSION_DENIED),
                                e.message)
            raise AssertionError("unreachable")
        return pb.RevokeResponse(grant=grant_pb(grant))

    async def GetFlow(self, request: pb.GetFlowRequest,
                      context: grpc.aio.ServicerContext) -> pb.Flow:
        who = await self._who(context)
        for f in self.flows_provider():
            if f.flow_id == request.flow_id and self.registry.may_view(who, f.process.uid):
                return flow_pb(f)
        # Same answer for "does not exist" and "not yours": no probing other users' flows.
        await context.abort(grpc.StatusCode.NOT_FOUND, f"no flow {request.flow_id!r}")
        raise AssertionError("unreachable")

    async def ListFlows(self, request: pb.ListFlowsRequest,
                        context: grpc.aio.ServicerContext) -> pb.ListFlowsResponse:
        who = await self._who(context)
        return pb.ListFlowsResponse(flows=[
            flow_pb(f) for f in self.flows_provider() if self.registry.may_view(who, f.process.uid)])

    async def Usage(self, request: pb.UsageRequest,
                    context: grpc.aio.ServicerContext) -> pb.UsageResponse:
        from egressguard.ledger import rpc
        who = await self._who(context)
        return await rpc.usage(self.ledger_path, self.registry.is_approver(who), who.uid,
                               request, context)

    async def ListLedgerFlows(self, request: pb.LedgerFlowsRequest,
                              context: grpc.aio.ServicerContext) -> pb.LedgerFlowsResponse:
        from egressguard.ledger import rpc
        who = await self._who(context)
        return await rpc.ledger_flows(self.ledger_path, self.registry.is_approver(who),
                                      who.uid, request, context)

    async def Status(self, request: pb.StatusRequest,
                     context: grpc.aio.ServicerContext) -> pb.StatusResponse:
        await self._who(context)
        if self.ops is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "status is not served here")
        assert self.ops is not None
        return ops_rpc.status_pb(self.ops.status())

    async def Reload(self, request: pb.ReloadRequest,
                     context: grpc.aio.ServicerContext) -> pb.ReloadResponse:
        who = await self._who(context)
        if self.ops is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "reload is not served here")
        assert self.ops is not None
        if not self.ops.may_reload(who.uid):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                f"{who.user} (uid {who.uid}) may not reload the policy: only "
                                "root and the users in approvals.approvers may")
        result = await self.ops.reload("egressctl", who.to_dict())
        return ops_rpc.reload_pb(result)


class _HealthServicer(health.aio.HealthServicer):
    """Standard health checking, behind the same identity gate as everything else."""

    def __init__(self, identify: Identify, unauthenticated: str = _UNAUTHENTICATED) -> None:
        super().__init__()
        self._identify = identify
        self._unauthenticated = unauthenticated

    async def Check(self, request, context):  # type: ignore[no-untyped-def]
        await _identity(self._identify, context, self._unauthenticated)
        return await super().Check(request, context)

    async def Watch(self, request, context):  # type: ignore[no-untyped-def]
        await _identity(self._identify, context, self._unauthenticated)
        return await super().Watch(request, context)


# -- server ------------------------------------------------------------------------------------

class ApprovalServer:
    """A running approvals service: the Unix socket front door plus the internal gRPC server."""

    def __init__(self, socket_path: str, server: grpc.aio.Server, front: PeerCredFrontDoor,
                 health_servicer: _HealthServicer, internal_port: int) -> None:
        self.socket_path = socket_path
        self.internal_port = internal_port
        self._server = server
        self._front = front
        self._health = health_servicer
        self._stopped = False

    async def stop(self, grace: float = 1.0) -> None:
        """Stop accepting, end streams and relays, remove the socket. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        await self._health.enter_graceful_shutdown()
        await self._front.stop()
        await self._server.stop(grace)


async def start_approval_server(socket_path: str, registry: HoldRegistry,
                                flows_provider: Callable[[], list[FlowInfo]],
                                mark: int = 0,
                                ledger_path: str | None = None,
                                ops: ops_rpc.Operations | None = None) -> ApprovalServer:
    """Serve egressguard.v1.Approvals on `socket_path`; raises EnvironmentProblem when the
    socket cannot be created or another daemon already listens there. `mark` is the SO_MARK
    the probes exempt (proxy.mark), for the front door's internal connections."""
    table = PeerTable()
    server = grpc.aio.server()
    identify = peer_identify(table)
    pb_grpc.add_ApprovalsServicer_to_server(
        ApprovalsServicer(registry, flows_provider, identify, ledger_path=ledger_path, ops=ops),
        server)
    health_servicer = _HealthServicer(identify)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    front = PeerCredFrontDoor(socket_path, ("127.0.0.1", port), table, mark=mark)
    try:
        await front.start()
    except BaseException:
        await server.stop(None)
        raise
    log.info("approvals listening on %s", socket_path)
    return ApprovalServer(socket_path, server, front, health_servicer, port)
