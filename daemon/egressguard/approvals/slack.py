"""Slack: the Block Kit message for a request, request signature checks, interactive callbacks.

Slack signs every interactive request with the app's signing secret: the header
`X-Slack-Signature` is `v0=` + hex(HMAC-SHA256(secret, "v0:" + X-Slack-Request-Timestamp + ":" +
raw body)). We recompute it over the raw bytes (before any parsing), compare in constant time
(`hmac.compare_digest`), refuse timestamps more than 5 minutes from our clock (a captured
request cannot be replayed later), and remember each accepted signature for that window (it
cannot be replayed sooner either).

The message carries the request's masked evidence (the same previews `egressctl pending`
shows), a Reason input and Approve / Deny buttons whose only value is the opaque request id.
The Slack user id (never the e-mail, which a workspace admin can change) is mapped through
`approvals.identities` to a local user; that uid is what the registry checks, so the owner of a
flow cannot approve it from Slack either. Outcomes go back through the payload's
`response_url`: refusals as an ephemeral message to the person, decisions by replacing the
original message.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.parse
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from egressguard.approvals.holds import ApprovalRequest, HoldEvent

MAX_SKEW_S = 300            # Slack's recommended window
MAX_BODY = 64 * 1024
REPLAY_MEMORY = 10_000
REASON_BLOCK, REASON_ACTION = "egressguard_reason", "reason"
APPROVE_ACTION, DENY_ACTION = "egressguard_approve", "egressguard_deny"


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The `X-Slack-Signature` value for `body` sent at `timestamp`."""
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret, base, hashlib.sha256).hexdigest()


class SignatureRefused(Exception):
    """Why a callback is not trusted; `code` for the audit log."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class SignatureVerifier:
    """v0 signature, timestamp window and replay cache (see the module docstring)."""

    def __init__(self, secret: bytes, clock: Any = time.time) -> None:
        if not secret:
            raise ValueError("the Slack signing secret is empty")
        self._secret = secret
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()

    def verify(self, timestamp: str | None, signature: str | None, body: bytes) -> None:
        if not timestamp or not signature:
            raise SignatureRefused("unsigned", "missing X-Slack-Request-Timestamp or "
                                               "X-Slack-Signature")
        if not timestamp.isdigit():
            raise SignatureRefused("bad_timestamp", "the timestamp is not a number")
        now = self._clock()
        if abs(now - int(timestamp)) > MAX_SKEW_S:
            raise SignatureRefused("stale", "the request timestamp is more than 5 minutes off")
        expected = sign(self._secret, timestamp, body)
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise SignatureRefused("bad_signature", "the signature does not match")
        self._forget(now)
        if signature in self._seen:
            raise SignatureRefused("replay", "this signed request was already received")
        self._seen[signature] = now

    def _forget(self, now: float) -> None:
        while self._seen and (now - next(iter(self._seen.values())) > 2 * MAX_SKEW_S
                              or len(self._seen) > REPLAY_MEMORY):
            self._seen.popitem(last=False)


@dataclass(frozen=True)
class Action:
    """A button press from a verified payload."""

    approve: bool
    request_id: str
    slack_user: str
    reason: str
    response_url: str


def parse_action(body: bytes) -> Action | str:
    """The button press in an interactive payload, or why it is not one we handle. Never
    raises: a signed body can still be malformed."""
    try:
        form = urllib.parse.parse_qs(body.decode("utf-8", errors="replace"), max_num_fields=8)
        payload = json.loads(form.get("payload", [""])[0])
    except ValueError:
        return "the body has no JSON payload"
    if not isinstance(payload, dict) or payload.get("type") != "block_actions":
        return "not a block_actions payload"
    actions = payload.get("actions")
    act = actions[0] if isinstance(actions, list) and actions else None
    if not isinstance(act, dict) or act.get("action_id") not in (APPROVE_ACTION, DENY_ACTION):
        return "not an egressguard button"
    user = _dig(payload, "user", "id")
    if not isinstance(user, str) or not user:
        return "no Slack user id in the payload"
    reason = _dig(payload, "state", "values", REASON_BLOCK, REASON_ACTION, "value")
    response_url = payload.get("response_url")
    return Action(approve=act["action_id"] == APPROVE_ACTION, request_id=str(act.get("value", "")),
                  slack_user=user, reason=reason if isinstance(reason, str) else "",
                  response_url=response_url if isinstance(response_url, str) else "")


def _dig(obj: Any, *keys: str) -> Any:
    """obj[k1][k2]... or None when any level is missing or not a mapping."""
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


# -- messages ----------------------------------------------------------------------------------

def _esc(text: object) -> str:
    """Slack mrkdwn escaping. The held process chose much of what is shown (its executable's
    path, the Host it sent): `<!channel>` or `<https://evil|click>` must show as text, never
    page a channel or become a link."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _facts(req: ApprovalRequest) -> list[dict[str, Any]]:
    p, d = req.flow.process, req.flow.destination
    where = f"{d.host}:{d.port} ({d.ip})" if d.host else f"{d.ip}:{d.port}"
    data = "; ".join(f"{x.detector} `{x.preview}`" for x in req.detections) or \
        "(held by a destination rule)"
    facts = [("Who", f"{p.user or '?'} (uid {p.uid})"),
             ("Process", f"pid {p.pid} {p.exe or p.comm or '?'}"),
             ("Destination", where), ("Data", data),
             ("Rule", req.verdict.rule),
             ("Approvals", f"{len(req.votes)} of {req.required}"
                           + (f", seen {req.count}x" if req.count > 1 else ""))]
    return [{"type": "mrkdwn", "text": f"*{k}*\n{_esc(v)}"} for k, v in facts]


