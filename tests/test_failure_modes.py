"""End to end: what happens to guarded agents when the daemon is killed with SIGKILL, in both
failure modes, and that a restarted daemon enforces again.

Every claim is checked at the destination: the recording server says what it received.
- closed: after `kill -9` mid-stream and mid-hold, the destination got no byte past what the
  policy released, new connects are refused (and never reach it), the restarted daemon adopts
  the pinned probes (exactly one set) and holds the same secret again; a stop leaves the probes
  attached until `egressguard detach`, which leaves nothing.
- open: after `kill -9` the held secret never went out, nothing of ours stays on the cgroup,
  and guarded connects reach the destination directly; the restarted daemon enforces again and
  a clean stop leaves nothing.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from egressguard.harness import GuardedHost, scratch_dir
from egressguard.kernel import pins
from egressguard.kernel.cgroup import cgroup_id
from egressguard.kernel.probes import PROGRAMS, attached_programs
from tests.test_e2e_guard import (AWS_KEY_ID, Agent, audit_events, finish, http_post, pending,
                                  policy, wait_for)
from tests.tools.servers import RecordingServer

pytestmark = pytest.mark.kernel


@pytest.fixture
def workdir() -> Path:
    """A scratch folder the unprivileged agents can read (pytest's tmp_path is 0700)."""
    d = scratch_dir("eg-fm-")
    os.chmod(d, 0o755)
    return d

CONNECT_ERRNO = textwrap.dedent("""
    import socket, sys
    s = socket.socket()
    s.settimeout(5)
    print(s.connect_ex((sys.argv[1], int(sys.argv[2]))), flush=True)
""")


def connect_errno(host: GuardedHost, ip: str, port: int) -> int:
    proc = host.agent([sys.executable, "-c", CONNECT_ERRNO, ip, str(port)],
                      stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=30)
    return int(out.strip())


def held_on(host: GuardedHost, ip: str) -> dict[str, Any]:
    return wait_for(lambda: next((h for h in pending(host) if h["destination"]["ip"] == ip),
                                 None), timeout=30)


def start_streaming(host: GuardedHost, workdir: Path, server: RecordingServer
                    ) -> subprocess.Popen[str]:
    """A slow, clean upload (1 KiB every 20 ms for ~8 s) that is still running when killed."""
    return Agent(host, workdir).start(server.host, server.port, b"x" * 400 * 1024,
                                      extra=["--chunk", "1024", "--delay", "0.02"])


def test_closed_mode_kill9_refuses_then_restart_adopts(workdir: Path) -> None:
    with GuardedHost(workdir / "h", policy(workdir / "h")) as host, \
            RecordingServer("127.20.5.1") as stream_srv, \
            RecordingServer("127.20.5.2") as hold_srv, RecordingServer("127.20.5.3") as probe:
        streaming = start_streaming(host, workdir, stream_srv)
        secret = http_post(b'{"prompt": "use ' + AWS_KEY_ID.encode() + b'"}')
        held_proc = Agent(host, workdir).start(hold_srv.host, hold_srv.port, secret)
        held_on(host, hold_srv.host)
        wait_for(lambda: stream_srv.total_bytes > 16 * 1024)

        host.kill()                                    # SIGKILL: no clean-up at all
        streamed, held = finish(streaming), finish(held_proc)
        # The proxy's sockets died with it: the stream broke, the held flow got no answer.
        assert streamed["error"] is not None and held["received"] == 0
        wait_for(lambda: all(c.closed for c in stream_srv.connections + hold_srv.connections))
        assert AWS_KEY_ID.encode() not in hold_srv.all_data()
        assert stream_srv.total_bytes <= streamed["sent"]
        assert len(stream_srv.connections) == 1
        # Dead daemon, closed mode: the probes stay, connects are refused, none gets out.
        assert len(attached_programs(host.cgroup_path)) == len(PROGRAMS)
        assert connect_errno(host, probe.host, probe.port) == errno.ECONNREFUSED
        assert connect_errno(host, stream_srv.host, stream_srv.port) == errno.ECONNREFUSED
        assert probe.connections == [] and len(stream_srv.connections) == 1

        host.start()                                   # a restarted daemon adopts them
        start = [e for e in audit_events(host) if e["event"] == "daemon.start"][-1]
        assert sorted(start["adopted_programs"]) == sorted(n for n, _, _ in PROGRAMS)
        assert len(attached_programs(host.cgroup_path)) == len(PROGRAMS)
        again = Agent(host, workdir).start(hold_srv.host, hold_srv.port, secret)
        hold = held_on(host, hold_srv.host)
        assert host.egressctl("deny", hold["id"], "--reason", "test").returncode == 0
        assert finish(again)["error"] == "ConnectionResetError"
        assert AWS_KEY_ID.encode() not in hold_srv.all_data()

        assert host.stop() == 0                        # a stop keeps the cgroup closed ...
        assert len(attached_programs(host.cgroup_path)) == len(PROGRAMS)
        assert connect_errno(host, probe.host, probe.port) == errno.ECONNREFUSED
        assert sorted(host.detach()) == sorted(n for n, _, _ in PROGRAMS)   # ... until detach
        assert attached_programs(host.cgroup_path) == []
        assert pins.pinned_programs(cgroup_id(host.cgroup_path)) == {}
        assert probe.connections == []


def test_open_mode_kill9_goes_direct_then_restart_enforces(workdir: Path) -> None:
    with GuardedHost(workdir / "h", policy(workdir / "h", failure_mode="open")) as host, \
            RecordingServer("127.20.6.1") as stream_srv, \
            RecordingServer("127.20.6.2") as hold_srv, RecordingServer("127.20.6.3") as direct:
        streaming = start_streaming(host, workdir, stream_srv)
        secret = http_post(b'{"prompt": "use ' + AWS_KEY_ID.encode() + b'"}')
        held_proc = Agent(host, workdir).start(hold_srv.host, hold_srv.port, secret)
        held_on(host, hold_srv.host)
        wait_for(lambda: stream_srv.total_bytes > 16 * 1024)

        host.kill()
        streamed, held = finish(streaming), finish(held_proc)
        assert streamed["error"] is not None and held["received"] == 0
        wait_for(lambda: all(c.closed for c in hold_srv.connections))
        assert AWS_KEY_ID.encode() not in hold_srv.all_data()
        # The kernel dropped the links with the daemon's descriptors: nothing stays, and
        # guarded processes reach the destination directly (availability over secrecy).
        assert attached_programs(host.cgroup_path) == []
        assert pins.pinned_programs(cgroup_id(host.cgroup_path)) == {}
        assert connect_errno(host, direct.host, direct.port) == 0
        wait_for(lambda: len(direct.connections) == 1)

        host.start()
        assert len(attached_programs(host.cgroup_path)) == len(PROGRAMS)
        again = Agent(host, workdir).start(hold_srv.host, hold_srv.port, secret)
        hold = held_on(host, hold_srv.host)
        assert host.egressctl("deny", hold["id"], "--reason", "test").returncode == 0
        assert finish(again)["error"] == "ConnectionResetError"
        assert AWS_KEY_ID.encode() not in hold_srv.all_data()

        assert host.stop() == 0                        # a clean stop leaves nothing
        assert attached_programs(host.cgroup_path) == []
        assert host.detach() == []
        assert connect_errno(host, direct.host, direct.port) == 0


@pytest.mark.parametrize("mode", ["closed", "open"])
def test_failed_restart_records_start_failed_and_the_probes_true_state(workdir: Path,
                                                                        mode: str) -> None:
    """A start that fails (proxy port taken) after a SIGKILL writes daemon.start_failed, not a
    daemon.stop claiming "detached": in closed mode the predecessor's pinned probes are still
    attached (the kernel is asked), in open mode nothing is."""
    with GuardedHost(workdir / "h", policy(workdir / "h", failure_mode=mode)) as host:
        host.kill()
        before = len(audit_events(host))
        ip, port = host.config["proxy"]["listen"].rsplit(":", 1)
        with socket.socket() as busy:
            busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            busy.bind((ip, int(port)))
            busy.listen()
            res = subprocess.run([host.python, "-m", "egressguard", "run", "--config",
                                  str(host.config_path)], capture_output=True, text=True,
                                 timeout=90)
        assert res.returncode == 2 and "proxy.listen" in res.stderr, res.stderr[-2000:]
        new = audit_events(host)[before:]
        daemon_events = [e["event"] for e in new if e["event"].startswith("daemon.")]
        assert daemon_events == ["daemon.start_failed"]
        failed = new[-1]
        assert failed["event"] == "daemon.start_failed"
        assert "proxy.listen" in failed["reason"] and "in use" in failed["reason"]
        assert failed["probes"] == "not attached by this run"
        ours = sorted(n for n, _, _ in PROGRAMS)
        if mode == "closed":
            assert failed["programs_attached"] == ours
            assert sorted(n for _, _, n in attached_programs(host.cgroup_path)) == ours
            assert "probes stay attached" in res.stderr
        else:
            assert failed["programs_attached"] == []
            assert attached_programs(host.cgroup_path) == []


def test_sighup_is_a_reload_not_a_kill(workdir: Path) -> None:
    """Python's default for SIGHUP is to terminate; the daemon reloads instead (an unchanged
    file is recorded as such) and keeps running."""
    with GuardedHost(workdir / "h", policy(workdir / "h")) as host:
        assert host.proc is not None
        host.proc.send_signal(signal.SIGHUP)
        ok = wait_for(lambda: [e for e in audit_events(host) if e["event"] == "policy.reload"])
        assert ok[-1]["outcome"] == "unchanged"
        assert host.proc.poll() is None
        assert json.loads(host.egressctl("status", "--json").stdout)["failure_mode"] == "closed"
