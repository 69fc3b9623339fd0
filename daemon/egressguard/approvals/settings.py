"""The configuration keys for team approvals, parsed with config.py's checker.

config.py owns the file walk and the `_Checker` that records every problem with file, line and
field; this module owns the approvals keys added for teams (inline wait and request TTL, grants,
break-glass, identities for remote and chat approvers, the mTLS listener, chat notifiers) and
a rule's `approvals: {required, approvers}`. It is called from config.py, so `egressguard
check` reports these problems like any other.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from egressguard.approvals.quorum import QuorumSpec
from egressguard.policy.rules import UserRef

# Keys this module reads from the `approvals` mapping (config.py adds them to APPROVAL_KEYS).
SETTINGS_KEYS = ("inline_wait", "request_ttl", "grant_ttl", "max_grant_ttl", "break_glass",
                 "identities", "remote", "chat")
IDENTITY_KEYS = ("cert", "slack", "user")
REMOTE_KEYS = ("listen", "cert", "key", "ca")
CHAT_KEYS = ("slack", "webhook", "retries")
SLACK_KEYS = ("webhook_url", "signing_secret_file", "callback_listen")
WEBHOOK_KEYS = ("url",)
QUORUM_KEYS = ("required", "approvers")


@dataclass(frozen=True)
class RemoteConfig:
    """`approvals.remote`: the gRPC service over mTLS on TCP for remote approvers."""

    listen: tuple[str, int]
    cert: str            # the server's certificate chain (PEM)
    key: str             # its private key (PEM)
    ca: str              # the CA(s) that sign approvers' client certificates (PEM)


@dataclass(frozen=True)
class SlackConfig:
    webhook_url: str                    # where new requests are posted (incoming webhook)
    signing_secret_file: str            # Slack's signing secret, read at start
    callback_listen: tuple[str, int]    # the interactive-callback HTTP endpoint


@dataclass(frozen=True)
class ChatConfig:
    slack: SlackConfig | None = None
    webhook_url: str | None = None      # generic JSON webhook (Teams, PagerDuty, ...)
    retries: int = 5


@dataclass(frozen=True)
class IdentityMap:
    """Remote principals -> local users: certificate SAN/CN and Slack user ids."""

    certs: Mapping[str, UserRef] = field(default_factory=lambda: MappingProxyType({}))
    slack: Mapping[str, UserRef] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class ApprovalSettings:
    inline_wait: float | None = None    # None: approvals.timeout (the older name)
    request_ttl: float = 3600.0
    grant_ttl: float = 900.0
    max_grant_ttl: float = 8 * 3600.0
    break_glass: bool = False
    identities: IdentityMap = IdentityMap()
    remote: RemoteConfig | None = None
    chat: ChatConfig | None = None


def parse_settings(c: Any, m: Mapping[str, Any]) -> ApprovalSettings:
    """Read the team keys from the `approvals` mapping `m` (key -> YNode)."""
    d = ApprovalSettings()
    dur = {}
    for key in ("inline_wait", "request_ttl", "grant_ttl", "max_grant_ttl"):
        if key in m:
            dur[key] = c.duration(m[key], f"approvals.{key}")
    if "inline_wait" in m and "timeout" in m:
        c.issue(m["timeout"].line, "approvals.timeout",
                "give inline_wait or its older name timeout, not both")
    max_grant = dur.get("max_grant_ttl") or d.max_grant_ttl
    grant = dur.get("grant_ttl") or min(d.grant_ttl, max_grant)
    if "grant_ttl" in m and dur.get("grant_ttl") and grant > max_grant:
        c.issue(m["grant_ttl"].line, "approvals.grant_ttl",
                f"{m['grant_ttl'].plain()!r} is longer than approvals.max_grant_ttl")
    inline = dur.get("inline_wait")
    ttl = dur.get("request_ttl") or d.request_ttl
    if "request_ttl" in m and dur.get("request_ttl") and inline and ttl < inline:
        c.issue(m["request_ttl"].line, "approvals.request_ttl",
                "must be at least approvals.inline_wait (a request outlives its connection)")
    break_glass = d.break_glass
    if "break_glass" in m:
        v = m["break_glass"].value
        if not isinstance(v, bool):
            c.issue(m["break_glass"].line, "approvals.break_glass",
                    f"{m['break_glass'].plain()!r} is not true or false")
        else:
            break_glass = v
    return ApprovalSettings(
        inline_wait=inline, request_ttl=ttl, grant_ttl=grant, max_grant_ttl=max_grant,
        break_glass=break_glass,
        identities=_identities(c, m.get("identities")),
        remote=_remote(c, m["remote"]) if "remote" in m else None,
        chat=_chat(c, m["chat"]) if "chat" in m else None)


def parse_quorum(c: Any, node: Any, f: str) -> QuorumSpec | None:
    """A rule's `approvals: {required: N, approvers: [...]}`."""
    m = c.mapping(node, f, QUORUM_KEYS)
    if m is None:
        return None
    required = 1
    if "required" in m:
        v = m["required"].value
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            c.issue(m["required"].line, f"{f}.required",
                    f"{m['required'].plain()!r} is not a number of approvers (1 or more)")
            return None
        required = v
    approvers: tuple[str, ...] | None = None
    if "approvers" in m:
        resolved = [c.user(n, ff) for n, ff in c.items(m["approvers"], f"{f}.approvers")]
        refs = [u for u in resolved if u]
        approvers = tuple(f"uid:{r.uid}" for r in refs)
        # A name that is not a user here is reported on its own; counting without it would
        # add a misleading "could never be met" that goes away once the users exist.
        if len(refs) == len(resolved) and len(set(approvers)) < required:
            c.issue(m["approvers"].line, f"{f}.approvers",
                    f"lists {len(set(approvers))} different approver(s) but required is "
                    f"{required}: the quorum could never be met")
    return QuorumSpec(required=required, approvers=approvers)


