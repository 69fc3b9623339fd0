"""Flow events -> ledger rows. Subscribed to the EventBus; the data path never calls it.

Per open flow it gathers what only events carry (each intercepted request's provider, endpoint
kind and model from `http.request`; JSON fields of findings from `flow.detect`; the hold id
from `flow.hold`), and at `flow.close` writes one row from the closed FlowInfo. Only labels and
counts: detector ids, classes, field paths, byte counts. Never bytes or values.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from egressguard.ledger.store import FlowRow, LedgerStore
from egressguard.model import FlowInfo

MAX_OPEN = 100_000          # accumulators for flows whose close never came (bounded)
_APPROVAL_ID = {"flow.hold": "hold_id", "approval.use": "hold_id",
                "approval.denied_retry": "hold_id", "approval.repeat": "hold_id",
                "grant.use": "hold_id"}


@dataclass
class _Acc:
    requests: int = 0
    models: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    fields: dict[str, list[str]] = field(default_factory=dict)
    hold_id: str = ""


def _add(items: list[str], value: str) -> None:
    if value and value not in items and len(items) < 32:
        items.append(value)


class LedgerListener:
    def __init__(self, store: LedgerStore):
        self.store = store
        self._open: dict[str, _Acc] = {}

    def __call__(self, event: str, flow: FlowInfo | None, fields: dict[str, Any]) -> None:
        if flow is None:
            return
        if event == "flow.close":
            self.store.add(self._row(flow, self._open.pop(flow.flow_id, _Acc())))
            return
        if event not in ("http.request", "flow.detect") and event not in _APPROVAL_ID:
            return
        acc = self._open.get(flow.flow_id)
        if acc is None:
            if len(self._open) >= MAX_OPEN:
                self._open.pop(next(iter(self._open)))
            acc = self._open[flow.flow_id] = _Acc()
        if event == "http.request":
            acc.requests += 1
            _add(acc.models, str(fields.get("model") or ""))
            _add(acc.kinds, str(fields.get("kind") or ""))
            for det, paths in (fields.get("fields") or {}).items():
                for p in paths:
                    _add(acc.fields.setdefault(det, []), p)
        elif event == "flow.detect":
            for d in fields.get("detections") or ():
                if d.get("field"):
                    _add(acc.fields.setdefault(d["detector"], []), d["field"])
        else:
            # The approval request that decided the flow: its own hold, the `once` approval
            # it used, the denial it retried, or the request a grant it used came from.
            acc.hold_id = str(fields.get(_APPROVAL_ID[event]) or acc.hold_id)

    @staticmethod
    def _row(flow: FlowInfo, acc: _Acc) -> FlowRow:
        p, d = flow.process, flow.destination
        v = flow.verdict
        values = {
            "flow_id": flow.flow_id, "opened_at": flow.opened_at, "closed_at": time.time(),
            "pid": p.pid, "uid": p.uid, "user": p.user, "exe": p.exe, "comm": p.comm,
            "unit": p.systemd_unit, "container": p.container_id,
            "dst_ip": d.ip, "dst_port": d.port, "host": d.host, "provider": d.provider,
            "alpn": ",".join(d.alpn),
            "bytes_up": flow.bytes_delivered, "bytes_down": flow.bytes_down,
            "bytes_from_client": flow.bytes_up,
            "action": v.action.value if v else "", "rule": v.rule if v else "",
            "state": flow.state.value, "intercepted": int(flow.intercepted),
            "requests": acc.requests, "models": ",".join(acc.models),
            "endpoint_kinds": ",".join(acc.kinds), "approval_id": acc.hold_id,
            "tls_passthrough": flow.tls_passthrough,
        }
        counts = Counter((det.detector, det.cls) for det in flow.detections)
        dets = [(det, cls, n, "\n".join(acc.fields.get(det, [])))
                for (det, cls), n in sorted(counts.items())]
        return FlowRow(values, dets)
