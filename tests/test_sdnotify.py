"""The systemd notify protocol against a real AF_UNIX datagram socket the test binds (systemd
is not PID 1 here), first for the Notifier alone, then for a real daemon: READY=1 only once
the probes are attached and the proxy listens, STATUS= lines, WATCHDOG=1 from the event loop
(they stop while the process is stopped), RELOADING=1 on SIGHUP, STOPPING=1 on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from egressguard.harness import GuardedHost, scratch_dir
from egressguard.kernel.probes import PROGRAMS, attached_programs
from egressguard.sdnotify import Notifier
from tests.test_e2e_guard import policy


class NotifySocket:
    """What systemd would listen on: a bound datagram socket, messages split into fields."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.2)
        self.backlog: list[dict[str, str]] = []

    def messages(self, seconds: float) -> list[dict[str, str]]:
        out, deadline = [], time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            out.append(dict(line.split("=", 1) for line in data.decode().splitlines()))
        return out

    def wait_for(self, key: str, seconds: float = 60.0) -> tuple[dict[str, str],
                                                                  list[dict[str, str]]]:
        """The first message with `key` (later ones stay queued for the next call)."""
        seen, deadline = [], time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not self.backlog:
                self.backlog.extend(self.messages(0.2))
            while self.backlog:
                m = self.backlog.pop(0)
                seen.append(m)
                if key in m:
                    return m, seen
        raise AssertionError(f"no {key} within {seconds}s; got {seen[-20:]}")

    def close(self) -> None:
        self.sock.close()
        if not self.path.startswith("\0"):
            os.unlink(self.path)


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    s = NotifySocket(str(tmp_path / "notify.sock"))
    yield s
    s.close()


def test_notifier_sends_datagrams(notify_socket: NotifySocket) -> None:
    n = Notifier({"NOTIFY_SOCKET": notify_socket.path, "WATCHDOG_USEC": "3000000"})
    assert n.enabled and n.watchdog_interval == 1.5
    assert n.ready("enforcing /x") and n.watchdog() and n.status("two\nlines") and n.stopping()
    got = notify_socket.messages(0.5)
    assert got == [{"READY": "1", "STATUS": "enforcing /x", "MAINPID": str(os.getpid())},
                   {"WATCHDOG": "1"}, {"STATUS": "two lines"}, {"STOPPING": "1"}]
    n.close()


def test_notifier_abstract_socket_and_absent_systemd() -> None:
    name = f"egressguard-test-{uuid.uuid4().hex}"
    s = NotifySocket("\0" + name)
    try:
        n = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert n.reloading()
        (msg,) = s.messages(0.5)
        assert msg["RELOADING"] == "1" and int(msg["MONOTONIC_USEC"]) > 0
    finally:
        s.close()
    off = Notifier({})
    assert not off.enabled and not off.ready("x") and off.watchdog_interval is None
    assert Notifier({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}).watchdog_interval is None
    assert Notifier({"WATCHDOG_USEC": "junk"}).watchdog_interval is None


def test_notifier_survives_a_vanished_socket(tmp_path: Path) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert n.enabled and not n.watchdog() and not n.watchdog()   # logged once, never raises


@pytest.mark.kernel
def test_daemon_speaks_the_notify_protocol(notify_socket: NotifySocket) -> None:
    d = scratch_dir("eg-notify-")
    os.chmod(d, 0o755)
    cfg = policy(d / "h")
    host = GuardedHost(d / "h", cfg, env={"NOTIFY_SOCKET": notify_socket.path,
                                          "WATCHDOG_USEC": "400000"})
    with host:
        ready, before = notify_socket.wait_for("READY")
        assert not any("READY" in m for m in before[:-1])
        # READY=1 came only once the probes are attached and the proxy listens.
        assert len(attached_programs(host.cgroup_path)) == len(PROGRAMS)
        ip, port = cfg["proxy"]["listen"].rsplit(":", 1)
        socket.create_connection((ip, int(port)), timeout=5).close()
        assert ready["MAINPID"] == str(host.proc.pid)
        assert ready["STATUS"].startswith(f"enforcing {host.cgroup_rel} (failure_mode=closed)")
        assert "0 holds pending" in ready["STATUS"]

        pings = [m for m in notify_socket.messages(1.5) if "WATCHDOG" in m]
        assert len(pings) >= 3                       # every 0.2 s (half of WATCHDOG_USEC)
        host.proc.send_signal(signal.SIGSTOP)        # a stuck daemon sends no pings
        try:
            notify_socket.messages(0.3)              # drain what was in flight
            assert not [m for m in notify_socket.messages(1.0) if "WATCHDOG" in m]
        finally:
            host.proc.send_signal(signal.SIGCONT)
        notify_socket.wait_for("WATCHDOG", 5)

        host.proc.send_signal(signal.SIGHUP)
        notify_socket.wait_for("RELOADING", 30)
        again, _ = notify_socket.wait_for("READY", 30)
        assert again["STATUS"].startswith("enforcing")
        assert host.stop() == 0
        notify_socket.wait_for("STOPPING", 5)
