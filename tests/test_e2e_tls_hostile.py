"""End to end, hostile HTTP/1.1 inside intercepted TLS (the red team's reproducers): a real
daemon, an agent as nobody in a child cgroup sending raw bytes over TLS (tools/raw_tls_agent.py),
a local HTTPS server standing in for api.openai.com. Each test asserts what the server received
and what the audit log and `egressctl flows` say; secrets are generated fakes, never printed.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import struct
import subprocess
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any, Iterator

import pytest

from egressguard.harness import GuardedHost, base_config, free_port
from tests.test_e2e_guard import audit_events as audit
from tests.test_e2e_guard import finish, pending, wait_for
from tests.tools.tls_servers import HttpsRecorder, TestCA, trust_bundle

pytestmark = pytest.mark.kernel

AGENT = str(Path(__file__).parent / "tools" / "raw_tls_agent.py")
KEY = "AKIA" + "Q4RZ7MXV" + "2LKJ3HNP"
EMAIL = "mary.major" + "@" + "corp-example.org"
SLACKISH = "xoxb-" + "1234567890" + "-" + "0987654321" + "-" + "abcdefghijklmnopqrstuvwx"
SNI, IP = "api.openai.com", "127.10.0.1"


def _world(prefix: str, rules: list[dict[str, Any]], **proxy: Any) -> Iterator[dict[str, Any]]:
    d = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(d, 0o755)
    ca = TestCA(str(d))
    server = HttpsRecorder(IP, ca, [SNI])
    cfg = base_config(d / "guard", rules=rules)
    cfg["proxy"]["listen"] = f"127.0.0.1:{free_port()}"
    cfg["proxy"].update(proxy)
    cfg["tls"] = {"intercept": {"hosts": [SNI]}, "upstream_ca_file": ca.ca_file}
    try:
        with GuardedHost(d / "guard", cfg) as host:
            yield {"dir": d, "host": host, "server": server,
                   "bundle": trust_bundle(host, d, ca.ca_file)}
    finally:
        server.close()


@pytest.fixture(scope="module")
def world() -> Iterator[dict[str, Any]]:
    yield from _world("eg-tlsh-", [
        {"name": "secrets-block", "detected": ["secret.*"], "action": "block"},
        {"name": "mask-emails", "detected": ["pii.email"], "action": "mask"}])


def start(w: dict[str, Any], steps: list[dict[str, Any]]) -> subprocess.Popen[str]:
    spec = {"ip": IP, "port": w["server"].port, "sni": SNI, "cafile": w["bundle"],
            "timeout": 30, "steps": steps}
    fd, path = tempfile.mkstemp(dir=w["dir"], suffix=".json")
    with os.fdopen(fd, "w") as fh:
        json.dump(spec, fh)
    os.chmod(path, 0o644)
    return w["host"].agent(["/usr/bin/python3", AGENT, path], stdout=subprocess.PIPE,
                           text=True)


def run(w: dict[str, Any], steps: list[dict[str, Any]]) -> dict[str, Any]:
    return finish(start(w, steps), timeout=60)


def send(data: bytes) -> dict[str, Any]:
    return {"send_b64": base64.b64encode(data).decode()}


def recv(secs: float = 2.0) -> dict[str, Any]:
    return {"recv": secs, "once": True}


def post(body: bytes, extra: bytes = b"", ctype: bytes = b"application/json") -> bytes:
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nContent-Type: "
            + ctype + b"\r\n" + extra + b"Content-Length: %d\r\n\r\n" % len(body) + body)


def key_body() -> bytes:
    return json.dumps({"model": "gpt-4o", "messages": [
        {"role": "user", "content": f"deploy with {KEY} now"}]}).encode()


def blocks_since(host: Any, n: int) -> list[dict[str, Any]]:
    return [e for e in audit(host)[n:] if e["event"] == "flow.block"]


def settled_blocks(host: Any, n: int) -> list[dict[str, Any]]:
    return wait_for(lambda: blocks_since(host, n), timeout=15)


def assert_never_recorded(host: Any, needle: str) -> None:
    raw = Path(host.audit_path).read_text()
    assert needle not in raw, "a raw value reached the audit log"
    assert needle not in host.egressctl("flows", "--json").stdout, "... or egressctl flows"


@pytest.mark.parametrize("first", [
    b"GET /v1/models HTTP/1.1\r\nHost: api.openai.com\r\nUpgrade: websocket\r\n\r\n",
    b"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com\r\n\r\n",
], ids=["upgrade", "connect"])
def test_upgrade_or_connect_cannot_switch_the_codec_off(world: dict[str, Any],
                                                        first: bytes) -> None:
    """One `Upgrade:` header (or CONNECT) the server never agreed to used to turn the codec
    raw: a later gzip body with a key passed a block rule. Now refused with a reason."""
    host, srv = world["host"], world["server"]
    n, before = len(audit(host)), len(srv.all_data())
    z = gzip.compress(key_body())
    run(world, [send(first), recv(), send(post(z, b"Content-Encoding: gzip\r\n")), recv()])
    blocks = settled_blocks(host, n)
    assert "cannot be inspected on an intercepted flow" in blocks[0]["reason"]
    assert KEY.encode() not in srv.all_data()[before:] and z not in srv.all_data()[before:]


def test_bare_lf_head_with_a_gzip_body_never_reaches_the_server(world: dict[str, Any]) -> None:
    host, srv = world["host"], world["server"]
    before = len(srv.all_data())
    z = gzip.compress(key_body())
    req = (b"POST /v1/chat/completions HTTP/1.1\nHost: api.openai.com\nContent-Encoding: gzip\n"
           b"Content-Length: %d\n\n" % len(z) + z)
    n = len(audit(host))
    run(world, [send(req), {"sleep": 1.5}, {"close_notify": True}])
    assert "bare CR or LF" in settled_blocks(host, n)[0]["reason"]
    assert z not in srv.all_data()[before:]


def test_a_key_in_a_chunk_extension_never_goes_out(world: dict[str, Any]) -> None:
    srv = world["server"]
    before = len(srv.requests)
    req = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n2;note=" + KEY.encode() + b"\r\nhi\r\n0\r\n\r\n")
    run(world, [send(req), recv()])
    got = wait_for(lambda: srv.requests[before:], timeout=15)
    assert got[0].decoded_body == b"hi" and KEY.encode() not in srv.all_data()


def test_a_key_in_a_gzip_comment_never_goes_out(world: dict[str, Any]) -> None:
    srv = world["server"]
    before = len(srv.requests)
    payload = b'{"messages": []}'
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    z = (b"\x1f\x8b\x08\x10\x00\x00\x00\x00\x00\xff" + KEY.encode() + b"\x00"
         + co.compress(payload) + co.flush() + struct.pack("<II", zlib.crc32(payload),
                                                           len(payload)))
    run(world, [send(post(z, b"Content-Encoding: gzip\r\n")), recv()])
    got = wait_for(lambda: srv.requests[before:], timeout=15)
    assert got[0].decoded_body == payload and KEY.encode() not in srv.all_data()


@pytest.mark.parametrize("case", ["model", "content_type"])
def test_request_derived_strings_are_not_recorded_raw(world: dict[str, Any], case: str) -> None:
    host, srv = world["host"], world["server"]
    n = len(audit(host))
    if case == "model":
        req = post(json.dumps({"model": EMAIL, "messages": []}).encode())
    else:
        req = post(b'{"messages": []}', ctype=EMAIL.encode())
    run(world, [send(req), recv()])
    rec = wait_for(lambda: [e for e in audit(host)[n:] if e["event"] == "http.request"],
                   timeout=15)[0]
    assert rec[case].startswith("<redacted, ")
    assert EMAIL.encode() not in srv.all_data()        # masked on the wire as well
    assert_never_recorded(host, EMAIL)


@pytest.mark.parametrize("extra", [
    b"Content-Encoding: " + SLACKISH.encode() + b"\r\n",
    b"Transfer-Encoding: " + EMAIL.encode() + b"\r\n",
], ids=["content-encoding", "transfer-encoding"])
def test_refusal_reasons_never_echo_header_values(world: dict[str, Any], extra: bytes) -> None:
    host = world["host"]
    n = len(audit(host))
    run(world, [send(post(b'{"messages": []}', extra)), recv()])
    assert settled_blocks(host, n)
    assert_never_recorded(host, SLACKISH)
    assert_never_recorded(host, EMAIL)


def test_non_http_errors_in_the_codec_fail_closed_with_a_reason(world: dict[str, Any]) -> None:
    host = world["host"]
    n = len(audit(host))
    run(world, [send(b"GET / HTTP/1.\xff\r\nHost: api.openai.com\r\n\r\n"), recv()])
    assert "cannot inspect the request" in settled_blocks(host, n)[0]["reason"]


def test_a_long_content_coding_chain_is_refused_without_wedging(world: dict[str, Any]) -> None:
    host = world["host"]
    n = len(audit(host))
    chain = b",".join([b"gzip"] * 12_500)
    proc = start(world, [send(post(b"x", b"Content-Encoding: " + chain + b"\r\n")), recv(10)])
    res = host.egressctl("pending", "--json", timeout=30)   # the event loop answers
    assert res.returncode == 0
    finish(proc, timeout=60)
    assert "content codings" in settled_blocks(host, n)[0]["reason"]


@pytest.fixture(scope="module")
def capped() -> Iterator[dict[str, Any]]:
    yield from _world("eg-tlsm-", [
        {"name": "secrets-hold", "detected": ["secret.*"], "action": "hold"}],
        max_held_bytes="1MiB", max_held_total="2MiB")


def rss_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_a_withheld_zlib_bomb_is_held_within_the_caps(capped: dict[str, Any]) -> None:
    """15 MiB of decoded view behind 15 KiB of deflate, its trailer never sent, six flows:
    the codec's buffers count against proxy.max_held_bytes (1 MiB) and each flow is refused
    instead of growing the daemon (335 MiB before)."""
    host = capped["host"]
    comp = zlib.compress(b"A" * (15 * 1024 * 1024), 9)
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\n"
            b"Content-Encoding: deflate\r\nContent-Length: %d\r\n\r\n" % len(comp))
    n = len(audit(host))
    rss_before = rss_mib(host.proc.pid)
    procs = []
    for _ in range(6):
        procs.append(start(capped, [send(head + comp[:-4]), {"sleep": 6}]))
        time.sleep(1.0)
    grown = rss_mib(host.proc.pid) - rss_before
    for p in procs:
        finish(p, timeout=60)
    blocks = wait_for(lambda: len(blocks_since(host, n)) >= 6 and blocks_since(host, n),
                      timeout=20)
    assert all("max_held_bytes" in b["reason"] for b in blocks)
    assert grown < 8, f"the daemon grew {grown:.0f} MiB with 1 MiB / 2 MiB caps"


def test_a_held_key_given_as_the_model_is_never_recorded_raw(capped: dict[str, Any]) -> None:
    """The held request's `model` is the key itself: not in the audit log, not in the pending
    list an approver reads, and (denied) not at the server."""
    host, srv = capped["host"], capped["server"]
    body = json.dumps({"model": KEY, "messages": [{"role": "user", "content": "hi"}]}).encode()
    proc = start(capped, [send(post(body)), recv(25)])
    hold = wait_for(lambda: next(iter(pending(host)), None))
    in_pending = KEY in json.dumps(pending(host))
    host.egressctl("deny", hold["id"], "--reason", "hostile test")
    finish(proc, timeout=60)
    wait_for(lambda: any(e["event"] == "http.request" for e in audit(host)), timeout=15)
    assert not in_pending and KEY.encode() not in srv.all_data()
    assert_never_recorded(host, KEY)
