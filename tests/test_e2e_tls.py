"""End to end TLS interception: a real daemon (probes, proxy, Hyperscan, gRPC, ledger), agents
in a child cgroup running as nobody speaking HTTPS with Python's http.client, and local HTTPS
servers with certificates from a test CA standing in for AI providers (SNI api.openai.com sent
to 127.10.0.1: no /etc/hosts edits).

Every assertion is about what the servers received, what the agent saw, what the audit log and
the ledger say. Secrets are assembled at run time and never printed.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from egressguard.harness import GuardedHost, base_config, free_port
from tests.test_e2e_guard import audit_events as audit
from tests.test_e2e_guard import finish, pending, wait_for
from tests.tools.tls_servers import HttpsRecorder, TestCA

pytestmark = pytest.mark.kernel

AGENT = str(Path(__file__).parent / "tools" / "tls_agent.py")
AWS_KEY_ID = "AKIA" + "Q4RZ7MXV" + "2LKJ3HNP"
AWS_KEY_ID_2 = "AKIA" + "W3NB8TQC" + "6PZR4YDK"     # another key: not an identical retry
EMAIL = "mary.major" + "@" + "corp-example.org"
OTHER_UID = 23456                   # a second agent user (no passwd entry needed)
PASSTHROUGH_TTL_S = 8               # short enough to wait for, long enough for two agent runs

HOSTS = {  # SNI -> loopback stand-in
    "api.openai.com": "127.10.0.1",
    "api.anthropic.com": "127.10.0.2",
    "api.mistral.ai": "127.10.0.3",         # not intercepted
    "api.groq.com": "127.10.0.4",
    "api.deepseek.com": "127.10.0.5",       # presents a certificate nobody trusts
    "api.cohere.com": "127.10.0.6",         # the pinned client's destination
}


@pytest.fixture(scope="module")
def world() -> Iterator[dict[str, Any]]:
    d = Path(tempfile.mkdtemp(prefix="eg-tls-"))
    os.chmod(d, 0o755)
    ca = TestCA(str(d))
    rogue = TestCA(str(d), name="rogue CA")
    servers = {name: HttpsRecorder(ip, rogue if name == "api.deepseek.com" else ca, [name])
               for name, ip in HOSTS.items()}
    cfg = base_config(d / "guard", rules=[
        {"name": "openai-holds", "destination": {"provider": ["openai"]},
         "detected": ["secret.*", "pii.email"], "action": "hold"},
        {"name": "mask-emails", "detected": ["pii.email"], "action": "mask"},
        {"name": "secrets-hold", "detected": ["secret.*"], "action": "hold"},
        {"name": "datasets-need-approval", "request": {"class": ["dataset_export"]},
         "action": "hold"},
    ])
    cfg["proxy"]["listen"] = f"127.0.0.1:{free_port()}"
    cfg["approvals"]["timeout"] = "60s"
    cfg["tls"] = {"intercept": {"hosts": ["api.openai.com", "api.anthropic.com", "api.groq.com",
                                          "api.deepseek.com", "api.cohere.com"]},
                  "upstream_ca_file": ca.ca_file}
    try:
        with GuardedHost(d / "guard", cfg) as host:
            bundle = _trust_bundle(host, d, ca.ca_file)
            assert Path(bundle).read_text().startswith("-----BEGIN CERTIFICATE-----")
            yield {"dir": d, "host": host, "servers": servers, "bundle": bundle,
                   "test_ca": ca.ca_file}
    finally:
        for s in servers.values():
            s.close()


def run_agent(w: dict[str, Any], sni: str, requests: list[dict[str, Any]], *,
              cafile: str | None = None, wait: bool = True, raw: bytes | None = None,
              uid: int = 65534, **mode: Any) -> Any:
    spec: dict[str, Any] = {"ip": HOSTS[sni], "port": w["servers"][sni].port, "sni": sni,
                            "cafile": cafile or w["bundle"], "requests": requests, "timeout": 60,
                            **mode}
    if raw is not None:
        spec["raw_b64"] = base64.b64encode(raw).decode()
    fd, path = tempfile.mkstemp(dir=w["dir"], suffix=".json")
    with os.fdopen(fd, "w") as fh:
        json.dump(spec, fh)
    os.chmod(path, 0o644)
    proc = w["host"].agent(["/usr/bin/python3", AGENT, path], uid=uid, gid=uid,
                           stdout=subprocess.PIPE, text=True)
    return finish(proc) if wait else proc


def post(path: str, body: bytes, **headers: str) -> dict[str, Any]:
    return {"method": "POST", "path": path, "body_b64": base64.b64encode(body).decode(),
            "headers": {"Content-Type": "application/json", **headers}}


def chat(text: str, model: str = "gpt-4o") -> bytes:
    return json.dumps({"model": model, "messages": [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": text}]}).encode()


def hold_for(host: GuardedHost, ip: str) -> dict[str, Any]:
    return wait_for(lambda: next((h for h in pending(host) if h["destination"]["ip"] == ip),
                                 None))


def ledger_flows(host: GuardedHost, *args: str) -> list[dict[str, Any]]:
    res = host.egressctl("flows", "--json", *args)
    assert res.returncode == 0, res.stderr
    return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]


# ----------------------------------------------------------------------------- hold / approve
def test_prompt_with_email_and_key_is_held_then_delivered_byte_exact(world: dict) -> None:
    host, server = world["host"], world["servers"]["api.openai.com"]
    body = chat(f"Contact {EMAIL}; deploy with key {AWS_KEY_ID} please")
    before = len(server.requests)
    proc = run_agent(world, "api.openai.com", [post("/v1/chat/completions", body)], wait=False)
    hold = hold_for(host, HOSTS["api.openai.com"])
    assert {d["detector"] for d in hold["detections"]} >= {"secret.aws_access_key_id",
                                                           "pii.email"}
    assert hold["destination"]["host"] == "api.openai.com"
    assert AWS_KEY_ID not in json.dumps(hold) and EMAIL not in json.dumps(hold)
    time.sleep(0.3)
    assert len(server.requests) == before, "nothing may reach the server while held"
    assert AWS_KEY_ID.encode() not in server.all_data()
    res = host.egressctl("approve", hold["id"], "--reason", "ticket AI-7: test key")
    assert res.returncode == 0, res.stderr
    report = finish(proc)
    assert report["responses"] and report["responses"][0]["status"] == 200, report
    got = server.requests[before:]
    assert len(got) == 1
    assert got[0].body == body                        # byte-exact, once
    assert got[0].header("content-length") == str(len(body))
    events = audit(host)
    tls = [e for e in events if e["event"] == "tls.intercept" and e.get("sni") == "api.openai.com"]
    assert tls
    req = [e for e in events if e["event"] == "http.request" and e["provider"] == "openai"]
    assert req and req[-1]["model"] == "gpt-4o" and req[-1]["kind"] == "chat"
    assert req[-1]["fields"]["secret.aws_access_key_id"] == ["messages[1].content"]
    raw_log = Path(host.audit_path).read_text()
    assert AWS_KEY_ID not in raw_log and EMAIL not in raw_log


# ----------------------------------------------------------------------------- mask
def test_email_is_masked_and_framing_stays_valid(world: dict) -> None:
    server = world["servers"]["api.anthropic.com"]
    body = chat(f"Please email {EMAIL} the summary", model="claude-sonnet-4")
    before = len(server.requests)
    report = run_agent(world, "api.anthropic.com", [post("/v1/messages", body)])
    assert report["responses"][0]["status"] == 200, report
    got = server.requests[before]
    assert EMAIL.encode() not in got.raw
    assert len(got.body) == len(body) and b"@corp-example.org" in got.body
    assert json.loads(got.body)["model"] == "claude-sonnet-4"


def test_masked_gzip_body_is_reencoded_with_fixed_length(world: dict) -> None:
    server = world["servers"]["api.anthropic.com"]
    plain = chat(f"Forward to {EMAIL} " + "lorem ipsum " * 400, model="claude-haiku")
    body = gzip.compress(plain)
    before = len(server.requests)
    report = run_agent(world, "api.anthropic.com",
                       [post("/v1/messages", body, **{"Content-Encoding": "gzip"})])
    assert report["responses"][0]["status"] == 200, report
    got = server.requests[before]
    assert int(got.header("content-length")) == len(got.body)
    decoded = got.decoded_body
    assert EMAIL.encode() not in decoded and len(decoded) == len(plain)
    assert EMAIL.encode() not in got.raw


# ----------------------------------------------------------------------------- decoding
def test_gzip_body_with_secret_is_caught(world: dict) -> None:
    host, server = world["host"], world["servers"]["api.groq.com"]
    body = gzip.compress(chat(f"use {AWS_KEY_ID} for the deploy " + "x" * 3000))
    assert AWS_KEY_ID.encode() not in body           # invisible without decoding
    before = server.total_bytes
    proc = run_agent(world, "api.groq.com",
                     [post("/openai/v1/chat/completions", body, **{"Content-Encoding": "gzip"})],
                     wait=False)
    hold = hold_for(host, HOSTS["api.groq.com"])
    assert any(d["detector"] == "secret.aws_access_key_id" for d in hold["detections"])
    assert host.egressctl("deny", hold["id"], "--reason", "no keys to groq").returncode == 0
    report = finish(proc)
    assert report["error"] or report["responses"][0]["status"] != 200
    sent = bytes(server.all_data())[before:] if server.total_bytes > before else b""
    assert body not in sent and not any(r.body == body for r in server.requests)


def test_chunked_upload_with_secret_split_across_chunks_is_caught(world: dict) -> None:
    host, server = world["host"], world["servers"]["api.groq.com"]
    text = chat(f"config: key={AWS_KEY_ID_2} end")
    cut = text.find(AWS_KEY_ID_2.encode()) + 9          # the key spans two chunks
    chunks = [text[:cut], text[cut:]]
    before = len(server.requests)
    req = {"method": "POST", "path": "/openai/v1/chat/completions",
           "chunks_b64": [base64.b64encode(c).decode() for c in chunks],
           "headers": {"Content-Type": "application/json"}}
    proc = run_agent(world, "api.groq.com", [req], wait=False)
    hold = hold_for(host, HOSTS["api.groq.com"])
    assert any(d["detector"] == "secret.aws_access_key_id" for d in hold["detections"])
    assert AWS_KEY_ID_2[9:].encode() not in server.all_data()
    assert host.egressctl("deny", hold["id"], "--reason", "no").returncode == 0
    finish(proc)
    assert len(server.requests) == before


# ----------------------------------------------------------------------------- dataset export
def test_file_upload_is_a_dataset_export_that_waits_for_approval(world: dict) -> None:
    host, server = world["host"], world["servers"]["api.groq.com"]
    data = b'{"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}]}\n'
    before = len(server.requests)
    proc = run_agent(world, "api.groq.com", [post("/openai/v1/files", data * 50)], wait=False)
    hold = hold_for(host, HOSTS["api.groq.com"])
    assert hold["rule"] == "datasets-need-approval" and not hold["detections"]
    time.sleep(0.3)
    assert len(server.requests) == before
    assert host.egressctl("approve", hold["id"], "--reason", "approved export").returncode == 0
    report = finish(proc)
    assert report["responses"][0]["status"] == 200, report
    assert server.requests[before].body == data * 50


# ----------------------------------------------------------------------------- passthrough
def test_non_intercepted_host_passes_untouched_and_its_sni_is_in_the_ledger(world: dict) -> None:
    host, server = world["host"], world["servers"]["api.mistral.ai"]
    body = chat("hello there", model="mistral-large")
    # Trusting only the test CA proves the agent talked TLS to the real server, not to us.
    report = run_agent(world, "api.mistral.ai", [post("/v1/chat/completions", body)],
                       cafile=world["test_ca"])
    assert report["responses"][0]["status"] == 200, report
    assert server.requests[-1].body == body
    rows = wait_for(lambda: ledger_flows(host, "--since", "1h", "--host", "api.mistral.ai"))
    assert rows[0]["destination"]["provider"] == "mistral"
    assert rows[0]["intercepted"] is False


# ----------------------------------------------------------------------------- failures
def test_upstream_certificate_failure_is_a_blocked_flow(world: dict) -> None:
    host, server = world["host"], world["servers"]["api.deepseek.com"]
    report = run_agent(world, "api.deepseek.com", [post("/v1/chat/completions", chat("hi"))])
    assert report["responses"] and report["responses"][0]["status"] == 502, report
    assert not server.requests
    ev = wait_for(lambda: [e for e in audit(host) if e["event"] == "tls.upstream_verify_failed"])
    assert ev[0]["destination"]["host"] == "api.deepseek.com"
    assert any(e["event"] == "flow.block" and e.get("rule") == "tls.verify"
               for e in audit(host))


def test_pinned_client_fails_is_audited_and_next_attempt_blocked(world: dict) -> None:
    host, server = world["host"], world["servers"]["api.cohere.com"]
    report = run_agent(world, "api.cohere.com", [post("/v1/chat", chat("hi"))],
                       cafile=world["test_ca"])           # does not trust the host CA
    assert report["error"], report
    ev = wait_for(lambda: [e for e in audit(host) if e["event"] == "tls.intercept_failed"])
    assert ev[0]["destination"]["host"] == "api.cohere.com"
    assert ev[0]["process"]["exe"].startswith("/usr/bin/python3")
    assert ev[0]["next_attempts"] == "block"
    again = run_agent(world, "api.cohere.com", [post("/v1/chat", chat("hi"))])
    assert again["error"], again
    assert wait_for(lambda: any(e["event"] == "flow.block"
                                and e.get("rule") == "tls.on_intercept_failure"
                                for e in audit(host)))
    assert not server.requests
    # The refusal is remembered for that identity only: another uid running the same program
    # is still intercepted (not denied because of someone else's handshake).
    other = run_agent(world, "api.cohere.com", [post("/v1/chat", chat("other user"))],
                      uid=OTHER_UID)
    assert other["responses"][0]["status"] == 200, other
    assert json.loads(server.requests[-1].body)["messages"][1]["content"] == "other user"
    status = json.loads(host.egressctl("status", "--json", check=True).stdout)
    assert [(f["uid"], f["host"]) for f in status["intercept_failures"]] == [
        (65534, "api.cohere.com")]
    assert 3500 < status["intercept_failures"][0]["expires_in_s"] <= 3600
    # The failed handshake's flow is a blocked flow in the ledger, by the interception.
    (row,) = wait_for(lambda: [f for f in ledger_flows(host, "--since", "1h", "--host",
                                                       "api.cohere.com")
                               if f["flow_id"] == ev[0]["flow_id"]])
    assert (row["action"], row["rule"], row["state"]) == ("block", "tls.intercept", "blocked")


@pytest.mark.parametrize("garbage", [
    b"\x00\xffnot http at all\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nhello",
    b"POST / HTTP/1.1\r\nContent-Encoding: gzip\r\nContent-Length: 9\r\n\r\nnot-gzip!",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
])
def test_hostile_bytes_inside_tls_are_blocked_and_the_daemon_carries_on(world: dict,
                                                                      garbage: bytes) -> None:
    host, server = world["host"], world["servers"]["api.groq.com"]
    before = server.total_bytes
    report = run_agent(world, "api.groq.com", [], raw=garbage)
    assert not report.get("reply"), report            # no answer but a reset / close
    assert server.total_bytes == before
    assert wait_for(lambda: any(e["event"] == "flow.block" and e.get("rule") == "http"
                                for e in audit(host)))
    ok = run_agent(world, "api.groq.com", [post("/openai/v1/chat/completions", chat("hi"))])
    assert ok["responses"][0]["status"] == 200, ok


def test_broken_record_after_the_handshake_is_not_taken_for_a_pinned_client(world: dict) -> None:
    """The client accepted our certificate (handshake done), then sent a record that does not
    decrypt: the flow is aborted, but that is no pinning refusal, so the program's next
    connections to the host are still intercepted, not blocked."""
    host, server = world["host"], world["servers"]["api.anthropic.com"]
    before = server.total_bytes
    seen = len(audit(host))
    broken = run_agent(world, "api.anthropic.com", [], corrupt_after_handshake=True)
    assert broken.get("handshake"), broken
    assert wait_for(lambda: any(e["event"] == "flow.close" and e.get("reset", "").startswith(
        "client TLS error") for e in audit(host)[seen:]))
    assert not [e for e in audit(host)[seen:] if e["event"] == "tls.intercept_failed"]
    ok = run_agent(world, "api.anthropic.com", [post("/v1/messages", chat("hi again"))])
    assert ok["responses"][0]["status"] == 200, ok
    assert server.total_bytes > before


# ----------------------------------------------------------------------------- ledger
def test_usage_by_provider_matches_intercepted_server_bytes(world: dict) -> None:
    host, server = world["host"], world["servers"]["api.anthropic.com"]
    body = chat("nothing sensitive here", model="claude-opus")
    run_agent(world, "api.anthropic.com", [post("/v1/messages", body)] * 3)

    def settled() -> list[dict[str, Any]]:
        rows = [r for r in _usage(host, "provider") if r["key"] == "anthropic"]
        return rows if rows and rows[0]["bytes_up"] == server.total_bytes else []

    try:
        rows = wait_for(settled)
    except AssertionError:
        raise AssertionError(f"{_usage(host, 'provider')} server={server.total_bytes}/"
                             f"{server.total_sent}") from None
    assert rows[0]["bytes_up"] == server.total_bytes
    assert rows[0]["bytes_down"] == server.total_sent
    flows = ledger_flows(host, "--since", "1h", "--provider", "anthropic")
    assert any("claude-opus" in f["models"] and f["endpoint_kinds"] == ["chat"] for f in flows)
    masked = [f for f in flows if any(d["detector"] == "pii.email" for d in f["detections"])]
    assert masked and masked[0]["detections"][0]["fields"] == ["messages[1].content"]
    by_class = _usage(host, "class")
    assert any(r["key"] == "pii" and r["detections"] >= 2 for r in by_class)
    text = host.egressctl("usage", "--by", "provider", "--since", "1h")
    assert text.returncode == 0 and "anthropic" in text.stdout
    table = host.egressctl("flows", "--since", "1h", "--provider", "anthropic")
    assert table.returncode == 0 and "claude-opus" in table.stdout and "pii.emailx" in table.stdout
    unknown = host.egressctl("flows", "--since", "1h", "--provider", "nosuch")
    assert unknown.returncode != 0 and "unknown provider 'nosuch'" in unknown.stderr
    assert "openai" in unknown.stderr and "anthropic" in unknown.stderr
    bad = host.egressctl("usage", "--since", "yesterday")
    assert bad.returncode == 2 and "not a period" in bad.stderr
    db = Path(world["dir"] / "guard" / "state" / "ledger.db")
    assert db.stat().st_mode & 0o077 == 0
    for f in (db, Path(str(db) + "-wal")):
        if f.exists():
            assert EMAIL.encode() not in f.read_bytes() and AWS_KEY_ID.encode() not in f.read_bytes()


def test_only_approvers_see_everyone_in_the_ledger(world: dict) -> None:
    host = world["host"]
    mine = host.egressctl("usage", "--by", "user", "--json", uid=12345)
    assert mine.returncode == 0, mine.stderr
    assert mine.stdout.strip() == ""                  # uid 12345 opened no flows
    everyone = host.egressctl("usage", "--by", "user", "--json")
    assert any(json.loads(line)["key"] == "nobody" for line in everyone.stdout.splitlines())
    theirs = host.egressctl("flows", "--since", "1h", "--json", uid=12345)
    assert theirs.returncode == 0 and theirs.stdout.strip() == ""
    own = host.egressctl("flows", "--since", "1h", "--json", uid=65534)   # the agents' uid
    assert own.returncode == 0 and own.stdout.strip()
    assert all(json.loads(line)["process"]["uid"] == 65534 for line in own.stdout.splitlines())


def test_pinned_client_with_passthrough_is_let_through_unopened(world: dict) -> None:
    """tls.on_intercept_failure: passthrough (its own daemon): after the first refusal, the
    same identity reaches the real server with its own TLS, unscanned, and that flow is marked
    as NOT inspected in the audit log, the ledger and status. Another uid is still inspected
    (its secret is blocked), and the memory expires after tls.intercept_failure_ttl."""
    d = world["dir"] / "passthrough"
    server = world["servers"]["api.cohere.com"]
    cfg = base_config(d, rules=[{"name": "no-secrets", "detected": ["secret.*"],
                                 "action": "block"}])
    cfg["proxy"]["listen"] = f"127.0.0.1:{free_port()}"
    cfg["tls"] = {"intercept": {"hosts": ["api.cohere.com"]}, "on_intercept_failure":
                  "passthrough", "intercept_failure_ttl": f"{PASSTHROUGH_TTL_S}s",
                  "upstream_ca_file": world["test_ca"]}
    with GuardedHost(d, cfg) as host:
        w = dict(world, host=host, bundle=_trust_bundle(host, d, world["test_ca"]))
        first = run_agent(w, "api.cohere.com", [post("/v1/chat", chat("hi"))],
                          cafile=world["test_ca"])
        assert first["error"], first
        failed_at = time.monotonic()
        before = server.total_bytes
        other = run_agent(w, "api.cohere.com", [post("/v1/chat", chat(f"key {AWS_KEY_ID}"))],
                          uid=OTHER_UID)                 # trusts the host CA: inspected
        assert other["error"] and not other["responses"], other
        assert wait_for(lambda: any(e["event"] == "flow.block" and e.get("rule") == "no-secrets"
                                    and e["process"]["uid"] == OTHER_UID for e in audit(host)))
        assert [f["uid"] for f in _status(host)["intercept_failures"]] == [65534]
        assert server.total_bytes == before and not any(
            AWS_KEY_ID.encode() in r.body for r in server.requests)
        second = run_agent(w, "api.cohere.com", [post("/v1/chat", chat("again"))],
                           cafile=world["test_ca"])
        assert second["responses"][0]["status"] == 200, second
        assert time.monotonic() - failed_at < PASSTHROUGH_TTL_S, "too slow to test the TTL"
        assert json.loads(server.requests[-1].body)["messages"][1]["content"] == "again"
        ev = [e for e in audit(host) if e["event"] == "tls.intercept_failed"]
        assert ev and ev[0]["next_attempts"] == "passthrough"
        assert ev[0]["remembered_for_s"] == PASSTHROUGH_TTL_S
        (mark,) = [e for e in audit(host) if e["event"] == "tls.passthrough"]
        assert mark["reason"] == "intercept_failure" and mark["process"]["uid"] == 65534
        close = wait_for(lambda: [e for e in audit(host) if e["event"] == "flow.close"
                                  and e["flow_id"] == mark["flow_id"]])
        assert close[0]["tls_passthrough"] == "intercept_failure"
        rows = wait_for(lambda: [f for f in ledger_flows(host, "--since", "1h")
                                 if f["flow_id"] == mark["flow_id"]])
        assert rows[0]["tls_passthrough"] == "intercept_failure"
        assert "NOT INSPECTED" in host.egressctl("flows", "--since", "1h", check=True).stdout
        status = json.loads(host.egressctl("status", "--json", check=True).stdout)
        assert status["counters"]["tls_passthrough"] == 1
        assert [f["uid"] for f in status["intercept_failures"]] == [65534]
        text = host.egressctl("status", check=True).stdout
        assert "1 flows passed NOT inspected" in text and "uid 65534" in text
        # Forgotten after the TTL: the same identity is intercepted (and refuses) again.
        time.sleep(max(0.0, PASSTHROUGH_TTL_S + 0.5 - (time.monotonic() - failed_at)))
        third = run_agent(w, "api.cohere.com", [post("/v1/chat", chat("later"))],
                          cafile=world["test_ca"])
        assert third["error"], third
        assert wait_for(lambda: len([e for e in audit(host)
                                     if e["event"] == "tls.intercept_failed"]) == 2)
        assert len([e for e in audit(host) if e["event"] == "tls.passthrough"]) == 1


def _trust_bundle(host: GuardedHost, d: Path, test_ca: str) -> str:
    """This daemon's host CA (each daemon has its own) plus the test servers' CA."""
    res = subprocess.run([host.python, "-m", "egressguard", "ca", "export", "--config",
                          str(host.config_path)], capture_output=True, text=True, timeout=30,
                         check=True)
    bundle = d / "trust.pem"
    bundle.write_text(res.stdout + Path(test_ca).read_text())
    os.chmod(bundle, 0o644)
    return str(bundle)


def _status(host: GuardedHost) -> dict[str, Any]:
    return json.loads(host.egressctl("status", "--json", check=True).stdout)


def _usage(host: GuardedHost, by: str) -> list[dict[str, Any]]:
    res = host.egressctl("usage", "--by", by, "--since", "1h", "--json")
    assert res.returncode == 0, res.stderr
    return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]

