"""The refusal a held intercepted HTTP/1.1 request gets (issue 5 x issue 3), sans-IO: the relay
answers `SendClient(403 + JSON naming the approval id)` instead of a reset, only where the
client reads it as that request's answer; nothing of the held request goes upstream. Real
policy, real Hyperscan engine, real HTTP codec; no sockets."""

from __future__ import annotations

import json
from typing import Any

from egressguard.model import Decision, Destination, FlowInfo, FlowState
from egressguard.policy.evaluate import Policy
from egressguard.relay import Hold, Relay, Reset, SendClient, SendUpstream
from egressguard.scan.mask import mask_span
from tests.test_inspection_units import (AGENT, ENGINE, conf, intercepting_relay, post,
                                         real_client_hello)

KEY = "AKIA" + "R7TQ2MZX" + "4LWN8HPC"
HOLD_SECRETS = "rules:\n  - {name: keys, detected: ['secret.*'], action: hold}"
WAITED = Decision(approved=False, by_uid=-1, by_user="egressguard", timed_out=True,
                  reason="no decision within 1s", request_id="h-abcdefghij", pending=True)
DENIED = Decision(approved=False, by_uid=0, by_user="root", reason="not this key",
                  request_id="h-abcdefghij")
APPROVED = Decision(approved=True, by_uid=0, by_user="root", reason="ok",
                    request_id="h-abcdefghij")


def chat(text: str) -> bytes:
    return json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": text}]}).encode()


def upstream(cmds: list[Any]) -> bytes:
    return b"".join(c.data for c in cmds if isinstance(c, SendUpstream))


def held_relay(first: bytes = b"") -> tuple[Relay, list[Any]]:
    """An intercepted flow whose request with KEY is held; `first` goes (and is answered)
    before it on the same connection."""
    r = intercepting_relay(HOLD_SECRETS)
    r.start()
    cmds = r.client_data(real_client_hello("api.openai.com"))
    cmds += r.upstream_connected()
    if first:
        cmds += r.client_data(first) + r.client_idle(final=True)
        r.flow.bytes_down += 120                     # the proxy relayed its response
    cmds += r.client_data(post(chat(f"deploy with {KEY}")))
    assert [c for c in cmds if isinstance(c, Hold)], cmds
    return r, cmds


def response_of(cmds: list[Any]) -> tuple[bytes, dict[str, Any]]:
    (answer,) = [c for c in cmds if isinstance(c, SendClient)]
    assert not [c for c in cmds if isinstance(c, Reset)]
    head, body = answer.data.split(b"\r\n\r\n", 1)
    assert b"Content-Length: %d\r\n" % len(body) in head + b"\r\n"
    return head, json.loads(body)


def test_held_request_past_the_inline_wait_gets_a_403_naming_the_approval() -> None:
    r, before = held_relay()
    after = r.decided(WAITED)
    head, body = response_of(after)
    assert head.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert b"Connection: close\r\n" in head and b"X-Egressguard-Approval: h-abcdefghij" in head
    assert body["approval_id"] == "h-abcdefghij" and body["status"] == "pending"
    assert body["error"] == "egressguard_approval_required"
    assert upstream(before + after) == b""           # the server got nothing of it
    assert KEY not in json.dumps(body)
    assert r.flow.state is FlowState.EXPIRED
    assert r.client_data(b"more") == [] and r.client_eof() == []     # the flow is over


def test_denied_request_gets_a_403_saying_who_denied() -> None:
    r, before = held_relay()
    _, body = response_of(r.decided(DENIED))
    assert body["status"] == "denied" and body["error"] == "egressguard_denied"
    assert "root" in body["message"] and "not this key" in body["message"]
    assert r.flow.state is FlowState.DENIED


def test_approval_still_releases_the_request_byte_exact() -> None:
    r, before = held_relay()
    after = r.decided(APPROVED) + r.client_idle(final=True)
    assert upstream(before + after) == post(chat(f"deploy with {KEY}"))
    assert not [c for c in after if isinstance(c, (SendClient, Reset))]


def test_an_aborted_hold_is_reset() -> None:
    r, _ = held_relay()
    aborted = Decision(approved=False, by_uid=-1, by_user="egressguard", reason="stopping",
                       aborted=True, request_id="h-abcdefghij", pending=True)
    cmds = r.decided(aborted)
    assert [type(c) for c in cmds][-1] is Reset and not [c for c in cmds
                                                           if isinstance(c, SendClient)]


def test_second_request_on_a_keep_alive_connection_after_its_answer_gets_the_403() -> None:
    first = post(chat("hello"))
    r, before = held_relay(first)
    assert upstream(before) == first                 # the first request went out whole
    _, body = response_of(r.decided(WAITED))
    assert body["approval_id"] == "h-abcdefghij"


