"""Remote approvers over mutual TLS: real grpc.aio server, certificates made by the test, real
`egressctl --server` processes. The identity is the client certificate's SAN/CN mapped through
approvals.identities; unknown identities and foreign CAs are refused; the owner of a flow
cannot approve it remotely either."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from egressguard.approvals.holds import HoldRegistry
from egressguard.approvals.remote import start_remote_server
from egressguard.approvals.settings import RemoteConfig
from egressguard.policy.rules import UserRef
from tests.test_approvals_grpc import DET, VERDICT, ctl, make_flow
from tests.tools.certs import TestCA

OWNER = 4100          # the agent's uid
ALICE = 4101


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Any]:
    ca = TestCA(tmp_path / "pki")
    other = TestCA(tmp_path / "other", name="someone else's CA")
    return {
        "ca": ca,
        "server": ca.issue("server", "egressguard", dns=["localhost"], ips=["127.0.0.1"],
                           server=True),
        "alice": ca.issue("alice", "Alice", dns=["alice.corp.example"]),
        "owner": ca.issue("owner", "agent-owner.corp.example"),        # CN only
        "stranger": ca.issue("stranger", "stranger.corp.example", dns=["stranger.corp.example"]),
        "forged": other.issue("forged", "Alice", dns=["alice.corp.example"]),
    }


async def remote_ctl(port: int, pki: dict[str, Any], who: str, *args: str) -> tuple[int, str, str]:
    cert = pki[who]
    return await ctl("/nonexistent.sock", "--server", f"127.0.0.1:{port}", "--cert",
                     str(cert.cert), "--key", str(cert.key), "--ca", str(pki["ca"].pem), *args)


def test_mtls_identity_approvals_and_refusals(pki: dict[str, Any]) -> None:
    async def scenario() -> None:
        events: list[tuple[str, dict[str, Any]]] = []
        registry = HoldRegistry(["uid:%d" % ALICE, "uid:%d" % OWNER], 30.0, "deny",
                                lambda n, f: events.append((n, f)), request_ttl_s=60.0)
        certs = {"alice.corp.example": UserRef("alice", ALICE, "alice"),
                 "agent-owner.corp.example": UserRef(f"uid:{OWNER}", OWNER)}
        flows = [make_flow(OWNER, "f-remote-1")]
        cfg = RemoteConfig(("127.0.0.1", 0), str(pki["server"].cert), str(pki["server"].key),
                           str(pki["ca"].pem))
        server = await start_remote_server(cfg, certs, registry, lambda: flows)
        try:
            waiter = registry.open(flows[0], VERDICT, [DET])
            rc, out, err = await remote_ctl(server.port, pki, "alice", "pending", "--json")
            assert rc == 0, err
            assert [json.loads(line)["id"] for line in out.splitlines()] == [waiter.id]

            rc, out, err = await remote_ctl(server.port, pki, "owner", "approve", waiter.id,
                                            "--reason", "mine")
            assert rc == 1 and "cannot decide on its own hold" in err, (out, err)

            rc, out, err = await remote_ctl(server.port, pki, "stranger", "pending")
            assert rc == 1 and "maps to no approver" in err, err
            refused = [f for n, f in events if n == "approval.refused"
                       and f.get("code") == "unknown_identity"]
            assert refused and refused[0]["who"]["channel"] == "mtls"

            rc, out, err = await remote_ctl(server.port, pki, "forged", "pending")
            assert rc == 3, (rc, out, err)          # a foreign CA never gets a handshake

            rc, out, err = await remote_ctl(server.port, pki, "alice", "approve", waiter.id,
                                            "--reason", "checked remotely")
            assert rc == 0, err
            assert "as alice (uid %d)" % ALICE in out
            assert (await waiter.wait()).approved
            decision = [f for n, f in events if n == "flow.decision"][-1]
            assert decision["who"] == {"uid": ALICE, "user": "alice", "pid": 0,
                                       "channel": "mtls", "principal": "alice.corp.example"}
            self_refusal = [f for n, f in events if n == "approval.refused"
                            and f.get("code") == "self_approval"]
            assert self_refusal[0]["who"]["principal"] == "agent-owner.corp.example"
        finally:
            registry.close()
            await server.stop()

    asyncio.run(asyncio.wait_for(scenario(), 90))


def test_server_refuses_to_start_without_readable_certificates(tmp_path: Path) -> None:
    from egressguard.errors import EnvironmentProblem

    async def scenario() -> None:
        registry = HoldRegistry(["uid:0"], 5.0, "deny", lambda n, f: None)
        cfg = RemoteConfig(("127.0.0.1", 0), str(tmp_path / "missing.pem"),
                           str(tmp_path / "missing.key"), str(tmp_path / "ca.pem"))
        with pytest.raises(EnvironmentProblem, match=r"approvals.remote.key"):
            await start_remote_server(cfg, {}, registry, lambda: [])
    asyncio.run(scenario())


BOB = 4102            # mapped by his certificate, but not an approver


def test_ledger_over_mtls_follows_the_certificate_identity(pki: dict[str, Any],
                                                           tmp_path: Path) -> None:
    """Usage and ListLedgerFlows over mTLS: the same visibility as the Unix socket, with the
    uid from the certificate mapping. An approver sees every flow, a mapped non-approver only
    his own, an unmapped certificate nothing (refused)."""
    import time

    from egressguard.ledger.listener import LedgerListener
    from egressguard.ledger.store import LedgerStore
    from egressguard.model import Destination, FlowInfo, Process

    store = LedgerStore(str(tmp_path / "ledger.db"), retention_s=3600)
    store.start()
    listen = LedgerListener(store)
    for flow_id, uid, user, up in (("f-own-1", OWNER, "agent", 100), ("f-own-2", OWNER, "agent", 20),
                                   ("f-bob", BOB, "bob", 7)):
        listen("flow.close", FlowInfo(flow_id, Process(pid=9, uid=uid, exe="/usr/bin/python3",
                                                       user=user),
                                      Destination("127.10.0.1", 443, "api.openai.com", "tcp",
                                                  "openai"), time.time(), bytes_delivered=up,
                                      bytes_down=1), {})
    assert store.flush(10)
    pki["bob"] = pki["ca"].issue("bob", "bob.corp.example", dns=["bob.corp.example"])

    async def scenario() -> None:
        registry = HoldRegistry(["uid:%d" % ALICE], 30.0, "deny", lambda n, f: None)
        certs = {"alice.corp.example": UserRef("alice", ALICE, "alice"),
                 "bob.corp.example": UserRef("bob", BOB, "bob")}
        cfg = RemoteConfig(("127.0.0.1", 0), str(pki["server"].cert), str(pki["server"].key),
                           str(pki["ca"].pem))
        server = await start_remote_server(cfg, certs, registry, lambda: [],
                                           ledger_path=store.path)
        bare = await start_remote_server(cfg, certs, registry, lambda: [])
        try:
            rc, out, err = await remote_ctl(server.port, pki, "alice", "usage", "--by", "user",
                                            "--json")
            assert rc == 0, err
            rows = {r["key"]: r for r in map(json.loads, out.splitlines())}
            assert set(rows) == {"agent", "bob"} and rows["agent"]["bytes_up"] == 120
            rc, out, err = await remote_ctl(server.port, pki, "alice", "flows", "--since", "1h",
                                            "--json")
            assert rc == 0, err
            assert {json.loads(x)["flow_id"] for x in out.splitlines()} == {
                "f-own-1", "f-own-2", "f-bob"}

            rc, out, err = await remote_ctl(server.port, pki, "bob", "usage", "--by", "user",
                                            "--json")
            assert rc == 0, err
            assert [(r["key"], r["bytes_up"]) for r in map(json.loads, out.splitlines())] == [
                ("bob", 7)]
            rc, out, err = await remote_ctl(server.port, pki, "bob", "flows", "--since", "1h",
                                            "--json")
            assert rc == 0, err
            assert [json.loads(x)["flow_id"] for x in out.splitlines()] == ["f-bob"]

            rc, out, err = await remote_ctl(server.port, pki, "stranger", "usage")
            assert rc == 1 and "maps to no approver" in err and "agent" not in out, (out, err)

            rc, out, err = await remote_ctl(bare.port, pki, "alice", "usage")
            assert rc == 1 and "ledger" in err and "not served" in err, (out, err)
        finally:
            registry.close()
            await server.stop()
            await bare.stop()

    try:
        asyncio.run(asyncio.wait_for(scenario(), 90))
    finally:
        store.close()
