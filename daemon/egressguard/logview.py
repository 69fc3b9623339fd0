"""The daemon log's view of a flow event: the event's own fields, flat, for one log line.

The log shows what the audit record says (the same secret-free values: masked previews never
reach it, only detector ids and counts), flattened to what fits a line: who (pid, uid, comm),
where (dest, host), the verdict, the hold and its outcome, and every scalar field of the event
(policy.reload's outcome and hashes, daemon.start's version and policy, ...). Fields an event
does not have are left out rather than shown as "-". With `--log-format json` these are real
JSON fields of the line; with key=value they are the message.
"""

from __future__ import annotations

import json
from typing import Any

from egressguard.events import audit_record
from egressguard.model import host_port

# Nested parts of an audit record the log line shows only through the keys picked below.
_NESTED_SHOWN = ("process", "destination", "decision", "detections", "verdict")
_MAX_LIST = 16          # longer lists (e.g. reload errors) are counted, not spelled out


def log_fields(event: str, flow: Any, fields: dict[str, Any]) -> dict[str, Any]:
    """The flat fields of one event's log line, in a stable order."""
    rec = audit_record(event, flow, fields)
    out: dict[str, Any] = {"event": event}
    if rec.get("flow_id"):
        out["flow"] = rec["flow_id"]
    dest = rec.get("destination")
    if isinstance(dest, dict) and dest.get("ip"):
        ip = str(dest["ip"])
        out["dest"] = host_port(ip, dest.get("port"))
        if dest.get("host"):
            out["host"] = dest["host"]
    proc = rec.get("process")
    if isinstance(proc, dict):
        for key in ("pid", "uid", "comm"):
            if proc.get(key) not in (None, ""):
                out[key] = proc[key]
    detections = rec.get("detections")
    if isinstance(detections, list) and detections:
        out["detectors"] = sorted({str(d.get("detector")) for d in detections
                                   if isinstance(d, dict)})
    decision = rec.get("decision")
    if isinstance(decision, dict):
        for key in ("outcome", "by", "scope"):
            if decision.get(key) not in (None, ""):
                out[key] = decision[key]
    for key, value in rec.items():
        if key in out or key in _NESTED_SHOWN or key in ("event", "flow_id"):
            continue
        if _scalar(value):
            out[key] = value
        elif isinstance(value, (list, tuple)) and all(_scalar(v) for v in value):
            out[key] = list(value) if len(value) <= _MAX_LIST else f"{len(value)} items"
    return out


def as_key_values(view: dict[str, Any]) -> str:
    """`key=value ...`; values with spaces, quotes or `=` are JSON-quoted."""
    parts = []
    for key, value in view.items():
        text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
        if text == "" or any(c in text for c in ' "=\\') or not text.isprintable():
            text = json.dumps(text, ensure_ascii=False)
        parts.append(f"{key}={text}")
    return " ".join(parts)


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))