def check_quorum_fits(c: Any, line: int, f: str, quorum: QuorumSpec,
                      global_approvers: int) -> None:
    """A quorum that relies on the global list must fit in it."""
    if quorum.approvers is None and quorum.required > global_approvers:
        c.issue(line, f"{f}.required",
                f"{quorum.required} approvals needed but approvals.approvers lists "
                f"{global_approvers}: the quorum could never be met")


# -- sections ----------------------------------------------------------------------------------

def _identities(c: Any, node: Any) -> IdentityMap:
    certs: dict[str, UserRef] = {}
    slack: dict[str, UserRef] = {}
    for n, f in c.items(node, "approvals.identities", empty_ok=True):
        m = c.mapping(n, f, IDENTITY_KEYS)
        if m is None:
            continue
        kinds = [k for k in ("cert", "slack") if k in m]
        if len(kinds) != 1:
            c.issue(n.line, f, "give exactly one of cert (certificate SAN or CN) or slack "
                               "(Slack user id, e.g. U024BE7LH)")
            continue
        if "user" not in m:
            c.issue(n.line, f"{f}.user", "required: the local user this identity acts as")
            continue
        user = c.user(m["user"], f"{f}.user")
        principal = c.string(m[kinds[0]], f"{f}.{kinds[0]}")
        if user is None or not principal:
            continue
        table = certs if kinds[0] == "cert" else slack
        if kinds[0] == "slack" and not re.fullmatch(r"[UW][A-Z0-9]{2,}", principal):
            c.issue(m["slack"].line, f"{f}.slack",
                    f"{principal!r} is not a Slack user id (like U024BE7LH; not an e-mail)")
            continue
        if principal in table:
            c.issue(m[kinds[0]].line, f"{f}.{kinds[0]}", f"{principal!r} is listed twice")
            continue
        table[principal] = user
    return IdentityMap(MappingProxyType(certs), MappingProxyType(slack))


def _remote(c: Any, node: Any) -> RemoteConfig | None:
    m = c.mapping(node, "approvals.remote", REMOTE_KEYS)
    if m is None:
        return None
    missing = [k for k in REMOTE_KEYS if k not in m]
    for k in missing:
        c.issue(node.line, f"approvals.remote.{k}", "required for the mTLS listener")
    listen = address(c, m["listen"], "approvals.remote.listen") if "listen" in m else None
    paths = {k: c.path(m[k], f"approvals.remote.{k}") for k in ("cert", "key", "ca") if k in m}
    if missing or listen is None or None in paths.values():
        return None
    return RemoteConfig(listen=listen, cert=paths["cert"], key=paths["key"], ca=paths["ca"])


def _chat(c: Any, node: Any) -> ChatConfig | None:
    m = c.mapping(node, "approvals.chat", CHAT_KEYS)
    if m is None:
        return None
    slack = None
    if "slack" in m:
        s = c.mapping(m["slack"], "approvals.chat.slack", SLACK_KEYS)
        if s is not None:
            missing = [k for k in ("webhook_url", "signing_secret_file", "callback_listen")
                       if k not in s]
            for k in missing:
                c.issue(m["slack"].line, f"approvals.chat.slack.{k}", "required")
            if not missing:
                url = _url(c, s["webhook_url"], "approvals.chat.slack.webhook_url")
                secret = c.path(s["signing_secret_file"], "approvals.chat.slack.signing_secret_file")
                listen = address(c, s["callback_listen"], "approvals.chat.slack.callback_listen")
                if url and secret and listen:
                    slack = SlackConfig(url, secret, listen)
    webhook = None
    if "webhook" in m:
        w = c.mapping(m["webhook"], "approvals.chat.webhook", WEBHOOK_KEYS)
        if w is not None:
            if "url" not in w:
                c.issue(m["webhook"].line, "approvals.chat.webhook.url", "required")
            else:
                webhook = _url(c, w["url"], "approvals.chat.webhook.url")
    retries = 5
    if "retries" in m:
        v = m["retries"].value
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 100:
            c.issue(m["retries"].line, "approvals.chat.retries",
                    f"{m['retries'].plain()!r} is not a number of retries (0-100)")
        else:
            retries = v
    return ChatConfig(slack=slack, webhook_url=webhook, retries=retries)


def address(c: Any, node: Any, f: str) -> tuple[str, int] | None:
    """'ip:port' or '[ip6]:port' (any address: remote approvers are not on loopback)."""
    s = c.string(node, f)
    if s is None:
        return None
    mt = re.fullmatch(r"\[([^\]]+)\]:(\d+)", s) or re.fullmatch(r"([^:\[\]]+):(\d+)", s)
    try:
        ip = ipaddress.ip_address(mt.group(1)) if mt else None
    except ValueError:
        ip = None
    if mt is None or ip is None or not 1 <= int(mt.group(2)) <= 65535:
        c.issue(node.line, f, f"{s!r} is not an address:port like '127.0.0.1:9443' or "
                              "'[::1]:9443'")
        return None
    return str(ip), int(mt.group(2))


def _url(c: Any, node: Any, f: str) -> str | None:
    s = c.string(node, f)
    if s is None:
        return None
    u = urllib.parse.urlsplit(s)
    if u.scheme not in ("http", "https") or not u.hostname:
        c.issue(node.line, f, f"{s!r} is not an http(s) URL")
        return None
    return s
