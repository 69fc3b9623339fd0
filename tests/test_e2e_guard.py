"""End to end: a real daemon (probes in the kernel, proxy, Hyperscan, gRPC), real agents in a
child cgroup running as an unprivileged user, real servers on 127.x.y.z, real `egressctl`.

Each assertion is about what the destination server actually received, what the agent actually
saw, and what the audit log says. Secrets are assembled at run time; no test prints one.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from egressguard.harness import GuardedHost, base_config, free_port
from tests.tools.payloads import payload_file
from tests.tools.servers import RecordingServer

pytestmark = pytest.mark.kernel

AGENT = str(Path(__file__).parent / "tools" / "agent.py")
NOBODY = 65534

# Test credentials, assembled so that no file in the repo holds one whole.
AWS_KEY_ID = "AKIA" + "Z7Q2MXV5" + "LKJ3HN4P"
EMAIL = "jane.doe" + "@" + "corp-example.org"


def wait_for(pred: Any, timeout: float = 15.0, step: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout}s")


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="eg-e2e-"))
    os.chmod(d, 0o755)
    yield d


def policy(workdir: Path, **over: Any) -> dict[str, Any]:
    cfg = base_config(workdir, rules=[
        {"name": "no-exfil-net", "destination": {"cidr": ["127.66.0.0/16"]}, "action": "block"},
        {"name": "no-emails-out", "detected": ["pii.email"], "action": "mask"},
        {"name": "secrets-need-approval", "detected": ["secret.*"], "action": "hold"},
    ])
    cfg["proxy"]["listen"] = f"127.0.0.1:{free_port()}"
    cfg["approvals"]["timeout"] = "60s"
    cfg.update(over)
    return cfg


@pytest.fixture(scope="module")
def guard(workdir: Path) -> Iterator[GuardedHost]:
    with GuardedHost(workdir / "main", policy(workdir / "main")) as host:
        yield host


class Agent:
    """Runs tests/tools/agent.py in the guarded cgroup and returns its JSON report."""

    def __init__(self, host: GuardedHost, workdir: Path):
        self.host, self.workdir = host, workdir

    def start(self, dst_host: str, port: int, payload: bytes, *, uid: int = NOBODY,
              extra: list[str] | None = None, argv0: str = "/usr/bin/python3",
              ) -> subprocess.Popen[str]:
        path = payload_file(self.workdir, payload)
        return self.host.agent([argv0, AGENT, dst_host, str(port),
                                "--payload-file", path, *(extra or [])],
                               uid=uid, gid=uid, stdout=subprocess.PIPE, text=True,
                               executable="/usr/bin/python3")

    def run(self, *args: Any, timeout: float = 120, **kw: Any) -> dict[str, Any]:
        proc = self.start(*args, **kw)
        out, _ = proc.communicate(timeout=timeout)
        return json.loads(out.strip().splitlines()[-1])


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=timeout)
    return json.loads(out.strip().splitlines()[-1])


def pending(host: GuardedHost) -> list[dict[str, Any]]:
    res = host.egressctl("pending", "--json")
    assert res.returncode == 0, res.stderr
    return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]


def audit_events(host: GuardedHost) -> list[dict[str, Any]]:
    with open(host.audit_path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def http_post(body: bytes, host: str = "api.example-ai.test") -> bytes:
    return (b"POST /v1/chat HTTP/1.1\r\nHost: " + host.encode() + b"\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)


# ----------------------------------------------------------------------------- allow
def test_allow_is_byte_exact_50mb_both_ways(guard: GuardedHost, workdir: Path) -> None:
    # Random bytes without "@": 50 MB of noise otherwise contains e-mail-shaped strings, which
    # this policy (rightly) masks.
    payload = random.Random(7).randbytes(50 * 1024 * 1024).replace(b"@", b"#")
    with RecordingServer("127.20.0.7", echo=True, keep_bytes=False) as server:
        report = Agent(guard, workdir).run(server.host, server.port, payload, timeout=300)
        wait_for(lambda: server.connections and server.connections[0].closed)
    want = hashlib.sha256(payload).hexdigest()
    assert report["error"] is None
    assert server.connections[0].size == len(payload)
    assert server.connections[0].sha256.hexdigest() == want
    assert report["received"] == len(payload)
    assert report["received_sha256"] == want


def test_process_identity_is_in_the_audit_log(guard: GuardedHost, workdir: Path) -> None:
    with RecordingServer("127.20.0.8") as server:
        Agent(guard, workdir).run(server.host, server.port, b"hello")
        wait_for(lambda: server.total_bytes == 5)
    opens = wait_for(lambda: [e for e in audit_events(guard) if e["event"] == "flow.open"
                              and e["destination"]["ip"] == "127.20.0.8"])
    proc = opens[-1]["process"]
    assert proc["uid"] == NOBODY and proc["user"] == "nobody"
    assert proc["exe"].startswith("/usr/bin/python3")
    assert "agent.py" in " ".join(proc["cmdline"])
    assert proc["cgroup_path"] == guard.cgroup_rel
    assert opens[-1]["destination"]["port"] == server.port


# ----------------------------------------------------------------------------- block
def test_block_by_destination_sends_nothing(guard: GuardedHost, workdir: Path) -> None:
    with RecordingServer("127.66.0.9") as server:
        report = Agent(guard, workdir).run(server.host, server.port, b"GET / HTTP/1.0\r\n\r\n")
        time.sleep(0.3)
        assert server.connections == []          # the destination was never contacted
    assert report["error"] in ("ConnectionResetError", "BrokenPipeError")
    blocks = [e for e in audit_events(guard) if e["event"] == "flow.block"]
    assert blocks and blocks[-1]["rule"] == "no-exfil-net"


# ----------------------------------------------------------------------------- hold
def _held(guard: GuardedHost, dst_ip: str) -> dict[str, Any]:
    return wait_for(lambda: next((h for h in pending(guard)
                                  if h["destination"]["ip"] == dst_ip), None))


def test_hold_then_approve_delivers_exactly_once(guard: GuardedHost, workdir: Path) -> None:
    body = b'{"prompt": "deploy with key ' + AWS_KEY_ID.encode() + b' please"}'
    payload = http_post(body)
    with RecordingServer("127.20.0.10", respond=lambda req: b"HTTP/1.1 200 OK\r\n\r\ndone") as server:
        proc = Agent(guard, workdir).start(server.host, server.port, payload)
        hold = _held(guard, "127.20.0.10")
        assert hold["process"]["uid"] == NOBODY
        assert hold["destination"]["host"] == "api.example-ai.test"
        assert [d["detector"] for d in hold["detections"]] == ["secret.aws_access_key_id"]
        assert AWS_KEY_ID not in json.dumps(hold)
        assert server.total_bytes == 0 or AWS_KEY_ID.encode() not in server.all_data()
        res = guard.egressctl("approve", hold["id"], "--reason", "ticket OPS-1: test key")
        assert res.returncode == 0, res.stderr
        report = finish(proc)
        wait_for(lambda: server.connections and server.connections[-1].closed)
        assert server.all_data() == payload        # byte-exact, exactly once
        assert len(server.connections) == 1
    assert report["error"] is None and report["received"] == len(b"HTTP/1.1 200 OK\r\n\r\ndone")
    decisions = [e for e in audit_events(guard) if e["event"] == "flow.decision"
                 and e.get("hold_id") == hold["id"]]
    assert decisions and decisions[0]["decision"]["outcome"] == "approved"
    assert decisions[0]["decision"]["reason"] == "ticket OPS-1: test key"


def test_keep_alive_second_secret_needs_its_own_approval(guard: GuardedHost,
                                                         workdir: Path) -> None:
    # Red-team finding: approving the first request released every later secret on the
    # same connection. Two requests, one connection, a pause between them.
    token = "gh" + "p_" + "Q7" * 18
    first = http_post(b'{"prompt": "key ' + AWS_KEY_ID.encode() + b'"}')
    second = http_post(b'{"prompt": "and ' + token.encode() + b'"}')
    with RecordingServer("127.20.0.16") as server:
        proc = Agent(guard, workdir).start(server.host, server.port, first + second,
                                           extra=["--chunk", str(len(first)), "--delay", "1.0"])
        try:
            hold = _held(guard, "127.20.0.16")
            assert [d["detector"] for d in hold["detections"]] == ["secret.aws_access_key_id"]
            assert guard.egressctl("approve", hold["id"], "--reason", "first").returncode == 0
            again = wait_for(lambda: next((h for h in pending(guard) if h["destination"]["ip"]
                                           == "127.20.0.16" and h["id"] != hold["id"]), None))
            assert [d["detector"] for d in again["detections"]] == ["secret.github_token"]
            time.sleep(0.3)
            assert token.encode() not in server.all_data(), "unapproved token left the host"
            assert guard.egressctl("approve", again["id"], "--reason", "second").returncode == 0
            finish(proc)
            wait_for(lambda: server.connections and server.connections[-1].closed)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        assert server.all_data() == first + second and len(server.connections) == 1


def test_hold_then_deny_sends_nothing_and_resets(guard: GuardedHost, workdir: Path) -> None:
    payload = http_post(b"key=" + AWS_KEY_ID.encode())
    with RecordingServer("127.20.0.11") as server:
        proc = Agent(guard, workdir).start(server.host, server.port, payload)
        hold = _held(guard, "127.20.0.11")
        res = guard.egressctl("deny", hold["id"], "--reason", "not allowed")
        assert res.returncode == 0, res.stderr
        report = finish(proc)
        time.sleep(0.3)
        assert server.total_bytes == 0
    assert report["error"] == "ConnectionResetError"


def test_self_approval_is_refused_even_for_root(guard: GuardedHost, workdir: Path) -> None:
    payload = http_post(b"key=" + AWS_KEY_ID.encode())
    with RecordingServer("127.20.0.12") as server:
        proc = Agent(guard, workdir).start(server.host, server.port, payload, uid=0)
        try:
            hold = _held(guard, "127.20.0.12")
            res = guard.egressctl("approve", hold["id"], "--reason", "mine")
            assert res.returncode == 1
            assert "cannot decide on its own" in res.stderr
            assert [h["id"] for h in pending(guard)].count(hold["id"]) == 1   # still pending
            assert server.total_bytes == 0
        finally:
            proc.kill()
            proc.wait(10)
    refused = [e for e in audit_events(guard) if e["event"] == "approval.refused"]
    assert refused and refused[-1]["code"] == "self_approval"


def test_secret_written_one_byte_at_a_time_is_held_before_any_of_it_leaves(
        guard: GuardedHost, workdir: Path) -> None:
    prefix = b"POST /x HTTP/1.1\r\nHost: a.test\r\n\r\nhere it comes: "
    payload = prefix + AWS_KEY_ID.encode() + b" and more text after it"
    with RecordingServer("127.20.0.13") as server:
        proc = Agent(guard, workdir).start(server.host, server.port, payload,
                                           extra=["--chunk", "1", "--delay", "0.002"])
        hold = _held(guard, "127.20.0.13")
        time.sleep(0.3)
        got = server.all_data()
        assert len(got) <= len(prefix)           # not one byte of the key went out
        assert got == payload[:len(got)]
        guard.egressctl("deny", hold["id"], "--reason", "drip exfiltration")
        finish(proc)
        assert server.all_data() == got


def test_mask_rewrites_email_same_length(guard: GuardedHost, workdir: Path) -> None:
    body = b'{"note": "write to ' + EMAIL.encode() + b' today"}'
    payload = http_post(body)
    with RecordingServer("127.20.0.14", respond=lambda r: b"ok") as server:
        report = Agent(guard, workdir).run(server.host, server.port, payload)
        wait_for(lambda: server.connections and server.connections[-1].closed)
        got = server.all_data()
    assert report["error"] is None
    assert len(got) == len(payload)
    assert EMAIL.encode() not in got
    assert got.replace(b"*", b"") != payload.replace(b"*", b"")
    start = payload.index(EMAIL.encode())
    assert got[:start] == payload[:start]
    assert got[start + len(EMAIL):] == payload[start + len(EMAIL):]


def test_ipv6_destination_is_guarded(guard: GuardedHost, workdir: Path) -> None:
    with RecordingServer("::1", respond=lambda r: b"v6 ok") as server:
        report = Agent(guard, workdir).run("::1", server.port, b"plain v6 data")
        wait_for(lambda: server.connections and server.connections[-1].closed)
        assert server.all_data() == b"plain v6 data"
        assert report["received"] == len(b"v6 ok")
        proc = Agent(guard, workdir).start("::1", server.port, http_post(AWS_KEY_ID.encode()))
        hold = _held(guard, "::1")
        guard.egressctl("deny", hold["id"], "--reason", "v6 test")
        assert finish(proc)["error"] == "ConnectionResetError"


def test_udp_other_than_dns_is_refused(guard: GuardedHost, workdir: Path) -> None:
    report = Agent(guard, workdir).run("127.0.0.1", free_port(), b"quic-ish", extra=["--udp"])
    assert report["error"] == "PermissionError:1"
    dns = Agent(guard, workdir).run("127.0.0.1", 53, b"\x00" * 12, extra=["--udp"])
    assert dns["error"] is None
    wait_for(lambda: any(e["event"] == "udp.refused" for e in audit_events(guard)))


def test_secret_on_the_command_line_is_masked_everywhere(guard: GuardedHost,
                                                        workdir: Path) -> None:
    """Agents pass data on argv; the command line is part of every flow's identity."""
    with RecordingServer("127.20.0.17") as server:
        proc = Agent(guard, workdir).start(server.host, server.port, http_post(AWS_KEY_ID.encode()),
                                           extra=["--tag", f"key={AWS_KEY_ID} to={EMAIL}"])
        hold = _held(guard, "127.20.0.17")
        shown = json.dumps(hold) + guard.egressctl("pending").stdout + \
            guard.egressctl("flows", "--json").stdout
        guard.egressctl("deny", hold["id"], "--reason", "argv test")
        finish(proc)
    cmdline = " ".join(hold["process"]["cmdline"])
    assert "--tag key=AKIA" in cmdline                  # recorded, masked, same length
    for text in (shown, Path(guard.audit_path).read_text()):
        assert AWS_KEY_ID not in text and EMAIL not in text


