"""Hostile clients: none of them may crash the daemon, exhaust it, or get bytes past a hold/block.

One real daemon (module scope) guards a child cgroup with a policy that blocks 127.66.0.0/16,
masks e-mail addresses, holds secrets and caps held buffers at 1 MiB. The daemon is started
with the file-descriptor limits systemd gives a unit by default (soft 1024), so fd exhaustion
shows up here as it would in production. After every case `assert_healthy` proves the daemon
is alive and still enforcing (a normal request goes through byte-exact, a secret is still held
and a denial still resets) and that its output has no Python traceback.

Traffic is loopback only; every loop and wait is bounded; every process is stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import psutil
import pytest

from egressguard.harness import GuardedHost, base_config, free_port
from tests.tools.payloads import payload_file
from tests.tools.servers import RecordingServer

pytestmark = pytest.mark.kernel

TOOLS = Path(__file__).parent / "tools"
AGENT = str(TOOLS / "agent.py")
HOSTILE = str(TOOLS / "hostile.py")
NOBODY = 65534
MiB = 1024 * 1024

# Test credentials, assembled so that no file in the repo holds one whole.
AWS_KEY_ID = "AKIA" + "Z7Q2MXV5" + "LKJ3HN4P"


def wait_for(pred: Any, timeout: float = 15.0, step: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout}s")


def http_post(body: bytes) -> bytes:
    return (b"POST /v1/chat HTTP/1.1\r\nHost: api.example-ai.test\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)


SECRET_REQUEST = http_post(b'{"key": "' + AWS_KEY_ID.encode() + b'"}')


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="eg-hostile-"))
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def guard(workdir: Path) -> Iterator[GuardedHost]:
    cfg = base_config(workdir, rules=[
        {"name": "no-exfil-net", "destination": {"cidr": ["127.66.0.0/16"]}, "action": "block"},
        {"name": "no-emails-out", "detected": ["pii.email"], "action": "mask"},
        {"name": "secrets-need-approval", "detected": ["secret.*"], "action": "hold"},
    ])
    cfg["proxy"]["listen"] = f"127.0.0.1:{free_port()}"
    cfg["proxy"]["max_held_bytes"] = "1MiB"
    cfg["approvals"]["timeout"] = "120s"
    # systemd's default for a unit without LimitNOFILE: soft 1024 (hard stays high).
    wrapper = workdir / "python-nofile-1024"
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    wrapper.write_text(f"#!/bin/sh\nexec prlimit --nofile=1024:{hard} -- "
                       f"{GuardedHost.python} \"$@\"\n")
    wrapper.chmod(0o755)
    with GuardedHost(workdir / "hostile", cfg, python=str(wrapper)) as host:
        yield host


def run_agent(host: GuardedHost, workdir: Path, dst: str, port: int, payload: bytes,
              *extra: str, timeout: float = 60) -> dict[str, Any]:
    proc = host.agent(["/usr/bin/python3", AGENT, dst, str(port), "--payload-file",
                       payload_file(workdir, payload), *extra],
                      stdout=subprocess.PIPE, text=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        _stop(proc)
    return json.loads(out.strip().splitlines()[-1])


def hostile(host: GuardedHost, *args: str, stdin: bool = False) -> subprocess.Popen[str]:
    return host.agent(["/usr/bin/python3", HOSTILE, *args], stdout=subprocess.PIPE,
                      stdin=subprocess.PIPE if stdin else None, text=True)


def _stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> dict[str, Any]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        _stop(proc)
    return json.loads(out.strip().splitlines()[-1])


def pending(host: GuardedHost) -> list[dict[str, Any]]:
    res = host.egressctl("pending", "--json")
    assert res.returncode == 0, res.stderr
    return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]


def held(host: GuardedHost, dst_ip: str, port: int | None = None,
         timeout: float = 15) -> dict[str, Any]:
    return wait_for(lambda: next((h for h in pending(host)
                                  if h["destination"]["ip"] == dst_ip
                                  and (port is None or h["destination"]["port"] == port)),
                                 None), timeout)


def deny(host: GuardedHost, hold_id: str) -> None:
    res = host.egressctl("deny", hold_id, "--reason", "hostile test")
    assert res.returncode == 0, res.stderr


def audit_events(host: GuardedHost) -> list[dict[str, Any]]:
    with open(host.audit_path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def rss(host: GuardedHost) -> int:
    assert host.proc is not None
    return psutil.Process(host.proc.pid).memory_info().rss


def fd_count(host: GuardedHost) -> int:
    assert host.proc is not None
    return len(os.listdir(f"/proc/{host.proc.pid}/fd"))


class RssSampler:
    """Samples the daemon's RSS every 50 ms in a thread; `.peak` is the highest seen."""

    def __init__(self, host: GuardedHost):
        self.host, self.peak, self._stop = host, rss(host), threading.Event()
        self.start_rss = self.peak
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.peak = max(self.peak, rss(self.host))
            except psutil.Error:
                return

    def __enter__(self) -> "RssSampler":
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join(5)

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.start_rss) / MiB


