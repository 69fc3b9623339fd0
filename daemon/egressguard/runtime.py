"""The running daemon's state, as operators see it: `egressctl status`, the systemd STATUS=
line and the metrics gauges all read it from here.

`DaemonState` holds references to the live parts (proxy, hold registry, probes, metrics) and
the configuration in force (`loaded`, swapped by reload.Reloader). It only reads them: nothing
on the data path goes through it.

Sink status comes from a provider (a callable returning one dict per SIEM sink with name,
kind, format, acked_seq, lag_events, last_error: audit/sinks/runner.SinkRunner.status); with
no sinks configured, none are listed.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from egressguard import __version__
from egressguard.metrics import GuardMetrics
from egressguard.model import host_port

SinkProvider = Callable[[], list[dict[str, Any]]]
SINK_FIELDS = ("name", "kind", "format", "acked_seq", "lag_events", "last_error")


@dataclass
class DaemonState:
    config_path: str
    loaded: Any                          # daemon.Loaded: config, policy, engine
    policy_hash: str
    proxy: Any                           # proxy.GuardProxy
    registry: Any                        # approvals.holds.HoldRegistry
    probes: Any                          # kernel.probes.GuardProbes
    metrics: GuardMetrics
    cgroup_path: str
    sink_provider: SinkProvider | None = None
    started_at: float = field(default_factory=time.time)
    loaded_at: float = field(default_factory=time.time)

    # ------------------------------------------------------------------ live values
    def open_flows(self) -> int:
        return len(self.proxy.flows)

    def open_flows_bytes_up(self) -> int:
        return sum(f.bytes_up for f in list(self.proxy.flows.values()))

    def pending_holds(self) -> int:
        return len(self.registry.pending())

    def held_bytes(self) -> int:
        return int(getattr(self.proxy, "held_total", 0))

    def intercept_failures(self) -> list[dict[str, Any]]:
        """Remembered refusals of the interception certificate (tls/select.py)."""
        selector = getattr(self.proxy, "interceptor", None)
        return selector.remembered() if selector is not None else []

    def probe_state(self) -> list[dict[str, Any]]:
        return self.probes.attachment_state()

    def sink_status(self) -> list[dict[str, Any]]:
        if self.sink_provider is None:
            return []
        text = ("name", "kind", "format", "last_error")
        return [{k: (s.get(k) or ("" if k in text else 0)) for k in SINK_FIELDS}
                for s in self.sink_provider()]

    # ------------------------------------------------------------------ views
    def status_line(self) -> str:
        """One line for systemd's STATUS= (shown by `systemctl status`)."""
        return (f"enforcing {self.loaded.config.scope.cgroup} "
                f"(failure_mode={self.loaded.config.failure_mode}); "
                f"policy {self.policy_hash[:12]}; {self.open_flows()} flows open; "
                f"{self.pending_holds()} holds pending")

    def counters(self) -> dict[str, float]:
        m = self.metrics
        out = {
            "flows_opened": m.value("egressguard_flows_opened_total"),
            "flows_closed": m.total("egressguard_flows"),
            "bytes_up": m.value("egressguard_bytes_total", {"direction": "up"}),
            "bytes_down": m.value("egressguard_bytes_total", {"direction": "down"}),
            "detections": m.total("egressguard_detections"),
            "blocks": m.value("egressguard_blocks_total"),
            "holds": m.value("egressguard_holds_total"),
            "proxy_errors": m.total("egressguard_proxy_errors"),
            "udp_refused": m.value("egressguard_udp_refused_total"),
            "tls_passthrough": m.total("egressguard_tls_passthrough"),
        }
        for action in ("allow", "mask", "hold", "block", "none"):
            out[f"flows_{action}"] = m.value("egressguard_flows_total", {"action": action})
        for outcome in ("applied", "rejected", "unchanged"):
            out[f"reloads_{outcome}"] = m.value("egressguard_policy_reloads_total",
                                                {"outcome": outcome})
        return out

    def status(self) -> dict[str, Any]:
        cfg = self.loaded.config
        now = time.time()
        return {
            "version": __version__,
            "pid": os.getpid(),
            "started_at": self.started_at,
            "uptime_s": round(now - self.started_at, 3),
            "config": os.path.abspath(self.config_path),
            "scope_cgroup": cfg.scope.cgroup,
            "cgroup_path": self.cgroup_path,
            "failure_mode": cfg.failure_mode,
            "probes": self.probe_state(),
            "policy_hash": self.policy_hash,
            "policy_loaded_at": self.loaded_at,
            "rules": len(cfg.rules),
            "detectors": len(self.loaded.engine.detector_ids),
            "counters": self.counters(),
            "open_flows": self.open_flows(),
            "pending_holds": self.pending_holds(),
            "held_bytes": self.held_bytes(),
            "sinks": self.sink_status(),
            "intercept_failures": self.intercept_failures(),
            "metrics_listen": (host_port(*cfg.metrics.listen) if cfg.metrics.listen else ""),
        }
