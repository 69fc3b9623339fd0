"""Chat: a loopback HTTP server stands in for Slack and a generic webhook and records what is
posted; the interactive callback endpoint gets signed, unsigned, stale, replayed and
wrongly-signed requests; self-approval through Slack is refused; failed posts are retried and
never block enforcement."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from egressguard.approvals import chat, slack
from egressguard.approvals.chat import ChatNotifier, SlackCallback
from egressguard.approvals.holds import HoldRegistry
from egressguard.approvals.settings import ChatConfig, SlackConfig
from egressguard.policy.rules import UserRef
from tests.test_approvals_grpc import DET, VERDICT, make_flow

SECRET = b"8f742231b10e8888abcd99yyyzzz85a5"     # a made-up signing secret
OWNER, ALICE = 4200, 4201
IDS = {"U0OWNER01": UserRef(f"uid:{OWNER}", OWNER), "U0ALICE01": UserRef("alice", ALICE, "alice")}


class StandIn:
    """Records every POST; `fail[path]` makes the next N posts to `path` answer 503."""

    def __init__(self) -> None:
        self.posts: dict[str, list[Any]] = {}
        self.fail: dict[str, int] = {}
        self.attempts: dict[str, int] = {}
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{name}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.attempts[name] = self.attempts.get(name, 0) + 1
        if self.fail.get(name, 0) > 0:
            self.fail[name] -= 1
            return web.Response(status=503)
        self.posts.setdefault(name, []).append(await request.json())
        return web.Response(text="ok")

    async def wait(self, name: str, n: int = 1, timeout: float = 10) -> list[Any]:
        deadline = time.monotonic() + timeout
        while len(self.posts.get(name, [])) < n:
            assert time.monotonic() < deadline, f"{name}: {self.posts.get(name)}"
            await asyncio.sleep(0.02)
        return self.posts[name]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def payload(request_id: str, user: str, approve: bool, reason: str, response_url: str) -> bytes:
    body = {"type": "block_actions", "user": {"id": user, "name": "ignored"},
            "response_url": response_url,
            "actions": [{"action_id": slack.APPROVE_ACTION if approve else slack.DENY_ACTION,
                         "value": request_id}],
            "state": {"values": {slack.REASON_BLOCK: {slack.REASON_ACTION: {"value": reason}}}}}
    return urllib.parse.urlencode({"payload": json.dumps(body)}).encode()


class Harness:
    def __init__(self, retries: int = 5) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.registry = HoldRegistry([f"uid:{ALICE}", f"uid:{OWNER}"], 30.0, "deny",
                                     self.record, request_ttl_s=60.0)
        self.standin = StandIn()
        self.retries = retries

    def record(self, name: str, fields: dict[str, Any]) -> None:
        self.events.append((name, fields))

    def named(self, name: str) -> list[dict[str, Any]]:
        return [f for n, f in self.events if n == name]

    async def __aenter__(self) -> "Harness":
        await self.standin.start()
        cfg = ChatConfig(slack=SlackConfig(self.standin.url("slack"), "-", ("127.0.0.1", 0)),
                         webhook_url=self.standin.url("generic"), retries=self.retries)
        self.notifier = ChatNotifier(cfg, self.registry, self.record, mark=0x4547)
        await self.notifier.start()
        self.callback = SlackCallback(SECRET, IDS, self.registry, self.notifier)
        await self.callback.start("127.0.0.1", 0)
        self.http = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.close()
        await self.callback.stop()
        await self.notifier.stop()
        self.registry.close()
        await self.standin.stop()

    async def send(self, body: bytes, ts: str | None = None, sig: str | None = None,
                   signed: bool = True) -> tuple[int, Any]:
        ts = ts if ts is not None else str(int(time.time()))
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if signed:
            headers["X-Slack-Request-Timestamp"] = ts
            headers["X-Slack-Signature"] = sig or slack.sign(SECRET, ts, body)
        url = f"http://127.0.0.1:{self.callback.port}{chat.CALLBACK_PATH}"
        async with self.http.post(url, data=body, headers=headers) as resp:
            return resp.status, await resp.json()


def test_slack_message_callbacks_and_outcome(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        async with Harness() as h:
            waiter = h.registry.open(make_flow(OWNER, "f-chat-1"), VERDICT, [DET])
            rid = waiter.id
            (msg,) = await h.standin.wait("slack")
            buttons = [b for b in msg["blocks"] if b["type"] == "actions"][0]["elements"]
            assert [b["value"] for b in buttons] == [rid, rid]        # only the opaque id
            assert DET.fingerprint not in json.dumps(msg)
            assert DET.preview in json.dumps(msg)                     # masked evidence only
            (generic,) = await h.standin.wait("generic")
            assert generic["event"] == "approval.opened" and generic["request"]["id"] == rid
            reply = h.standin.url("reply")

            ok = payload(rid, "U0ALICE01", True, "checked in Slack", reply)
            status, _ = await h.send(ok, signed=False)
            assert status == 401
            status, _ = await h.send(ok, sig="v0=" + "0" * 64)
            assert status == 401
            stale = str(int(time.time()) - 301)
            status, _ = await h.send(ok, ts=stale, sig=slack.sign(SECRET, stale, ok))
            assert status == 401
            status, _ = await h.send(ok, sig=slack.sign(b"another secret", str(int(time.time())), ok))
            assert status == 401
            codes = [f["code"] for f in h.named("approval.refused")]
            assert codes == ["unsigned", "bad_signature", "stale", "bad_signature"]
            assert not waiter.done

            status, body = await h.send(payload(rid, "U0OWNER01", True, "mine", reply))
            assert status == 200 and body == {"refused": "self_approval"}
            (told,) = await h.standin.wait("reply")
            assert told["response_type"] == "ephemeral" and "own hold" in told["text"]

            status, body = await h.send(payload(rid, "U0NOBODY1", True, "hi", reply))
            assert body == {"refused": "unknown_identity"}
            status, body = await h.send(payload(rid, "U0ALICE01", True, "  ", reply))
            assert body == {"refused": "empty_reason"}
            told = await h.standin.wait("reply", 3)
            assert "Reason box" in told[-1]["text"]
            assert not waiter.done

            ts = str(int(time.time()))
            status, body = await h.send(ok, ts=ts)
            assert status == 200 and body == {"ok": True}
            d = await waiter.wait()
            assert d.approved and d.by_user == "alice"
            who = h.named("flow.decision")[-1]["who"]
            assert who["channel"] == "slack" and who["principal"] == "U0ALICE01"
            update = (await h.standin.wait("reply", 4))[-1]
            assert update["replace_original"] is True and "approved by alice" in update["text"]
            status, _ = await h.send(ok, ts=ts)                       # the same request again
            assert status == 401 and h.named("approval.refused")[-1]["code"] == "replay"
            generic = await h.standin.wait("generic", 2)
            assert generic[-1]["event"] == "approval.decided"
            assert generic[-1]["decision"]["outcome"] == "approved"
    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_failed_posts_are_retried_then_recorded_and_never_block(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chat, "BACKOFF_S", 0.02)

    async def scenario() -> None:
        async with Harness(retries=3) as h:
            h.standin.fail["generic"] = 2
            h.standin.fail["slack"] = 100
            t0 = time.monotonic()
            waiter = h.registry.open(make_flow(OWNER, "f-chat-2"), VERDICT, [DET])
            assert time.monotonic() - t0 < 0.05 and not waiter.done   # open() never waits
            (delivered,) = await h.standin.wait("generic")
            assert delivered["request"]["id"] == waiter.id
            assert h.standin.attempts["generic"] == 3                 # two 503s, then 200
            deadline = time.monotonic() + 10
            while not h.named("chat.notify_failed"):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            (failed,) = h.named("chat.notify_failed")
            assert failed["attempts"] == 4 and failed["error"] == "HTTP 503"
            assert failed["host"] == "127.0.0.1" and "/slack" not in json.dumps(failed)
            assert [r.id for r in h.registry.pending()] == [waiter.id]  # still decidable
    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_signature_verifier_window_and_replays() -> None:
    now = [1_700_000_000.0]
    v = slack.SignatureVerifier(SECRET, clock=lambda: now[0])
    body = b"payload=%7B%7D"
    ts = str(int(now[0]))
    v.verify(ts, slack.sign(SECRET, ts, body), body)
    for ts_, sig, code in ((ts, slack.sign(SECRET, ts, body), "replay"),
                           (ts, slack.sign(SECRET, ts, body + b"x"), "bad_signature"),
                           (str(int(now[0]) + 301), "v0=00", "stale"),
                           ("12ab", "v0=00", "bad_timestamp"),
                           (None, None, "unsigned")):
        with pytest.raises(slack.SignatureRefused) as e:
            v.verify(ts_, sig, body)
        assert e.value.code == code
    ts2 = str(int(now[0]) + 299)                          # inside the window: fine
    v.verify(ts2, slack.sign(SECRET, ts2, body), body)


@pytest.mark.parametrize("body", [
    b"", b"payload=", b"payload=%5B%5D", b"payload=nonsense", b"a=1&" * 50,
    b"payload=" + urllib.parse.quote(json.dumps({"type": "block_actions", "actions": "x"})).encode(),
    b"payload=" + urllib.parse.quote(json.dumps({"type": "block_actions", "user": "U1",
                                                 "actions": [{"action_id": slack.APPROVE_ACTION,
                                                              "value": ["h-x"]}],
                                                 "state": [1, 2], "response_url": 7})).encode(),
])
def test_malformed_signed_payloads_are_ignored_not_fatal(body: bytes) -> None:
    assert isinstance(slack.parse_action(body), str)


def test_callback_endpoint_survives_hostile_bodies() -> None:
    async def scenario() -> None:
        async with Harness() as h:
            for body in (b"a=1&" * 50, b"payload=%7B%22type%22%3A1%7D", b"\xff\xfe" * 100):
                status, answer = await h.send(body)
                assert status == 200 and "ignored" in answer
            url = f"http://127.0.0.1:{h.callback.port}{chat.CALLBACK_PATH}"
            async with h.http.post(url, data=b"x" * (slack.MAX_BODY + 1)) as resp:
                assert resp.status == 413                 # too large, refused before parsing
            status, _ = await h.send(payload("h-x", "U0ALICE01", True, "ok", ""))
            assert status == 200                          # still serving
    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_outgoing_posts_carry_the_proxy_mark() -> None:
    import socket as so
    factory = chat.marked_socket_factory(0x4547)
    sock = factory((so.AF_INET, so.SOCK_STREAM, so.IPPROTO_TCP, "", ("127.0.0.1", 1)))
    try:
        assert sock.getsockopt(so.SOL_SOCKET, so.SO_MARK) == 0x4547
    finally:
        sock.close()


def test_process_chosen_text_cannot_mention_or_link_in_slack() -> None:
    import dataclasses
    from egressguard.approvals.holds import HoldEvent
    from egressguard.model import Decision
    reg = HoldRegistry(["uid:0"], 5.0, "deny", lambda n, f: None)

    async def scenario() -> None:
        f = make_flow(OWNER, "f-evil")
        f.process = dataclasses.replace(f.process, exe="/tmp/<!channel>&<https://x|click>")
        w = reg.open(f, VERDICT, [DET])
        msg = json.dumps(slack.request_message(reg.get(w.id)))
        assert "<!channel>" not in msg and "&lt;!channel&gt;&amp;&lt;https://x|click&gt;" in msg
        d = Decision(approved=True, by_uid=0, by_user="root", reason="<!here> ok")
        out = slack.outcome_message(HoldEvent("decided", reg.get(w.id), d, 0.0))
        assert "<!here>" not in json.dumps(out)
        reg.close()
    asyncio.run(scenario())