MEASURED: dict[str, Any] = {}


def assert_healthy(host: GuardedHost, workdir: Path, tag: str) -> None:
    """The daemon is alive, forwards a normal request byte-exact, still holds a secret (and a
    denial resets the client with nothing sent), and has printed no traceback."""
    assert host.proc is not None and host.proc.poll() is None, "daemon died:\n" + \
        "\n".join(host.log_lines[-30:])
    normal = b"GET /health-" + tag.encode() + b" HTTP/1.1\r\nHost: ok.test\r\n\r\n"
    with RecordingServer("127.20.9.1", respond=lambda r: b"HTTP/1.1 200 OK\r\n\r\nfine") as srv:
        rep = run_agent(host, workdir, srv.host, srv.port, normal)
        wait_for(lambda: srv.connections and srv.connections[-1].closed)
        assert rep["error"] is None, rep
        assert srv.all_data() == normal
        assert rep["received"] == len(b"HTTP/1.1 200 OK\r\n\r\nfine")
    with RecordingServer("127.20.9.2") as srv:
        proc = hostile(host, "writes", srv.host, str(srv.port), "--payload-file",
                       payload_file(workdir, SECRET_REQUEST), "--split", "0", "--delay", "0")
        try:
            hold = held(host, srv.host, srv.port)
            deny(host, hold["id"])
            assert finish(proc)["error"] == "ConnectionResetError"
        finally:
            _stop(proc)
        assert AWS_KEY_ID.encode()[:4] not in srv.all_data()
    log = "\n".join(host.log_lines)
    assert "Traceback" not in log, log[-3000:]
    assert "flow handler failed" not in log, log[-3000:]


# ----------------------------------------------------------------------------- garbage
GARBAGE = {
    "random": os.urandom(64 * 1024).replace(b"@", b"#"),
    "nul": b"\0" * 100_000,
    "tls-bad-records": (b"\x16\x03\x01\xff\xff" + os.urandom(300).replace(b"@", b"#")
                        + b"\x16\x00\x00\x00\x00" + b"\x16\x03\x03\x00\x05\x01\x00\xff\xff\xff"
                        + b"\x16" * 1000),
    "tls-truncated-hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 20,
    "http-64k-header": (b"GET / HTTP/1.1\r\nHost: big.test\r\nX-Big: " + b"a" * 65536
                        + b"\r\n\r\n"),
    "http-no-crlf": b"GET /" + b"A" * 200_000,
}


@pytest.mark.parametrize("kind", list(GARBAGE))
def test_garbage_is_relayed_byte_exact(guard: GuardedHost, workdir: Path, kind: str) -> None:
    data = GARBAGE[kind]
    with RecordingServer("127.20.1.1", echo=True) as srv:
        rep = run_agent(guard, workdir, srv.host, srv.port, data)
        wait_for(lambda: srv.connections and srv.connections[-1].closed)
        assert srv.all_data() == data
    assert rep["error"] is None
    assert rep["received"] == len(data)
    assert rep["received_sha256"] == hashlib.sha256(data).hexdigest()
    assert_healthy(guard, workdir, f"garbage-{kind}")


# ----------------------------------------------------------------------------- big stream
def test_100mb_without_newline(guard: GuardedHost, workdir: Path) -> None:
    size = 100 * MiB
    with RecordingServer("127.20.1.2", keep_bytes=False) as srv, RssSampler(guard) as mem:
        proc = hostile(guard, "stream", srv.host, str(srv.port), "--size", str(size),
                       "--seed", "3")
        rep = finish(proc, timeout=240)
        wait_for(lambda: srv.connections and srv.connections[-1].closed, 60)
    MEASURED["100mb"] = {"seconds": rep["seconds"], "rss_growth_mb": round(mem.growth_mb, 1)}
    print("measured", MEASURED["100mb"])
    assert rep["error"] is None
    assert srv.connections[-1].size == size
    assert srv.connections[-1].sha256.hexdigest() == rep["sha256"]
    assert mem.growth_mb < 100, f"daemon RSS grew by {mem.growth_mb:.0f} MiB"
    assert_healthy(guard, workdir, "100mb")