def test_secret_in_the_executables_path_is_masked_everywhere(guard: GuardedHost,
                                                            workdir: Path) -> None:
    # The agent runs an interpreter it copied into a directory named after the key: the
    # executable's path is part of every flow's identity, like the command line.
    folder = workdir / f"tools-{AWS_KEY_ID}"
    folder.mkdir(exist_ok=True)
    os.chmod(folder, 0o755)
    python = folder / "python3"
    shutil.copy2(os.path.realpath("/usr/bin/python3"), python)
    with RecordingServer("127.20.0.20") as server:
        proc = guard.agent([str(python), AGENT, server.host, str(server.port), "--payload-file",
                            payload_file(workdir, http_post(b"k=" + AWS_KEY_ID.encode()))],
                           stdout=subprocess.PIPE, text=True)
        hold = _held(guard, "127.20.0.20")
        shown = json.dumps(hold) + guard.egressctl("pending").stdout + \
            guard.egressctl("flows").stdout
        guard.egressctl("deny", hold["id"], "--reason", "exe test")
        finish(proc)
    assert hold["process"]["exe"].startswith(str(workdir / "tools-AKIA"))   # masked, not gone
    for text in (shown, Path(guard.audit_path).read_text()):
        assert AWS_KEY_ID not in text


def test_what_the_held_agent_controls_cannot_fool_the_approver_or_leak_a_secret(
        guard: GuardedHost, workdir: Path) -> None:
    # The agent names itself (argv[0]) with escape sequences that would clear the approver's
    # screen and forge a harmless-looking hold, and carries the key in the Host name too. The
    # approver pastes the key into the reason. None of it may reach a terminal raw, and the
    # key may reach neither the audit log nor egressctl, in any case.
    forged = "\x1b[2J\x1b[H\nh-aaaaaaaaaa  held 0s\n  who:   alice (uid 1000)\r\x1b]0;x\x07"
    payload = http_post(b"hello", host=AWS_KEY_ID + ".exfil.test")
    with RecordingServer("127.20.0.19") as server:
        proc = Agent(guard, workdir).start(server.host, server.port, payload, argv0=forged,
                                           extra=["--tag", "line one\nwho: root"])
        try:
            hold = _held(guard, "127.20.0.19")
            # JSON keeps it, escaped (psutil reads /proc in text mode: \r arrives as \n)
            assert hold["process"]["cmdline"][0] == forged.replace("\r", "\n")
            assert hold["destination"]["host"].endswith(".exfil.test")
            outputs = [guard.egressctl(*cmd).stdout for cmd in (["pending"], ["flows"])]
            decided = guard.egressctl("deny", hold["id"], "--reason",
                                      f"no: {AWS_KEY_ID} is the production key")
            assert decided.returncode == 0, decided.stderr
            outputs.append(decided.stdout)
            report = finish(proc)
        finally:
            proc.kill()
            proc.wait(10)
    assert report["error"] == "ConnectionResetError" and server.total_bytes == 0
    # Other tests' holds may still be pending (a killed client's FIN keeps a hold open).
    pending_text = next(block for block in outputs[0].split("\n\n") if "127.20.0.19" in block)
    assert "\x1b" not in "".join(outputs) and "\r" not in "".join(outputs)
    assert all(line.isprintable() for out in outputs for line in out.splitlines())
    assert len(pending_text.strip().splitlines()) == 6                    # one hold, six lines
    assert "\\x1b[2J" in pending_text                                   # shown, visibly
    for text in outputs + [Path(guard.audit_path).read_text()]:
        assert AWS_KEY_ID not in text and AWS_KEY_ID.lower() not in text
        assert AWS_KEY_ID[4:].lower() not in text.lower()


