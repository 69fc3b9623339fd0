"""Chat channels: post new requests to Slack and a generic JSON webhook, and take Slack's
interactive callbacks (Approve / Deny with a reason).

Notifications never block enforcement: a registry event only enqueues (bounded queue,
`put_nowait`), and one worker task posts with retries and exponential backoff. A notification
that still fails after `retries` is recorded (`chat.notify_failed`), as is one dropped because
the queue was full (`chat.notify_dropped`); the request itself is unaffected and stays
decidable through egressctl.

The callback endpoint (`POST /slack/interactive` on `approvals.chat.slack.callback_listen`)
answers 401 to anything whose signature, timestamp or freshness is wrong, and audits it as
`approval.refused` (channel slack). A verified button press is turned into an `Identity`
(Slack user id -> `approvals.identities` -> local uid) and handed to `HoldRegistry.decide`,
which applies every rule (approver, self-approval, reason, quorum). The outcome is sent back
through the payload's `response_url`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
from aiohttp import web

from egressguard.approvals import slack
from egressguard.approvals.holds import DECIDED, EXPIRED, OPENED, VOTED, DecisionRefused, \
    HoldEvent, HoldRegistry
from egressguard.approvals.peercred import Identity, user_name
from egressguard.approvals.settings import ChatConfig
from egressguard.errors import EnvironmentProblem
from egressguard.policy.rules import UserRef

log = logging.getLogger(__name__)

QUEUE_SIZE = 1000
POST_TIMEOUT_S = 10.0
BACKOFF_S = 0.5             # first retry delay; doubles, capped at BACKOFF_MAX_S
BACKOFF_MAX_S = 30.0
CALLBACK_PATH = "/slack/interactive"
_RESPONSE_URLS = 1000       # requests whose Slack message we can still update


def marked_socket_factory(mark: int) -> Callable[[Any], socket.socket]:
    """aiohttp socket factory: every outgoing socket carries SO_MARK = proxy.mark, so the probes
    never redirect the daemon's own posts into its proxy (it may run inside the cgroup it
    guards)."""

    def factory(addr_info: Any) -> socket.socket:
        family, type_, proto = addr_info[0], addr_info[1], addr_info[2]
        sock = socket.socket(family, type_, proto)
        try:
            if mark:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
        except OSError:
            sock.close()
            raise
        return sock
    return factory


class ChatNotifier:
    """Posts request events to the configured chat endpoints, with retries."""

    def __init__(self, cfg: ChatConfig, registry: HoldRegistry,
                 on_event: Callable[[str, dict[str, Any]], None], mark: int = 0) -> None:
        self.cfg = cfg
        self.mark = mark
        self.registry = registry
        self._on_event = on_event
        self._queue: asyncio.Queue[tuple[str, dict[str, Any], str]] = asyncio.Queue(QUEUE_SIZE)
        self._session: aiohttp.ClientSession | None = None
        self._worker: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self.response_urls: dict[str, str] = {}       # request id -> Slack response_url
        self.sent = 0
        self.failed = 0

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=POST_TIMEOUT_S),
            connector=aiohttp.TCPConnector(socket_factory=marked_socket_factory(self.mark)))
        self._worker = asyncio.create_task(self._run())
        self._unsubscribe = self.registry.subscribe(self._on_hold_event)

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        if self._session is not None:
            await self._session.close()

    def post(self, url: str, body: dict[str, Any], what: str) -> None:
        """Queue one POST; never blocks, never raises."""
        try:
            self._queue.put_nowait((url, body, what))
        except asyncio.QueueFull:
            self._record("chat.notify_dropped", {"what": what, "reason": "queue full"})

    def remember_response_url(self, request_id: str, url: str) -> None:
        if url:
            self.response_urls[request_id] = url
            while len(self.response_urls) > _RESPONSE_URLS:
                self.response_urls.pop(next(iter(self.response_urls)))

    # -- registry events -> posts ---------------------------------------------------------------
    def _on_hold_event(self, event: HoldEvent) -> None:
        if event.kind not in (OPENED, DECIDED, EXPIRED, VOTED):
            return
        rid = event.hold.id
        if self.cfg.webhook_url:
            self.post(self.cfg.webhook_url, slack.webhook_event(event), f"webhook {rid}")
        if self.cfg.slack is None:
            return
        if event.kind == OPENED:
            self.post(self.cfg.slack.webhook_url, slack.request_message(event.hold),
                      f"slack {rid}")
        elif rid in self.response_urls:
            self.post(self.response_urls[rid], slack.outcome_message(event), f"slack update {rid}")
            if event.kind != VOTED:
                self.response_urls.pop(rid, None)

    # -- the worker -----------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            url, body, what = await self._queue.get()
            await self._deliver(url, body, what)

    async def _deliver(self, url: str, body: dict[str, Any], what: str) -> None:
        assert self._session is not None
        delay, last = BACKOFF_S, ""
        for attempt in range(self.cfg.retries + 1):
            if attempt:
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)
            try:
                async with self._session.post(url, json=body) as resp:
                    if resp.status < 300:
                        self.sent += 1
                        return
                    last = f"HTTP {resp.status}"
                    if 400 <= resp.status < 500 and resp.status != 429:
                        break           # the endpoint refuses this body: retrying cannot help
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                last = exc.__class__.__name__
        self.failed += 1
        self._record("chat.notify_failed", {"what": what, "attempts": attempt + 1,
                                            "error": last, "host": _host(url)})

    def _record(self, name: str, fields: dict[str, Any]) -> None:
        log.warning("%s: %s", name, fields)
        try:
            self._on_event(name, fields)
        except Exception:  # noqa: BLE001
            log.exception("cannot record %s", name)


def _host(url: str) -> str:
    """The host only: webhook URLs carry secrets in their paths."""
    from urllib.parse import urlsplit
    return urlsplit(url).hostname or "?"


class SlackCallback:
    """The interactive-callback HTTP endpoint."""

    def __init__(self, secret: bytes, slack_ids: Mapping[str, UserRef],
                 registry: HoldRegistry, notifier: ChatNotifier) -> None:
        self.verifier = slack.SignatureVerifier(secret)
        self.slack_ids = slack_ids
        self.registry = registry
        self.notifier = notifier
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        app = web.Application(client_max_size=slack.MAX_BODY)
        app.router.add_post(CALLBACK_PATH, self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise EnvironmentProblem(
                f"cannot listen on {host}:{port} (approvals.chat.slack.callback_listen): "
                f"{exc.strerror or exc}") from None
        server = site._server  # noqa: SLF001 - the bound port when port 0 was asked for
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            self.verifier.verify(request.headers.get("X-Slack-Request-Timestamp"),
                                 request.headers.get("X-Slack-Signature"), body)
        except slack.SignatureRefused as refused:
            self.registry.record_refusal({
                "who": {"channel": "slack", "principal": "?"}, "attempted": "callback",
                "code": refused.code, "message": str(refused),
                "peer": request.remote or ""})
            return web.json_response({"error": str(refused)}, status=401)
        action = slack.parse_action(body)
        if isinstance(action, str):
            return web.json_response({"ignored": action})
        self.notifier.remember_response_url(action.request_id, action.response_url)
        ref = self.slack_ids.get(action.slack_user)
        if ref is None:
            message = (f"Slack user {action.slack_user} maps to no approver: add it to "
                       "approvals.identities")
            self.registry.record_refusal({
                "hold_id": action.request_id,
                "who": {"channel": "slack", "principal": action.slack_user},
                "attempted": "approve" if action.approve else "deny",
                "code": "unknown_identity", "message": message})
            self._tell(action, message)
            return web.json_response({"refused": "unknown_identity"})
        who = Identity(uid=ref.uid, gid=-1, pid=0, user=ref.name or user_name(ref.uid),
                       channel="slack", principal=action.slack_user)
        try:
            self.registry.decide(action.request_id, who, action.approve, action.reason)
        except DecisionRefused as e:
            hint = " Type it in the Reason box, then press the button again." \
                if e.code == "empty_reason" else ""
            self._tell(action, e.message + hint)
            return web.json_response({"refused": e.code})
        return web.json_response({"ok": True})

    def _tell(self, action: slack.Action, text: str) -> None:
        if action.response_url:
            self.notifier.post(action.response_url, slack.ephemeral(text),
                               f"slack reply {action.request_id}")


def read_secret(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            secret = f.read().strip()
    except OSError as exc:
        raise EnvironmentProblem(f"cannot read {path} (approvals.chat.slack.signing_secret_file):"
                                 f" {exc.strerror or exc}") from None
    if not secret:
        raise EnvironmentProblem(f"{path} (approvals.chat.slack.signing_secret_file) is empty")
    return secret