# ----------------------------------------------------------------------------- slowloris
def test_slowloris_does_not_starve_a_normal_request(guard: GuardedHost, workdir: Path) -> None:
    with RecordingServer("127.20.1.3") as slow_srv:
        loris = hostile(guard, "slowloris", slow_srv.host, str(slow_srv.port), "--conns", "50",
                        "--seconds", "4", "--interval", "0.5")
        try:
            assert loris.stdout is not None
            first = json.loads(loris.stdout.readline())
            assert first["connected"] == 50
            time.sleep(1.0)            # a couple of drips in flight
            normal = b"GET /quick HTTP/1.1\r\nHost: ok.test\r\n\r\n"
            with RecordingServer("127.20.1.4", respond=lambda r: b"quick answer") as srv:
                t0 = time.monotonic()
                rep = run_agent(guard, workdir, srv.host, srv.port, normal)
                elapsed = time.monotonic() - t0
                wait_for(lambda: srv.connections and srv.connections[-1].closed)
                assert srv.all_data() == normal
            res = finish(loris, timeout=30)
        finally:
            _stop(loris)
    MEASURED["slowloris"] = {"normal_request_s": round(elapsed, 3),
                             "agent_reported_s": rep["seconds"]}
    print("measured", MEASURED["slowloris"])
    assert rep["error"] is None and rep["received"] == len(b"quick answer")
    assert elapsed < 2.0
    assert res["errors"] == 0
    # Everything the slow clients dripped arrived (after the idle flush), byte for byte.
    wait_for(lambda: slow_srv.total_bytes == res["bytes_sent"], 10)
    assert all(set(bytes(c.data)) <= {ord("A")} for c in slow_srv.connections)
    assert_healthy(guard, workdir, "slowloris")


# ----------------------------------------------------------------------------- half-close
def test_half_close_client_first(guard: GuardedHost, workdir: Path) -> None:
    """Client sends, shuts down its write side, then reads an answer the server sends only
    after that EOF."""
    req = b"PUT /blob HTTP/1.0\r\n\r\n" + os.urandom(300_000).replace(b"@", b"#")
    answer = b"x" * 200_000
    with RecordingServer("127.20.1.5", respond=lambda r: answer if r == req else b"bad") as srv:
        rep = run_agent(guard, workdir, srv.host, srv.port, req)
        wait_for(lambda: srv.connections and srv.connections[-1].closed)
        assert srv.all_data() == req
    assert rep["error"] is None
    assert rep["received"] == len(answer)
    assert_healthy(guard, workdir, "halfclose-client")


class ClosesFirstServer:
    """Greets, then half-closes (`full=False`: keeps reading and records) or closes the whole
    socket at once (`full=True`) while the client is still sending."""

    def __init__(self, host: str, full: bool):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(8)
        self.sock.settimeout(20)
        self.host, self.port = host, self.sock.getsockname()[1]
        self.full, self.data, self.done = full, bytearray(), threading.Event()
        self.t = threading.Thread(target=self._serve, daemon=True)
        self.t.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            self.done.set()
            return
        conn.settimeout(20)
        try:
            conn.sendall(b"bye\n")
            if self.full:
                conn.close()
                return
            conn.shutdown(socket.SHUT_WR)
            while chunk := conn.recv(65536):
                self.data += chunk
        except OSError:
            pass
        finally:
            conn.close()
            self.done.set()

    def close(self) -> None:
        self.sock.close()
        self.t.join(25)


def test_half_close_server_first(guard: GuardedHost, workdir: Path) -> None:
    """The server says bye and half-closes right away; the client keeps sending 2 MB (slowly
    enough to still be sending after the server's FIN) and the server gets all of it."""
    data = os.urandom(2 * MiB).replace(b"@", b"#")
    srv = ClosesFirstServer("127.20.1.6", full=False)
    try:
        rep = run_agent(guard, workdir, srv.host, srv.port, data, "--chunk", "65536",
                        "--delay", "0.01")
        assert srv.done.wait(20)
        assert bytes(srv.data) == data
    finally:
        srv.close()
    assert rep["error"] is None and rep["received"] == 4
    assert_healthy(guard, workdir, "halfclose-server")


