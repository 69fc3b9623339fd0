"""Flow events, fanned out to listeners (audit log, metrics later, the watch stream).

The data path never calls the audit log directly: the relay yields `Emit` commands, the proxy
hands them to this bus, and each listener turns them into what it needs. Listeners run inline
and must not block (the audit writer only enqueues).
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from .model import FlowInfo

log = logging.getLogger("egressguard.events")

Listener = Callable[[str, FlowInfo | None, dict[str, Any]], None]


class EventBus:
    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def emit(self, event: str, flow: FlowInfo | None, fields: dict[str, Any]) -> None:
        for listener in self._listeners:
            try:
                listener(event, flow, fields)
            except Exception:  # noqa: BLE001 - a faulty listener must not break enforcement
                log.exception("event listener failed on %s", event)


def audit_record(event: str, flow: FlowInfo | None, fields: dict[str, Any]) -> dict[str, Any]:
    """Shape an event for the audit log: who, where, what was found, what was done, why.

    Only masked previews and keyed fingerprints of findings are ever included (model.Detection
    holds nothing else)."""
    rec: dict[str, Any] = {"event": event}
    if flow is not None:
        rec["flow_id"] = flow.flow_id
        rec["process"] = flow.process.to_dict()
        rec["destination"] = flow.destination.to_dict()
    verdict = fields.get("verdict")
    if verdict:
        rec["action"] = verdict["action"]
        rec["rule"] = verdict["rule"]
        rec["reason"] = verdict["reason"]
    for key, value in fields.items():
        if key != "verdict":
            rec[key] = value
    return rec
