"""The pure parts of TLS interception and the ledger: JSON field paths, the endpoint catalog,
the interception selector, the host CA files, config errors, the relay's interception
playbook and the ledger store/listener/queries. Real collaborators, no sockets."""

from __future__ import annotations

import gzip
import json
import os
import ssl
import stat
import sys
import time
from pathlib import Path

import pytest

from egressguard.catalog import Catalog
from egressguard.config import config_from_text
from egressguard.errors import ConfigError
from egressguard.jsonpaths import field_at, string_spans
from egressguard.ledger import query
from egressguard.ledger.listener import LedgerListener
from egressguard.ledger.store import LedgerStore
from egressguard.model import Destination, FlowInfo, Process
from egressguard.policy.evaluate import Policy
from egressguard.relay import Emit, Hold, InterceptTls, Relay, Reset, SendClient, SendUpstream
from egressguard.scan.engine import ScanEngine
from egressguard.scan.mask import mask_span
from egressguard.scan.pack import load_pack
from egressguard.scan.redact import redact_bytes
from egressguard.sniff import client_alpn
from egressguard.tls.ca import HostCA
from egressguard.tls.select import InterceptSelector

sys.path.insert(0, str(Path(__file__).parent))
from test_sniff import real_client_hello  # noqa: E402

ENGINE = ScanEngine(load_pack(None), b"k" * 32)
CATALOG = Catalog.builtin()
AGENT = Process(pid=7, uid=1000, comm="python3", exe="/usr/bin/python3", user="agent")
EMAIL = "ann.lee" + "@" + "corp-example.org"


def conf(rules: str = "rules: []", extra: str = "") -> object:
    return config_from_text("scope: {cgroup: /a}\napprovals: {approvers: [0]}\n" + extra + rules
                            + "\n", resolve_user=lambda n: None)


# ----------------------------------------------------------------------------- JSON paths
def test_json_field_paths() -> None:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "a"},
                                                  {"role": "user", "content": f"x {EMAIL}"}],
                       "odd key": ["z"]}).encode()
    spans = string_spans(body)
    i = body.find(EMAIL.encode())
    assert field_at(spans, i, i + len(EMAIL)) == "messages[1].content"
    j = body.find(b'"z"') + 1
    assert field_at(spans, j, j + 1) == '"odd key"[0]'
    assert field_at(spans, 0, 1) is None
    assert string_spans(body[:i])[-1][2] == "messages[1].role"     # truncated: what is there
    assert string_spans(b"[" * 10_000) == []                        # deep nesting is bounded
    k = body.find(b"odd key")
    hidden = string_spans(body, lambda s, e: s <= k < e)          # a finding in a key
    assert hidden[-1][2] == '"<masked>"[0]' and "odd" not in json.dumps(hidden)


# ----------------------------------------------------------------------------- catalog
@pytest.mark.parametrize("host, port, method, path, body, want", [
    ("api.openai.com", 443, "POST", "/v1/chat/completions", b'{"model":"gpt-4o"}',
     ("openai", "chat", "inference", "gpt-4o")),
    ("x.openai.azure.com", 443, "POST", "/openai/deployments/prod-4o/chat/completions", b"{}",
     ("azure_openai", "chat", "inference", "prod-4o")),
    ("generativelanguage.googleapis.com", 443, "POST",
     "/v1beta/models/gemini-1.5-pro:generateContent", b"{}",
     ("google_gemini", "chat", "inference", "gemini-1.5-pro")),
    ("bedrock-runtime.us-east-1.amazonaws.com", 443, "POST",
     "/model/anthropic.claude-3/invoke", b"{}", ("aws_bedrock", "chat", "inference",
                                                 "anthropic.claude-3")),
    ("api.openai.com", 443, "POST", "/v1/files", b"", ("openai", "files", "dataset_export", "")),
    ("api.openai.com", 443, "GET", "/v1/files", b"", ("openai", "files", "other", "")),
    ("api.mistral.ai", 443, "POST", "/v1/fine_tuning/jobs", b'{"model":"m"}',
     ("mistral", "fine_tuning", "dataset_export", "m")),
    ("", 11434, "POST", "/api/embed", b'{"model":"nomic"}', ("ollama", "embeddings",
                                                             "inference", "nomic")),
    ("api.anthropic.com", 443, "POST", "/v1/messages", b'{"model":"claude"}',
     ("anthropic", "chat", "inference", "claude")),
])
def test_catalog_labels(host: str, port: int, method: str, path: str, body: bytes,
                        want: tuple) -> None:
    p = CATALOG.provider_for(host, "127.0.0.1", port)
    info = CATALOG.describe(p, method, path, body, "application/json")
    assert (info.provider, info.kind, info.cls, info.model) == want


