"""Approvals for a team, on the registry itself (no sockets): inline wait, requests that
outlive connections, dedup, scopes and grants, revoke, quorum, break-glass, persistence."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from egressguard.approvals.holds import DecisionRefused, HoldRegistry, _remaining
from egressguard.approvals.peercred import Identity
from egressguard.approvals.quorum import QuorumSpec
from egressguard.approvals.store import ApprovalStore
from egressguard.model import Action, Destination, Detection, FlowInfo, Process, Verdict

ROOT = Identity(uid=0, gid=0, pid=100, user="root")
ALICE = Identity(uid=1000, gid=1000, pid=200, user="alice")
BOB = Identity(uid=1001, gid=1001, pid=300, user="bob")
CAROL = Identity(uid=1003, gid=1003, pid=500, user="carol")
AGENT_UID = 4000

HOLD = Verdict(action=Action.HOLD, rule="hold-secrets", reason="secret to unknown host")
PII_HOLD = Verdict(action=Action.HOLD, rule="hold-pii", reason="pii")


def det(fp: str = "fp:1a2b3c") -> Detection:
    return Detection(detector="secret.aws_access_key_id", cls="secret", start=10, end=30,
                     preview="AKIA************MPLE", fingerprint=fp)


_ids = iter(range(1, 10_000))


def flow(uid: int = AGENT_UID, ip: str = "127.30.0.1", exe: str = "/usr/bin/python3",
         pid: int = 4242) -> FlowInfo:
    return FlowInfo(flow_id=f"f-{next(_ids)}",
                    process=Process(pid=pid, uid=uid, exe=exe, user=f"u{uid}",
                                    cmdline=("python3", f"try-{pid}")),
                    destination=Destination(ip=ip, port=443, host="api.example.test"),
                    opened_at=time.time())


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, name: str, fields: dict[str, Any]) -> None:
        json.dumps(fields)                          # everything audited must serialise
        self.events.append((name, fields))

    def named(self, name: str) -> list[dict[str, Any]]:
        return [f for n, f in self.events if n == name]


def registry(rec: Recorder, **kw: Any) -> HoldRegistry:
    kw.setdefault("request_ttl_s", 30.0)
    return HoldRegistry(["root", "alice", "bob", "carol", f"uid:{AGENT_UID}"],
                        kw.pop("timeout_s", 5.0), kw.pop("on_timeout", "deny"), rec, **kw)


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 20))


# -- requests outlive connections ---------------------------------------------------------------

def test_inline_wait_refuses_the_connection_and_the_request_stays_pending() -> None:
    async def scenario() -> None:
        rec = Recorder()
        reg = registry(rec, timeout_s=0.2)
        waiter = reg.open(flow(), HOLD, [det()])
        t0 = time.monotonic()
        d = await waiter.wait()
        assert 0.15 <= time.monotonic() - t0 < 3
        assert d.timed_out and not d.approved and d.pending and d.request_id == waiter.id
        assert waiter.id in d.reason and "stays pending" in d.reason
        assert [r.id for r in reg.pending()] == [waiter.id]
        assert rec.named("flow.wait_expired")[0]["hold_id"] == waiter.id
        assert rec.named("flow.decision") == []
        reg.close()
    run(scenario())


def test_approve_once_after_the_client_gave_up_lets_the_next_identical_flow_through_once() -> None:
    async def scenario() -> None:
        rec = Recorder()
        reg = registry(rec, timeout_s=0.1)
        first = reg.open(flow(pid=1), HOLD, [det()])
        assert (await first.wait()).pending
        d = reg.decide(first.id, ALICE, True, "expected upload")
        assert d.approved and not d.pending and d.scope == "once"
        assert rec.named("flow.decision")[-1]["once_unused"] is True
        assert reg.pending() == []
        retry = reg.open(flow(pid=2), HOLD, [det()])            # a new process, same identity
        got = await retry.wait()
        assert got.approved and got.by_user == "alice"
        use = rec.named("approval.use")
        assert len(use) == 1 and use[0]["hold_id"] == first.id
        again = reg.open(flow(pid=3), HOLD, [det()])             # once means once
        assert not again.done and again.id != first.id
        reg.close()
    run(scenario())


def test_identical_flows_collapse_into_one_request_and_one_approval_releases_them() -> None:
    async def scenario() -> None:
        rec = Recorder()
        reg = registry(rec)
        seen: list[str] = []
        reg.subscribe(lambda e: seen.append(e.kind))
        waiters = [reg.open(flow(pid=10 + i), HOLD, [det()]) for i in range(5)]
        assert len({w.id for w in waiters}) == 1
        (req,) = reg.pending()
        assert req.count == 5 and len(req.waiters) == 5
        assert len(rec.named("flow.hold")) == 1 and len(rec.named("approval.repeat")) == 4
        assert seen == ["opened"]                               # one prompt, not five
        other = reg.open(flow(pid=20), HOLD, [det("fp:other")])  # other data: its own request
        assert other.id != waiters[0].id
        reg.decide(req.id, BOB, True, "batch ok")
        for w in waiters:
            assert (await w.wait()).approved
        assert rec.named("flow.decision")[-1]["released_flows"] == [w.flow.flow_id for w in waiters]
        assert not other.done
        reg.close()
    run(scenario())


def test_a_denial_stands_for_the_request_ttl() -> None:
    async def scenario() -> None:
        rec = Recorder()
        reg = registry(rec, timeout_s=0.1, request_ttl_s=0.4)
        w = reg.open(flow(), HOLD, [det()])
        reg.decide(w.id, ALICE, False, "not this key")
        assert not (await w.wait()).approved
        retry = reg.open(flow(), HOLD, [det()])
        assert retry.done and not (await retry.wait()).approved
        assert rec.named("approval.denied_retry")[0]["hold_id"] == w.id
        await asyncio.sleep(0.5)
        later = reg.open(flow(), HOLD, [det()])                  # asked again after the TTL
        assert not later.done and later.id != w.id
        reg.close()
    run(scenario())


def test_request_ttl_expires_pending_requests() -> None:
    async def scenario() -> None:
        rec = Recorder()
        reg = registry(rec, timeout_s=0.1, request_ttl_s=0.3)
        w = reg.open(flow(), HOLD, [det()])
        await w.wait()
        await asyncio.sleep(0.4)
        assert reg.pending() == []
        assert rec.named("flow.decision")[-1]["outcome"] == "expired"
        with pytest.raises(DecisionRefused) as e:
            reg.decide(w.id, ALICE, True, "late")
        assert e.value.code == "already_decided"
        reg.close()
    run(scenario())


# -- grants -------------------------------------------------------------------------------------

def test_process_destination_grant_answers_matching_holds_until_it_is_revoked() -> None:
    async def scenario() -> None:
        rec = Recorder()
        reg = registry(rec)
        w = reg.open(flow(), HOLD, [det()])
        d = reg.decide(w.id, ALICE, True, "deploy window", scope="process-destination",
                       ttl_s=600)
        assert (await w.wait()).approved and d.grant_id
        (grant,) = reg.grants()
        assert grant.scope == "process-destination" and 599 < grant.ttl_s <= 600
        assert rec.named("grant.create")[0]["grant_id"] == grant.id
        # another secret, same process identity and destination: passes, audited
        ok = reg.open(flow(pid=77), HOLD, [det("fp:new")])
        got = await ok.wait()
        assert got.approved and got.grant_id == grant.id and got.scope == "process-destination"
        use = rec.named("grant.use")[-1]
        assert use["grant_id"] == grant.id and use["detections"][0]["fingerprint"] == "fp:new"
        assert use["uses"] == 1
        # outside the scope: another destination, another user, another rule
        for f, v in ((flow(ip="127.30.0.2"), HOLD), (flow(uid=4001), HOLD), (flow(), PII_HOLD)):
            assert not reg.open(f, v, [det("fp:x")]).done
        with pytest.raises(DecisionRefused) as e:
            reg.revoke(grant.id, ALICE, " ")
        assert e.value.code == "empty_reason"
        with pytest.raises(DecisionRefused) as e:
            reg.revoke(grant.id, Identity(uid=2222, gid=2222, pid=1, user="eve"), "x")
        assert e.value.code == "not_approver"
        reg.revoke(grant.id, BOB, "window closed")
        assert reg.grants() == []
        assert rec.named("grant.revoke")[0]["who"]["user"] == "bob"
        assert not reg.open(flow(pid=78), HOLD, [det("fp:new2")]).done
        with pytest.raises(DecisionRefused) as e:
            reg.revoke(grant.id, BOB, "again")
        assert e.value.code == "not_found"
        reg.close()
    run(scenario())


def test_process_grant_covers_any_destination_and_ttl_is_capped() -> None:
    async def scenario() -> None:
        rec = Recorder()
        reg = registry(rec, max_grant_ttl_s=60.0)
        w = reg.open(flow(), HOLD, [det()])
        reg.decide(w.id, ALICE, True, "tooling", scope="process", ttl_s=3600)
        (grant,) = reg.grants()
        assert grant.ttl_s == 60.0 and grant.capped and grant.destination is None
        assert reg.open(flow(ip="127.30.9.9"), HOLD, [det("fp:q")]).done
        assert not reg.open(flow(exe="/usr/bin/curl"), HOLD, [det("fp:q")]).done
        reg.close()
    run(scenario())


def test_grant_expires() -> None:
    async def scenario() -> None:
        rec = Recorder()
        reg = registry(rec)
        w = reg.open(flow(), HOLD, [det()])
        reg.decide(w.id, ALICE, True, "short", scope="process", ttl_s=0.3)
        assert reg.open(flow(), HOLD, [det("fp:b")]).done
        await asyncio.sleep(0.45)
        assert reg.grants() == [] and rec.named("grant.expire")[0]["uses"] == 1
        assert not reg.open(flow(), HOLD, [det("fp:c")]).done
        reg.close()
    run(scenario())


@pytest.mark.parametrize("scope,ttl", [("everything", None), ("once", -1.0)])
def test_bad_scope_or_ttl_refused(scope: str, ttl: float | None) -> None:
    async def scenario() -> None:
        rec = Recorder()
        reg = registry(rec)
        w = reg.open(flow(), HOLD, [det()])
        with pytest.raises(DecisionRefused) as e:
            reg.decide(w.id, ALICE, True, "x", scope=scope, ttl_s=ttl)
        assert e.value.code in ("bad_scope", "bad_ttl")
        assert reg.pending() and rec.named("approval.refused")
        reg.close()
    run(scenario())


# -- quorum and break-glass ---------------------------------------------------------------------

QUORUM = {"hold-secrets": QuorumSpec(required=2, approvers=("uid:1000", "uid:1001", "uid:1003",
                                                            f"uid:{AGENT_UID}"))}


def test_quorum_of_two_needs_two_different_people_and_takes_the_narrowest_scope() -> None:
    async def scenario() -> None:
        rec = Recorder()
        reg = registry(rec, quorums=QUORUM)
        w = reg.open(flow(), HOLD, [det()])
        assert reg.pending()[0].required == 2
        first = reg.decide(w.id, ALICE, True, "ok by me", scope="process")
        assert first.pending and not first.approved and first.outcome == "voted"
        assert not w.done and rec.named("approval.vote")[0]["votes"] == 1
        alice_again = Identity(uid=1000, gid=-1, pid=0, user="alice", channel="mtls",
                               principal="alice.corp.example")
        with pytest.raises(DecisionRefused) as e:            # the same person, another channel
            reg.decide(w.id, alice_again, True, "really ok")
        assert e.value.code == "already_voted"
        final = reg.decide(w.id, BOB, True, "ok", scope="process-destination")
        assert final.approved and final.scope == "process-destination"
        assert final.by_user == "alice, bob"
        assert (await w.wait()).approved
        decision = rec.named("flow.decision")[-1]
        assert [a["user"] for a in decision["approvers"]] == ["alice", "bob"]
        reg.close()
    run(scenario())


def test_quorum_any_deny_denies_and_owner_and_outsiders_cannot_vote() -> None:
    async def scenario() -> None:
        rec = Recorder()
        reg = registry(rec, quorums=QUORUM)
        w = reg.open(flow(), HOLD, [det()])
        owner = Identity(uid=AGENT_UID, gid=AGENT_UID, pid=9, user="agent")
        with pytest.raises(DecisionRefused) as e:
            reg.decide(w.id, owner, True, "mine")
        assert e.value.code == "self_approval"
        with pytest.raises(DecisionRefused) as e:             # root is a global approver only
            reg.decide(w.id, ROOT, True, "root says so")
        assert e.value.code == "not_approver" and "hold-secrets" in e.value.message
        reg.decide(w.id, ALICE, True, "fine")
        reg.decide(w.id, CAROL, False, "no: customer data")
        d = await w.wait()
        assert not d.approved and d.by_user == "carol"
        assert reg.pending() == []
        reg.close()
    run(scenario())


def test_break_glass_only_when_enabled_and_never_for_the_owner() -> None:
    async def scenario() -> None:
        rec = Recorder()
        reg = registry(rec, quorums=QUORUM)
        w = reg.open(flow(), HOLD, [det()])
        with pytest.raises(DecisionRefused) as e:
            reg.decide(w.id, ALICE, True, "outage", break_glass=True)
        assert e.value.code == "break_glass_disabled"
        reg.close()

        rec = Recorder()
        reg = registry(rec, quorums=QUORUM, break_glass=True)
        w = reg.open(flow(), HOLD, [det()])
        owner = Identity(uid=AGENT_UID, gid=AGENT_UID, pid=9, user="agent")
        with pytest.raises(DecisionRefused) as e:
            reg.decide(w.id, owner, True, "outage", break_glass=True)
        assert e.value.code == "self_approval"
        d = reg.decide(w.id, ALICE, True, "outage INC-7", break_glass=True)
        assert d.approved and (await w.wait()).approved
        (bg,) = rec.named("approval.break_glass")
        assert bg["severity"] == "critical" and bg["who"]["user"] == "alice"
        assert bg["required"] == 2 and bg["reason"] == "outage INC-7"
        names = [n for n, _ in rec.events]
        assert names.index("approval.break_glass") < names.index("flow.decision")
        reg.close()
    run(scenario())


# -- persistence --------------------------------------------------------------------------------

def test_restart_keeps_pending_requests_unused_approvals_and_grants(tmp_path: Path) -> None:
    db = str(tmp_path / "approvals.db")

    async def first_life() -> dict[str, str]:
        rec = Recorder()
        reg = registry(rec, store=ApprovalStore(db))
        reg.start()
        held = reg.open(flow(ip="127.30.1.1"), HOLD, [det("fp:pending")])
        gone = reg.open(flow(ip="127.30.1.2"), HOLD, [det("fp:once")])
        gone.detach("client went away")
        reg.decide(gone.id, ALICE, True, "retry may pass")
        g = reg.open(flow(ip="127.30.1.3"), HOLD, [det("fp:grant")])
        reg.decide(g.id, BOB, True, "ok for an hour", scope="process-destination", ttl_s=3600)
        reg.close("egressguard is stopping")
        d = await held.wait()
        assert d.aborted and d.pending
        assert any(f["flow_id"] == held.flow.flow_id for f in rec.named("flow.aborted"))
        return {"pending": held.id, "once": gone.id, "grant": reg.grants()[0].id}

    async def second_life(ids: dict[str, str]) -> None:
        rec = Recorder()
        reg = registry(rec, store=ApprovalStore(db))
        reg.start()
        assert [r.id for r in reg.pending()] == [ids["pending"]]
        (req,) = reg.pending()
        assert req.flow.destination.ip == "127.30.1.1" and req.detections[0].fingerprint == "fp:pending"
        assert 20 < req.expires_in_s() <= 30
        assert [g.id for g in reg.grants()] == [ids["grant"]]
        assert reg.open(flow(ip="127.30.1.3"), HOLD, [det("fp:any")]).done    # grant works
        once = reg.open(flow(ip="127.30.1.2"), HOLD, [det("fp:once")])
        assert once.done and (await once.wait()).approved                     # once works
        assert rec.named("approval.use")[0]["hold_id"] == ids["once"]
        reg.decide(ids["pending"], ALICE, True, "after the restart")
        assert reg.pending() == []
        assert rec.named("flow.aborted") == []        # the clean stop already recorded them
        reg.close()

    ids = asyncio.run(first_life())
    asyncio.run(second_life(ids))


def test_connections_held_at_a_crash_are_recorded_as_aborted(tmp_path: Path) -> None:
    db = str(tmp_path / "approvals.db")

    async def crash() -> str:
        reg = registry(Recorder(), store=ApprovalStore(db))
        reg.start()
        w = reg.open(flow(), HOLD, [det()])
        return w.flow.flow_id                           # no close(): the process dies here

    async def restart(flow_id: str) -> None:
        rec = Recorder()
        reg = registry(rec, store=ApprovalStore(db))
        reg.start()
        (aborted,) = rec.named("flow.aborted")
        assert aborted["flow_id"] == flow_id and "restarted" in aborted["reason"]
        assert aborted["process"]["uid"] == AGENT_UID
        assert len(reg.pending()) == 1 and reg.pending()[0].waiters == []
        reg.close()

    asyncio.run(restart(asyncio.run(crash())))


def test_stored_expiry_is_clamped_to_the_ttl_and_expires_while_down(tmp_path: Path) -> None:
    db = str(tmp_path / "approvals.db")

    async def make() -> tuple[str, str]:
        reg = registry(Recorder(), store=ApprovalStore(db), request_ttl_s=30.0)
        reg.start()
        a = reg.open(flow(ip="127.30.2.1"), HOLD, [det("fp:a")])
        b = reg.open(flow(ip="127.30.2.2"), HOLD, [det("fp:b")])
        reg.close()
        return a.id, b.id

    a_id, b_id = asyncio.run(make())
    con = sqlite3.connect(db)
    for rid, delta in ((a_id, 10_000.0), (b_id, -60.0)):   # a: clock went back; b: TTL passed
        body = json.loads(con.execute("SELECT body FROM requests WHERE id=?", (rid,)).fetchone()[0])
        body["expires_at"] = time.time() + delta
        con.execute("UPDATE requests SET body=?, expires_at=? WHERE id=?",
                    (json.dumps(body), body["expires_at"], rid))
    con.commit()
    con.close()

    async def check() -> None:
        rec = Recorder()
        reg = registry(rec, store=ApprovalStore(db), request_ttl_s=30.0)
        reg.start()
        await asyncio.sleep(0.05)
        assert [r.id for r in reg.pending()] == [a_id]
        assert reg.pending()[0].expires_in_s() <= 30.0          # never more than its TTL
        expired = [f for f in rec.named("flow.decision") if f["outcome"] == "expired"]
        assert [f["hold_id"] for f in expired] == [b_id]
        reg.close()

    asyncio.run(check())
    assert _remaining(time.time() + 1e6, 60.0, time.time()) == 60.0
    assert _remaining(time.time() - 5, 60.0, time.time()) == 0.0


def test_store_refuses_a_corrupt_file_with_a_clear_message(tmp_path: Path) -> None:
    from egressguard.errors import EnvironmentProblem
    bad = tmp_path / "approvals.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(EnvironmentProblem, match="approvals store .* move the file away"):
        ApprovalStore(str(bad))


def test_http_refusal_names_the_approval_request() -> None:
    from egressguard.approvals.refusal import http_refusal
    from egressguard.model import Decision
    raw = http_refusal(Decision(approved=False, by_uid=-1, by_user="egressguard",
                                reason="no decision", timed_out=True, request_id="h-abcdefghij",
                                pending=True))
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert f"Content-Length: {len(body)}".encode() in head
    doc = json.loads(body)
    assert doc["approval_id"] == "h-abcdefghij" and doc["status"] == "pending"
    denied = json.loads(http_refusal(Decision(approved=False, by_uid=0, by_user="root",
                                              reason="no", request_id="h-x")).partition(
        b"\r\n\r\n")[2])
    assert denied["status"] == "denied" and denied["error"] == "egressguard_denied"


def test_pending_requests_are_capped_and_the_overflow_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from egressguard.approvals import holds

    async def scenario() -> None:
        monkeypatch.setattr(holds, "MAX_PENDING", 3)
        rec = Recorder()
        reg = registry(rec)
        for i in range(3):
            assert not reg.open(flow(), HOLD, [det(f"fp:{i}")]).done
        over = reg.open(flow(), HOLD, [det("fp:overflow")])
        d = await over.wait()
        assert not d.approved and "too many pending" in d.reason
        assert rec.named("approval.overflow") and len(reg.pending()) == 3
        assert not reg.open(flow(), HOLD, [det("fp:1")]).done      # identical ones still join
        reg.close()
    run(scenario())


def test_a_failing_store_is_logged_and_decisions_still_work(tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        rec = Recorder()
        store = ApprovalStore(str(tmp_path / "approvals.db"))
        reg = registry(rec, store=store)
        reg.start()
        store._db.close()                              # the file is gone from under us
        w = reg.open(flow(), HOLD, [det()])
        reg.decide(w.id, ALICE, True, "still works", scope="process")
        assert (await w.wait()).approved and reg.grants()
        assert store.failures >= 3
        reg.close()
    with caplog.at_level("ERROR"):
        run(scenario())
    assert "will not survive a restart" in caplog.text
