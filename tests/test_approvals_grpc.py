"""The approvals service end to end: real grpc.aio server, real Unix socket, real `egressctl`
processes run as root and as uid 65534, so the identity provably comes from SO_PEERCRED."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import stat
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from egressguard.approvals import gen_proto
from egressguard.approvals._proto import approvals_pb2 as pb
from egressguard.approvals._proto import approvals_pb2_grpc as pb_grpc
from egressguard.approvals.holds import HoldRegistry
from egressguard.approvals.service import SERVICE_NAME, ApprovalServer, start_approval_server
from egressguard.errors import EnvironmentProblem
from egressguard.model import (Action, Destination, Detection, FlowInfo, FlowState, Process,
                               Verdict)

NOBODY = 65534
TIMEOUT = 20.0

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="runs egressctl as another uid")

VERDICT = Verdict(action=Action.HOLD, rule="hold-secrets", reason="secret to unknown host")
DET = Detection(detector="secret.aws_access_key_id", cls="secret", start=10, end=30,
                preview="AKIA************MPLE", fingerprint="fp:1a2b3c")


def make_flow(uid: int, flow_id: str, user: str = "") -> FlowInfo:
    return FlowInfo(
        flow_id=flow_id,
        process=Process(pid=4242, uid=uid, gid=uid, comm="python3", exe="/usr/bin/python3",
                        cmdline=("python3", "agent.py"), user=user or f"uid{uid}",
                        systemd_unit="agent.service", container_id=""),
        destination=Destination(ip="93.184.216.34", port=443, host="example.com"),
        opened_at=1700000000.0, state=FlowState.HELD, verdict=VERDICT, detections=[DET],
        bytes_up=123)


@pytest.fixture
def sockdir() -> Iterator[str]:
    """A socket directory every uid can traverse (pytest's tmp_path is 0700 under root)."""
    d = tempfile.mkdtemp(prefix="egressguard-approvals-", dir="/tmp")
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


class Daemon:
    """A started approval server with its registry, an audit event list and a flow list."""

    def __init__(self, sock: str, approvers: list[str], timeout_s: float = 30.0,
                 on_timeout: str = "deny", **team: Any) -> None:
        self.sock = sock
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.registry = HoldRegistry(approvers, timeout_s, on_timeout,
                                     lambda n, f: self.events.append((n, f)), **team)
        self.flows: list[FlowInfo] = []
        self.server: ApprovalServer | None = None

    async def __aenter__(self) -> Daemon:
        self.server = await start_approval_server(self.sock, self.registry, lambda: list(self.flows))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.registry.close()
        assert self.server is not None
        await self.server.stop()

    def hold(self, uid: int, flow_id: str):  # type: ignore[no-untyped-def]
        f = make_flow(uid, flow_id)
        self.flows.append(f)
        return self.registry.open(f, VERDICT, [DET])


def ctl_env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/tmp",
            "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8"}


def as_user(uid: int | None) -> dict[str, Any]:
    """Popen arguments that drop to `uid` (and its gid, no supplementary groups)."""
    if uid is None:
        return {}
    return {"user": uid, "group": uid, "extra_groups": []}


async def ctl(sock: str, *args: str, uid: int | None = None) -> tuple[int, str, str]:
    """Run egressctl as a separate process (optionally as another uid); bounded in time."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "egressguard.cli.ctl", "--socket", sock, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=ctl_env(),
        **as_user(uid))
    try:
        out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@contextlib.asynccontextmanager
async def ctl_stream(sock: str, *args: str, uid: int | None = None) -> AsyncIterator[Any]:
    """A long-running egressctl (watch); always killed on exit."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "egressguard.cli.ctl", "--socket", sock, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=ctl_env(),
        **as_user(uid))
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def readline(proc: Any) -> str:
    line = await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)
    assert line, "egressctl ended early: " + (await proc.stderr.read()).decode()
    return line.decode()


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