def test_no_raw_secret_in_any_log(guard: GuardedHost) -> None:
    texts = [Path(guard.audit_path).read_text(), "\n".join(guard.log_lines)]
    for text in texts:
        assert AWS_KEY_ID not in text and AWS_KEY_ID[4:].lower() not in text.lower()
        assert EMAIL not in text and EMAIL.lower() not in text.lower()


def test_a_daemon_inside_the_cgroup_it_guards_still_serves_approvals(workdir: Path) -> None:
    # scope.cgroup may be an ancestor of where egressguard itself runs. Its upstream sockets
    # carry the mark; so must the approvals front door's internal connection, or it is
    # redirected to the proxy and every egressctl call is refused as unauthenticated.
    cfg = policy(workdir / "inside")
    host = GuardedHost(workdir / "inside", cfg)
    wrapper = workdir / "python-in-guarded-cgroup"
    wrapper.write_text(f"#!/bin/sh\necho $$ > {host.cgroup_path}/cgroup.procs\n"
                       f"exec {host.python} \"$@\"\n")
    wrapper.chmod(0o755)
    host.python = str(wrapper)
    with host, RecordingServer("127.20.0.21") as server:
        assert host.proc is not None
        own = Path(f"/proc/{host.proc.pid}/cgroup").read_text()
        assert f"0::{host.cgroup_rel}\n" in own                 # the daemon is guarded too
        payload = http_post(b"key=" + AWS_KEY_ID.encode())
        proc = Agent(host, workdir).start(server.host, server.port, payload)
        hold = _held(host, "127.20.0.21")
        res = host.egressctl("approve", hold["id"], "--reason", "daemon inside its cgroup")
        assert res.returncode == 0, res.stderr
        finish(proc)
        wait_for(lambda: server.all_data() == payload)


