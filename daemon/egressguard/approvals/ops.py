"""The operator calls on the approvals socket: Status and Reload (proto: end of Approvals).

The servicer delegates here so service.py stays about holds. `Operations` is what the daemon
provides: a status snapshot (runtime.DaemonState.status) and a reload (reload.Reloader).
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from egressguard.approvals._proto import approvals_pb2 as pb


class Operations:
    """The daemon's side of Status and Reload."""

    def __init__(self, status: Callable[[], dict[str, Any]],
                 reload: Callable[[str, dict[str, Any]], Awaitable[Any]],
                 may_reload: Callable[[int], bool]) -> None:
        self.status = status
        self.reload = reload
        self.may_reload = may_reload


def status_pb(s: dict[str, Any]) -> pb.StatusResponse:
    return pb.StatusResponse(
        version=s["version"], pid=s["pid"], started_at=s["started_at"], uptime_s=s["uptime_s"],
        config=s["config"], scope_cgroup=s["scope_cgroup"], cgroup_path=s["cgroup_path"],
        failure_mode=s["failure_mode"],
        probes=[pb.ProbeStatus(program=p["program"], hook=p["hook"], attached=p["attached"],
                               via=p["via"]) for p in s["probes"]],
        policy_hash=s["policy_hash"], policy_loaded_at=s["policy_loaded_at"], rules=s["rules"],
        detectors=s["detectors"], counters=s["counters"], open_flows=s["open_flows"],
        pending_holds=s["pending_holds"], held_bytes=s["held_bytes"],
        sinks=[pb.SinkStatus(name=k["name"], kind=k["kind"], format=k["format"],
                             acked_seq=int(k["acked_seq"]), lag_events=int(k["lag_events"]),
                             last_error=k["last_error"]) for k in s["sinks"]],
        metrics_listen=s["metrics_listen"],
        intercept_failures=[pb.InterceptFailure(
            uid=max(0, int(f["uid"])), exe=f["exe"], cgroup=f["cgroup"], unit=f["unit"],
            container=f["container"], host=f["host"], failed_at=f["failed_at"],
            expires_in_s=f["expires_in_s"]) for f in s.get("intercept_failures", ())])


def reload_pb(result: Any) -> pb.ReloadResponse:
    return pb.ReloadResponse(outcome=result.outcome, policy_hash=result.policy_hash,
                             previous_hash=result.previous_hash, errors=list(result.errors))