# -- generated code ----------------------------------------------------------------------------

def test_generated_code_is_current() -> None:
    """The checked-in _proto/ equals what grpcio-tools generates from the .proto right now."""
    assert gen_proto.check() == [], "run: python -m egressguard.approvals.gen_proto"


# -- identity from SO_PEERCRED -----------------------------------------------------------------

@needs_root
def test_root_cannot_approve_a_flow_owned_by_uid0(sockdir: str) -> None:
    async def scenario() -> None:
        async with Daemon(os.path.join(sockdir, "a.sock"), ["root"]) as d:
            hold = d.hold(uid=0, flow_id="f-root")
            rc, out, err = await ctl(d.sock, "approve", hold.id, "--reason", "mine")
            assert rc == 1, (out, err)
            assert "root (uid 0) owns flow f-root and cannot decide on its own hold" in err
            assert err.count("\n") == 1 and "Traceback" not in err
            rc, out, err = await ctl(d.sock, "deny", hold.id, "--reason", "mine")
            assert rc == 1 and "neither approve nor deny" in err
            assert [h.id for h in d.registry.pending()] == [hold.id]
            refusal = [f for n, f in d.events if n == "approval.refused"]
            assert len(refusal) == 2 and refusal[0]["who"]["uid"] == 0
            assert refusal[0]["who"]["pid"] > 0 and refusal[0]["flow_id"] == "f-root"
    run(scenario())


@needs_root
def test_uid_65534_hold_approved_by_root_not_by_itself(sockdir: str) -> None:
    """Same command, same socket: only the uid of the calling process differs."""
    async def scenario() -> None:
        async with Daemon(os.path.join(sockdir, "a.sock"), ["uid:0", f"uid:{NOBODY}"]) as d:
            hold = d.hold(uid=NOBODY, flow_id="f-nobody")
            rc, out, err = await ctl(d.sock, "approve", hold.id, "--reason", "mine", uid=NOBODY)
            assert rc == 1, (out, err)
            assert f"(uid {NOBODY}) owns flow f-nobody" in err
            assert d.registry.pending()

            rc, out, err = await ctl(d.sock, "approve", hold.id, "--reason", "reviewed upload")
            assert rc == 0, err
            assert f"approved {hold.id} (flow f-nobody) as root (uid 0): reviewed upload" in out
            decision = await asyncio.wait_for(hold.wait(), TIMEOUT)
            assert decision.approved and decision.by_uid == 0 and decision.by_user == "root"
            audit = [f for n, f in d.events if n == "flow.decision"][-1]
            assert audit["who"]["uid"] == 0 and audit["who"]["pid"] > 0
            assert audit["hold_id"] == hold.id and audit["reason"] == "reviewed upload"

            rc, out, err = await ctl(d.sock, "deny", hold.id, "--reason", "again")
            assert rc == 1 and f"hold {hold.id} was already approved by root" in err
    run(scenario())


@needs_root
def test_non_approver_is_refused_and_sees_only_own_holds(sockdir: str) -> None:
    async def scenario() -> None:
        async with Daemon(os.path.join(sockdir, "a.sock"), ["root"]) as d:
            root_hold = d.hold(uid=0, flow_id="f-root")
            own_hold = d.hold(uid=NOBODY, flow_id="f-nobody")
            rc, out, err = await ctl(d.sock, "deny", root_hold.id, "--reason", "x", uid=NOBODY)
            assert rc == 1 and f"(uid {NOBODY}) is not an approver" in err

            rc, out, err = await ctl(d.sock, "pending", "--json", uid=NOBODY)
            assert rc == 0, err
            assert [json.loads(line)["id"] for line in out.splitlines()] == [own_hold.id]
            rc, out, err = await ctl(d.sock, "flows", "--json", uid=NOBODY)
            assert [json.loads(line)["flow_id"] for line in out.splitlines()] == ["f-nobody"]
            rc, out, err = await ctl(d.sock, "pending", "--json")       # root is an approver
            assert {json.loads(line)["id"] for line in out.splitlines()} == {root_hold.id, own_hold.id}
    run(scenario())


