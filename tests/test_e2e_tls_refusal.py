"""A held intercepted HTTPS request is refused with a 403 naming the approval (issue 5 over
issue 3), end to end: a real daemon (probes, proxy, TLS interception, Hyperscan, gRPC, SQLite)
with a short inline wait, an agent in the guarded cgroup (nobody, Python http.client trusting
the host CA) and a local HTTPS server standing in for api.openai.com.

Asserted: what the agent read (status, JSON body, approval id), what the server received
(nothing of a refused request), and that the agent's retry passes after approval, once; a
denial answers the identical retry at once with a 403 saying so."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from egressguard.harness import GuardedHost, base_config, free_port
from tests.test_e2e_guard import audit_events, pending, wait_for
from tests.test_e2e_tls import HOSTS, chat, post, run_agent
from tests.tools.tls_servers import HttpsRecorder, TestCA

pytestmark = pytest.mark.kernel

SNI = "api.openai.com"
KEY = "AKIA" + "V6PC3RQT" + "9MZK2WHB"
OTHER_KEY = "AKIA" + "H2LX7NDF" + "5QWT3JRC"
UPLOAD_KEY = "AKIA" + "Z4MB9KQW" + "7TRD2XFN"


@pytest.fixture(scope="module")
def world() -> Iterator[dict[str, Any]]:
    d = Path(tempfile.mkdtemp(prefix="eg-tls-403-"))
    os.chmod(d, 0o755)
    ca = TestCA(str(d))
    server = HttpsRecorder(HOSTS[SNI], ca, [SNI])
    cfg = base_config(d / "guard", rules=[
        {"name": "secrets-need-approval", "detected": ["secret.*"], "action": "hold"}])
    cfg["proxy"]["listen"] = f"127.0.0.1:{free_port()}"
    cfg["proxy"]["max_held_bytes"] = "64KiB"     # a held upload soon stops being read
    cfg["approvals"].pop("timeout")
    cfg["approvals"].update({"inline_wait": "1s", "request_ttl": "10m"})
    cfg["tls"] = {"intercept": {"hosts": [SNI]}, "upstream_ca_file": ca.ca_file}
    try:
        with GuardedHost(d / "guard", cfg) as host:
            res = subprocess.run([host.python, "-m", "egressguard", "ca", "export", "--config",
                                  str(host.config_path)], capture_output=True, text=True,
                                 timeout=30, check=True)
            bundle = d / "trust.pem"
            bundle.write_text(res.stdout)
            os.chmod(bundle, 0o644)
            yield {"dir": d, "host": host, "servers": {SNI: server}, "bundle": str(bundle)}
    finally:
        server.close()


def refused(world: dict[str, Any], body: bytes) -> dict[str, Any]:
    """Send `body`; the agent must read a 403 quickly; returns its JSON body."""
    t0 = time.monotonic()
    report = run_agent(world, SNI, [post("/v1/chat/completions", body)])
    assert time.monotonic() - t0 < 20
    assert not report["error"] and report["responses"][0]["status"] == 403, report
    return json.loads(report["responses"][0]["body"])


def test_held_request_gets_403_with_the_approval_id_then_the_retry_passes(world: dict) -> None:
    host, server = world["host"], world["servers"][SNI]
    body = chat(f"deploy with key {KEY} please")
    before = server.total_bytes
    answer = refused(world, body)
    assert answer["error"] == "egressguard_approval_required" and answer["status"] == "pending"
    req = wait_for(lambda: next((h for h in pending(host) if h["id"] == answer["approval_id"]),
                                None))
    assert req["state"] == "pending" and req["waiting"] == 0    # outlives the connection
    assert KEY not in json.dumps(answer)
    assert server.total_bytes == before, "the server got bytes of a refused request"
    assert KEY.encode() not in server.all_data()

    res = host.egressctl("approve", answer["approval_id"], "--reason", "test key, ticket AI-9")
    assert res.returncode == 0, res.stderr
    retry = run_agent(world, SNI, [post("/v1/chat/completions", body)])
    assert retry["responses"] and retry["responses"][0]["status"] == 200, retry
    got = [r for r in server.requests if KEY.encode() in r.body]
    assert len(got) == 1 and got[0].body == body                      # once, byte-exact

    events = audit_events(host)
    waited = [e for e in events if e["event"] == "flow.wait_expired"
              and e["hold_id"] == answer["approval_id"]]
    assert len(waited) == 1
    closes = [e for e in events if e["event"] == "flow.close"
              and e["flow_id"] == waited[0]["flow_id"]]
    assert closes and closes[0]["state"] == "expired" and closes[0]["reset"] == "hold expired"
    assert KEY not in Path(host.audit_path).read_text()


def test_denied_request_answers_the_identical_retry_with_a_403_at_once(world: dict) -> None:
    host, server = world["host"], world["servers"][SNI]
    body = chat(f"and this one {OTHER_KEY}")
    first = refused(world, body)
    res = host.egressctl("deny", first["approval_id"], "--reason", "no production keys")
    assert res.returncode == 0, res.stderr
    t0 = time.monotonic()
    again = refused(world, body)
    assert time.monotonic() - t0 < 10
    assert again["approval_id"] == first["approval_id"] and again["status"] == "denied"
    assert again["error"] == "egressguard_denied" and "no production keys" in again["message"]
    assert OTHER_KEY.encode() not in server.all_data()


def test_refusal_reaches_a_client_still_sending_its_held_upload(world: dict) -> None:
    """A held request whose body is far larger than proxy.max_held_bytes: the proxy stopped
    reading it, so the client is still inside its send when the 403 is written. Closing then
    would make the kernel reset the connection under the answer; the proxy reads and drops the
    rest instead, and the client reads the 403 once its send completes."""
    server = world["servers"][SNI]
    before = server.total_bytes
    body = chat(f"key {UPLOAD_KEY} then a big file: "
                + "lorem ipsum dolor " * (16 * 1024 * 1024 // 18))
    answer = refused(world, body)
    assert answer["status"] == "pending" and answer["approval_id"].startswith("h-")
    assert server.total_bytes == before
