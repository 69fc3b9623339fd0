"""OCSF 1.4.0 (pinned): flows as Network Activity (4001), findings as Data Security Finding
(2006), everything else (daemon, approvals, audit) as Network Activity "Other" when it has a
flow, else as the base event class (0).

The security-control fields say what the guard did: `action_id` 1 Allowed / 2 Denied and
`disposition_id` 1 Allowed, 2 Blocked, 8 Approve, 14 Delayed (held), 11 Corrected (masked in
flight), 25 Rejected (denied or expired after a hold). Our own fields (seq, hash, hold id) go
to `unmapped` and `metadata`, so nothing in the native event is lost.

`ocsf-1.4.0.yaml` beside this file lists, in our words, the attributes 1.4.0 requires for
each class and object we write; the tests validate every rendered event against it.
"""

from __future__ import annotations

from typing import Any

from egressguard.audit.formats.common import (action_of, epoch_ms, findings, mapping,
                                              number, severity)

OCSF_VERSION = "1.4.0"
NETWORK_ACTIVITY, DATA_SECURITY_FINDING, BASE_EVENT = 4001, 2006, 0
SEVERITY_ID = {"info": 1, "low": 2, "medium": 3, "high": 4, "critical": 5}
# action -> (action_id, action, disposition_id, disposition)
CONTROL = {
    "allow": (1, "Allowed", 1, "Allowed"),
    "mask": (1, "Allowed", 11, "Corrected"),
    "hold": (1, "Allowed", 14, "Delayed"),
    "approve": (1, "Allowed", 8, "Approve"),
    "block": (2, "Denied", 2, "Blocked"),
    "deny": (2, "Denied", 25, "Rejected"),
    "expire": (2, "Denied", 25, "Rejected"),
}
# Network Activity activity_id per event
ACTIVITY = {"flow.open": (1, "Open"), "flow.close": (2, "Close"), "flow.block": (5, "Refuse"),
            "flow.upstream_error": (4, "Fail"), "udp.refused": (5, "Refuse"),
            "proxy.unknown_origin": (3, "Reset"), "flow.detect": (6, "Traffic"),
            "flow.hold": (6, "Traffic"), "flow.decision": (6, "Traffic")}


def render(event: dict[str, Any], ctx: Any) -> dict[str, Any]:
    kind = str(event.get("event", ""))
    if kind == "flow.detect" and findings(event):
        out = _finding(event, ctx)
    elif event.get("flow_id") or kind in ACTIVITY:
        out = _network(event, ctx, kind)
    else:
        out = _base(event, ctx)
    control = CONTROL.get(action_of(event))
    if control:
        out["action_id"], out["action"], out["disposition_id"], out["disposition"] = control
    return out


def _common(event: dict[str, Any], ctx: Any, class_uid: int, class_name: str,
            category_uid: int, category_name: str, activity_id: int,
            activity_name: str) -> dict[str, Any]:
    sev = severity(event)
    out: dict[str, Any] = {
        "class_uid": class_uid, "class_name": class_name,
        "category_uid": category_uid, "category_name": category_name,
        "activity_id": activity_id, "activity_name": activity_name,
        "type_uid": class_uid * 100 + activity_id,
        "severity_id": SEVERITY_ID[sev], "severity": sev.capitalize() if sev != "info"
        else "Informational",
        "time": epoch_ms(event),
        "message": _message(event),
        "metadata": {
            "version": OCSF_VERSION,
            "product": {"name": "egressguard", "vendor_name": "egressguard",
                        "version": ctx.version},
            "uid": str(event.get("hash", "")),
            "sequence": event.get("seq"),
            "event_code": str(event.get("event", "")),
            "original_time": str(event.get("time", "")),
            "log_name": "audit",
            "profiles": ["security_control", "host"],
        },
        "device": {"hostname": ctx.hostname, "type_id": 1, "type": "Server"},
        "status_id": 1, "status": "Success",
        "unmapped": {"seq": event.get("seq"), "hash": event.get("hash"),
                     "prev_hash": event.get("prev_hash"), "event": event.get("event")},
    }
    for key in ("hold_id", "flow_id", "rule", "reason"):
        if event.get(key):
            out["unmapped"][key] = event[key]
    if event.get("rule"):
        out["policy"] = {"name": str(event["rule"]), "uid": str(event["rule"]),
                         "desc": str(event.get("reason") or "")}
    process = mapping(event, "process")
    if process:
        out["actor"] = {"process": _process(process)}
        if process.get("user") or isinstance(process.get("uid"), int):
            out["actor"]["user"] = {"name": str(process.get("user", "")),
                                    "uid": str(process.get("uid", ""))}
    return out


