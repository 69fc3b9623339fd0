"""HoldRegistry: who may decide, expiry, aborts, and what goes to the audit hook. No sockets."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from egressguard.approvals.holds import DecisionRefused, HoldEvent, HoldRegistry, new_hold_id
from egressguard.approvals.peercred import Identity
from egressguard.model import Action, Destination, Detection, FlowInfo, Process, Verdict

ROOT = Identity(uid=0, gid=0, pid=100, user="root")
ALICE = Identity(uid=1000, gid=1000, pid=200, user="alice")
BOB = Identity(uid=1001, gid=1001, pid=300, user="bob")
MALLORY = Identity(uid=1002, gid=1002, pid=400, user="mallory")

VERDICT = Verdict(action=Action.HOLD, rule="hold-secrets", reason="secret to unknown host")
DET = Detection(detector="secret.aws_access_key_id", cls="secret", start=10, end=30,
                preview="AKIA************MPLE", fingerprint="fp:1a2b3c")


def flow(uid: int, flow_id: str = "f-1") -> FlowInfo:
    return FlowInfo(flow_id=flow_id,
                    process=Process(pid=4242, uid=uid, exe="/usr/bin/python3", user=f"u{uid}"),
                    destination=Destination(ip="93.184.216.34", port=443, host="example.com"),
                    opened_at=0.0)


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, name: str, fields: dict[str, Any]) -> None:
        self.events.append((name, fields))

    def names(self) -> list[str]:
        return [n for n, _ in self.events]


def registry(approvers: list[str] | None = None, timeout_s: float = 5.0, on_timeout: str = "deny",
             rec: Recorder | None = None) -> HoldRegistry:
    return HoldRegistry(approvers if approvers is not None else ["root", "alice", "uid:1001"],
                        timeout_s, on_timeout, rec or Recorder())


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 10))


def test_hold_id_is_short_and_opaque() -> None:
    ids = {new_hold_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"h-[a-z2-7]{10}", i) for i in ids)


def test_approve_releases_waiter_with_decision_and_audits_who() -> None:
    async def scenario() -> None:
        rec = Recorder()
        reg = registry(rec=rec)
        hold = reg.open(flow(uid=1001), VERDICT, [DET])
        assert [h.id for h in reg.pending()] == [hold.id]
        waiter = asyncio.create_task(hold.wait())
        d = reg.decide(hold.id, ALICE, True, "  expected upload  ")
        got = await waiter
        assert got == d and got.approved and not got.timed_out
        assert (got.by_uid, got.by_user, got.reason) == (1000, "alice", "expected upload")
        assert reg.pending() == []
        assert rec.names() == ["flow.hold", "flow.decision"]
        fields = rec.events[1][1]
        assert fields["hold_id"] == hold.id and fields["flow_id"] == "f-1"
        assert fields["who"] == {"uid": 1000, "user": "alice", "pid": 200}
        assert fields["outcome"] == "approved" and fields["reason"] == "expected upload"
        # the hold event carries masked evidence only
        assert rec.events[0][1]["detections"][0]["preview"] == "AKIA************MPLE"
    run(scenario())


def test_deny() -> None:
    async def scenario() -> None:
        reg = registry()
        hold = reg.open(flow(uid=1000), VERDICT, [DET])
        reg.decide(hold.id, ROOT, False, "not on the allow list")
        d = await hold.wait()
        assert not d.approved and not d.timed_out and d.by_user == "root"
        assert hold.request.outcome == "denied"
    run(scenario())


@pytest.mark.parametrize("on_timeout,approved", [("deny", False), ("allow", True)])
def test_timeout_resolves_by_on_timeout(on_timeout: str, approved: bool) -> None:
    async def scenario() -> None:
        rec = Recorder()
        reg = registry(timeout_s=0.2, on_timeout=on_timeout, rec=rec)
        hold = reg.open(flow(uid=1000), VERDICT, [])
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        d = await hold.wait()
        assert 0.15 <= loop.time() - t0 < 2.0
        assert d.timed_out and d.approved is approved
        assert d.by_user == "egressguard" and d.by_uid == -1
        assert reg.pending() == []
        assert rec.events[-1][0] == "flow.decision" and rec.events[-1][1]["outcome"] == "expired"
        with pytest.raises(DecisionRefused) as e:
            reg.decide(hold.id, ROOT, True, "late")
        assert e.value.code == "already_decided" and "expired" in e.value.message
    run(scenario())


def test_self_approval_refused_for_root() -> None:
    async def scenario() -> None:
        rec = Recorder()
        reg = registry(rec=rec)
        hold = reg.open(flow(uid=0), VERDICT, [DET])
        for approve in (True, False):
            with pytest.raises(DecisionRefused) as e:
                reg.decide(hold.id, ROOT, approve, "it is mine")
            assert e.value.code == "self_approval"
            assert "owns flow f-1" in e.value.message and "neither approve nor deny" in e.value.message
            assert "root included" in e.value.message
        assert [h.id for h in reg.pending()] == [hold.id]      # still waiting for someone else
        refusal = rec.events[-1]
        assert refusal[0] == "approval.refused"
        assert refusal[1]["who"] == {"uid": 0, "user": "root", "pid": 100}
        assert refusal[1]["hold_id"] == hold.id and refusal[1]["flow_id"] == "f-1"
        assert refusal[1]["code"] == "self_approval" and refusal[1]["reason"] == "it is mine"
        # another approver can still decide
        reg.decide(hold.id, ALICE, True, "checked")
        assert (await hold.wait()).approved
    run(scenario())


def test_self_approval_refused_for_normal_uid_listed_by_uid() -> None:
    async def scenario() -> None:
        reg = registry()                                        # bob is approver as uid:1001
        hold = reg.open(flow(uid=1001), VERDICT, [DET])
        for approve in (True, False):
            with pytest.raises(DecisionRefused) as e:
                reg.decide(hold.id, BOB, approve, "mine")
            assert e.value.code == "self_approval"
        hold2 = reg.open(flow(uid=1000, flow_id="f-2"), VERDICT, [DET])
        with pytest.raises(DecisionRefused) as e:
            reg.decide(hold2.id, ALICE, True, "mine")            # alice listed by name
        assert e.value.code == "self_approval"
        reg.decide(hold2.id, BOB, True, "fine")                  # bob listed by uid
        assert (await hold2.wait()).by_uid == 1001
        reg.close()
    run(scenario())


def test_non_approver_refused() -> None:
    async def scenario() -> None:
        rec = Recorder()
        reg = registry(rec=rec)
        hold = reg.open(flow(uid=1000), VERDICT, [DET])
        with pytest.raises(DecisionRefused) as e:
            reg.decide(hold.id, MALLORY, True, "trust me")
        assert e.value.code == "not_approver"
        assert "mallory (uid 1002) is not an approver" in e.value.message
        assert rec.events[-1][0] == "approval.refused"
        assert rec.events[-1][1]["who"]["uid"] == 1002
        assert reg.pending()
        reg.close()
    run(scenario())


@pytest.mark.parametrize("reason", ["", "   ", "\t\n"])
def test_empty_reason_refused(reason: str) -> None:
    async def scenario() -> None:
        reg = registry()
        hold = reg.open(flow(uid=1000), VERDICT, [DET])
        for approve in (True, False):
            with pytest.raises(DecisionRefused) as e:
                reg.decide(hold.id, ROOT, approve, reason)
            assert e.value.code == "empty_reason" and "reason is required" in e.value.message
        assert reg.pending()
        reg.close()
    run(scenario())


def test_double_decision_and_unknown_hold_refused() -> None:
    async def scenario() -> None:
        reg = registry()
        hold = reg.open(flow(uid=1000), VERDICT, [DET])
        reg.decide(hold.id, ROOT, True, "ok")
        for approve in (True, False):
            with pytest.raises(DecisionRefused) as e:
                reg.decide(hold.id, BOB, approve, "again")
            assert e.value.code == "already_decided"
            assert e.value.message == f"hold {hold.id} was already approved by root"
        with pytest.raises(DecisionRefused) as e:
            reg.decide("h-doesnotexi", ROOT, True, "x")
        assert e.value.code == "not_found" and "h-doesnotexi" in e.value.message
        assert (await hold.wait()).approved
    run(scenario())


def test_detach_aborts_the_connection_but_the_request_stays_pending() -> None:
    async def scenario() -> None:
        rec = Recorder()
        reg = registry(rec=rec)
        hold = reg.open(flow(uid=1000), VERDICT, [DET])
        hold.detach("client closed the connection")
        d = await hold.wait()
        assert d.aborted and not d.approved and "client closed" in d.reason
        assert d.pending and d.request_id == hold.id
        assert rec.events[-1][0] == "flow.aborted"
        assert rec.events[-1][1]["flow_id"] == "f-1"
        hold.detach("again")                                       # idempotent
        assert [e for e, _ in rec.events].count("flow.aborted") == 1
        assert [h.id for h in reg.pending()] == [hold.id]          # the request outlives it
        assert reg.pending()[0].waiters == []
        reg.decide(hold.id, ROOT, True, "now")                     # still decidable
        assert reg.pending() == []
    run(scenario())


def test_cancelled_waiter_detaches_and_the_request_stays() -> None:
    async def scenario() -> None:
        reg = registry()
        hold = reg.open(flow(uid=1000), VERDICT, [DET])
        waiter = asyncio.create_task(hold.wait())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert [h.id for h in reg.pending()] == [hold.id] and hold.request.state == "pending"
        reg.close()
    run(scenario())


def test_decision_is_audited_before_release_and_audit_failure_fails_closed() -> None:
    async def scenario() -> None:
        calls: list[str] = []

        def failing(name: str, fields: dict[str, Any]) -> None:
            calls.append(name)
            if name == "flow.decision":
                raise OSError("disk full")
        reg = HoldRegistry(["root"], 5.0, "deny", failing)
        hold = reg.open(flow(uid=1000), VERDICT, [DET])
        with pytest.raises(OSError):
            reg.decide(hold.id, ROOT, True, "ok")
        assert [h.id for h in reg.pending()] == [hold.id]          # not released unaudited
        reg._on_event = lambda n, f: None                          # audit recovers
        reg.decide(hold.id, ROOT, True, "ok")
        assert (await hold.wait()).approved
    run(scenario())


def test_subscribers_see_the_life_cycle() -> None:
    async def scenario() -> None:
        reg = registry(timeout_s=0.2)
        seen: list[HoldEvent] = []
        unsubscribe = reg.subscribe(seen.append)
        a = reg.open(flow(uid=1000, flow_id="f-a"), VERDICT, [DET])
        b = reg.open(flow(uid=1001, flow_id="f-b"), VERDICT, [DET])   # not identical to a
        reg.decide(a.id, ROOT, False, "no")
        await b.wait()
        unsubscribe()
        reg.open(flow(uid=1000, flow_id="f-c"), VERDICT, [DET])
        assert [(e.kind, e.hold.flow.flow_id) for e in seen] == [
            ("opened", "f-a"), ("opened", "f-b"), ("decided", "f-a"), ("expired", "f-b")]
        reg.close()
    run(scenario())


def test_visibility_and_approver_config() -> None:
    reg = registry(["alice", "uid:0"])
    assert reg.is_approver(ALICE) and reg.is_approver(ROOT) and not reg.is_approver(BOB)
    assert reg.may_view(BOB, 1001) and not reg.may_view(BOB, 1000) and reg.may_view(ALICE, 5)
    with pytest.raises(ValueError, match="uid:N"):
        HoldRegistry(["uid:bob"], 1, "deny", lambda n, f: None)
    with pytest.raises(ValueError, match="on_timeout"):
        HoldRegistry([], 1, "maybe", lambda n, f: None)
    with pytest.raises(ValueError, match="timeout_s"):
        HoldRegistry([], 0, "deny", lambda n, f: None)


def test_reasons_and_hold_ids_are_scanned_and_bounded_before_they_are_recorded() -> None:
    # A person may paste a key into a reason; anyone local, the held agent included, may send
    # any text as a hold id or reason and have the refusal audited. Neither may put a raw
    # secret (or megabytes) into the audit log. The redactor is the daemon's: the real engine.
    from egressguard.scan.engine import ScanEngine
    from egressguard.scan.pack import load_pack
    from egressguard.scan.redact import redact_args
    engine = ScanEngine(load_pack(None), b"holds-test-key")
    key = "AKIA" + "Q7XZ3MPLK2VB9DRT"

    async def scenario() -> None:
        rec = Recorder()
        reg = HoldRegistry(["alice"], 5.0, "deny", rec,
                           redact=lambda text: redact_args(engine, [text])[0])
        hold = reg.open(flow(uid=1001), VERDICT, [DET])
        with pytest.raises(DecisionRefused) as refused:
            reg.decide(f"h-{key}", MALLORY, True, f"take {key} " + "x" * 100_000)
        assert key not in refused.value.message
        d = reg.decide(hold.id, ALICE, True, f"ok, {key} is the staging key")
        assert key not in d.reason and d.reason.startswith("ok, AKIA") and "staging" in d.reason
        for name, fields in rec.events:
            text = repr(fields)
            assert key not in text and key[4:] not in text, f"key in {name}: " + ", ".join(
                k for k, v in fields.items() if key[4:] in repr(v))
        attempt = rec.events[1][1]
        assert attempt["code"] == "not_approver"
        assert len(attempt["reason"]) < 2100 and attempt["reason"].endswith("...[cut]")
    run(scenario())