def test_server_closes_whole_socket_while_client_sends(guard: GuardedHost,
                                                       workdir: Path) -> None:
    srv = ClosesFirstServer("127.20.1.7", full=True)
    try:
        rep = run_agent(guard, workdir, srv.host, srv.port, b"y" * (4 * MiB), "--chunk",
                        "65536", "--delay", "0.005")
    finally:
        srv.close()
    # The client learns that the other end is gone (reset or broken pipe), not a hang.
    assert rep["error"] in ("ConnectionResetError", "BrokenPipeError", None)
    assert rep["seconds"] < 30
    assert_healthy(guard, workdir, "server-close")


# ----------------------------------------------------------------------------- many
def test_1000_concurrent_connections(guard: GuardedHost, workdir: Path) -> None:
    base_fds = fd_count(guard)

    def respond(req: bytes) -> bytes:
        return b"ok " + req.split()[1] + b"\n"

    with RecordingServer("127.20.1.8", respond=respond, reply_after=b"END\n") as srv:
        srv.sock.listen(1024)
        proc = hostile(guard, "many", srv.host, str(srv.port), "--conns", "1000",
                       "--batch", "100", "--timeout", "60")
        peak = base_fds
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            peak = max(peak, fd_count(guard))
            time.sleep(0.05)
        rep = finish(proc, timeout=10)
        after = wait_for(lambda: (n := fd_count(guard)) <= base_fds + 10 and n, 30)
    MEASURED["many"] = {"fds_before": base_fds, "fds_peak": peak, "fds_after": after,
                        "seconds": rep["seconds"]}
    print("measured", MEASURED["many"])
    assert rep["opened"] == 1000, rep
    assert rep["ok"] == 1000, rep
    assert rep["n_errors"] == 0, rep
    assert_healthy(guard, workdir, "many")


# ----------------------------------------------------------------------------- held flood
def test_held_flow_flooded_stays_bounded_and_sends_nothing(guard: GuardedHost,
                                                           workdir: Path) -> None:
    extra = 50 * MiB
    with RecordingServer("127.20.1.9") as srv, RssSampler(guard) as mem:
        proc = hostile(guard, "flood", srv.host, str(srv.port), "--payload-file",
                       payload_file(workdir, SECRET_REQUEST), "--extra", str(extra),
                       "--seconds", "30")
        try:
            hold = held(guard, srv.host, srv.port)
            assert proc.stdout is not None
            stalled = json.loads(proc.stdout.readline())   # the client could not send more
            assert stalled.get("stalled"), stalled
            time.sleep(0.5)
            assert srv.connections == [] or srv.total_bytes == 0
            deny(guard, hold["id"])
            rep = finish(proc, timeout=60)
        finally:
            _stop(proc)
        time.sleep(0.3)
        assert srv.total_bytes == 0
    MEASURED["held_flood"] = {"client_sent_before_stall_mb": round(stalled["sent"] / MiB, 1),
                              "rss_growth_mb": round(mem.growth_mb, 1)}
    print("measured", MEASURED["held_flood"])
    assert rep["error"] == "ConnectionResetError", rep
    assert stalled["sent"] < 16 * MiB           # 1 MiB cap + socket buffers, not 50 MB
    assert mem.growth_mb < 40
    assert_healthy(guard, workdir, "held-flood")


