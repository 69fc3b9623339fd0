"""ArcSight Common Event Format (CEF:0).

    CEF:0|Vendor|Product|Version|SignatureID|Name|Severity|key=value key=value ...

Escaping, as the CEF specification says:
- header fields: backslash and pipe are escaped (`\\\\`, `\\|`); a header cannot span lines, so
  CR and LF become a space;
- extension values: backslash and `=` are escaped (`\\\\`, `\\=`); CR and LF are written as the
  two characters `\\r` and `\\n`; pipes need no escaping there;
- extension keys are fixed names from the CEF dictionary (and csN/cnN custom pairs with their
  labels), never taken from the event.
Severity is 0-10 (info 1, low 3, medium 5, high 8, critical 10).
"""

from __future__ import annotations

from typing import Any

from egressguard.audit.formats.common import action_of, epoch_ms, findings, mapping, severity

CEF_SEVERITY = {"info": 1, "low": 3, "medium": 5, "high": 8, "critical": 10}
OUTCOME = {"allow": "allowed", "mask": "masked", "hold": "held", "approve": "approved",
           "block": "blocked", "deny": "denied", "expire": "expired"}


def escape_header(value: Any) -> str:
    s = str(value).replace("\\", "\\\\").replace("|", "\\|")
    return s.replace("\r\n", " ").replace("\r", " ").replace("\n", " ")


def escape_value(value: Any) -> str:
    s = str(value).replace("\\", "\\\\").replace("=", "\\=")
    return s.replace("\r", "\\r").replace("\n", "\\n")


def render(event: dict[str, Any], ctx: Any) -> str:
    kind = str(event.get("event", "unknown"))
    action = action_of(event)
    process = mapping(event, "process")
    dest = mapping(event, "destination")
    dets = findings(event)
    ext: list[tuple[str, Any]] = [("rt", epoch_ms(event)), ("dvchost", ctx.hostname),
                                  ("externalId", event.get("seq"))]
    if action:
        ext.append(("act", action))
        ext.append(("outcome", OUTCOME.get(action, action)))
    if dest:
        ext += [("dst", dest.get("ip", "")), ("dpt", dest.get("port", "")),
                ("proto", str(dest.get("transport", "tcp")).upper())]
        if dest.get("host"):
            ext.append(("dhost", dest["host"]))
    if process:
        ext += [("spid", process.get("pid", "")), ("sproc", process.get("comm", "")),
                ("suid", process.get("uid", "")), ("suser", process.get("user", ""))]
        if process.get("exe"):
            ext.append(("filePath", process["exe"]))
    if event.get("rule"):
        ext += [("cs1Label", "rule"), ("cs1", event["rule"])]
    if event.get("reason"):
        ext.append(("reason", event["reason"]))
    if event.get("flow_id"):
        ext += [("cs2Label", "flow_id"), ("cs2", event["flow_id"])]
    if dets:
        ext += [("cs3Label", "detectors"), ("cs3", ",".join(str(d.get("detector", "")) for d in dets)),
                ("cs4Label", "previews"), ("cs4", ",".join(str(d.get("preview", "")) for d in dets)),
                ("cs5Label", "fingerprints"),
                ("cs5", ",".join(str(d.get("fingerprint", "")) for d in dets))]
    if event.get("hold_id"):
        ext.append(("deviceExternalId", event["hold_id"]))
    ext += [("cs6Label", "hash"), ("cs6", event.get("hash", ""))]
    if process.get("cmdline"):
        ext.append(("msg", " ".join(str(a) for a in process["cmdline"])))
    header = "|".join(escape_header(v) for v in (
        "egressguard", "egressguard", ctx.version, kind, _name(kind, action),
        CEF_SEVERITY[severity(event)]))
    body = " ".join(f"{k}={escape_value(v)}" for k, v in ext if v is not None and v != "")
    return f"CEF:0|{header}|{body}"


def _name(kind: str, action: str) -> str:
    names = {"flow.open": "connection opened", "flow.close": "connection closed",
             "flow.detect": "sensitive data in outbound traffic", "flow.block": "flow blocked",
             "flow.hold": "flow held for approval", "flow.decision": "hold decided",
             "udp.refused": "UDP refused", "approval.refused": "approval refused",
             "proxy.unknown_origin": "connection of unknown origin reset",
             "daemon.start": "egressguard started", "daemon.stop": "egressguard stopped",
             "daemon.start_failed": "egressguard failed to start",
             "audit.chain_reset": "audit chain reset"}
    name = names.get(kind, kind)
    return f"{name}: {action}" if action and kind in ("flow.detect", "flow.decision") else name