def test_direct_connection_to_internal_port_is_unauthenticated(sockdir: str) -> None:
    async def scenario() -> None:
        async with Daemon(os.path.join(sockdir, "a.sock"), ["root"]) as d:
            hold = d.hold(uid=1000, flow_id="f-1")
            assert d.server is not None
            target = f"127.0.0.1:{d.server.internal_port}"
            async with grpc.aio.insecure_channel(target) as ch:
                stub = pb_grpc.ApprovalsStub(ch)
                for call, req in ((stub.ListPending, pb.ListPendingRequest()),
                                  (stub.Approve, pb.DecideRequest(hold_id=hold.id, reason="x")),
                                  (stub.ListFlows, pb.ListFlowsRequest())):
                    with pytest.raises(grpc.aio.AioRpcError) as e:
                        await call(req, timeout=TIMEOUT)
                    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
                    assert "Unix socket" in (e.value.details() or "")
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await health_pb2_grpc.HealthStub(ch).Check(
                        health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=TIMEOUT)
                assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert d.registry.pending()
            # Through the front door the same calls work (root, in this process).
            async with grpc.aio.insecure_channel("unix:" + d.sock) as ch:
                resp = await health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=TIMEOUT)
                assert resp.status == health_pb2.HealthCheckResponse.SERVING
                flow = await pb_grpc.ApprovalsStub(ch).GetFlow(pb.GetFlowRequest(flow_id="f-1"),
                                                               timeout=TIMEOUT)
                assert flow.flow_id == "f-1" and flow.state == "held"
                assert flow.verdict.rule == "hold-secrets" and flow.detections[0].preview
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await pb_grpc.ApprovalsStub(ch).GetFlow(pb.GetFlowRequest(flow_id="nope"),
                                                            timeout=TIMEOUT)
                assert e.value.code() == grpc.StatusCode.NOT_FOUND
    run(scenario())


def test_refusal_status_codes(sockdir: str) -> None:
    async def scenario() -> None:
        async with Daemon(os.path.join(sockdir, "a.sock"), ["root"]) as d:
            hold = d.hold(uid=1000, flow_id="f-1")
            async with grpc.aio.insecure_channel("unix:" + d.sock) as ch:
                stub = pb_grpc.ApprovalsStub(ch)
                cases = [(pb.DecideRequest(hold_id=hold.id, reason="  "), grpc.StatusCode.INVALID_ARGUMENT),
                         (pb.DecideRequest(hold_id="h-unknown000", reason="x"), grpc.StatusCode.NOT_FOUND)]
                for req, code in cases:
                    with pytest.raises(grpc.aio.AioRpcError) as e:
                        await stub.Deny(req, timeout=TIMEOUT)
                    assert e.value.code() == code
                resp = await stub.Deny(pb.DecideRequest(hold_id=hold.id, reason="no"), timeout=TIMEOUT)
                assert resp.decision.outcome == pb.OUTCOME_DENIED and resp.decision.by_uid == 0
                assert resp.decision.by_pid == os.getpid()
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await stub.Approve(pb.DecideRequest(hold_id=hold.id, reason="x"), timeout=TIMEOUT)
                assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    run(scenario())


# -- watch and pending -------------------------------------------------------------------------

