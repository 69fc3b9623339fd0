"""The total held-buffer cap (proxy.max_held_total), end to end: held flows fill it, the next
flow is refused with a reset and a `proxy.refused` audit event that says which cap, nothing of
the refused flow reaches its destination, and space freed by decisions lets new flows in."""

from __future__ import annotations

import json
import os

import pytest

from egressguard.harness import GuardedHost, scratch_dir
from tests.test_e2e_guard import (AWS_KEY_ID, Agent, audit_events, finish, http_post, pending,
                                  policy, wait_for)
from tests.tools.servers import RecordingServer

pytestmark = pytest.mark.kernel


def test_total_cap_refuses_new_flows_until_holds_are_decided() -> None:
    d = scratch_dir("eg-cap-")
    os.chmod(d, 0o755)
    cfg = policy(d / "h")
    cfg["proxy"].update({"max_held_bytes": "64KiB", "max_held_total": "128KiB"})
    # A secret first, then enough bytes that each held flow buffers about 100 KiB.
    payload = http_post(b'{"k": "' + AWS_KEY_ID.encode() + b'", "pad": "' + b"p" * 100_000
                        + b'"}')
    with GuardedHost(d / "h", cfg) as host, RecordingServer("127.20.9.1") as srv, \
            RecordingServer("127.20.9.3") as srv2, RecordingServer("127.20.9.2") as other:
        # Two destinations: identical requests would join one approval request.
        agents = [Agent(host, d).start(s.host, s.port, payload) for s in (srv, srv2)]
        holds = wait_for(lambda: (lambda p: p if len(p) == 2 else None)(pending(host)))
        status = wait_for(lambda: (lambda s: s if s["held_bytes"] >= 128 * 1024 else None)(
            json.loads(host.egressctl("status", "--json").stdout)))
        assert status["pending_holds"] == 2

        refused = Agent(host, d).run(other.host, other.port, b"hello")
        assert refused["error"] in ("ConnectionResetError", "BrokenPipeError")
        assert other.connections == []
        events = wait_for(lambda: [e for e in audit_events(host)          # written async
                                   if e["event"] == "proxy.refused"])
        assert "proxy.max_held_total=131072" in events[-1]["reason"]

        for h in holds:
            assert host.egressctl("deny", h["id"], "--reason", "cap test").returncode == 0
        for a in agents:
            finish(a)
        wait_for(lambda: json.loads(
            host.egressctl("status", "--json").stdout)["held_bytes"] == 0)
        ok = Agent(host, d).run(other.host, other.port, b"hello")
        assert ok["error"] is None
        wait_for(lambda: other.all_data() == b"hello")
        assert AWS_KEY_ID.encode() not in srv.all_data() + srv2.all_data()