def _network(event: dict[str, Any], ctx: Any, kind: str) -> dict[str, Any]:
    activity_id, activity_name = ACTIVITY.get(kind, (99, "Other"))
    out = _common(event, ctx, NETWORK_ACTIVITY, "Network Activity", 4, "Network Activity",
                  activity_id, activity_name)
    dest = mapping(event, "destination")
    out["dst_endpoint"] = _endpoint(dest)
    out["src_endpoint"] = {"hostname": ctx.hostname}
    out["connection_info"] = {"direction_id": 2, "direction": "Outbound",
                              "protocol_name": str(dest.get("transport") or "tcp"),
                              "uid": str(event.get("flow_id") or "")}
    if kind == "flow.close":
        out["traffic"] = {"bytes_out": event.get("bytes_up", 0),
                          "bytes_in": event.get("bytes_down", 0)}
        out["duration"] = int(number(event.get("duration_s")) * 1000)
    if kind == "flow.decision":
        decision = mapping(event, "decision")
        out["unmapped"]["decision"] = decision
    if findings(event):
        out["unmapped"]["detections"] = findings(event)
    return out


def _finding(event: dict[str, Any], ctx: Any) -> dict[str, Any]:
    out = _common(event, ctx, DATA_SECURITY_FINDING, "Data Security Finding", 2, "Findings",
                  1, "Create")
    dets = findings(event)
    first = dets[0]
    types = sorted({str(d.get("detector", "")) for d in dets})
    out["finding_info"] = {
        "uid": f"{event.get('flow_id', '')}:{event.get('seq', '')}",
        "title": f"{', '.join(types)} in outbound data",
        "desc": str(event.get("reason") or ""),
        "types": types,
        "data_sources": ["network traffic"],
    }
    out["data_security"] = {
        "category": str(first.get("class", "")),
        "detection_system": "egressguard",
        "detection_pattern": str(first.get("detector", "")),
        "data_lifecycle_state_id": 2, "data_lifecycle_state": "Data in Transit",
        "pattern_match": str(first.get("preview", "")),
        "policy": {"name": str(event.get("rule") or "default"),
                   "uid": str(event.get("rule") or "default")},
    }
    out["is_alert"] = True
    out["confidence_id"] = 3
    out["confidence"] = "High"
    out["dst_endpoint"] = _endpoint(mapping(event, "destination"))
    out["src_endpoint"] = {"hostname": ctx.hostname}
    out["unmapped"]["detections"] = dets
    out["observables"] = [{"name": f"detections[{i}].fingerprint", "type_id": 99,
                           "type": "Other", "value": str(d.get("fingerprint", ""))}
                          for i, d in enumerate(dets)]
    return out


def _base(event: dict[str, Any], ctx: Any) -> dict[str, Any]:
    out = _common(event, ctx, BASE_EVENT, "Base Event", 0, "Uncategorized", 99, "Other")
    out["unmapped"]["fields"] = {k: v for k, v in event.items()
                                 if k not in ("seq", "hash", "prev_hash", "time", "event")}
    return out


def _process(p: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"pid": p.get("pid"), "name": str(p.get("comm", "")),
                           "cmd_line": " ".join(str(a) for a in p.get("cmdline") or [])}
    if p.get("exe"):
        out["file"] = {"path": str(p["exe"]), "name": str(p["exe"]).rsplit("/", 1)[-1],
                       "type_id": 1, "type": "Regular File"}
    if p.get("user") or isinstance(p.get("uid"), int):
        out["user"] = {"name": str(p.get("user", "")), "uid": str(p.get("uid", ""))}
    if p.get("container_id"):
        out["container"] = {"uid": str(p["container_id"])}
    return out


def _endpoint(dest: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if dest.get("ip"):
        out["ip"] = str(dest["ip"])
    if dest.get("port") is not None:
        out["port"] = dest["port"]
    if dest.get("host"):
        out["hostname"] = str(dest["host"])
    return out


def _message(event: dict[str, Any]) -> str:
    dest = mapping(event, "destination")
    where = f" to {dest.get('host') or dest.get('ip', '')}:{dest.get('port', '')}" if dest else ""
    action = action_of(event)
    return f"{event.get('event', '')}{where}" + (f": {action}" if action else "")