@needs_root
def test_watch_sees_opened_then_decision(sockdir: str) -> None:
    async def scenario() -> None:
        async with Daemon(os.path.join(sockdir, "a.sock"), ["root"]) as d:
            async with ctl_stream(d.sock, "watch", "--json") as watch:
                for _ in range(int(TIMEOUT / 0.05)):          # wait until it is subscribed
                    if d.registry._subscribers:
                        break
                    await asyncio.sleep(0.05)
                assert d.registry._subscribers, "watch never subscribed"
                hold = d.hold(uid=NOBODY, flow_id="f-w")
                opened = json.loads(await readline(watch))
                assert opened["event"] == "opened" and opened["hold"]["id"] == hold.id
                assert opened["decision"] is None
                rc, _, err = await ctl(d.sock, "deny", hold.id, "--reason", "not expected")
                assert rc == 0, err
                decided = json.loads(await readline(watch))
                assert decided["event"] == "decided" and decided["hold"]["id"] == hold.id
                assert decided["decision"]["outcome"] == "denied"
                assert decided["decision"]["by_user"] == "root"
                assert decided["decision"]["reason"] == "not expected"
    run(scenario())


def test_watch_in_process_includes_pending_and_expiry(sockdir: str) -> None:
    async def scenario() -> None:
        async with Daemon(os.path.join(sockdir, "a.sock"), ["root"], timeout_s=0.5) as d:
            hold = d.hold(uid=1000, flow_id="f-x")
            async with grpc.aio.insecure_channel("unix:" + d.sock) as ch:
                call = pb_grpc.ApprovalsStub(ch).Watch(pb.WatchRequest(include_pending=True))
                first = await asyncio.wait_for(call.read(), TIMEOUT)
                assert first.kind == pb.HOLD_EVENT_KIND_OPENED and first.hold.id == hold.id
                second = await asyncio.wait_for(call.read(), TIMEOUT)
                assert second.kind == pb.HOLD_EVENT_KIND_EXPIRED
                assert second.decision.outcome == pb.OUTCOME_EXPIRED
                assert not second.decision.approved and second.decision.by_uid == -1
                call.cancel()
    run(scenario())


@needs_root
def test_pending_json_fields(sockdir: str) -> None:
    async def scenario() -> None:
        async with Daemon(os.path.join(sockdir, "a.sock"), ["root"]) as d:
            hold = d.hold(uid=NOBODY, flow_id="f-p")
            await asyncio.sleep(0.2)
            rc, out, err = await ctl(d.sock, "pending", "--json")
            assert rc == 0, err
            lines = out.splitlines()
            assert len(lines) == 1
            h = json.loads(lines[0])
            assert h["id"] == hold.id and h["flow_id"] == "f-p"
            assert {"pid", "exe", "uid", "user", "cmdline", "unit", "container"} <= set(h["process"])
            assert h["process"]["uid"] == NOBODY and h["process"]["exe"] == "/usr/bin/python3"
            assert h["process"]["unit"] == "agent.service"
            assert h["process"]["cmdline"] == ["python3", "agent.py"]
            assert h["destination"] == {"ip": "93.184.216.34", "port": 443, "host": "example.com",
                                        "transport": "tcp"}
            det = h["detections"][0]
            assert {"detector", "class", "preview", "fingerprint"} <= set(det)
            assert det["class"] == "secret" and det["preview"] == "AKIA************MPLE"
            assert h["rule"] == "hold-secrets" and h["reason"] == "secret to unknown host"
            assert 0.1 <= h["age_s"] < TIMEOUT
            assert 0 < h["expires_in_s"] <= 30

            rc, out, err = await ctl(d.sock, "pending")      # the table form for people
            assert rc == 0, err
            for text in (hold.id, "uid 65534", "pid 4242 python3 agent.py", "unit agent.service",
                         "example.com:443 (93.184.216.34)",
                         "secret.aws_access_key_id AKIA************MPLE", "rule hold-secrets"):
                assert text in out, (text, out)
    run(scenario())