def test_pipelined_request_is_reset_not_answered() -> None:
    """The client sent the held request before the answer to its previous one arrived: a 403
    now could be read as that earlier request's answer, so the flow is reset."""
    r = intercepting_relay(HOLD_SECRETS)
    r.start()
    r.client_data(real_client_hello("api.openai.com"))
    r.upstream_connected()
    cmds = r.client_data(post(chat("hello")) + post(chat(f"deploy with {KEY}")))
    assert [c for c in cmds if isinstance(c, Hold)]
    out = r.decided(WAITED)
    assert isinstance(out[-1], Reset) and not [c for c in out if isinstance(c, SendClient)]


def test_plaintext_http_hold_is_still_reset() -> None:
    flow = FlowInfo("f-plain", AGENT, Destination("127.0.0.1", 80), 0.0)
    r = Relay(flow, Policy.from_config(conf(HOLD_SECRETS)), ENGINE.open_stream(), mask_span)
    r.start()
    r.upstream_connected()
    cmds = r.client_data(post(chat(f"deploy with {KEY}")))
    assert [c for c in cmds if isinstance(c, Hold)]
    out = r.decided(WAITED)
    assert isinstance(out[-1], Reset) and not [c for c in out if isinstance(c, SendClient)]
    assert upstream(cmds + out) == b""


def test_a_request_goes_out_whole_not_head_first() -> None:
    """The head of a request whose body is still arriving waits for the body's scan, so a
    request held for a finding in its body leaves nothing upstream, not even its head (an
    HTTP client writes head and body separately, and pauses between them)."""
    r = intercepting_relay(HOLD_SECRETS)
    r.start()
    cmds = r.client_data(real_client_hello("api.openai.com")) + r.upstream_connected()
    body = chat(f"deploy with {KEY}")
    request = post(body)
    head, rest = request[:len(request) - len(body)], body
    cmds += r.client_data(head) + r.client_idle(final=False)
    assert upstream(cmds) == b""                       # the client paused: still nothing
    cmds += r.client_data(rest)
    assert [c for c in cmds if isinstance(c, Hold)] and upstream(cmds) == b""
    after = r.decided(APPROVED) + r.client_idle(final=False)
    assert upstream(after) == request                  # approved: all of it, once


def test_a_clean_request_in_two_writes_goes_out_whole_at_once() -> None:
    r = intercepting_relay(HOLD_SECRETS)
    r.start()
    r.client_data(real_client_hello("api.openai.com"))
    r.upstream_connected()
    request = post(chat("nothing secret here"))
    split = request.index(b"\r\n\r\n") + 4
    first = r.client_data(request[:split]) + r.client_idle(final=False)
    assert upstream(first) == b""
    assert upstream(r.client_data(request[split:]) + r.client_idle(final=False)) == request


def test_a_long_pause_mid_body_releases_what_was_scanned() -> None:
    """A client that waits mid-request (Expect: 100-continue, a slow stream) is not stalled:
    after the settle pause the scanned part goes out."""
    r = intercepting_relay(HOLD_SECRETS)
    r.start()
    r.client_data(real_client_hello("api.openai.com"))
    r.upstream_connected()
    request = post(chat("nothing secret here"))
    split = request.index(b"\r\n\r\n") + 4
    r.client_data(request[:split])
    out = upstream(r.client_idle(final=False) + r.client_idle(final=True))
    assert out == request[:split]
    assert upstream(r.client_data(request[split:]) + r.client_idle(final=True)) == \
        request[split:]


def test_a_request_larger_than_max_held_streams_once_it_outgrows_the_cap() -> None:
    """Kept whole only up to proxy.max_held_bytes: past it the request streams as it is scanned
    (and is not withheld again for the rest of its body)."""
    from tests.test_inspection_units import redacting_relay
    r = redacting_relay(HOLD_SECRETS, max_held=64 * 1024)
    body = b"x" * (512 * 1024)
    request = post(body)
    head_end = request.index(b"\r\n\r\n") + 4
    sent = upstream(r.client_data(request[:head_end + 32 * 1024]) + r.client_idle(final=False))
    assert sent == b""                                  # under the cap: kept whole
    sent += upstream(r.client_data(request[head_end + 32 * 1024:head_end + 128 * 1024])
                     + r.client_idle(final=False))
    assert len(sent) > 64 * 1024                        # past it: streaming
    for at in range(head_end + 128 * 1024, len(request), 16 * 1024):
        step = upstream(r.client_data(request[at:at + 16 * 1024]) + r.client_idle(final=False))
        assert step, "a request that streams is never withheld again"
        sent += step
    assert sent == request