def test_catalog_covers_the_named_providers() -> None:
    assert {"openai", "azure_openai", "anthropic", "google_gemini", "google_vertex",
            "aws_bedrock", "mistral", "cohere", "huggingface", "groq", "together", "deepseek",
            "openrouter", "ollama", "vllm"} <= CATALOG.ids
    assert CATALOG.provider_for("", "10.1.2.3", 11434) is None       # local = loopback only


# ----------------------------------------------------------------------------- selector, CA
def test_selector_hosts_processes_and_pinning_memory() -> None:
    cfg = conf(extra="tls: {intercept: {hosts: ['api.openai.com', '*.anthropic.com'], "
                     "processes: [{exe: ['/usr/bin/python*']}]}}\n")
    sel = InterceptSelector(cfg.tls.hosts, cfg.tls.processes, cfg.tls.on_intercept_failure)
    assert sel.choose(AGENT, "api.openai.com") == "intercept"
    assert sel.choose(AGENT, "api.mistral.ai") == "passthrough"
    node = Process(pid=8, uid=1000, exe="/usr/bin/node")
    assert sel.choose(node, "api.openai.com") == "passthrough"
    sel.record_failure(AGENT, "api.openai.com")
    assert sel.choose(AGENT, "api.openai.com") == "block"
    sel.on_failure = "passthrough"
    assert sel.choose(AGENT, "api.openai.com") == "uninspected"     # marked, not silent


def test_pinning_memory_is_per_identity_and_expires() -> None:
    """One identity's refusal decides nothing for another uid, cgroup or container running
    the same program, and is forgotten after tls.intercept_failure_ttl."""
    now = [1000.0]
    sel = InterceptSelector(("api.openai.com",), (), "block", ttl_s=60, clock=lambda: now[0])
    first = Process(pid=7, uid=1000, exe="/usr/bin/curl", cgroup_path="/agents/a")
    sel.record_failure(first, "api.openai.com")
    assert sel.choose(first, "api.openai.com") == "block"
    for other in (Process(pid=8, uid=1001, exe="/usr/bin/curl", cgroup_path="/agents/a"),
                  Process(pid=9, uid=1000, exe="/usr/bin/curl", cgroup_path="/agents/b"),
                  Process(pid=9, uid=1000, exe="/usr/bin/curl", cgroup_path="/agents/a",
                          container_id="c0ffee")):
        assert sel.choose(other, "api.openai.com") == "intercept"
    assert [(e["uid"], e["host"], e["expires_in_s"]) for e in sel.remembered()] == [
        (1000, "api.openai.com", 60.0)]
    now[0] += 59
    assert sel.choose(first, "api.openai.com") == "block"
    now[0] += 1
    assert sel.choose(first, "api.openai.com") == "intercept" and sel.remembered() == []


def test_intercept_failure_ttl_config() -> None:
    cfg = conf(extra="tls: {intercept: {hosts: [api.openai.com]}, intercept_failure_ttl: 10m}\n")
    assert cfg.tls.intercept_failure_ttl == 600
    assert conf(extra="tls: {intercept: {hosts: [api.openai.com]}}\n").tls \
        .intercept_failure_ttl == 3600