# ----------------------------------------------------------------------------- expiry
def test_inline_wait_refuses_fast_and_the_request_expires_at_its_ttl(workdir: Path) -> None:
    """After approvals.inline_wait the client is reset, but the request stays pending until
    approvals.request_ttl, then expires (audited), and nothing ever reached the server."""
    cfg = policy(workdir / "expiry")
    cfg["approvals"].pop("timeout", None)
    cfg["approvals"].update({"inline_wait": "1s", "request_ttl": "4s"})
    with GuardedHost(workdir / "expiry", cfg) as host:
        with RecordingServer("127.20.0.15") as server:
            payload = http_post(AWS_KEY_ID.encode())
            report = Agent(host, workdir).run(server.host, server.port, payload)
            assert report["error"] == "ConnectionResetError"
            waited = [e for e in audit_events(host) if e["event"] == "flow.wait_expired"]
            assert len(waited) == 1 and waited[0]["inline_wait_s"] == 1.0
            assert [h["id"] for h in pending(host)] == [waited[0]["hold_id"]]
            wait_for(lambda: not pending(host), 10)
            time.sleep(0.2)
            assert server.total_bytes == 0
        decisions = [e for e in audit_events(host) if e["event"] == "flow.decision"]
        assert decisions[-1]["decision"]["outcome"] == "expired"
        assert decisions[-1]["hold_id"] == waited[0]["hold_id"]
        # "up" is what reached the destination (nothing), everywhere; what the client sent
        # is kept under its own name.
        (close,) = [e for e in audit_events(host) if e["event"] == "flow.close"
                    and e["flow_id"] == waited[0]["flow_id"]]
        assert close["bytes_up"] == 0 and close["bytes_from_client"] == len(payload)
        status = json.loads(host.egressctl("status", "--json", check=True).stdout)
        assert status["counters"]["bytes_up"] == 0
        rows = [json.loads(line) for line in host.egressctl(
            "flows", "--since", "1h", "--json", check=True).stdout.splitlines()]
        assert [r["bytes_up"] for r in rows if r["flow_id"] == close["flow_id"]] == [0]


