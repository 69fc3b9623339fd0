"""Build the approvals side of the daemon from its configuration: the registry (with its store
and per-rule quorums) and the optional remote channels (mTLS listener, chat). daemon.py calls
these two functions and stops what `start_channels` returns; nothing else there knows about
team approvals.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from egressguard.approvals.holds import HoldRegistry
from egressguard.approvals.quorum import QuorumSpec
from egressguard.approvals.store import DB_NAME, ApprovalStore
from egressguard.model import FlowInfo


def build_registry(config: Any, on_event: Callable[[str, dict[str, Any]], None],
                   use_store: bool = True,
                   redact: Callable[[str], str] | None = None) -> HoldRegistry:
    """The daemon's HoldRegistry. Approver names were resolved to uids when the policy was
    loaded: decide by uid. Call `registry.start()` inside the loop once the audit log runs."""
    a = config.approvals
    quorums = quorums_of(config)
    store = ApprovalStore(os.path.join(config.state_dir, DB_NAME)) if use_store else None
    return HoldRegistry([f"uid:{ref.uid}" for ref in a.approvers], a.timeout, a.on_timeout,
                        on_event, request_ttl_s=a.team.request_ttl, quorums=quorums,
                        break_glass=a.team.break_glass, grant_ttl_s=a.team.grant_ttl,
                        max_grant_ttl_s=a.team.max_grant_ttl, store=store, redact=redact)


def quorums_of(config: Any) -> dict[str, QuorumSpec]:
    """rule name -> its quorum, for the rules that set `approvals:` (at start and on reload)."""
    return {r.name: r.approvals for r in config.rules if isinstance(r.approvals, QuorumSpec)}


class Channels:
    """The running remote channels; `stop()` ends them all."""

    def __init__(self) -> None:
        self.stoppers: list[Callable[[], Any]] = []
        self.remote_port = 0
        self.slack_port = 0
        self.notifier: Any = None

    async def stop(self) -> None:
        for stop in reversed(self.stoppers):
            await stop()
        self.stoppers.clear()


async def start_channels(config: Any, registry: HoldRegistry,
                         flows_provider: Callable[[], list[FlowInfo]],
                         on_event: Callable[[str, dict[str, Any]], None],
                         ledger_path: str | None = None) -> Channels:
    """Start the mTLS listener (serving the ledger at `ledger_path` too) and the chat
    notifier/callback when configured."""
    team = config.approvals.team
    channels = Channels()
    try:
        if team.remote is not None:
            from egressguard.approvals.remote import start_remote_server
            remote = await start_remote_server(team.remote, team.identities.certs, registry,
                                               flows_provider, ledger_path=ledger_path)
            channels.stoppers.append(remote.stop)
            channels.remote_port = remote.port
        if team.chat is not None:
            from egressguard.approvals.chat import ChatNotifier, SlackCallback, read_secret
            notifier = ChatNotifier(team.chat, registry, on_event, mark=config.proxy.mark)
            await notifier.start()
            channels.stoppers.append(notifier.stop)
            channels.notifier = notifier
            if team.chat.slack is not None:
                callback = SlackCallback(read_secret(team.chat.slack.signing_secret_file),
                                         team.identities.slack, registry, notifier)
                await callback.start(*team.chat.slack.callback_listen)
                channels.stoppers.append(callback.stop)
                channels.slack_port = callback.port
    except BaseException:
        await channels.stop()
        raise
    return channels
