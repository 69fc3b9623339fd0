"""The ledger's two RPCs (Usage, ListLedgerFlows): query in a worker thread, translate to proto.
Who sees what: approvers every flow, anyone else only flows their own uid opened."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import grpc

from egressguard.approvals._proto import approvals_pb2 as pb
from egressguard.ledger import query

DAY = 86400.0


async def usage(ledger_path: str | None, all_users: bool, uid: int,
                request: pb.UsageRequest, context: grpc.aio.ServicerContext) -> pb.UsageResponse:
    await _require(ledger_path, context)
    by = request.by or "process"
    if by not in query.GROUPS:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                            f"by must be one of: {', '.join(query.GROUPS)}")
    since = request.since_s if request.since_s > 0 else DAY
    rows = await asyncio.to_thread(query.usage, ledger_path, by, since,
                                   None if all_users else uid)
    return pb.UsageResponse(by=by, all_users=all_users, rows=[
        pb.UsageRow(key=str(r["key"] if r["key"] is not None else ""), flows=r["flows"] or 0,
                    bytes_up=r.get("bytes_up") or 0, bytes_down=r.get("bytes_down") or 0,
                    requests=r.get("requests") or 0, detections=r.get("detections") or 0,
                    blocked=r.get("blocked") or 0, held=r.get("held") or 0)
        for r in rows])


async def ledger_flows(ledger_path: str | None, all_users: bool, uid: int,
                       request: pb.LedgerFlowsRequest,
                       context: grpc.aio.ServicerContext) -> pb.LedgerFlowsResponse:
    await _require(ledger_path, context)
    since = request.since_s if request.since_s > 0 else DAY
    known = _provider_ids()
    if request.provider and request.provider not in known:
        # Rules refuse unknown provider ids; a filter that can never match says so too.
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                            f"unknown provider {request.provider!r}: the endpoint catalog "
                            f"knows {', '.join(sorted(known))}")
    rows = await asyncio.to_thread(query.flows, ledger_path, since, None if all_users else uid,
                                   request.provider, request.host, request.limit or 1000)
    return pb.LedgerFlowsResponse(all_users=all_users, flows=[_flow(r) for r in rows])


@functools.lru_cache(maxsize=1)
def _provider_ids() -> frozenset[str]:
    from egressguard.catalog import Catalog
    return Catalog.builtin().ids


def _flow(r: dict[str, Any]) -> pb.LedgerFlow:
    return pb.LedgerFlow(
        flow_id=r["flow_id"], opened_at=r["opened_at"], closed_at=r["closed_at"],
        process=pb.Process(pid=r["pid"] or 0, uid=r["uid"] if r["uid"] is not None else -1,
                           user=r["user"] or "", exe=r["exe"] or "", comm=r["comm"] or "",
                           unit=r["unit"] or "", container=r["container"] or ""),
        destination=pb.Destination(ip=r["dst_ip"] or "", port=r["dst_port"] or 0,
                                   host=r["host"] or "", transport="tcp",
                                   provider=r["provider"] or ""),
        bytes_up=r["bytes_up"], bytes_down=r["bytes_down"], action=r["action"] or "",
        rule=r["rule"] or "", state=r["state"] or "", intercepted=bool(r["intercepted"]),
        requests=r["requests"], models=[m for m in (r["models"] or "").split(",") if m],
        endpoint_kinds=[k for k in (r["endpoint_kinds"] or "").split(",") if k],
        approval_id=r["approval_id"] or "", tls_passthrough=r.get("tls_passthrough") or "",
        detections=[pb.LedgerDetection(detector=d["detector"], data_class=d["class"],
                                       count=d["count"], fields=d["fields"])
                    for d in r["detections"]])


async def _require(path: str | None, context: grpc.aio.ServicerContext) -> None:
    if not path:
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                            "the data usage ledger is not served by this approvals server "
                            "(ledger off)")
