"""Visibility: the metrics listener on a real EventBus, then a real daemon's `egressctl status`
(text and --json) and its Prometheus endpoint on loopback, after real guarded traffic."""

from __future__ import annotations

import json
import os
import urllib.request
from typing import Any

import pytest

from egressguard.events import EventBus
from egressguard.harness import GuardedHost, free_port, scratch_dir
from egressguard.kernel.probes import PROGRAMS
from egressguard.metrics import GuardMetrics
from egressguard.model import Action, Destination, FlowInfo, Process, Verdict
from egressguard.reload import policy_hash
from tests.test_e2e_guard import EMAIL, Agent, http_post, policy, wait_for
from tests.tools.servers import RecordingServer


def _flow(action: Action) -> FlowInfo:
    proc = Process(pid=1, tgid=1, uid=65534, gid=65534, comm="agent", cgroup_id=1)
    flow = FlowInfo("f-1", proc, Destination("127.20.0.1", 443), 0.0)
    flow.verdict = Verdict(action, "r", "why")
    return flow


def test_metrics_count_flow_events_from_the_bus() -> None:
    bus, m = EventBus(), GuardMetrics()
    bus.subscribe(m.on_event)
    bus.emit("flow.open", _flow(Action.MASK), {})
    bus.emit("flow.detect", _flow(Action.MASK), {"detections": [
        {"detector": "pii.email", "class": "pii"}, {"detector": "pii.email", "class": "pii"}]})
    bus.emit("flow.close", _flow(Action.MASK), {"bytes_up": 100, "bytes_down": 7})
    bus.emit("flow.hold", None, {"hold_id": "h-1"})
    bus.emit("flow.decision", None, {"hold_id": "h-1", "outcome": "approved"})
    bus.emit("proxy.refused", None, {"reason": "cap"})
    bus.emit("policy.reload", None, {"outcome": "rejected"})
    assert m.value("egressguard_flows_opened_total") == 1
    assert m.value("egressguard_flows_total", {"action": "mask"}) == 1
    assert m.value("egressguard_detections_total", {"detector": "pii.email", "class": "pii"}) == 2
    assert m.value("egressguard_bytes_total", {"direction": "up"}) == 100
    assert m.value("egressguard_hold_decisions_total", {"outcome": "approved"}) == 1
    assert m.value("egressguard_hold_decision_seconds_count") == 1
    assert m.value("egressguard_proxy_errors_total", {"kind": "refused"}) == 1
    assert m.value("egressguard_policy_reloads_total", {"outcome": "rejected"}) == 1
    assert m.total("egressguard_flows") == 1


@pytest.mark.kernel
def test_status_and_metrics_of_a_running_daemon() -> None:
    d = scratch_dir("eg-status-")
    os.chmod(d, 0o755)
    metrics_port = free_port()
    cfg = policy(d / "h", metrics={"listen": f"127.0.0.1:{metrics_port}"})
    cfg["audit"]["sinks"] = [{"name": "beats", "type": "file", "path": str(d / "shipped.jsonl"),
                              "format": "ecs", "batch": 10}]
    with GuardedHost(d / "h", cfg) as host, RecordingServer("127.20.8.1") as server:
        report = Agent(host, d).run(server.host, server.port,
                                    http_post(b'{"to": "' + EMAIL.encode() + b'"}'))
        assert report["error"] is None
        wait_for(lambda: server.connections and server.connections[0].closed)

        def status() -> dict[str, Any]:
            res = host.egressctl("status", "--json")
            assert res.returncode == 0, res.stderr
            return json.loads(res.stdout)

        s = wait_for(lambda: (lambda s: s if s["counters"]["flows_closed"] >= 1 else None)(
            status()))
        assert s["failure_mode"] == "closed" and s["scope_cgroup"] == host.cgroup_rel
        assert s["policy"]["hash"] == policy_hash(str(host.config_path))
        assert s["policy"]["rules"] == 3 and s["policy"]["detectors"] > 10
        assert [p["program"] for p in s["probes"]] == [n for n, _, _ in PROGRAMS]
        assert all(p["attached"] and p["via"] == "pinned link" for p in s["probes"])
        assert s["counters"]["flows_opened"] >= 1 and s["counters"]["flows_mask"] >= 1
        assert s["counters"]["detections"] >= 1 and s["counters"]["bytes_up"] > 0
        assert s["pending_holds"] == 0 and s["uptime_s"] > 0
        (sink,) = s["sinks"]                            # the sink runner's own status
        assert (sink["name"], sink["kind"], sink["format"]) == ("beats", "file", "ecs")
        assert sink["acked_seq"] + sink["lag_events"] >= 2 and sink["last_error"] == ""
        assert s["metrics_listen"] == f"127.0.0.1:{metrics_port}"
        assert EMAIL not in json.dumps(s)

        text = host.egressctl("status")
        assert text.returncode == 0
        assert f"probes:       {len(PROGRAMS)}/{len(PROGRAMS)} attached via pinned link" \
            in text.stdout
        assert s["policy"]["hash"][:12] in text.stdout
        assert "sink:         beats (file, ecs) acked" in text.stdout
        assert host.egressctl("status", uid=65534).returncode == 0   # anyone may look

        def scrape() -> str:
            url = f"http://127.0.0.1:{metrics_port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as resp:
                return resp.read().decode()

        def scanned(body: str) -> float:
            return float(next((line.split()[1] for line in body.splitlines()
                               if line.startswith("egressguard_scanned_bytes_total ")), 0))

        # Gauges and the live scanned-bytes counter are refreshed once a second.
        body = wait_for(lambda: (lambda b: b if scanned(b) >= s["counters"]["bytes_up"]
                                 else None)(scrape()))
        assert 'egressguard_probe_attached{hook="connect4",program="eg_connect4"} 1.0' in body
        assert 'egressguard_flows_total{action="mask"} 1.0' in body
        assert 'egressguard_detections_total{class="pii",detector="pii.email"} 1.0' in body
        assert "egressguard_holds_pending 0.0" in body
        assert 'egressguard_sink_lag_events{sink="beats"}' in body
        assert scanned(body) >= s["counters"]["bytes_up"] > 0
        assert f'policy_hash="{s["policy"]["hash"]}"' in body
        assert EMAIL not in body