def test_pending_carries_severity_and_confidence_through_grpc(sockdir: str) -> None:
    """Issue 7's ratings reach the approver: the gRPC Detection carries them (fields 7, 8) and
    egressctl pending shows them in text and JSON. Non-default values on purpose, so a field
    dropped anywhere on the way (model -> proto -> CLI) shows as the proto default ""."""
    rated = [Detection(detector="secret.aws_access_key_id", cls="secret", start=10, end=30,
                       preview="AKIA************MPLE", fingerprint="fp:1", severity="critical",
                       confidence="high"),
             Detection(detector="pii.ipv4", cls="pii", start=40, end=49, preview="127.*.*.9",
                       fingerprint="fp:2", severity="low", confidence="low")]

    async def scenario() -> None:
        async with Daemon(os.path.join(sockdir, "a.sock"), ["root"]) as d:
            f = make_flow(NOBODY, "f-rated")
            d.flows.append(f)
            hold = d.registry.open(f, VERDICT, rated)
            listed = d.registry.pending()[0].detections
            assert [(x.severity, x.confidence) for x in listed] == [("critical", "high"),
                                                                   ("low", "low")]
            rc, out, err = await ctl(d.sock, "pending", "--json")
            assert rc == 0, err
            (h,) = [json.loads(line) for line in out.splitlines()]
            assert h["id"] == hold.id
            assert [(x["detector"], x["severity"], x["confidence"]) for x in h["detections"]] == [
                ("secret.aws_access_key_id", "critical", "high"), ("pii.ipv4", "low", "low")]
            rc, out, err = await ctl(d.sock, "pending")
            assert rc == 0, err
            assert ("data:  secret.aws_access_key_id AKIA************MPLE (severity critical, "
                    "confidence high); pii.ipv4 127.*.*.9 (severity low, confidence low)") in out
    run(scenario())


# -- socket handling ---------------------------------------------------------------------------

def test_socket_permissions_stale_socket_and_second_daemon(sockdir: str) -> None:
    async def scenario() -> None:
        path = os.path.join(sockdir, "sub", "a.sock")          # parent does not exist yet
        async with Daemon(path, ["root"]) as d:
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o666
            assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o755
            with pytest.raises(EnvironmentProblem, match="already listening on"):
                async with Daemon(path, ["root"]):
                    pass
            assert os.path.exists(path)                          # not stolen
            assert d.server is not None
        assert not os.path.exists(path)                          # removed at stop

        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(path)
        stale.close()                                            # a file nobody listens on
        async with Daemon(path, ["root"]) as d:
            rc, out, err = await ctl(path, "pending")
            assert rc == 0 and "no pending holds" in out, err

        with open(path, "w") as f:
            f.write("not a socket")
        with pytest.raises(EnvironmentProblem, match="is not a socket"):
            async with Daemon(path, ["root"]):
                pass
    run(scenario())


HOARDER = """
import socket, sys
conns = []
for _ in range(int(sys.argv[2])):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sys.argv[1])
    conns.append(s)
print("ready", flush=True)
sys.stdin.read()
"""


def test_one_uid_cannot_take_every_connection_and_lock_the_approvers_out(sockdir: str) -> None:
    # The socket is open to every local user, the held agent included: an agent holding
    # hundreds of idle connections must not keep root from approving or denying.
    async def scenario() -> None:
        path = os.path.join(sockdir, "a.sock")
        async with Daemon(path, ["root"]) as d:
            d.hold(uid=NOBODY, flow_id="f-held")
            hoarder = await asyncio.create_subprocess_exec(
                sys.executable, "-c", HOARDER, path, "300", stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, env=ctl_env(), **as_user(NOBODY))
            try:
                assert hoarder.stdout is not None
                line = await asyncio.wait_for(hoarder.stdout.readline(), TIMEOUT)
                assert line == b"ready\n"
                await asyncio.sleep(1.0)                  # the daemon has accepted them all
                rc, out, err = await ctl(path, "pending")
                assert rc == 0 and "f-held" in out, (rc, err)
                rc, out, err = await ctl(path, "pending", uid=NOBODY)
                assert rc == 3                            # the hoarder's own uid is capped
            finally:
                hoarder.kill()
                await hoarder.wait()
    run(scenario())
