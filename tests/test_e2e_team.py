"""Team approvals end to end: a real daemon (probes, proxy, Hyperscan, gRPC, SQLite), agents
in a child cgroup as nobody, real servers on 127.x.y.z, real `egressctl` (Unix socket and
mTLS), a loopback stand-in for Slack.

What is asserted is what the destination received, what the agent saw and what the audit log
says: a fast refusal after the inline wait, the retry passing within exactly the scope
approved, grants and revoke, a quorum of two with a repeated approver, break-glass, and a
restart that keeps pending requests and grants.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

from egressguard.approvals import slack
from egressguard.harness import GuardedHost, free_port
from tests.test_e2e_guard import (AWS_KEY_ID, Agent, audit_events, http_post, pending, policy,
                                  wait_for)
from tests.tools.certs import TestCA
from tests.tools.servers import RecordingServer

pytestmark = pytest.mark.kernel

OTHER_KEY_ID = "AKIA" + "QW4RT7YU" + "PL9KJ2HG"
THIRD_KEY_ID = "AKIA" + "MN3BV8CX" + "ZA6SD1FG"
TOKEN = "gh" + "p_" + "R8" * 18
TOKEN2 = "gh" + "p_" + "T5" * 18
DAEMON_UID = 1                    # Debian's "daemon" user: a second approver besides root
SLACK_SECRET = "e2e-" + "signing-" + "secret-0123456789"
OK = b"HTTP/1.1 200 OK\r\n\r\ndone"


def team_policy(workdir: Path, **approvals: Any) -> dict[str, Any]:
    cfg = policy(workdir)
    cfg["rules"] = [
        {"name": "tokens-need-two", "detected": ["secret.github_token"], "action": "hold",
         "approvals": {"required": 2, "approvers": ["uid:0", f"uid:{DAEMON_UID}"]}},
        {"name": "secrets-need-approval", "detected": ["secret.*"], "action": "hold"},
    ]
    cfg["approvals"].pop("timeout", None)
    cfg["approvals"].update({"approvers": ["uid:0", f"uid:{DAEMON_UID}"], "inline_wait": "1s",
                             "request_ttl": "10m", "break_glass": True, **approvals})
    return cfg


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    import tempfile
    d = Path(tempfile.mkdtemp(prefix="eg-team-"))
    os.chmod(d, 0o755)
    yield d


@pytest.fixture(scope="module")
def team(workdir: Path) -> Iterator[GuardedHost]:
    with GuardedHost(workdir / "team", team_policy(workdir / "team")) as host:
        yield host


def events(host: GuardedHost, name: str) -> list[dict[str, Any]]:
    return [e for e in audit_events(host) if e["event"] == name]


def ctl_ok(host: GuardedHost, *args: str, uid: int = 0) -> str:
    res = host.egressctl(*args, uid=uid)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def ledger_rows(host: GuardedHost, *flow_ids: str) -> dict[str, dict[str, Any]]:
    """The ledger rows of these flows (written when each closes: waited for)."""
    def rows() -> dict[str, dict[str, Any]]:
        got = {r["flow_id"]: r for r in (json.loads(line) for line in ctl_ok(
            host, "flows", "--since", "1h", "--json").splitlines())}
        return got if all(f in got for f in flow_ids) else {}
    return wait_for(rows)


def refused_inline(host: GuardedHost, workdir: Path, server: RecordingServer,
                   payload: bytes) -> dict[str, Any]:
    """Send `payload`; the client must be reset after the inline wait; returns the request."""
    t0 = time.monotonic()
    report = Agent(host, workdir).run(server.host, server.port, payload)
    assert report["error"] == "ConnectionResetError", report
    assert time.monotonic() - t0 < 15
    req = wait_for(lambda: next((h for h in pending(host)
                                 if h["destination"]["ip"] == server.host), None))
    assert req["waiting"] == 0 and req["state"] == "pending"
    return req


def test_inline_wait_then_approval_then_the_retry_passes_once(team: GuardedHost,
                                                               workdir: Path) -> None:
    payload = http_post(b'{"prompt": "key ' + AWS_KEY_ID.encode() + b'"}')
    with RecordingServer("127.21.0.1", respond=lambda r: OK) as server:
        req = refused_inline(team, workdir, server, payload)
        assert AWS_KEY_ID.encode() not in server.all_data()
        second = refused_inline(team, workdir, server, payload)       # the agent retries
        assert second["id"] == req["id"] and second["count"] == 2     # one request, counted
        out = ctl_ok(team, "approve", req["id"], "--reason", "expected: OPS-9")
        assert f"approved {req['id']}" in out
        report = Agent(team, workdir).run(server.host, server.port, payload)
        assert report["error"] is None and report["received"] == len(OK)
        assert server.all_data() == payload                           # exactly once
        again = refused_inline(team, workdir, server, payload)        # once means once
        assert again["id"] != req["id"]
        ctl_ok(team, "deny", again["id"], "--reason", "enough")
        retry = Agent(team, workdir).run(server.host, server.port, payload)
        assert retry["error"] == "ConnectionResetError", retry
    use = [e for e in events(team, "approval.use") if e["hold_id"] == req["id"]]
    assert len(use) == 1 and use[0]["approved_by"] == "root"
    waited = [e for e in events(team, "flow.wait_expired") if e["hold_id"] == req["id"]]
    assert len(waited) == 2
    (denied,) = [e for e in events(team, "approval.denied_retry") if e["hold_id"] == again["id"]]
    # The ledger names the approval request behind each outcome.
    rows = ledger_rows(team, use[0]["flow_id"], denied["flow_id"])
    assert (rows[use[0]["flow_id"]]["approval_id"], rows[use[0]["flow_id"]]["state"]) == (
        req["id"], "closed")
    assert (rows[denied["flow_id"]]["approval_id"], rows[denied["flow_id"]]["state"]) == (
        again["id"], "denied")
    by_class = {json.loads(line)["key"]: json.loads(line) for line in ctl_ok(
        team, "usage", "--by", "class", "--since", "1h", "--json").splitlines()}
    assert by_class["secret"]["held"] >= 5                 # every flow above was held


def test_grant_lets_matching_flows_pass_until_revoked(team: GuardedHost, workdir: Path) -> None:
    with RecordingServer("127.21.0.2", respond=lambda r: OK) as server:
        req = refused_inline(team, workdir, server, http_post(AWS_KEY_ID.encode()))
        out = ctl_ok(team, "approve", req["id"], "--reason", "bulk job", "--scope",
                     "process-destination", "--ttl", "10m")
        assert "grant g-" in out and "scope process-destination" in out
        grants = [json.loads(line) for line in ctl_ok(team, "grants", "--json").splitlines()]
        (grant,) = [g for g in grants if g["request_id"] == req["id"]]
        assert grant["destination"]["ip"] == "127.21.0.2" and grant["process"]["uid"] == 65534
        body = http_post(b"other " + OTHER_KEY_ID.encode())      # another secret, same scope
        report = Agent(team, workdir).run(server.host, server.port, body)
        assert report["error"] is None and server.all_data().endswith(body)
        use = [e for e in events(team, "grant.use") if e["grant_id"] == grant["id"]]
        assert len(use) == 1 and use[0]["detections"][0]["detector"] == "secret.aws_access_key_id"
        row = ledger_rows(team, use[0]["flow_id"])[use[0]["flow_id"]]
        assert (row["approval_id"], row["action"]) == (req["id"], "hold")
        assert OTHER_KEY_ID not in json.dumps(use)
        ctl_ok(team, "revoke", grant["id"], "--reason", "job done")
        assert grant["id"] not in ctl_ok(team, "grants")
        refused_inline(team, workdir, server, http_post(b"third " + THIRD_KEY_ID.encode()))
    assert events(team, "grant.revoke")[-1]["grant_id"] == grant["id"]


def test_quorum_of_two_with_a_repeated_approver_and_break_glass(team: GuardedHost,
                                                                workdir: Path) -> None:
    payload = http_post(b"token " + TOKEN.encode())
    with RecordingServer("127.21.0.3", respond=lambda r: OK) as server:
        req = refused_inline(team, workdir, server, payload)
        assert req["required"] == 2
        out = ctl_ok(team, "approve", req["id"], "--reason", "first look")
        assert "1 of 2" in out
        res = team.egressctl("approve", req["id"], "--reason", "me again")
        assert res.returncode == 1 and "already approved" in res.stderr
        res = team.egressctl("approve", req["id"], "--reason", "mine", uid=65534)
        assert res.returncode == 1 and "not an approver" in res.stderr
        ctl_ok(team, "approve", req["id"], "--reason", "second look", uid=DAEMON_UID)
        report = Agent(team, workdir).run(server.host, server.port, payload)
        assert report["error"] is None and server.all_data() == payload
        # break-glass: one approver is enough, and it is loud
        req2 = refused_inline(team, workdir, server, http_post(b"token " + TOKEN2.encode()))
        out = ctl_ok(team, "approve", req2["id"], "--reason", "INC-42 outage", "--break-glass")
        assert out.startswith(f"approved by break-glass (quorum bypassed, audited as critical) "
                              f"{req2['id']} ")
    decision = [e for e in events(team, "flow.decision") if e["hold_id"] == req["id"]][-1]
    assert [a["uid"] for a in decision["approvers"]] == [0, DAEMON_UID]
    (bg,) = [e for e in events(team, "approval.break_glass") if e["hold_id"] == req2["id"]]
    assert bg["severity"] == "critical" and bg["who"]["uid"] == 0


def test_no_raw_secret_in_the_audit_log_or_the_store(team: GuardedHost) -> None:
    texts = [Path(team.audit_path).read_text(), "\n".join(team.log_lines)]
    state = Path(team.config["state_dir"])
    texts += [p.read_bytes().decode("latin-1") for p in state.glob("approvals.db*")]
    for text in texts:
        for secret in (AWS_KEY_ID, OTHER_KEY_ID, THIRD_KEY_ID, TOKEN, TOKEN2):
            assert secret not in text


# ----------------------------------------------------------------------------- restart
class SlackStandIn:
    """A loopback HTTP server that records JSON posts (the Slack webhook and response_url)."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.posts.append((self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def slack_click(port: int, request_id: str, user: str, reason: str, reply: str) -> dict[str, Any]:
    body = urllib.parse.urlencode({"payload": json.dumps({
        "type": "block_actions", "user": {"id": user}, "response_url": reply,
        "actions": [{"action_id": slack.APPROVE_ACTION, "value": request_id}],
        "state": {"values": {slack.REASON_BLOCK: {slack.REASON_ACTION: {"value": reason}}}},
    })}).encode()
    ts = str(int(time.time()))
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/slack/interactive", data=body, method="POST",
        headers={"X-Slack-Request-Timestamp": ts,
                 "X-Slack-Signature": slack.sign(SLACK_SECRET.encode(), ts, body),
                 "Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def test_restart_keeps_pending_requests_and_grants_with_mtls_and_slack(workdir: Path) -> None:
    base = workdir / "restart"
    base.mkdir()
    pki = TestCA(base / "pki")
    server_cert = pki.issue("server", "egressguard", ips=["127.0.0.1"], server=True)
    approver = pki.issue("approver", "approver.corp.example", dns=["approver.corp.example"])
    (base / "slack.secret").write_text(SLACK_SECRET)
    os.chmod(base / "slack.secret", 0o600)
    standin = SlackStandIn()
    remote_port, slack_port = free_port(), free_port()
    # nobody (the agents' uid) is an approver here, so that only the self-approval rule can
    # refuse it when it clicks Approve in Slack on its own flow
    cfg = team_policy(base, inline_wait="60s", approvers=["uid:0", f"uid:{DAEMON_UID}",
                                                          "uid:65534"], identities=[
        {"cert": "approver.corp.example", "user": f"uid:{DAEMON_UID}"},
        {"slack": "U0ROOT0001", "user": "uid:0"},
        {"slack": "U0NOBODY01", "user": "uid:65534"},
    ], remote={"listen": f"127.0.0.1:{remote_port}", "cert": str(server_cert.cert),
               "key": str(server_cert.key), "ca": str(pki.pem)},
        chat={"slack": {"webhook_url": standin.url("/hook"),
                        "signing_secret_file": str(base / "slack.secret"),
                        "callback_listen": f"127.0.0.1:{slack_port}"}, "retries": 2})
    remote = ["--server", f"127.0.0.1:{remote_port}", "--cert", str(approver.cert),
              "--key", str(approver.key), "--ca", str(pki.pem)]
    try:
        with GuardedHost(base, cfg) as host, \
                RecordingServer("127.21.1.1", respond=lambda r: OK) as held_srv, \
                RecordingServer("127.21.1.2", respond=lambda r: OK) as grant_srv:
            agent = Agent(host, workdir)
            waiting = agent.start(held_srv.host, held_srv.port, http_post(AWS_KEY_ID.encode()))
            try:
                held = wait_for(lambda: next((h for h in pending(host) if
                                              h["destination"]["ip"] == "127.21.1.1"), None))
                assert held["waiting"] == 1
                wait_for(lambda: any(p == "/hook" for p, _ in standin.posts))
                # a grant, decided remotely over mTLS
                g_proc = agent.start(grant_srv.host, grant_srv.port,
                                     http_post(OTHER_KEY_ID.encode()))
                g_req = wait_for(lambda: next((h for h in pending(host) if
                                               h["destination"]["ip"] == "127.21.1.2"), None))
                out = ctl_ok(host, *remote, "approve", g_req["id"], "--reason", "remote ok",
                             "--scope", "process-destination")
                assert f"uid {DAEMON_UID}" in out
                assert g_proc.communicate(timeout=30)[0]
                # the ledger over the daemon's mTLS listener (an approver: every flow)
                wait_for(lambda: any(json.loads(x)["destination"]["ip"] == "127.21.1.2" for x in
                                     ctl_ok(host, *remote, "flows", "--since", "1h",
                                            "--json").splitlines()))
                host.stop()                                  # held socket lost: flow.aborted
                assert json.loads(waiting.communicate(timeout=30)[0].splitlines()[-1])["error"]
            finally:
                if waiting.poll() is None:
                    waiting.kill()
                    waiting.wait(10)
            aborted = [e for e in events(host, "flow.aborted") if e["hold_id"] == held["id"]]
            assert aborted and "stopping" in aborted[-1]["reason"]

            host.start()
            after = pending(host)
            assert [h["id"] for h in after] == [held["id"]] and after[0]["waiting"] == 0
            grants = [json.loads(x) for x in ctl_ok(host, "grants", "--json").splitlines()]
            assert [g["request_id"] for g in grants] == [g_req["id"]]
            body = http_post(b"new " + THIRD_KEY_ID.encode())
            report = agent.run(grant_srv.host, grant_srv.port, body)
            assert report["error"] is None and grant_srv.all_data().endswith(body)

            # Slack: the owner's own Slack identity is refused, root's approves
            reply = standin.url("/reply")
            assert slack_click(slack_port, held["id"], "U0NOBODY01", "mine", reply) == \
                {"refused": "self_approval"}
            assert slack_click(slack_port, held["id"], "U0ROOT0001", "ok from Slack", reply) == \
                {"ok": True}
            wait_for(lambda: any(p == "/reply" and "approved by root" in m.get("text", "")
                                 for p, m in standin.posts))
            report = agent.run(held_srv.host, held_srv.port, http_post(AWS_KEY_ID.encode()))
            assert report["error"] is None
            assert held_srv.all_data() == http_post(AWS_KEY_ID.encode())
        decision = [e for e in events(host, "flow.decision") if e["hold_id"] == held["id"]][-1]
        assert decision["who"]["channel"] == "slack" and decision["who"]["uid"] == 0
        assert any(e["code"] == "self_approval" and e["who"].get("channel") == "slack"
                   for e in events(host, "approval.refused"))
    finally:
        standin.close()


def test_a_crash_records_the_held_connection_as_aborted_and_keeps_the_request(
        workdir: Path) -> None:
    base = workdir / "crash"
    with GuardedHost(base, team_policy(base, inline_wait="60s")) as host, \
            RecordingServer("127.21.2.1", respond=lambda r: OK) as srv:
        proc = Agent(host, workdir).start(srv.host, srv.port, http_post(AWS_KEY_ID.encode()))
        try:
            held = wait_for(lambda: next((h for h in pending(host)
                                          if h["destination"]["ip"] == srv.host), None))
            assert host.proc is not None
            host.proc.kill()                                   # kill -9: no clean stop
            host.proc.wait(10)
            report = json.loads(proc.communicate(timeout=30)[0].splitlines()[-1])
            assert report["received"] == 0                     # the held client got nothing
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        host.stop()
        host.start()
        aborted = [e for e in events(host, "flow.aborted") if e["hold_id"] == held["id"]]
        assert len(aborted) == 1 and "restarted" in aborted[0]["reason"]
        assert aborted[0]["flow_id"] == held["flow_id"]
        assert [h["id"] for h in pending(host)] == [held["id"]]
        assert srv.total_bytes == 0
