"""The real daemon ships its audit trail: a guarded agent makes hundreds of flows, the daemon is
killed with SIGKILL in the middle and started again, and rsyslog (CEF over TCP) and a file sink
(OCSF) still receive every seq of the log, in order, with duplicates only where the daemon
restarted. No raw secret reaches any sink."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from egressguard.audit import segments
from egressguard.audit.verify import verify_set
from egressguard.harness import GuardedHost, base_config, free_port
from tests.test_e2e_guard import AWS_KEY_ID, EMAIL, http_post
from tests.test_sinks import in_order_with_boundary_duplicates, wait_for
from tests.tools.receivers import Rsyslog
from tests.tools.servers import RecordingServer

pytestmark = pytest.mark.kernel

MANY_FLOWS = str(Path(__file__).parent / "tools" / "many_flows.py")


def run_agent(host: GuardedHost, workdir: Path, server: RecordingServer, payload: bytes,
              count: int) -> subprocess.Popen[str]:
    fd, path = tempfile.mkstemp(dir=workdir, suffix=".payload")
    with os.fdopen(fd, "wb") as fh:
        fh.write(payload)
    os.chmod(path, 0o644)
    return host.agent(["/usr/bin/python3", MANY_FLOWS, server.host, str(server.port),
                       "--payload-file", path, "--count", str(count)],
                      stdout=subprocess.PIPE, text=True)


def file_seqs(path: Path) -> list[int]:
    if not path.exists():
        return []
    return [json.loads(ln)["unmapped"]["seq"] for ln in path.read_bytes().splitlines()]


@pytest.fixture
def workdir():
    """Readable by the agent (nobody), which pytest's tmp_path is not; removed afterwards."""
    d = Path(tempfile.mkdtemp(prefix="eg-sinks-"))
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_daemon_ships_every_event_across_kill_9(workdir: Path) -> None:
    shipped = workdir / "ship.ocsf.jsonl"
    payload = http_post(b'{"to": "' + EMAIL.encode() + b'", "key": "' + AWS_KEY_ID.encode()
                        + b'"}')
    with Rsyslog(workdir / "rsyslog") as rs, \
            RecordingServer("127.20.0.41", respond=lambda r: b"ok") as server:
        cfg = base_config(workdir / "host", rules=[
            {"name": "mask-secrets", "detected": ["secret.*"], "action": "mask"},
            {"name": "mask-emails", "detected": ["pii.email"], "action": "mask"}])
        cfg["proxy"]["listen"] = f"127.0.0.1:{free_port()}"
        cfg["audit"]["rotate_size"] = "128KiB"
        cfg["audit"]["sinks"] = [
            {"name": "siem", "type": "syslog", "address": f"127.0.0.1:{rs.port}",
             "format": "cef", "batch": 100, "retry_initial": "50ms", "retry_max": "500ms"},
            {"name": "beats", "type": "file", "path": str(shipped), "format": "ocsf",
             "batch": 100}]
        with GuardedHost(workdir / "host", cfg) as host:
            audit = host.audit_path
            agent = run_agent(host, workdir, server, payload, 400)
            wait_for(lambda: segments.head_seq(audit) > 400, 120)
            host.proc.kill()                               # kill -9, mid-traffic
            host.proc.wait(10)
            host.start()
            agent.communicate(timeout=300)
            second = run_agent(host, workdir, server, payload, 100)
            report = json.loads(second.communicate(timeout=300)[0].strip().splitlines()[-1])
            assert report["errors"] == 0
            head = segments.head_seq(audit)
            want = set(range(1, head + 1))
            wait_for(lambda: want <= set(rs.seqs()) and want <= set(file_seqs(shipped)), 120)
        seqs = rs.seqs()
        head = segments.head_seq(audit)        # daemon.stop was written at the clean stop
        result = verify_set(audit)
        assert result.ok and result.events == head, result.message
        events = [json.loads(ln) for s in segments.log_set(audit) if os.path.exists(s.path)
                  for ln in Path(s.path).read_bytes().splitlines()]
        assert sum(e["event"] == "daemon.start" for e in events) == 2
        assert not any(e["event"] == "audit.chain_reset" for e in events)
        assert sum(e["event"] == "flow.detect" for e in events) >= 200
        assert len(segments.rotated(audit)) >= 1
        # Everything, daemon.stop included (the clean stop lets healthy sinks drain), in order;
        # one restart from the cursor where the daemon was killed, at most one reconnect.
        assert events[-1]["event"] == "daemon.stop" and events[-1]["seq"] == head
        assert in_order_with_boundary_duplicates(seqs, head) <= 2
        assert in_order_with_boundary_duplicates(file_seqs(shipped), head) <= 2
        for blob in (rs.output.read_bytes(), shipped.read_bytes()):
            assert AWS_KEY_ID.encode() not in blob and EMAIL.encode() not in blob
        assert b"AKIA" in shipped.read_bytes()     # the masked preview is there instead


def test_a_hung_receiver_never_slows_enforcement(workdir: Path) -> None:
    """A syslog receiver that accepts TCP but never reads (its window fills, nothing is ever
    acknowledged past it): flows still go through, every one is audited, and the daemon still
    stops cleanly."""
    import socket
    hole = socket.socket()
    hole.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)   # full after a few messages
    hole.bind(("127.0.0.1", 0))
    hole.listen(8)                                   # the kernel accepts; nobody reads
    payload = http_post(b'{"to": "' + EMAIL.encode() + b'"}')
    try:
        with RecordingServer("127.20.0.42", respond=lambda r: b"ok") as server:
            cfg = base_config(workdir / "host", rules=[
                {"name": "mask-emails", "detected": ["pii.email"], "action": "mask"}])
            cfg["proxy"]["listen"] = f"127.0.0.1:{free_port()}"
            cfg["audit"]["sinks"] = [{"name": "hung", "type": "syslog", "batch": 5,
                                      "address": f"127.0.0.1:{hole.getsockname()[1]}"}]
            with GuardedHost(workdir / "host", cfg) as host:
                agent = run_agent(host, workdir, server, payload, 200)
                report = json.loads(agent.communicate(timeout=300)[0].strip().splitlines()[-1])
                assert report == {"flows": 200, "errors": 0}
                wait_for(lambda: sum(c.closed for c in server.connections) == 200, 60)
                assert host.stop() == 0
            events = [json.loads(ln) for ln in Path(host.audit_path).read_bytes().splitlines()]
            assert sum(e["event"] == "flow.detect" for e in events) == 200
    finally:
        hole.close()