# ----------------------------------------------------------------------------- held abort
@pytest.mark.parametrize("how", ["rst", "rst-after-flood", "fin"])
def test_held_flow_whose_client_vanishes(guard: GuardedHost, workdir: Path, how: str) -> None:
    """A reset client is noticed (audited as flow.aborted), also when the held buffer is at its
    cap and the proxy has stopped reading it; its approval request stays pending (requests
    outlive connections) with no connection waiting. A client that close()s with a FIN looks
    exactly like one that half-closed and waits for the answer: it stays waiting (TCP
    semantics: what was sent before close() is meant to be delivered). Either way a denial
    sends nothing."""
    data = SECRET_REQUEST
    if how == "rst-after-flood":
        data += b"z" * (3 * MiB)         # past the 1 MiB cap: the proxy has stopped reading
    ip = {"rst": "127.20.2.1", "fin": "127.20.2.2", "rst-after-flood": "127.20.2.3"}[how]
    with RecordingServer(ip) as srv:
        args = ["hold-then-reset", srv.host, str(srv.port), "--payload-file",
                payload_file(workdir, data)] + (["--rst"] if how.startswith("rst") else [])
        proc = hostile(guard, *args, stdin=True)
        try:
            hold = held(guard, srv.host, srv.port)
            assert proc.stdout is not None and proc.stdin is not None
            json.loads(proc.stdout.readline())
            proc.stdin.write("go\n")
            proc.stdin.flush()
            assert json.loads(proc.stdout.readline())["closed"]
            if how == "fin":
                time.sleep(1.5)
                assert [h["waiting"] for h in pending(guard) if h["id"] == hold["id"]] == [1]
            else:
                aborted = wait_for(lambda: [e for e in audit_events(guard) if e["event"] ==
                                            "flow.aborted" and e.get("hold_id") == hold["id"]],
                                   10)
                assert aborted[-1]["reason"].startswith("client connection")
                assert [h["waiting"] for h in pending(guard) if h["id"] == hold["id"]] == [0]
            deny(guard, hold["id"])
        finally:
            _stop(proc)
        time.sleep(0.3)
        assert srv.total_bytes == 0
    decisions = wait_for(lambda: [e for e in audit_events(guard) if e["event"] ==
                                  "flow.decision" and e.get("hold_id") == hold["id"]])
    assert decisions[-1]["outcome"] == "denied"
    assert_healthy(guard, workdir, f"held-abort-{how}")


# ----------------------------------------------------------------------------- direct
def test_direct_connection_to_proxy_is_refused(guard: GuardedHost, workdir: Path) -> None:
    host, port = guard.config["proxy"]["listen"].rsplit(":", 1)
    with RecordingServer("127.20.2.9") as srv:
        before = len(audit_events(guard))
        s = socket.create_connection((host, int(port)), timeout=5)   # from outside the cgroup
        try:
            s.sendall(b"GET / HTTP/1.1\r\nHost: 127.20.2.9\r\n\r\n" + SECRET_REQUEST)
            with pytest.raises(ConnectionResetError):
                while s.recv(4096):
                    pass
        except (ConnectionResetError, BrokenPipeError):
            pass
        finally:
            s.close()
        time.sleep(0.3)
        assert srv.connections == []
    new = wait_for(lambda: [e for e in audit_events(guard)[before:]
                            if e["event"] == "proxy.unknown_origin"])
    assert new[-1]["peer"]["ip"] == "127.0.0.1"
    assert not [e for e in audit_events(guard)[before:] if e["event"] == "flow.open"]
    assert_healthy(guard, workdir, "direct")


# ----------------------------------------------------------------------------- split secret
def test_secret_split_across_two_writes_is_never_forwarded(guard: GuardedHost,
                                                           workdir: Path) -> None:
    prefix = b"POST /x HTTP/1.1\r\nHost: a.test\r\n\r\nkey: "
    data = prefix + AWS_KEY_ID.encode() + b" end"
    start = len(prefix)
    splits = [start - 1, start, start + 1, start + 2, start + 3, start + 4, start + 10,
              start + len(AWS_KEY_ID) - 1, start + len(AWS_KEY_ID)]
    hold: dict[str, Any] | None = None
    with RecordingServer("127.20.3.1") as srv:
        for split in splits:
            proc = hostile(guard, "writes", srv.host, str(srv.port), "--payload-file",
                           payload_file(workdir, data), "--split", str(split),
                           "--delay", "0.1")
            try:
                # The same secret from the same process to the same place is one request: the
                # first is held and denied, the retries are refused at once (the denial stands).
                if hold is None:
                    hold = held(guard, srv.host, srv.port)
                    deny(guard, hold["id"])
                assert finish(proc)["error"] == "ConnectionResetError", split
            finally:
                _stop(proc)
            for conn in srv.connections:
                c = bytes(conn.data)
                assert data.startswith(c), split
                assert len(c) <= start, f"split {split}: {len(c) - start} key bytes left"
    assert hold is not None
    retries = [e for e in audit_events(guard) if e["event"] == "approval.denied_retry"
               and e["hold_id"] == hold["id"]]
    assert len(retries) == len(splits) - 1
    assert_healthy(guard, workdir, "split")
