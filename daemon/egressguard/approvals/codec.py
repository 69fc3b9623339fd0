"""model objects <-> the JSON bodies the approvals store keeps (the inverse of to_dict())."""

from __future__ import annotations

from typing import Any

from egressguard.model import (Action, Decision, Destination, Detection, FlowInfo, FlowState,
                               Process, Verdict)


def process_from(d: dict[str, Any]) -> Process:
    fields = dict(d)
    fields["cmdline"] = tuple(fields.get("cmdline") or ())
    return Process(**fields)


def destination_from(d: dict[str, Any]) -> Destination:
    return Destination(d["ip"], int(d["port"]), d.get("host", ""), d.get("transport", "tcp"))


def detection_from(d: dict[str, Any]) -> Detection:
    return Detection(detector=d["detector"], cls=d["class"], start=int(d["offset"]),
                     end=int(d["offset"]) + int(d["length"]), preview=d["preview"],
                     fingerprint=d["fingerprint"], severity=d.get("severity", "high"))


def verdict_from(d: dict[str, Any]) -> Verdict:
    return Verdict(Action(d["action"]), d["rule"], d["reason"])


def flow_from(d: dict[str, Any]) -> FlowInfo:
    return FlowInfo(flow_id=d["flow_id"], process=process_from(d["process"]),
                    destination=destination_from(d["destination"]),
                    opened_at=float(d["opened_at"]), state=FlowState(d["state"]),
                    verdict=verdict_from(d["verdict"]) if d.get("verdict") else None,
                    detections=[detection_from(x) for x in d.get("detections", [])],
                    bytes_up=int(d.get("bytes_up", 0)), bytes_down=int(d.get("bytes_down", 0)))


def decision_dict(d: Decision) -> dict[str, Any]:
    return {"approved": d.approved, "by_uid": d.by_uid, "by_user": d.by_user,
            "reason": d.reason, "timed_out": d.timed_out, "aborted": d.aborted,
            "request_id": d.request_id, "pending": d.pending, "scope": d.scope,
            "grant_id": d.grant_id}


def decision_from(d: dict[str, Any]) -> Decision:
    return Decision(**d)
