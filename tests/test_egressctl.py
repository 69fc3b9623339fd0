"""egressctl as a person meets it: arguments, one-line errors with exit codes, rendering,
`audit verify`. Daemon-facing checks run against a real approval server on a Unix socket."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sys
import tempfile
import types
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from egressguard.approvals._proto import approvals_pb2 as pb
from egressguard.approvals.holds import HoldRegistry
from egressguard.approvals.service import start_approval_server
from egressguard.cli import ctl
from egressguard.model import Action, Destination, Detection, FlowInfo, FlowState, Process, Verdict

TIMEOUT = 20.0
NOBODY = 65534


@pytest.fixture
def sockdir() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="egressctl-", dir="/tmp")
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def run_ctl(*args: str, env: dict[str, str] | None = None, uid: int | None = None,
            ) -> tuple[int, str, str]:
    """egressctl in a separate process, bounded in time (synchronous: no daemon in this loop)."""
    import subprocess
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/tmp",
            "PYTHONDONTWRITEBYTECODE": "1"}
    extra: dict[str, Any] = {"user": uid, "group": uid, "extra_groups": []} if uid is not None else {}
    p = subprocess.run([sys.executable, "-m", "egressguard.cli.ctl", *args], capture_output=True,
                       text=True, timeout=TIMEOUT, env={**base, **(env or {})}, **extra)
    return p.returncode, p.stdout, p.stderr


async def arun_ctl(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """egressctl in a separate process while a server runs in this event loop."""
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/tmp",
            "PYTHONDONTWRITEBYTECODE": "1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "egressguard.cli.ctl", *args, env={**base, **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


# -- arguments ---------------------------------------------------------------------------------

def test_socket_default_and_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EGRESSCTL_SOCKET", raising=False)
    assert ctl.build_parser().parse_args(["pending"]).socket == "/run/egressguard/approvals.sock"
    monkeypatch.setenv("EGRESSCTL_SOCKET", "/tmp/x.sock")
    assert ctl.build_parser().parse_args(["pending"]).socket == "/tmp/x.sock"
    args = ctl.build_parser().parse_args(["--socket", "/tmp/y.sock", "pending", "--json"])
    assert args.socket == "/tmp/y.sock" and args.json


@pytest.mark.parametrize("argv", [[], ["approve", "h-1"], ["deny"], ["frobnicate"], ["audit"]])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        ctl.main(argv)
    assert e.value.code == 2
    assert "egressctl: " in capsys.readouterr().err


# -- reaching the daemon -----------------------------------------------------------------------

def test_daemon_not_running(sockdir: str) -> None:
    path = os.path.join(sockdir, "missing.sock")
    rc, out, err = run_ctl("--socket", path, "pending")
    assert rc == 3 and out == ""
    assert err == f"egressctl: is egressguard running? socket {path} not found\n"


def test_env_socket_used_and_stale_socket_reported(sockdir: str) -> None:
    path = os.path.join(sockdir, "stale.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()
    rc, _, err = run_ctl("approve", "h-1", "--reason", "x", env={"EGRESSCTL_SOCKET": path})
    assert rc == 3 and err == f"egressctl: is egressguard running? nothing listens on {path} (stale socket)\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs to run egressctl as another uid")
def test_permission_denied_on_socket(sockdir: str) -> None:
    private = os.path.join(sockdir, "private")
    os.mkdir(private, 0o700)
    path = os.path.join(private, "a.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(1)
    try:
        rc, _, err = run_ctl("--socket", path, "pending", uid=NOBODY)
    finally:
        s.close()
    assert rc == 3 and err.startswith(f"egressctl: permission denied on {path}")
    assert err.count("\n") == 1


def test_env_socket_reaches_a_real_daemon(sockdir: str) -> None:
    async def scenario() -> None:
        path = os.path.join(sockdir, "a.sock")
        reg = HoldRegistry(["root"], 30, "deny", lambda n, f: None)
        server = await start_approval_server(path, reg, lambda: [])
        try:
            rc, out, err = await arun_ctl("pending", env={"EGRESSCTL_SOCKET": path})
            assert (rc, out, err) == (0, "no pending holds\n", "")
            rc, out, err = await arun_ctl("flows", env={"EGRESSCTL_SOCKET": path})
            assert (rc, out) == (0, "no flows\n")
            rc, out, err = await arun_ctl("--socket", path, "deny", "h-nothere00", "--reason", "x")
            assert rc == 1 and err == "egressctl: no pending hold 'h-nothere00' (see egressctl pending)\n"
        finally:
            reg.close()
            await server.stop()
    asyncio.run(asyncio.wait_for(scenario(), 60))


# -- rendering ---------------------------------------------------------------------------------

def _hold(host: str = "", ip: str = "2001:db8::1", detections: int = 1) -> pb.Hold:
    return pb.Hold(
        id="h-abcdefghij", flow_id="f-9", rule="hold-unknown", reason="unknown destination",
        age_s=75.2, expires_in_s=224.8, on_timeout="deny",
        process=pb.Process(pid=7, uid=1000, user="alice", exe="/usr/bin/curl",
                           cmdline=["curl", "-d", "@secrets", "https://x"], container="0123456789abcdef"),
        destination=pb.Destination(ip=ip, port=443, host=host, transport="tcp"),
        detections=[pb.Detection(detector="pii.email", data_class="pii", preview="a***@x.com",
                                 fingerprint="fp:9")] * detections)


def test_hold_text_is_readable() -> None:
    text = ctl.hold_text(_hold())
    assert text.splitlines()[0] == ("h-abcdefghij  held 1m15s, expires in 3m44s, "
                                    "no connection waiting")
    busy = _hold()
    busy.count, busy.waiting, busy.required = 3, 2, 2
    busy.votes.add(user="bob", uid=1001, reason="looks fine")
    lines = ctl.hold_text(busy).splitlines()
    assert lines[0] == "h-abcdefghij  held 1m15s, expires in 3m44s, seen 3x, 2 connection(s) waiting"
    assert lines[-1] == "  votes: 1 of 2; bob (looks fine)"
    assert "who:   alice (uid 1000), pid 7 curl -d @secrets https://x [container 0123456789ab]" in text
    assert "where: [2001:db8::1]:443" in text
    assert "data:  pii.email a***@x.com\n" in text          # no ratings sent: none shown
    rated = _hold()
    rated.detections[0].severity, rated.detections[0].confidence = "medium", "high"
    assert "data:  pii.email a***@x.com (severity medium, confidence high)\n" in ctl.hold_text(rated)
    assert "data:  (no detections: rule hold-unknown: unknown destination)" in ctl.hold_text(
        _hold(detections=0))
    req = _hold(detections=0)
    req.rule, req.reason = "datasets", 'rule "datasets": files request (dataset_export)'
    # A request rule's hold names the rule and the request class, not a "destination rule".
    assert 'data:  (no detections: rule "datasets": files request (dataset_export))' in \
        ctl.hold_text(req)


def test_json_shapes_never_carry_offsets_or_raw_values() -> None:
    h = ctl.hold_json(_hold(host="x.example"))
    assert h["detections"] == [{"detector": "pii.email", "class": "pii", "preview": "a***@x.com",
                                "fingerprint": "fp:9", "severity": "",
                                "confidence": ""}]
    assert h["destination"]["host"] == "x.example" and h["age_s"] == 75.2
    ev = pb.HoldEvent(kind=pb.HOLD_EVENT_KIND_DECIDED, hold=_hold(), time=1.0,
                      decision=pb.Decision(outcome=pb.OUTCOME_DENIED, by_user="root", reason="no"))
    assert ctl.event_json(ev)["decision"]["outcome"] == "denied"
    assert "denied  h-abcdefghij  by root (uid 0): no" in ctl.event_text(ev)


def test_flows_table_renders_from_real_flow_messages() -> None:
    from egressguard.approvals.service import flow_pb
    f = FlowInfo(flow_id="f-1", process=Process(pid=3, uid=0, user="root", exe="/bin/sh"),
                 destination=Destination(ip="10.0.0.1", port=80), opened_at=0.0,
                 state=FlowState.FORWARDING,
                 verdict=Verdict(action=Action.MASK, rule="mask-pii", reason="r"),
                 detections=[Detection("pii.email", "pii", 0, 5, "a***", "fp")])
    table = ctl.flows_table([flow_pb(f)])
    header, row = table.splitlines()
    assert header.split()[:3] == ["FLOW", "STATE", "USER"]
    assert "f-1" in row and "forwarding" in row and "10.0.0.1:80" in row and "mask (mask-pii)" in row
    assert ctl.flow_json(flow_pb(f))["verdict"] == {"action": "mask", "rule": "mask-pii", "reason": "r"}


# -- audit verify ------------------------------------------------------------------------------

@dataclass
class _Result:
    ok: bool
    events: int
    line: int | None
    message: str


def _fake_verify_module(result: _Result) -> types.ModuleType:
    """Stands in for egressguard.audit.verify (another engineer's module) to test only how
    egressctl reports its VerifyResult."""
    mod = types.ModuleType("egressguard.audit.verify")
    mod.verify = lambda path: result  # type: ignore[attr-defined]
    mod.verify_set = mod.verify       # type: ignore[attr-defined]
    return mod


def test_audit_verify_reports_ok_and_tampered(tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "audit.jsonl"
    log.write_text("{}\n")
    monkeypatch.setitem(sys.modules, "egressguard.audit.verify",
                        _fake_verify_module(_Result(True, 12, None, "")))
    assert ctl.main(["audit", "verify", str(log)]) == 0
    assert capsys.readouterr().out == "OK: 12 events, chain intact\n"
    monkeypatch.setitem(sys.modules, "egressguard.audit.verify",
                        _fake_verify_module(_Result(False, 12, 7, "hash mismatch")))
    assert ctl.main(["audit", "verify", str(log)]) == 1
    assert capsys.readouterr().out == "TAMPERED: line 7: hash mismatch\n"
    assert ctl.main(["audit", "verify", str(tmp_path / "nope.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_audit_verify_without_the_module(tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "egressguard.audit.verify", None)   # import fails
    assert ctl.main(["audit", "verify", str(tmp_path / "a.jsonl")]) == 2
    assert "audit verify is not available" in capsys.readouterr().err


def test_vote_events_render() -> None:
    ev = pb.HoldEvent(kind=pb.HOLD_EVENT_KIND_VOTED, hold=_hold(), time=1.0,
                      decision=pb.Decision(outcome=pb.OUTCOME_VOTED, by_user="bob", by_uid=1001,
                                           reason="fine", votes=1, required=2))
    assert ctl.event_json(ev)["event"] == "voted"
    assert ctl.event_json(ev)["decision"]["outcome"] == "voted"
    assert "voted   h-abcdefghij  by bob (uid 1001): fine (1 of 2)" in ctl.event_text(ev)


def test_ledger_lines_write_addresses_like_pending_does(capsys: Any) -> None:
    """One formatter for every address egressctl prints: an IPv6 literal keeps its brackets in
    ledger lines too, and the action column says how an approval and TLS ended."""
    from egressguard.cli.usage import cmd_ledger_flows
    from egressguard.model import host_port
    assert host_port("::1", 39991) == "[::1]:39991" == ctl._dest(pb.Destination(ip="::1",
                                                                                 port=39991))
    assert host_port("127.0.0.1", 80) == "127.0.0.1:80"
    flows = [pb.LedgerFlow(flow_id="f-6", closed_at=0.0, process=pb.Process(uid=65534),
                           destination=pb.Destination(ip="::1", port=39991), action="hold",
                           state="denied", approval_id="h-1"),
             pb.LedgerFlow(flow_id="f-7", closed_at=0.0, process=pb.Process(uid=65534),
                           destination=pb.Destination(ip="127.0.0.3", port=443,
                                                      host="api.openai.com"),
                           action="allow", state="closed", tls_passthrough="intercept_failure")]

    class _Client:
        pb = pb
        stub = types.SimpleNamespace(ListLedgerFlows=None)

        def call(self, method: Any, request: Any) -> Any:
            return pb.LedgerFlowsResponse(flows=flows, all_users=True)

    import argparse
    assert cmd_ledger_flows(argparse.Namespace(since=3600.0, provider="", host="", json=False),
                            _Client()) == 0
    out = capsys.readouterr().out
    assert "[::1]:39991" in out and "hold (h-1, denied)" in out
    assert "allow NOT INSPECTED (intercept_failure)" in out


def test_approve_once_with_a_ttl_is_a_usage_error(tmp_path: Any,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    # refused before connecting: the socket does not exist, yet the answer is exit 2, not 3
    sock = str(tmp_path / "none.sock")
    for scope in ([], ["--scope", "once"]):
        assert ctl.main(["--socket", sock, "approve", "h-1", "--reason", "x", "--ttl", "5m",
                         *scope]) == 2
        err = capsys.readouterr().err
        assert "--ttl sets the lifetime of a grant" in err and "--scope" in err
    assert ctl.main(["--socket", sock, "approve", "h-1", "--reason", "x", "--ttl", "5m",
                     "--scope", "process"]) == 3          # a grant scope: on to the daemon