def test_host_ca_files_and_leaves(tmp_path: Path) -> None:
    ca = HostCA(str(tmp_path / "state"))
    key = tmp_path / "state" / "ca.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "state" / "leaves").stat().st_mode) == 0o700
    ctx = ca.server_context("api.openai.com")
    assert ca.server_context("API.openai.com") is ctx               # cached per name
    client = ssl.create_default_context(cadata=ca.cert_pem.decode())
    client.set_alpn_protocols(["h2", "http/1.1"])
    # A real handshake over memory BIOs proves the leaf verifies for the name.
    from egressguard.tls.pipe import TlsPipe
    pipe = TlsPipe(ctx)
    cin, cout = ssl.MemoryBIO(), ssl.MemoryBIO()
    c = client.wrap_bio(cin, cout, server_hostname="api.openai.com")
    for _ in range(10):
        try:
            c.do_handshake()
            break
        except ssl.SSLWantReadError:
            out, _ = pipe.feed(cout.read())
            cin.write(out)
    pipe.feed(cout.read())                  # the client's Finished
    assert pipe.handshake_done and pipe.alpn == "http/1.1"        # never h2
    c.write(b"GET / HTTP/1.1\r\n\r\n")
    assert pipe.feed(cout.read())[1] == b"GET / HTTP/1.1\r\n\r\n"
    assert HostCA(str(tmp_path / "state")).cert_pem == ca.cert_pem  # loaded, not re-made
    os.chmod(key, 0o644)
    with pytest.raises(Exception, match="group/others"):
        HostCA(str(tmp_path / "state"))


# ----------------------------------------------------------------------------- config
def test_config_sections_and_errors() -> None:
    cfg = conf("rules:\n  - {name: r, destination: {provider: [openai]}, request: {class: "
               "[dataset_export]}, action: hold}",
               "tls: {intercept: {hosts: [api.openai.com]}, on_intercept_failure: passthrough,"
               " max_decoded_body: 1MiB}\nledger: {retention: 7d}\n")
    assert cfg.tls.hosts == ("api.openai.com",) and cfg.tls.on_intercept_failure == "passthrough"
    assert cfg.tls.max_decoded_body == 1024 * 1024 and cfg.ledger.retention == 7 * 86400
    assert cfg.rules[0].request.cls == ("dataset_export",)
    with pytest.raises(ConfigError) as exc:
        conf("rules:\n  - {name: r, destination: {provider: [opnai]}, action: block}\n"
             "  - {name: s, request: {kind: [chatt]}, detected: [secret], action: hold}",
             "tls: {intercept: {hosts: ['https://x']}, on_intercept_failure: maybe}\n"
             "ledger: {retention: forever}\n")
    text = "\n".join(str(i) for i in exc.value.issues)
    for want in ("rules[0].destination.provider[0]: 'opnai' matches no provider",
                 "did you mean 'openai'", "rules[1].request.kind[0]: 'chatt'",
                 "rules[1].request: a rule has `request` or `detected`",
                 "tls.intercept.hosts[0]", "tls.on_intercept_failure", "ledger.retention"):
        assert want in text, (want, text)
    assert all(i.line for i in exc.value.issues)


# ----------------------------------------------------------------------------- relay playbook
def intercepting_relay(rules: str) -> Relay:
    cfg = conf(rules, "tls: {intercept: {hosts: [api.openai.com]}}\n")
    flow = FlowInfo("f-1", AGENT, Destination("127.10.0.1", 443), 0.0)
    return Relay(flow, Policy.from_config(cfg), ENGINE.open_stream(), mask_span,
                 interceptor=InterceptSelector(cfg.tls.hosts), catalog=CATALOG)


def post(body: bytes, extra: bytes = b"") -> bytes:
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\n"
            b"Content-Type: application/json\r\n" + extra
            + b"Content-Length: %d\r\n\r\n" % len(body) + body)


