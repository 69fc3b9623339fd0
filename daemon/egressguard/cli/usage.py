"""`egressctl usage` and `egressctl flows --since/--provider/--host`: the data usage ledger.

Readable tables by default, one JSON object per line with `--json`. The daemon decides what
you may see (approvers: every flow; others: their own uid's flows)."""

from __future__ import annotations

import argparse
import json
import re
import time
from typing import Any

from egressguard.model import host_port

_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 3600}


def parse_since(text: str) -> float:
    """'24h', '30m', '7d', '90s' (a bare number is hours) -> seconds."""
    m = _SINCE.match(text)
    if not m or float(m.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a period like 30m, 24h or 7d")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def usage_json(by: str, r: Any) -> dict[str, Any]:
    return {"by": by, "key": r.key, "flows": r.flows, "bytes_up": r.bytes_up,
            "bytes_down": r.bytes_down, "requests": r.requests, "detections": r.detections,
            "blocked": r.blocked, "held": r.held}


def cmd_usage(args: argparse.Namespace, client: Any) -> int:
    reply = client.call(client.stub.Usage, client.pb.UsageRequest(by=args.by,
                                                                   since_s=args.since))
    if args.json:
        for r in reply.rows:
            print(json.dumps(usage_json(reply.by, r), sort_keys=True), flush=True)
        return 0
    if not reply.rows:
        print("no flows in this period")
        return 0
    rows = [(reply.by.upper(), "FLOWS", "REQUESTS", "UP", "DOWN", "DETECTIONS", "HELD",
             "BLOCKED")]
    for r in reply.rows:
        rows.append((r.key or "-", str(r.flows), str(r.requests), _size(r.bytes_up),
                     _size(r.bytes_down), str(r.detections), str(r.held), str(r.blocked)))
    print(_table(rows))
    if not reply.all_users:
        print("(only your own flows: approvers see everyone's)")
    return 0


def ledger_flow_json(f: Any) -> dict[str, Any]:
    p, d = f.process, f.destination
    return {
        "flow_id": f.flow_id, "opened_at": f.opened_at, "closed_at": f.closed_at,
        "process": {"pid": p.pid, "uid": p.uid, "user": p.user, "exe": p.exe, "comm": p.comm,
                    "unit": p.unit, "container": p.container},
        "destination": {"ip": d.ip, "port": d.port, "host": d.host, "provider": d.provider},
        "bytes_up": f.bytes_up, "bytes_down": f.bytes_down, "action": f.action,
        "rule": f.rule, "state": f.state, "intercepted": f.intercepted,
        "requests": f.requests, "models": list(f.models),
        "endpoint_kinds": list(f.endpoint_kinds), "approval_id": f.approval_id,
        "tls_passthrough": f.tls_passthrough,
        "detections": [{"detector": x.detector, "class": x.data_class, "count": x.count,
                        "fields": list(x.fields)} for x in f.detections],
    }


def _action(f: Any) -> str:
    """The policy's action, then how an approval request (if any) and TLS ended for the flow:
    `hold (h-1a2b, closed)`, `hold (h-1a2b, denied)`, `allow NOT INSPECTED (intercept_failure)`."""
    text = f.action or "-"
    if f.approval_id:
        text += f" ({f.approval_id}, {f.state})"
    if f.tls_passthrough:
        text += f" NOT INSPECTED ({f.tls_passthrough})"
    return text


def cmd_ledger_flows(args: argparse.Namespace, client: Any) -> int:
    reply = client.call(client.stub.ListLedgerFlows, client.pb.LedgerFlowsRequest(
        since_s=args.since or 3600.0, provider=args.provider or "", host=args.host or ""))
    if args.json:
        for f in reply.flows:
            print(json.dumps(ledger_flow_json(f), sort_keys=True), flush=True)
        return 0
    if not reply.flows:
        print("no flows in this period")
        return 0
    rows = [("CLOSED", "FLOW", "USER", "PROCESS", "DESTINATION", "PROVIDER", "MODEL", "KIND",
             "ACTION", "DATA", "UP/DOWN")]
    for f in reply.flows:
        d = f.destination
        rows.append((
            time.strftime("%H:%M:%S", time.localtime(f.closed_at)), f.flow_id,
            f.process.user or f"uid:{f.process.uid}", (f.process.exe or f.process.comm)[-28:],
            host_port(d.host or d.ip, d.port), d.provider or "-", ",".join(f.models) or "-",
            ",".join(f.endpoint_kinds) or "-", _action(f),
            ",".join(f"{x.detector}x{x.count}" for x in f.detections) or "-",
            f"{f.bytes_up}/{f.bytes_down}"))
    print(_table(rows))
    return 0
