"""Prometheus metrics: a flow-event listener plus gauges refreshed from the daemon's state.

Counters move only in `on_event`, subscribed to the EventBus like the audit log: the data path
never calls this module. Gauges (open flows, pending holds, held bytes, probe attachment, sink
lag) are set by `refresh(state)` from the event loop once a second, so the HTTP server thread
that prometheus_client runs only ever reads prometheus_client's own thread-safe values, never
the proxy's dicts.

The metrics are kept in memory even without `metrics.listen`: `egressctl status` reads its
counters from the same registry (`CollectorRegistry.get_sample_value`), so the two never
disagree.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from egressguard import __version__
from egressguard.model import FlowInfo

log = logging.getLogger("egressguard.metrics")

_HOLD_MEMORY = 10_000          # open holds remembered for the decision-latency histogram
_PROXY_ERRORS = {"proxy.refused": "refused", "proxy.unknown_origin": "unknown_origin",
                 "flow.upstream_error": "upstream_error"}


class StateView(Protocol):
    """What `refresh` reads (daemon.DaemonState provides it)."""

    def open_flows(self) -> int: ...
    def open_flows_bytes_up(self) -> int: ...
    def pending_holds(self) -> int: ...
    def held_bytes(self) -> int: ...
    def intercept_failures(self) -> list[dict[str, Any]]: ...
    def probe_state(self) -> list[dict[str, Any]]: ...
    def sink_status(self) -> list[dict[str, Any]]: ...


class GuardMetrics:
    """Every egressguard metric, in a registry of its own (no process-global state, so tests
    and several daemons in one interpreter do not collide)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.info = Info("egressguard", "version, failure mode and policy hash", registry=r)
        self.flows_opened = Counter("egressguard_flows_opened", "flows accepted by the proxy",
                                    registry=r)
        self.flows = Counter("egressguard_flows", "closed flows by final action",
                             ["action"], registry=r)
        self.bytes = Counter("egressguard_bytes", "bytes of closed flows by direction "
                             "(up: delivered to the destination; down: to the client)",
                             ["direction"], registry=r)
        self.tls_passthrough = Counter("egressguard_tls_passthrough", "flows selected for TLS "
                                       "interception that passed NOT inspected, by reason",
                                       ["reason"], registry=r)
        self.tls_failures = Gauge("egressguard_tls_intercept_failures_remembered", "identities "
                                  "(uid, exe, cgroup, unit, container, host) whose refusal of the "
                                  "interception certificate is remembered now", registry=r)
        self.scanned = Counter("egressguard_scanned_bytes", "client bytes scanned, open flows "
                               "included (rate() of it is the scan throughput)", registry=r)
        self.detections = Counter("egressguard_detections", "findings by detector and class",
                                  ["detector", "class"], registry=r)
        self.blocks = Counter("egressguard_blocks", "flows blocked", registry=r)
        self.holds = Counter("egressguard_holds", "holds opened", registry=r)
        self.decisions = Counter("egressguard_hold_decisions", "hold outcomes",
                                 ["outcome"], registry=r)
        self.decision_latency = Histogram(
            "egressguard_hold_decision_seconds", "time from hold to decision (or expiry)",
            buckets=(1, 5, 15, 30, 60, 120, 300, 900, 3600), registry=r)
        self.proxy_errors = Counter("egressguard_proxy_errors", "connections the proxy "
                                    "refused or could not relay", ["kind"], registry=r)
        self.udp_refused = Counter("egressguard_udp_refused", "UDP sends refused in the kernel",
                                   registry=r)
        self.reloads = Counter("egressguard_policy_reloads", "policy reloads by outcome",
                               ["outcome"], registry=r)
        self.policy_loaded = Gauge("egressguard_policy_loaded_timestamp_seconds",
                                   "when the policy in force was loaded", registry=r)
        self.open_flows = Gauge("egressguard_open_flows", "flows open now", registry=r)
        self.pending_holds = Gauge("egressguard_holds_pending", "holds waiting for a decision",
                                   registry=r)
        self.held_bytes = Gauge("egressguard_held_bytes", "bytes buffered by the proxy across "
                                "all flows (held or being decided)", registry=r)
        self.probe_attached = Gauge("egressguard_probe_attached", "1 when the program is "
                                    "attached to the guarded cgroup", ["program", "hook"],
                                    registry=r)
        self.sink_lag = Gauge("egressguard_sink_lag_events", "audit events not yet "
                              "acknowledged by a SIEM sink", ["sink"], registry=r)
        self._hold_opened: OrderedDict[str, float] = OrderedDict()
        self._closed_up = 0           # bytes_up of closed flows, for the scanned-bytes counter
        self._scanned_seen = 0

    # ------------------------------------------------------------------ events
    def on_event(self, event: str, flow: FlowInfo | None, fields: dict[str, Any]) -> None:
        """EventBus listener: counts only, never blocks."""
        if event == "flow.open":
            self.flows_opened.inc()
        elif event == "flow.close" and flow is not None:
            action = flow.verdict.action.value if flow.verdict is not None else "none"
            self.flows.labels(action=action).inc()
            self.bytes.labels(direction="up").inc(int(fields.get("bytes_up") or 0))
            self._closed_up += int(fields.get("bytes_from_client") or 0)
            self.bytes.labels(direction="down").inc(int(fields.get("bytes_down") or 0))
        elif event == "flow.detect":
            for d in fields.get("detections") or ():
                self.detections.labels(detector=d.get("detector", "?"),
                                       **{"class": d.get("class", "?")}).inc()
        elif event == "flow.block":
            self.blocks.inc()
        elif event == "flow.hold":
            self.holds.inc()
            self._hold_opened[str(fields.get("hold_id"))] = time.monotonic()
            while len(self._hold_opened) > _HOLD_MEMORY:
                self._hold_opened.popitem(last=False)
        elif event == "flow.decision":
            self.decisions.labels(outcome=str(fields.get("outcome", "?"))).inc()
            opened = self._hold_opened.pop(str(fields.get("hold_id")), None)
            if opened is not None:
                self.decision_latency.observe(time.monotonic() - opened)
        elif event in _PROXY_ERRORS:
            self.proxy_errors.labels(kind=_PROXY_ERRORS[event]).inc()
        elif event == "tls.passthrough":
            self.tls_passthrough.labels(reason=str(fields.get("reason", "?"))).inc()
        elif event == "udp.refused":
            self.udp_refused.inc()
        elif event == "policy.reload":
            self.reloads.labels(outcome=str(fields.get("outcome", "?"))).inc()
            if fields.get("outcome") == "applied":
                self.policy_loaded.set(time.time())

    # ------------------------------------------------------------------ state
    def set_policy(self, policy_hash: str, failure_mode: str) -> None:
        self.info.info({"version": __version__, "failure_mode": failure_mode,
                        "policy_hash": policy_hash})

    def policy_loaded_at(self, when: float) -> None:
        """The start's policy counts as loaded too (a reload sets it again when applied):
        otherwise the gauge reads 0 until the first reload."""
        self.policy_loaded.set(when)

    def refresh(self, state: StateView) -> None:
        """Copy the daemon's live state into gauges (called on the event loop)."""
        self.open_flows.set(state.open_flows())
        # Closed flows' bytes arrive with flow.close; open flows' are read live, so a long
        # upload shows up in the throughput while it runs.
        scanned = self._closed_up + state.open_flows_bytes_up()
        if scanned > self._scanned_seen:
            self.scanned.inc(scanned - self._scanned_seen)
            self._scanned_seen = scanned
        self.pending_holds.set(state.pending_holds())
        self.held_bytes.set(state.held_bytes())
        self.tls_failures.set(len(state.intercept_failures()))
        for p in state.probe_state():
            self.probe_attached.labels(program=p["program"], hook=p["hook"]).set(
                1 if p["attached"] else 0)
        for s in state.sink_status():
            self.sink_lag.labels(sink=str(s.get("name", "?"))).set(int(s.get("lag_events", 0)))

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """A sample's current value (0 when it has never been set), for `egressctl status`."""
        return self.registry.get_sample_value(name, labels or {}) or 0.0

    def total(self, family: str) -> float:
        """Sum of a counter's `_total` samples across its labels."""
        out = 0.0
        for metric in self.registry.collect():
            for sample in metric.samples:
                if sample.name == family + "_total":
                    out += sample.value
        return out


class MetricsServer:
    """prometheus_client's own HTTP server (a daemon thread) on a loopback address."""

    def __init__(self, metrics: GuardMetrics, listen: tuple[str, int]) -> None:
        self.metrics = metrics
        self.listen = listen
        self._server: Any = None
        self._thread: Any = None

    def start(self) -> None:
        from prometheus_client import start_http_server
        self._server, self._thread = start_http_server(
            self.listen[1], addr=self.listen[0], registry=self.metrics.registry)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