def test_relay_intercepts_then_masks_inside_a_gzip_body() -> None:
    r = intercepting_relay("rules:\n  - {name: m, detected: [pii.email], action: mask}")
    r.start()
    hello = real_client_hello("api.openai.com")
    cmds = r.client_data(hello)
    assert [type(c).__name__ for c in cmds][:3] == ["Emit", "InterceptTls", "ConnectUpstream"]
    assert next(c for c in cmds if isinstance(c, InterceptTls)).client_hello == hello
    assert r.flow.destination.provider == "openai" and r.flow.intercepted
    r.upstream_connected()
    plain = json.dumps({"model": "gpt-4o", "messages": [{"role": "user",
                                                         "content": f"to {EMAIL}"}]}).encode()
    raw = post(gzip.compress(plain), b"Content-Encoding: gzip\r\n")
    out = r.client_data(raw) + r.client_idle(final=True)
    wire = b"".join(c.data for c in out if isinstance(c, SendUpstream))
    body = wire.split(b"\r\n\r\n", 1)[1]
    assert b"Content-Length: %d\r\n" % len(body) in wire
    assert EMAIL.encode() not in gzip.decompress(body)
    assert len(gzip.decompress(body)) == len(plain)
    req = next(c for c in out if isinstance(c, Emit) and c.event == "http.request").fields
    assert (req["provider"], req["kind"], req["model"]) == ("openai", "chat", "gpt-4o")
    assert req["fields"] == {"pii.email": ["messages[0].content"]}
    detect = next(c for c in out if isinstance(c, Emit) and c.event == "flow.detect").fields
    assert detect["detections"][0]["field"] == "messages[0].content"
    assert EMAIL not in json.dumps([c.fields for c in out if isinstance(c, Emit)])
    assert r.flow.bytes_delivered == len(wire)


def test_relay_request_rule_holds_a_dataset_upload_before_any_byte() -> None:
    r = intercepting_relay("rules:\n  - {name: d, request: {class: [dataset_export]}, "
                           "action: hold}")
    r.start()
    r.client_data(real_client_hello("api.openai.com"))
    r.upstream_connected()
    raw = post(b'{"a":1}').replace(b"/v1/chat/completions", b"/v1/files")
    out = r.client_data(raw) + r.client_idle(final=True)
    assert any(isinstance(c, Hold) for c in out)
    assert not any(isinstance(c, SendUpstream) for c in out)