def request_message(req: ApprovalRequest) -> dict[str, Any]:
    """Block Kit message for a new request: facts, a Reason box, Approve and Deny."""
    return {
        "text": f"egressguard: approval needed for {req.id} ({req.verdict.rule})",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text",
                                        "text": f"Approval needed: {req.id}"}},
            {"type": "section", "fields": _facts(req)},
            {"type": "input", "block_id": REASON_BLOCK,
             "label": {"type": "plain_text", "text": "Reason (required, goes to the audit log)"},
             "element": {"type": "plain_text_input", "action_id": REASON_ACTION}},
            {"type": "actions", "block_id": "egressguard_decide", "elements": [
                {"type": "button", "action_id": APPROVE_ACTION, "style": "primary",
                 "text": {"type": "plain_text", "text": "Approve once"}, "value": req.id},
                {"type": "button", "action_id": DENY_ACTION, "style": "danger",
                 "text": {"type": "plain_text", "text": "Deny"}, "value": req.id}]},
        ],
    }


def outcome_message(event: HoldEvent) -> dict[str, Any]:
    """Replaces the original message once something happened to the request."""
    req, d = event.hold, event.decision
    if event.kind == "voted" and d is not None:
        head = _esc(f"{req.id}: approval {len(req.votes)} of {req.required} by {d.by_user}: "
                    f"{d.reason}")
        blocks = request_message(req)["blocks"]
        blocks[0] = {"type": "section", "text": {"type": "mrkdwn", "text": head}}
        return {"replace_original": True, "text": head, "blocks": blocks}
    if d is None:
        text = f"{req.id}: {event.kind}"
    elif event.kind == "expired":
        text = f"{req.id} expired: no decision in time"
    else:
        verb = "approved" if d.approved else "denied"
        text = f"{req.id} {verb} by {d.by_user}: {d.reason}" + (
            f" (scope {d.scope}, grant {d.grant_id})" if d.grant_id else "")
    text = _esc(text)
    return {"replace_original": True, "text": text,
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}},
                       {"type": "section", "fields": _facts(req)}]}


def ephemeral(text: str) -> dict[str, Any]:
    return {"response_type": "ephemeral", "replace_original": False, "text": text}


def webhook_event(event: HoldEvent) -> dict[str, Any]:
    """The generic JSON webhook body (Teams, PagerDuty, anything): masked evidence only."""
    req, d = event.hold, event.decision
    p, dest = req.flow.process, req.flow.destination
    body: dict[str, Any] = {
        "source": "egressguard",
        "event": f"approval.{event.kind}",
        "time": event.time,
        "request": {
            "id": req.id, "rule": req.verdict.rule, "reason": req.verdict.reason,
            "state": req.state, "count": req.count, "required": req.required,
            "votes": len(req.votes), "expires_in_s": round(req.expires_in_s(), 1),
            "process": {"pid": p.pid, "uid": p.uid, "user": p.user, "exe": p.exe,
                        "unit": p.systemd_unit, "container": p.container_id},
            "destination": dest.to_dict(),
            "detections": [{"detector": x.detector, "class": x.cls, "preview": x.preview,
                            "severity": x.severity} for x in req.detections],
            "approve_with": f"egressctl approve {req.id} --reason TEXT",
        },
    }
    if d is not None:
        body["decision"] = d.to_dict()
    return body