# ----------------------------------------------------------------------------- audit verify
def test_audit_verify_passes_then_fails_after_an_edit(guard: GuardedHost, workdir: Path) -> None:
    copy = workdir / "audit-copy.jsonl"
    copy.write_text(Path(guard.audit_path).read_text())
    ok = guard.egressctl("audit", "verify", str(copy))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    lines = copy.read_text().splitlines()
    assert len(lines) > 5
    event = json.loads(lines[3])
    event["action"] = "allow" if event.get("action") != "allow" else "block"
    lines[3] = json.dumps(event, sort_keys=True, separators=(",", ":"))
    copy.write_text("\n".join(lines) + "\n")
    bad = guard.egressctl("audit", "verify", str(copy))
    assert bad.returncode == 1
    assert "line 4" in (bad.stdout + bad.stderr)


# ----------------------------------------------------------------------------- host rules
SLOW_HOST_AGENT = r'''
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
time.sleep(float(sys.argv[3]))
try:
    s.sendall(b"GET / HTTP/1.1\r\nHost: " + sys.argv[4].encode() + b"\r\n\r\n")
    print(repr(s.recv(100)))
except OSError as exc:
    print(exc.__class__.__name__)
'''


@pytest.mark.parametrize("delay", [0.0, 1.6])
def test_host_rule_applies_even_when_the_name_comes_late(workdir: Path, delay: float) -> None:
    """A client that waits past sniff_timeout before naming the host must not slip past a
    host rule (the decision is taken again when the name arrives, before any byte leaves)."""
    cfg = policy(workdir / f"host-{delay}", rules=[
        {"name": "no-evil-host", "destination": {"host": ["evil.test", "*.evil.test"]},
         "action": "block"}])
    with GuardedHost(workdir / f"host-{delay}", cfg) as host:
        with RecordingServer("127.20.0.16", respond=lambda r: b"HTTP/1.1 200 OK\r\n\r\n",
                             reply_after=b"\r\n\r\n") as srv:
            out = host.agent(["/usr/bin/python3", "-c", SLOW_HOST_AGENT, srv.host, str(srv.port),
                              str(delay), "www.evil.test"], stdout=subprocess.PIPE, text=True)
            got, _ = out.communicate(timeout=30)
            assert "ConnectionResetError" in got
            assert srv.total_bytes == 0
            ok = host.agent(["/usr/bin/python3", "-c", SLOW_HOST_AGENT, srv.host, str(srv.port),
                             str(delay), "fine.test"], stdout=subprocess.PIPE, text=True)
            got, _ = ok.communicate(timeout=30)
            assert "200 OK" in got