def test_relay_malformed_http_is_blocked_and_upstream_tls_failure_answers_502() -> None:
    r = intercepting_relay("rules: []")
    r.start()
    r.client_data(real_client_hello("api.openai.com"))
    out = r.client_data(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
    assert isinstance(out[-1], Reset) and r.flow.verdict.rule == "http"
    r = intercepting_relay("rules: []")
    r.start()
    r.client_data(real_client_hello("api.openai.com"))
    out = r.upstream_tls_failed("certificate has expired")
    assert isinstance(out[-1], SendClient) and out[-1].data.startswith(b"HTTP/1.1 502 ")


def test_relay_leaves_other_hosts_alone_but_labels_them() -> None:
    r = intercepting_relay("rules:\n  - {name: no-h2, destination: {alpn: [h2]}, action: block}")
    r.flow.destination = Destination("127.10.0.3", 443)
    r.start()
    out = r.client_data(real_client_hello("api.mistral.ai"))
    assert not any(isinstance(c, InterceptTls) for c in out)
    assert r.flow.destination.provider == "mistral" and not r.flow.intercepted
    assert not any(isinstance(c, Reset) for c in out)    # offered no h2: not blocked
    r = intercepting_relay("rules:\n  - {name: no-h2, destination: {alpn: [h2]}, action: block}")
    r.start()
    out = r.client_data(_hello_with_alpn(["h2", "http/1.1"]))
    assert r.flow.destination.alpn == ("h2", "http/1.1")
    assert isinstance(out[-1], Reset) and r.flow.verdict.rule == "no-h2"
    assert client_alpn(_hello_with_alpn(["h2", "http/1.1"])) == ("h2", "http/1.1")
    assert client_alpn(b"GET / HTTP/1.1\r\n\r\n") == ()


def _hello_with_alpn(protocols: list[str]) -> bytes:
    import socket
    import threading
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.set_alpn_protocols(protocols)
    a, b = socket.socketpair()
    got: list[bytes] = []
    t = threading.Thread(target=lambda: (b.settimeout(5), got.append(b.recv(65536))))
    t.start()
    with ctx.wrap_socket(a, server_hostname="x.test", do_handshake_on_connect=False) as tls:
        tls.settimeout(0.5)
        try:
            tls.do_handshake()
        except (OSError, ssl.SSLError):
            pass
    t.join(5)
    b.close()
    return got[0]


# ----------------------------------------------------------------------------- ledger
def test_ledger_rows_aggregates_visibility_and_retention(tmp_path: Path) -> None:
    store = LedgerStore(str(tmp_path / "ledger.db"), retention_s=3600)
    store.start()
    listen = LedgerListener(store)
    r = intercepting_relay("rules:\n  - {name: m, detected: [pii.email], action: mask}")
    r.start()
    r.client_data(real_client_hello("api.openai.com"))
    r.upstream_connected()
    body = json.dumps({"model": "gpt-4o", "messages": [{"content": EMAIL}]}).encode()
    for c in r.client_data(post(body)) + r.client_eof():
        if isinstance(c, Emit):
            listen(c.event, r.flow, c.fields)
    listen("flow.close", r.flow, {})
    other = FlowInfo("f-2", Process(pid=9, uid=2000, exe="/usr/bin/curl", user="bob"),
                     Destination("127.0.0.9", 80, "example.test"), time.time(),
                     bytes_delivered=10, bytes_down=5)
    listen("flow.close", other, {})
    assert store.flush(10)
    path = store.path
    rows = query.flows(path, 3600, None)
    mine = next(x for x in rows if x["flow_id"] == "f-1")
    assert (mine["provider"], mine["models"], mine["endpoint_kinds"]) == ("openai", "gpt-4o",
                                                                          "chat")
    assert mine["detections"] == [{"detector": "pii.email", "class": "pii", "count": 1,
                                   "fields": ["messages[0].content"]}]
    assert mine["bytes_up"] == r.flow.bytes_delivered > 0
    by_user = {x["key"]: x for x in query.usage(path, "user", 3600, None)}
    assert set(by_user) == {"agent", "bob"} and by_user["bob"]["bytes_up"] == 10
    assert [x["key"] for x in query.usage(path, "user", 3600, 2000)] == ["bob"]
    assert query.usage(path, "class", 3600, None)[0]["key"] == "pii"
    assert EMAIL.encode() not in Path(path).read_bytes() + (
        Path(path + "-wal").read_bytes() if Path(path + "-wal").exists() else b"")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    old = FlowInfo("f-old", AGENT, Destination("127.0.0.1", 1), 0.0)
    listen("flow.close", old, {})
    store.flush()
    import sqlite3
    with sqlite3.connect(path) as c:
        c.execute("UPDATE flows SET closed_at = 1 WHERE flow_id = 'f-old'")
    store.purge_now()
    store.flush()
    with sqlite3.connect(path) as c:
        assert c.execute("SELECT COUNT(*) FROM flows WHERE flow_id='f-old'").fetchone()[0] == 0
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()


# ----------------------------------------------------------------------------- split safety
AWS_KEY = "AKIA" + "J7QX2MZV" + "5LKN3HPW"


def test_secret_split_across_chunks_is_held_for_every_split_of_the_stream() -> None:
    """Chunked framing inside the key, and the raw stream cut at every offset: the relay holds
    before the key's first byte leaves, and what left is exactly a prefix of the original."""
    body = json.dumps({"model": "m", "messages": [{"content": f"use {AWS_KEY} now"}]}).encode()
    cut = body.find(AWS_KEY.encode()) + 7
    raw = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nContent-Type: "
           b"application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
           + b"%x\r\n%s\r\n" % (cut, body[:cut]) + b"%x\r\n%s\r\n0\r\n\r\n" % (
               len(body) - cut, body[cut:]))
    key_at = raw.find(AWS_KEY[:7].encode())
    hello = real_client_hello("api.openai.com")
    for split in range(1, len(raw)):
        r = intercepting_relay("rules:\n  - {name: h, detected: [secret], action: hold}")
        r.start()
        r.client_data(hello)
        out = r.upstream_connected()
        out += r.client_data(raw[:split]) + r.client_idle(final=False)
        out += r.client_data(raw[split:]) + r.client_idle(final=True)
        sent = b"".join(c.data for c in out if isinstance(c, SendUpstream))
        assert any(isinstance(c, Hold) for c in out), split
        assert raw.startswith(sent) and len(sent) <= key_at, split


def test_since_periods() -> None:
    from egressguard.cli.usage import parse_since
    assert parse_since("24h") == 86400 and parse_since("30m") == 1800
    assert parse_since("7d") == 7 * 86400 and parse_since("2") == 7200
    with pytest.raises(Exception, match="not a period"):
        parse_since("yesterday")


