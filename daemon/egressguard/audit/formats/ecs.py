"""Elastic Common Schema (ECS 8.11) documents, nested objects (not dotted keys).

`event.sequence` is the audit seq and `event.hash` the chain hash (ECS's field "to
demonstrate log integrity"), so Elastic can drop duplicates and re-check the chain. Every flow
event is `network.direction: egress`. Our own fields that have no ECS name go under
`egressguard.*`.
"""

from __future__ import annotations

from typing import Any

from egressguard.audit.formats.common import action_of, findings, mapping, number, severity

ECS_VERSION = "8.11.0"
EVENT_TYPE = {"allow": ["allowed"], "mask": ["allowed", "change"], "hold": ["info"],
              "approve": ["allowed"], "block": ["denied"], "deny": ["denied"],
              "expire": ["denied"]}
OUTCOME = {"allow": "success", "mask": "success", "approve": "success", "block": "failure",
           "deny": "failure", "expire": "failure", "hold": "unknown"}
ECS_SEVERITY = {"info": 1, "low": 21, "medium": 47, "high": 73, "critical": 99}


def render(event: dict[str, Any], ctx: Any) -> dict[str, Any]:
    kind = str(event.get("event", ""))
    action = action_of(event)
    dets = findings(event)
    sev = severity(event)
    types = list(EVENT_TYPE.get(action, ["info"]))
    if kind == "flow.open":
        types = ["connection", "start"]
    elif kind == "flow.close":
        types = ["connection", "end"]
    ev: dict[str, Any] = {
        "kind": "alert" if dets or action in ("block", "hold", "deny") else "event",
        "category": ["network"] + (["intrusion_detection"] if dets else []),
        "type": types,
        "action": kind,
        "sequence": event.get("seq"),
        "hash": event.get("hash"),
        "severity": ECS_SEVERITY[sev],
        "module": "egressguard",
        "dataset": "egressguard.audit",
        "provider": "egressguard",
        "created": event.get("time"),
    }
    if action:
        ev["outcome"] = OUTCOME.get(action, "unknown")
    if event.get("reason"):
        ev["reason"] = str(event["reason"])
    out: dict[str, Any] = {
        "@timestamp": event.get("time"),
        "ecs": {"version": ECS_VERSION},
        "event": ev,
        "host": {"name": ctx.hostname, "hostname": ctx.hostname},
        "observer": {"product": "egressguard", "vendor": "egressguard", "type": "proxy",
                     "version": ctx.version, "hostname": ctx.hostname},
        "message": f"{kind}" + (f": {action}" if action else ""),
        "egressguard": {"seq": event.get("seq"), "prev_hash": event.get("prev_hash"),
                        "event": kind},
    }
    process = mapping(event, "process")
    if process:
        proc: dict[str, Any] = {"pid": process.get("pid"), "name": process.get("comm", "")}
        if process.get("exe"):
            proc["executable"] = process["exe"]
        if process.get("cmdline"):
            proc["args"] = [str(a) for a in process["cmdline"]]
            proc["command_line"] = " ".join(proc["args"])
        out["process"] = proc
        out["user"] = {"id": str(process.get("uid", "")), "name": process.get("user", "")}
        if process.get("container_id"):
            out["container"] = {"id": process["container_id"]}
    dest = mapping(event, "destination")
    if dest or event.get("flow_id"):
        out["network"] = {"direction": "egress",
                          "transport": str(dest.get("transport") or "tcp"),
                          "type": "ipv6" if ":" in str(dest.get("ip", "")) else "ipv4"}
    if dest:
        out["destination"] = {"ip": dest.get("ip"), "port": dest.get("port")}
        if dest.get("host"):
            out["destination"]["domain"] = dest["host"]
    if kind == "flow.close":
        out.setdefault("source", {})["bytes"] = event.get("bytes_up", 0)
        out.setdefault("destination", {})["bytes"] = event.get("bytes_down", 0)
        out["event"]["duration"] = int(number(event.get("duration_s")) * 1e9)
    if event.get("rule"):
        out["rule"] = {"name": str(event["rule"]), "ruleset": "egressguard policy"}
    for key in ("flow_id", "hold_id", "outcome", "decision", "who"):
        if event.get(key) is not None:
            out["egressguard"][key] = event[key]
    if dets:
        out["egressguard"]["detections"] = dets
    return out
