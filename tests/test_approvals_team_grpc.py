"""The team RPCs over the real Unix socket with real egressctl processes: quorum votes on the
Watch stream, approve scopes, ListGrants and Revoke, and their refusals."""

from __future__ import annotations

import asyncio
import json
import os

from egressguard.approvals.quorum import QuorumSpec
from tests.test_approvals_grpc import (NOBODY, Daemon, ctl, ctl_stream, readline, run,
                                       sockdir)  # noqa: F401  (sockdir is a fixture)


def test_votes_grants_and_revoke_over_the_socket(sockdir: str) -> None:
    async def scenario() -> None:
        sock = os.path.join(sockdir, "a.sock")
        quorum = {"hold-secrets": QuorumSpec(required=2, approvers=("uid:0", f"uid:{NOBODY}"))}
        async with Daemon(sock, ["root", f"uid:{NOBODY}"], request_ttl_s=60.0,
                          quorums=quorum, max_grant_ttl_s=120.0) as d:
            owner = 4300
            waiter = d.hold(owner, "f-team-1")
            async with ctl_stream(sock, "watch", "--json") as watch:
                opened = json.loads(await readline(watch))
                assert opened["event"] == "opened" and opened["hold"]["required"] == 2
                rc, out, err = await ctl(sock, "approve", waiter.id, "--reason", "one",
                                         "--scope", "process", "--ttl", "1h")
                assert rc == 0 and "1 of 2" in out, err
                voted = json.loads(await readline(watch))
                assert voted["event"] == "voted" and voted["decision"]["votes"] == 1
                rc, out, err = await ctl(sock, "approve", waiter.id, "--reason", "two",
                                         "--scope", "process-destination", uid=NOBODY)
                assert rc == 0, err
                assert "scope process-destination" in out and "grant g-" in out
                assert "capped by approvals.max_grant_ttl" in out       # 1h asked, 2m max
                decided = json.loads(await readline(watch))
                assert decided["event"] == "decided"
                assert decided["decision"]["scope"] == "process-destination"
            assert (await waiter.wait()).approved
            rc, out, err = await ctl(sock, "grants", "--json")
            (grant,) = [json.loads(line) for line in out.splitlines()]
            assert grant["scope"] == "process-destination" and grant["process"]["uid"] == owner
            assert [a["user"] for a in grant["approvers"]] == ["root", "nobody"]
            # each approver's own vote, as pending shows it (not at 0.0, reason "", scope "")
            assert [(a["reason"], a["scope"]) for a in grant["approvers"]] == \
                [("one", "process"), ("two", "process-destination")]
            assert all(a["at"] >= grant["created_at"] - 60 and a["at"] > 0
                       for a in grant["approvers"])
            assert 0 < grant["expires_in_s"] <= 120
            rc, out, err = await ctl(sock, "grants", uid=owner)        # the owner sees its own
            assert rc == 0 and grant["id"] in out
            rc, out, err = await ctl(sock, "revoke", grant["id"], "--reason", "x", uid=owner)
            assert rc == 1 and "only approvers may revoke" in err
            rc, out, err = await ctl(sock, "revoke", grant["id"], "--reason", "done")
            assert rc == 0 and f"revoked {grant['id']}" in out
            rc, out, err = await ctl(sock, "revoke", grant["id"], "--reason", "again")
            assert rc == 1 and "no live grant" in err
            rc, out, err = await ctl(sock, "grants")
            assert out.strip() == "no grants"
            names = [n for n, _ in d.events]
            assert names.count("approval.vote") == 1 and "grant.revoke" in names
    run(scenario())