def test_ca_export_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from egressguard.cli.main import main
    cfg = tmp_path / "policy.yaml"
    cfg.write_text("scope: {cgroup: /a}\nstate_dir: state\n")
    assert main(["ca", "export", "--config", str(cfg)]) == 0
    pem = capsys.readouterr().out
    assert pem.startswith("-----BEGIN CERTIFICATE-----")
    assert pem.encode() == (tmp_path / "state" / "ca.crt").read_bytes()
    assert main(["ca", "export", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_a_client_hello_after_the_sniff_timeout_is_blocked_not_passed_unopened() -> None:
    r = intercepting_relay("rules: []")
    r.start()
    r.sniff_timeout()                           # nothing arrived in time
    r.upstream_connected()
    hello = real_client_hello("api.openai.com")
    out = r.client_data(hello[:20]) + r.client_data(hello[20:])
    assert not any(isinstance(c, SendUpstream) for c in out)
    assert isinstance(out[-1], Reset) and r.flow.verdict.rule == "tls.intercept"
    r = intercepting_relay("rules: []")          # another host: passes as before
    r.start()
    r.sniff_timeout()
    r.upstream_connected()
    out = r.client_data(real_client_hello("api.mistral.ai")) + r.client_idle(final=True)
    assert any(isinstance(c, SendUpstream) for c in out)


# ----------------------------------------------------------------------------- pinning, ledger
def test_relay_marks_a_remembered_passthrough_and_blocks_the_refused_handshake() -> None:
    r = intercepting_relay("rules: []")
    r.interceptor.on_failure = "passthrough"
    r.start()
    r.client_data(real_client_hello("api.openai.com"))
    r.intercept_failed("tlsv1 alert unknown ca")
    # The refused handshake cut the flow: that is what the flow says, not the default verdict.
    assert (r.flow.verdict.action.value, r.flow.verdict.rule, r.flow.state.value) == (
        "block", "tls.intercept", "blocked")
    again = intercepting_relay("rules: []")
    again.interceptor = r.interceptor
    again.start()
    out = again.client_data(real_client_hello("api.openai.com"))
    assert not any(isinstance(c, InterceptTls) for c in out) and not again.flow.intercepted
    marks = [c.fields for c in out if isinstance(c, Emit) and c.event == "tls.passthrough"]
    assert marks and marks[0]["reason"] == "intercept_failure"
    assert again.flow.tls_passthrough == "intercept_failure"


def test_ledger_approval_ids_outcomes_and_class_counts(tmp_path: Path) -> None:
    """Every way an approval request decides a flow leaves its id in the ledger, and the by-class
    view counts held and blocked flows like the other views do."""
    store = LedgerStore(str(tmp_path / "ledger.db"), retention_s=3600)
    store.start()
    listen = LedgerListener(store)
    from egressguard.model import Action, Detection, FlowState, Verdict
    det = Detection("secret.aws_access_key_id", "secret", 0, 20, "AKIA****", "fp")
    held = Verdict(Action.HOLD, "secrets-hold", "held")
    cases = {"f-new": ("flow.hold", {"hold_id": "h-1"}),
             "f-once": ("approval.use", {"hold_id": "h-2", "scope": "once"}),
             "f-grant": ("grant.use", {"grant_id": "g-1", "hold_id": "h-3"}),
             "f-retry": ("approval.denied_retry", {"hold_id": "h-4"}),
             "f-joined": ("approval.repeat", {"hold_id": "h-5", "count": 2})}
    for fid, (event, fields) in cases.items():
        flow = FlowInfo(fid, AGENT, Destination("::1", 39991), time.time(), verdict=held,
                        detections=[det])
        listen(event, flow, fields)
        flow.state = FlowState.DENIED if fid == "f-retry" else FlowState.CLOSED
        listen("flow.close", flow, {})
    blocked = FlowInfo("f-block", AGENT, Destination("127.0.0.2", 80), time.time(),
                       verdict=Verdict(Action.BLOCK, "r", "no"), detections=[det],
                       state=FlowState.BLOCKED)
    listen("flow.close", blocked, {})
    assert store.flush(10)
    rows = {x["flow_id"]: x for x in query.flows(store.path, 3600, None)}
    assert {f: rows[f]["approval_id"] for f in cases} == {
        "f-new": "h-1", "f-once": "h-2", "f-grant": "h-3", "f-retry": "h-4", "f-joined": "h-5"}
    assert rows["f-retry"]["state"] == "denied"
    (secret,) = query.usage(store.path, "class", 3600, None)
    assert (secret["key"], secret["flows"], secret["held"], secret["blocked"]) == (
        "secret", 6, 5, 1)
    (proc,) = query.usage(store.path, "process", 3600, None)
    assert (proc["held"], proc["blocked"]) == (5, 1)
    store.close()


def test_ledger_gains_new_columns_on_an_old_file(tmp_path: Path) -> None:
    import sqlite3
    path = str(tmp_path / "old.db")
    with sqlite3.connect(path) as c:
        from egressguard.ledger.store import SCHEMA
        c.executescript(SCHEMA.replace(",\n  tls_passthrough TEXT NOT NULL DEFAULT ''", ""))
    store = LedgerStore(path, retention_s=3600)
    store.start()
    flow = FlowInfo("f-p", AGENT, Destination("127.0.0.3", 443, "api.openai.com"), time.time(),
                    tls_passthrough="intercept_failure")
    LedgerListener(store)("flow.close", flow, {})
    assert store.flush(10)
    assert query.flows(path, 3600, None)[0]["tls_passthrough"] == "intercept_failure"
    store.close()


# ----------------------------------------------------------------------------- hostile HTTP
def redacting_relay(rules: str, **kw: object) -> Relay:
    r = intercepting_relay(rules)
    r.redact = lambda data: redact_bytes(ENGINE, data)
    for k, v in kw.items():
        setattr(r, k, v)
    r.start()
    r.client_data(real_client_hello("api.openai.com"))
    r.upstream_connected()
    return r


@pytest.mark.parametrize("field, raw", [
    ("model", post(json.dumps({"model": EMAIL, "messages": []}).encode())),
    ("content_type", post(b'{"messages": []}').replace(b"application/json", EMAIL.encode())),
])
def test_relay_records_request_strings_only_when_clean(field: str, raw: bytes) -> None:
    """`model` and `content_type` are the client's: an e-mail (or a key) there reached the
    audit log and the ledger verbatim (red team). Now by length only."""
    r = redacting_relay("rules:\n  - {name: m, detected: [pii.email], action: mask}")
    out = r.client_data(raw) + r.client_idle(final=True) + r.client_eof()
    rec = next(c for c in out if isinstance(c, Emit) and c.event == "http.request").fields
    assert rec[field] == f"<redacted, {len(EMAIL)} bytes>"
    assert EMAIL not in json.dumps([c.fields for c in out if isinstance(c, Emit)])
    clean = redacting_relay("rules: []")
    out = clean.client_data(post(b'{"model": "gpt-4o", "messages": []}'))
    out += clean.client_idle(final=True) + clean.client_eof()
    rec = next(c for c in out if isinstance(c, Emit) and c.event == "http.request").fields
    assert (rec["model"], rec["content_type"]) == ("gpt-4o", "application/json")


def test_relay_turns_any_codec_exception_into_a_recorded_block() -> None:
    r = redacting_relay("rules: []")
    out = r.client_data(b"GET / HTTP/1.\xff\r\nHost: a\r\n\r\n")
    assert isinstance(out[-1], Reset) and r.flow.verdict.rule == "http"
    assert "cannot inspect the request" in r.flow.verdict.reason


def test_relay_counts_the_codecs_held_request_and_caps_it() -> None:
    comp = gzip.compress(b"A" * (2 * 1024 * 1024))
    r = redacting_relay("rules: []")
    r.client_data(post(comp, b"Content-Encoding: gzip\r\n")[:-8])   # its trailer withheld
    assert r.codec_holding and r.buffered > 2 * 1024 * 1024 > len(r.pending)
    capped = redacting_relay("rules: []", max_held=256 * 1024)
    out = capped.client_data(post(comp, b"Content-Encoding: gzip\r\n")[:-8])
    assert isinstance(out[-1], Reset) and "max_held_bytes" in capped.flow.verdict.reason