@pytest.mark.kernel
def test_status_brackets_an_ipv6_metrics_address_and_the_load_time_is_set_at_start() -> None:
    d = scratch_dir("eg-status6-")
    os.chmod(d, 0o755)
    port = free_port("::1")
    with GuardedHost(d / "h", policy(d / "h", metrics={"listen": f"[::1]:{port}"})) as host:
        s = json.loads(host.egressctl("status", "--json").stdout)
        assert s["metrics_listen"] == f"[::1]:{port}"
        text = host.egressctl("status").stdout
        url = f"http://[::1]:{port}/metrics"
        assert f"metrics:      {url}\n" in text + "\n"
        with urllib.request.urlopen(url, timeout=5) as resp:     # the printed URL works
            body = resp.read().decode()
        loaded = next(float(line.split()[1]) for line in body.splitlines()
                      if line.startswith("egressguard_policy_loaded_timestamp_seconds "))
        assert loaded == pytest.approx(s["policy"]["loaded_at"], abs=1e-3) and loaded > 0


class _State:
    """The daemon state `refresh` reads, as plain values (the thing under test is the
    arithmetic of GuardMetrics, not the daemon)."""

    def __init__(self) -> None:
        self.live_up = 0

    def open_flows(self) -> int:
        return 1

    def open_flows_bytes_up(self) -> int:
        return self.live_up

    def pending_holds(self) -> int:
        return 0

    def held_bytes(self) -> int:
        return 0

    def probe_state(self) -> list[dict[str, Any]]:
        return [{"program": "eg_connect4", "hook": "connect4", "attached": True}]

    def sink_status(self) -> list[dict[str, Any]]:
        return [{"name": "siem", "lag_events": 7}]

    def intercept_failures(self) -> list[dict[str, Any]]:
        return [{"uid": 65534, "host": "api.openai.com"}]


def test_scanned_bytes_count_open_flows_live_and_never_twice() -> None:
    m, state = GuardMetrics(), _State()
    state.live_up = 1000                          # a long upload, still open
    m.refresh(state)
    assert m.value("egressguard_scanned_bytes_total") == 1000
    # It closed held and expired: scanned, received, never delivered.
    m.on_event("flow.close", _flow(Action.HOLD), {"bytes_up": 0, "bytes_from_client": 1000,
                                                  "bytes_down": 0})
    state.live_up = 0                             # it closed: its bytes moved to the counter
    m.refresh(state)
    assert m.value("egressguard_scanned_bytes_total") == 1000
    assert m.value("egressguard_bytes_total", {"direction": "up"}) == 0
    assert m.value("egressguard_tls_intercept_failures_remembered") == 1
    state.live_up = 500
    m.refresh(state)
    assert m.value("egressguard_scanned_bytes_total") == 1500
    assert m.value("egressguard_sink_lag_events", {"sink": "siem"}) == 7
    assert m.value("egressguard_probe_attached", {"program": "eg_connect4",
                                                  "hook": "connect4"}) == 1
