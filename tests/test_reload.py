"""Live reload end to end (SIGHUP and `egressctl reload`) against a real daemon.

A valid policy is swapped in for new flows while a flow already forwarding keeps its verdict
and a held flow keeps waiting (and is delivered on approval, though the new policy would block
a new flow there). An invalid policy is rejected with exactly the lines `egressguard check`
prints, and the old policy stays in force; so is a change to a restart-only setting. Every
attempt is a `policy.reload` audit event carrying the policy hash.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from egressguard.harness import GuardedHost, scratch_dir
from egressguard.reload import policy_hash
from tests.test_e2e_guard import (AWS_KEY_ID, Agent, audit_events, finish, http_post, pending,
                                  policy, wait_for)
from tests.tools.servers import RecordingServer

pytestmark = pytest.mark.kernel

BLOCK_NEW = {"name": "no-127-20-7", "destination": {"cidr": ["127.20.7.0/24"]},
             "action": "block"}


@pytest.fixture(scope="module")
def host() -> Iterator[GuardedHost]:
    d = scratch_dir("eg-reload-")
    os.chmod(d, 0o755)
    with GuardedHost(d / "h", policy(d / "h")) as h:
        yield h


def write_policy(host: GuardedHost, cfg: dict[str, Any]) -> None:
    host.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def reloads(host: GuardedHost) -> list[dict[str, Any]]:
    return [e for e in audit_events(host) if e["event"] == "policy.reload"]


def next_reload(host: GuardedHost, seen: int) -> dict[str, Any]:
    """The reload event after the first `seen` ones (the audit log is written asynchronously,
    so an RPC's event may reach the file a moment after the RPC returned)."""
    return wait_for(lambda: reloads(host)[seen:])[0]


def check_lines(path: Path) -> list[str]:
    res = subprocess.run([sys.executable, "-m", "egressguard", "check", "--config", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    return [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]


def test_reload_swaps_policy_for_new_flows_only(host: GuardedHost) -> None:
    workdir = host.workdir
    base = yaml.safe_load(host.config_path.read_text())
    before = len(reloads(host))
    old_hash = policy_hash(str(host.config_path))
    with RecordingServer("127.20.7.1") as inflight_srv, RecordingServer("127.20.7.2") as new_srv, \
            RecordingServer("127.20.7.3", respond=lambda r: b"HTTP/1.1 200 OK\r\n\r\nok") as held_srv:
        payload = b"y" * 200 * 1024
        inflight = Agent(host, workdir).start(inflight_srv.host, inflight_srv.port, payload,
                                              extra=["--chunk", "4096", "--delay", "0.02"])
        secret = http_post(b'{"k": "' + AWS_KEY_ID.encode() + b'"}')
        held = Agent(host, workdir).start(held_srv.host, held_srv.port, secret)
        hold = wait_for(lambda: next((h for h in pending(host)
                                      if h["destination"]["ip"] == held_srv.host), None))
        wait_for(lambda: inflight_srv.total_bytes > 0)

        write_policy(host, {**base, "rules": [BLOCK_NEW, *base["rules"]]})
        assert host.proc is not None
        host.proc.send_signal(signal.SIGHUP)
        event = wait_for(lambda: reloads(host)[before:])[0]
        new_hash = policy_hash(str(host.config_path))
        assert event["outcome"] == "applied" and event["trigger"] == "SIGHUP"
        assert event["policy_hash"] == new_hash != old_hash == event["previous_hash"]

        blocked = Agent(host, workdir).run(new_srv.host, new_srv.port, b"hello")
        assert blocked["error"] in ("ConnectionResetError", "BrokenPipeError")
        assert new_srv.connections == []
        assert [h["id"] for h in pending(host)] == [hold["id"]]      # still waiting
        assert host.egressctl("approve", hold["id"], "--reason", "reload test").returncode == 0
        assert finish(held)["error"] is None
        wait_for(lambda: held_srv.all_data() == secret)
        report = finish(inflight)
        assert report["error"] is None
        wait_for(lambda: inflight_srv.total_bytes == len(payload))   # kept its allow verdict
    status = json.loads(host.egressctl("status", "--json").stdout)
    assert status["policy"]["hash"] == new_hash and status["policy"]["rules"] == 4


def test_invalid_policy_is_rejected_with_check_errors_and_old_stays(host: GuardedHost) -> None:
    good = host.config_path.read_text()
    good_hash = policy_hash(str(host.config_path))
    cfg = yaml.safe_load(good)
    cfg["rules"][0]["action"] = "explode"
    cfg["rules"].append({"name": "x", "destination": {"cidr": ["10.0.0.0/33"]}, "action": "block"})
    write_policy(host, cfg)
    try:
        expected = check_lines(host.config_path)
        assert len(expected) >= 2
        seen = len(reloads(host))
        res = host.egressctl("reload")
        assert res.returncode == 1
        got = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
        assert got == [ln for ln in expected if not ln.endswith("problems")]
        assert "the running policy" in res.stderr and good_hash[:12] in res.stderr
        event = next_reload(host, seen)
        assert event["outcome"] == "rejected" and event["trigger"] == "egressctl"
        assert event["previous_hash"] == good_hash and event["who"]["uid"] == 0
        assert [f"error: {e}" for e in event["errors"]] == got
        with RecordingServer("127.20.7.4") as srv:                   # the old policy holds
            assert Agent(host, host.workdir).run(srv.host, srv.port, b"hi")["error"] \
                in ("ConnectionResetError", "BrokenPipeError")
            assert srv.connections == []
        assert json.loads(host.egressctl("status", "--json").stdout)["policy"]["hash"] \
            == good_hash
    finally:
        host.config_path.write_text(good)


def test_restart_only_change_and_non_approver_are_refused(host: GuardedHost) -> None:
    good = host.config_path.read_text()
    cfg = yaml.safe_load(good)
    cfg["proxy"]["listen"] = "127.0.0.1:1"
    write_policy(host, cfg)
    try:
        res = host.egressctl("reload")
        assert res.returncode == 1
        assert "proxy.listen: changed from" in res.stderr and "restart" in res.stderr
    finally:
        host.config_path.write_text(good)
    nobody = host.egressctl("reload", uid=65534)
    assert nobody.returncode == 1 and "may not reload" in nobody.stderr
    seen = len(reloads(host))
    res = host.egressctl("reload")
    assert res.returncode == 0 and "unchanged" in res.stdout
    assert next_reload(host, seen)["outcome"] == "unchanged"


def test_reload_swaps_the_detectors_too(host: GuardedHost) -> None:
    """A detector added by a reload is in the new flows' scanner (the engine is swapped with
    the policy), and the rule naming it acts on them."""
    good = host.config_path.read_text()
    token = "RLD-" + "7F3A" * 6
    body = b"ticket " + token.encode() + b" done\n"
    with RecordingServer("127.20.17.5") as srv:
        before = Agent(host, host.workdir).run(srv.host, srv.port, body)
        assert before["error"] is None
        wait_for(lambda: srv.all_data() == body)           # unknown to the old scanner
        cfg = yaml.safe_load(good)
        cfg["detectors"] = {"custom": [{"id": "custom.reload_token", "class": "secret",
                                        "pattern": "RLD-[0-9A-F]{24}"}]}
        cfg["rules"].insert(0, {"name": "no-reload-tokens",
                                "detected": ["custom.reload_token"], "action": "block"})
        write_policy(host, cfg)
        try:
            res = host.egressctl("reload")
            assert res.returncode == 0 and "reloaded" in res.stdout, res.stderr
            after = Agent(host, host.workdir).run(srv.host, srv.port, body)
            assert after["error"] in ("ConnectionResetError", "BrokenPipeError")
            assert srv.all_data() == body                  # nothing more arrived
        finally:
            host.config_path.write_text(good)
            assert host.egressctl("reload").returncode == 0
    blocks = wait_for(lambda: [e for e in audit_events(host) if e["event"] == "flow.block"
                               and e.get("rule") == "no-reload-tokens"])
    assert token not in json.dumps(blocks)
