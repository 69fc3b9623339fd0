"""Rendering of `egressctl status`: a JSON object, or a few aligned lines for people."""

from __future__ import annotations

import time
from typing import Any

from egressguard.cli.termsafe import printable


def status_json(s: Any) -> dict[str, Any]:
    return {
        "version": s.version, "pid": s.pid, "started_at": s.started_at,
        "uptime_s": round(s.uptime_s, 3), "config": s.config, "scope_cgroup": s.scope_cgroup,
        "cgroup_path": s.cgroup_path, "failure_mode": s.failure_mode,
        "probes": [{"program": p.program, "hook": p.hook, "attached": p.attached, "via": p.via}
                   for p in s.probes],
        "policy": {"hash": s.policy_hash, "loaded_at": s.policy_loaded_at, "rules": s.rules,
                   "detectors": s.detectors},
        "counters": {k: (int(v) if float(v).is_integer() else v)
                     for k, v in sorted(s.counters.items())},
        "open_flows": s.open_flows, "pending_holds": s.pending_holds,
        "held_bytes": s.held_bytes,
        "sinks": [{"name": k.name, "kind": k.kind, "format": k.format, "acked_seq": k.acked_seq,
                   "lag_events": k.lag_events, "last_error": k.last_error} for k in s.sinks],
        "metrics_listen": s.metrics_listen,
        "intercept_failures": [
            {"uid": f.uid, "exe": f.exe, "cgroup": f.cgroup, "unit": f.unit,
             "container": f.container, "host": f.host, "failed_at": f.failed_at,
             "expires_in_s": f.expires_in_s} for f in s.intercept_failures],
    }


def _ago(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def status_text(s: Any) -> str:
    attached = [p for p in s.probes if p.attached]
    hooks = ", ".join(f"{p.hook}{'' if p.attached else ' (NOT attached)'}" for p in s.probes)
    via = sorted({p.via for p in attached}) or ["-"]
    c = s.counters
    lines = [
        f"egressguard {s.version}  pid {s.pid}  up {int(s.uptime_s)}s (since {_ago(s.started_at)})",
        f"scope:        {s.scope_cgroup} ({s.cgroup_path})",
        f"failure mode: {s.failure_mode}",
        f"probes:       {len(attached)}/{len(s.probes)} attached via {', '.join(via)}: {hooks}",
        f"policy:       {s.policy_hash[:12]} loaded {_ago(s.policy_loaded_at)} "
        f"({s.rules} rules, {s.detectors} detectors) from {s.config}",
        f"flows:        {s.open_flows} open, {int(c.get('flows_opened', 0))} since start "
        f"(allow {int(c.get('flows_allow', 0))}, mask {int(c.get('flows_mask', 0))}, "
        f"hold {int(c.get('flows_hold', 0))}, block {int(c.get('flows_block', 0))})",
        f"holds:        {s.pending_holds} pending, {int(c.get('holds', 0))} since start; "
        f"{s.held_bytes} bytes held",
        f"data:         {int(c.get('bytes_up', 0))} bytes up (delivered), "
        f"{int(c.get('bytes_down', 0))} down; {int(c.get('detections', 0))} detections",
        f"errors:       {int(c.get('proxy_errors', 0))} proxy, "
        f"{int(c.get('udp_refused', 0))} UDP refused; reloads: "
        f"{int(c.get('reloads_applied', 0))} applied, {int(c.get('reloads_rejected', 0))} rejected",
    ]
    lines.append(f"tls:          {int(c.get('tls_passthrough', 0))} flows passed NOT inspected "
                 f"(on_intercept_failure passthrough); {len(s.intercept_failures)} "
                 f"refusal(s) remembered")
    for f in s.intercept_failures:
        where = ", ".join(x for x in (f.unit and f"unit {f.unit}",
                                      f.container and f"container {f.container[:12]}",
                                      f.cgroup and f"cgroup {f.cgroup}") if x)
        lines.append(f"  refused:    uid {f.uid} {f.exe} -> {f.host}"
                     + (f" [{where}]" if where else "")
                     + f", forgotten in {int(f.expires_in_s)}s")
    if s.sinks:
        for k in s.sinks:
            err = f", last error: {k.last_error}" if k.last_error else ""
            lines.append(f"sink:         {k.name} ({k.kind}, {k.format}) acked {k.acked_seq}, "
                         f"lag {k.lag_events} events{err}")
    else:
        lines.append("sinks:        none")
    lines.append(f"metrics:      {('http://' + s.metrics_listen + '/metrics') if s.metrics_listen else 'off'}")
    # Paths and a sink's last error (a receiver's words) are not ours: escape what could act
    # on the terminal, one printed line per line.
    return "\n".join(printable(line) for line in lines)
