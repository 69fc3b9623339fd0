"""The probes on the real kernel: redirect, origin lookup, exemptions, UDP policy, stale
attachments, clean-up.

One GuardProbes is compiled and attached per module (guard_cgroup_module); agents run in that
cgroup as nobody. Stand-ins: plain listeners for the proxy (127.0.0.1 and ::1) and "real"
servers on other loopback addresses. All traffic stays on loopback.
"""

from __future__ import annotations

import ctypes as ct
import errno
import json
import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from egressguard.errors import EnvironmentProblem
from egressguard.kernel import cgroup, preflight
from egressguard.kernel.probes import (
    PROG_PREFIX,
    PROGRAMS,
    GuardProbes,
    attached_programs,
    parse_bypass,
)
from egressguard.kernel.records import EgRecord, EgTuple, KernelEvent, UdpRefusal

REAL4 = "127.20.0.7"      # stands in for an external IPv4 destination
BYPASS_ANY = "127.30.0.9"  # bypassed on every port
BYPASS_ONE = "127.30.0.10"  # bypassed on one port only
EXEMPT_MARK = 0x4547
TIMEOUT_S = 5.0

# The agent: connect (optionally with SO_MARK, a protocol, or as a TCP Fast Open sendto),
# report, wait until the peer closes.
AGENT = textwrap.dedent("""
    import json, socket, struct, sys
    host, port, mark, proto = sys.argv[1], int(sys.argv[2]), int(sys.argv[3], 0), int(sys.argv[4])
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, proto)
    if mark:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
    if sys.argv[5] == "fastopen":
        s.sendto(b"x", socket.MSG_FASTOPEN, (host, port))  # blocking: no EINPROGRESS
    else:
        s.settimeout(5)
        s.connect((host, port))
    s.settimeout(5)
    cookie = struct.unpack("=Q", s.getsockopt(socket.SOL_SOCKET, 57, 8))[0]  # SO_COOKIE
    print(json.dumps({"sockname": s.getsockname()[:2], "cookie": cookie}), flush=True)
    s.recv(1)
""")


def listen(host: str, port: int = 0) -> socket.socket:
    s = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else
                             socket.AF_INET)
    s.settimeout(TIMEOUT_S)
    return s


def accept_one(server: socket.socket) -> tuple[socket.socket, tuple]:
    conn, peer = server.accept()
    conn.settimeout(TIMEOUT_S)
    return conn, peer


def assert_no_connection(server: socket.socket) -> None:
    """Nothing reached this server (the connect under test has already completed elsewhere)."""
    readable, _, _ = select.select([server], [], [], 0.05)
    assert not readable, f"unexpected connection on {server.getsockname()}"


@dataclass
class Env:
    probes: GuardProbes
    cg: Any  # conftest.GuardCgroup
    proxy4: socket.socket
    proxy6: socket.socket
    real4: socket.socket
    real6: socket.socket
    bypass_any: socket.socket
    bypass_one: socket.socket
    events: list[KernelEvent] = field(default_factory=list)

    def agent(self, host: str, port: int, mark: int = 0, proto: int = 0,
              uid: int | None = 65534, how: str = "connect") -> tuple[subprocess.Popen, dict]:
        """Run the agent in the guarded cgroup; return it and what it reported after connect."""
        proc = self.cg.spawn([sys.executable, "-c", AGENT, host, str(port), hex(mark),
                              str(proto), how], uid=uid, gid=uid, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        ready, _, _ = select.select([proc.stdout], [], [], TIMEOUT_S)
        assert ready, "agent did not connect in time"
        line = proc.stdout.readline()
        assert line, f"agent failed: {proc.communicate(timeout=TIMEOUT_S)[1]}"
        return proc, json.loads(line)


def finish(proc: subprocess.Popen, conn: socket.socket) -> None:
    """Close our side; the agent sees EOF and exits."""
    conn.close()
    assert proc.wait(timeout=TIMEOUT_S) == 0, proc.stderr.read()


@pytest.fixture(scope="module")
def env(guard_cgroup_module, cgroup_attachments) -> Iterator[Env]:
    socks = [listen("127.0.0.1"), listen("::1"), listen(REAL4), listen("::1"),
             listen(BYPASS_ANY), listen(BYPASS_ONE)]
    proxy4, proxy6, real4, real6, bypass_any, bypass_one = socks
    events: list[KernelEvent] = []
    probes = GuardProbes(
        guard_cgroup_module.path, proxy4=("127.0.0.1", proxy4.getsockname()[1]),
        proxy6=("::1", proxy6.getsockname()[1]),
        bypass=[BYPASS_ANY, f"{BYPASS_ONE}:{bypass_one.getsockname()[1]}"],
        exempt_mark=EXEMPT_MARK, on_event=events.append)
    try:
        probes.attach()
        yield Env(probes, guard_cgroup_module, *socks, events=events)
    finally:
        probes.detach()
        for s in socks:
            s.close()
    assert cgroup_attachments(guard_cgroup_module.path) == []


@pytest.mark.kernel
def test_ipv4_connect_lands_on_proxy_with_origin(env: Env) -> None:
    port = env.real4.getsockname()[1]
    proc, report = env.agent(REAL4, port)
    conn, peer = accept_one(env.proxy4)
    try:
        assert list(peer) == report["sockname"]  # the proxy's peer is the agent's socket
        rec = env.probes.lookup_origin(*peer)
        assert rec is not None
        assert (rec.family, rec.dst_ip, rec.dst_port) == (socket.AF_INET, REAL4, port)
        assert (rec.tgid, rec.pid) == (proc.pid, proc.pid)  # single-threaded agent
        assert (rec.uid, rec.gid) == (65534, 65534)
        with open(f"/proc/{proc.pid}/comm") as f:
            assert rec.comm == f.read().strip()
        assert rec.cgroup_id == env.cg.id
        assert rec.cookie == report["cookie"]
        assert env.probes.lookup_origin(*peer) is None  # popped
        assert_no_connection(env.real4)
    finally:
        finish(proc, conn)


@pytest.mark.kernel
def test_ipv6_connect_lands_on_proxy6(env: Env) -> None:
    port = env.real6.getsockname()[1]
    proc, _ = env.agent("::1", port)
    conn, peer = accept_one(env.proxy6)
    try:
        rec = env.probes.lookup_origin(peer[0], peer[1])
        assert rec is not None
        assert (rec.family, rec.dst_ip, rec.dst_port) == (socket.AF_INET6, "::1", port)
        assert rec.tgid == proc.pid
        assert_no_connection(env.real6)
    finally:
        finish(proc, conn)


@pytest.mark.kernel
def test_v4_mapped_connect_lands_on_proxy4_as_ipv4(env: Env) -> None:
    port = env.real4.getsockname()[1]
    proc, report = env.agent(f"::ffff:{REAL4}", port)
    conn, peer = accept_one(env.proxy4)
    try:
        assert report["sockname"][0] == "::ffff:127.0.0.1"
        # The IPv4 listener sees a plain IPv4 peer; both spellings find the record.
        rec = env.probes.lookup_origin(f"::ffff:{peer[0]}", peer[1])
        assert rec is not None
        assert (rec.family, rec.dst_ip, rec.dst_port) == (socket.AF_INET, REAL4, port)
        assert_no_connection(env.real4)
    finally:
        finish(proc, conn)


@pytest.mark.kernel
def test_marked_socket_is_not_redirected(env: Env) -> None:
    """The daemon's upstream sockets carry the exempt mark (setting SO_MARK needs
    CAP_NET_ADMIN, so this agent runs as root, still inside the cgroup)."""
    port = env.real4.getsockname()[1]
    proc, _ = env.agent(REAL4, port, mark=EXEMPT_MARK, uid=None)
    conn, _ = accept_one(env.real4)
    try:
        assert_no_connection(env.proxy4)
    finally:
        finish(proc, conn)


@pytest.mark.kernel
def test_other_mark_is_redirected(env: Env) -> None:
    proc, _ = env.agent(REAL4, env.real4.getsockname()[1], mark=EXEMPT_MARK + 1, uid=None)
    conn, peer = accept_one(env.proxy4)
    try:
        assert env.probes.lookup_origin(*peer) is not None
    finally:
        finish(proc, conn)


@pytest.mark.kernel
def test_bypass_addresses_are_not_redirected(env: Env) -> None:
    proc, _ = env.agent(BYPASS_ANY, env.bypass_any.getsockname()[1])
    conn, _ = accept_one(env.bypass_any)
    finish(proc, conn)
    proc, _ = env.agent(BYPASS_ONE, env.bypass_one.getsockname()[1])
    conn, _ = accept_one(env.bypass_one)
    finish(proc, conn)
    assert_no_connection(env.proxy4)


@pytest.mark.kernel
def test_bypass_with_port_covers_only_that_port(env: Env) -> None:
    with listen(BYPASS_ONE) as other:
        port = other.getsockname()[1]
        proc, _ = env.agent(BYPASS_ONE, port)
        conn, peer = accept_one(env.proxy4)
        try:
            rec = env.probes.lookup_origin(*peer)
            assert rec is not None and (rec.dst_ip, rec.dst_port) == (BYPASS_ONE, port)
            assert_no_connection(other)
        finally:
            finish(proc, conn)


@pytest.mark.kernel
def test_process_outside_cgroup_is_not_affected(env: Env) -> None:
    with socket.create_connection(env.real4.getsockname(), timeout=TIMEOUT_S):
        conn, _ = accept_one(env.real4)
        conn.close()
    assert_no_connection(env.proxy4)


@pytest.mark.kernel
@pytest.mark.skipif(not os.path.exists("/proc/sys/net/mptcp/enabled"), reason="no MPTCP")
def test_mptcp_connect_is_redirected_too(env: Env) -> None:
    """An agent must not escape by asking for IPPROTO_MPTCP: its subflow is TCP."""
    with open("/proc/sys/net/mptcp/enabled") as f:
        if f.read().strip() != "1":
            pytest.skip("MPTCP disabled")
    port = env.real4.getsockname()[1]
    proc, _ = env.agent(REAL4, port, proto=262)  # IPPROTO_MPTCP
    conn, peer = accept_one(env.proxy4)
    try:
        rec = env.probes.lookup_origin(*peer)
        assert rec is not None and (rec.dst_ip, rec.dst_port) == (REAL4, port)
        assert_no_connection(env.real4)
    finally:
        finish(proc, conn)


@pytest.mark.kernel
def test_tcp_fast_open_sendto_is_redirected_too(env: Env) -> None:
    """sendto(MSG_FASTOPEN) connects without connect(): it must not escape the redirect."""
    port = env.real4.getsockname()[1]
    proc, _ = env.agent(REAL4, port, how="fastopen")
    conn, peer = accept_one(env.proxy4)
    try:
        rec = env.probes.lookup_origin(*peer)
        assert rec is not None and (rec.dst_ip, rec.dst_port) == (REAL4, port)
        assert conn.recv(1) == b"x"
        assert_no_connection(env.real4)
    finally:
        finish(proc, conn)


# UDP agents print {attempt: "ok" | errno}; they share this prelude.
UDP_PRELUDE = textwrap.dedent("""
    import json, socket, sys
    port = int(sys.argv[1])
    def attempt(fn):
        try:
            fn()
            return "ok"
        except OSError as e:
            return e.errno
""")
UDP_AGENT = UDP_PRELUDE + textwrap.dedent("""
    s4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    c4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    print(json.dumps({
        "sendto4": attempt(lambda: s4.sendto(b"q", ("127.0.0.1", port))),
        "sendto4_dns": attempt(lambda: s4.sendto(b"q", ("127.0.0.1", 53))),
        "sendto6": attempt(lambda: s6.sendto(b"q", ("::1", port))),
        "connect4": attempt(lambda: c4.connect(("127.0.0.1", port))),
        "connect4_dns": attempt(lambda: c4.connect(("127.0.0.1", 53))),
    }))
""")


def run_udp_agent(cg: Any, port: int, script: str = UDP_AGENT) -> tuple[int, dict]:
    proc = cg.spawn([sys.executable, "-c", script, str(port)], stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, text=True)
    stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
    assert proc.returncode == 0, stderr
    return proc.pid, json.loads(stdout)


def collect_events(probes: GuardProbes, events: list, count: int) -> list[UdpRefusal]:
    deadline = time.monotonic() + TIMEOUT_S
    while len(events) < count and time.monotonic() < deadline:
        probes.poll_events(timeout_ms=100)
    return list(events)


@pytest.mark.kernel
def test_udp_dns_only_refuses_and_reports(env: Env) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        port = udp.getsockname()[1]
        env.probes.poll_events()
        env.events.clear()
        agent_pid, result = run_udp_agent(env.cg, port)
        assert result == {"sendto4": 1, "sendto4_dns": "ok", "sendto6": 1, "connect4": 1,
                          "connect4_dns": "ok"}  # 1 == EPERM
        readable, _, _ = select.select([env.probes.events_fd], [], [], TIMEOUT_S)
        assert readable, "no UDP refusal event queued"
        events = collect_events(env.probes, env.events, 3)
        udp.setblocking(False)
        with pytest.raises(BlockingIOError):
            udp.recv(10)  # nothing got through
    assert [type(e) for e in events] == [UdpRefusal] * 3
    assert [(e.hook, e.dst_ip, e.dst_port) for e in events] == [
        ("sendmsg4", "127.0.0.1", port), ("sendmsg6", "::1", port),
        ("connect4", "127.0.0.1", port)]
    assert {(e.uid, e.gid, e.cgroup_id, e.tgid) for e in events} == {
        (65534, 65534, env.cg.id, agent_pid)}


UDP6_AGENT = UDP_PRELUDE + textwrap.dedent("""
    def sock():
        return socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s6, c6, m6, q6 = sock(), sock(), sock(), sock()
    print(json.dumps({
        "sendto_mapped": attempt(lambda: m6.sendto(b"q", ("::ffff:127.0.0.1", port))),
        "connect6": attempt(lambda: c6.connect(("::1", port))),
        "connect_mapped": attempt(lambda: q6.connect(("::ffff:127.0.0.1", port))),
        "sendto6_dns": attempt(lambda: s6.sendto(b"q", ("::1", 53))),
        "quic_after_dns_connect": attempt(lambda: (s6.connect(("::1", 53)),
                                                   s6.sendto(b"q", ("::1", port)))),
    }))
""")


@pytest.mark.kernel
def test_udp_dns_only_covers_ipv6_connect_and_v4_mapped_sends(env: Env) -> None:
    # QUIC over an AF_INET6 socket: to a v4-mapped address, after connect(), and by sendto()
    # to another address on a socket already connected to DNS. Each is refused and reported.
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as udp:
        udp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        udp.bind(("::", 0))
        port = udp.getsockname()[1]
        env.probes.poll_events()
        env.events.clear()
        _, result = run_udp_agent(env.cg, port, UDP6_AGENT)
        events = collect_events(env.probes, env.events, 4)
        udp.setblocking(False)
        with pytest.raises(BlockingIOError):
            udp.recv(10)  # nothing got through
    assert result == {"sendto_mapped": 1, "connect6": 1, "connect_mapped": 1,
                      "sendto6_dns": "ok", "quic_after_dns_connect": 1}   # 1 == EPERM
    # The kernel hands a v4-mapped sendto on an AF_INET6 socket to the IPv4 path (sendmsg4),
    # while connect() to a v4-mapped address stays in connect6.
    assert [(e.hook, e.dst_ip, e.dst_port) for e in events] == [
        ("sendmsg4", "127.0.0.1", port), ("connect6", "::1", port),
        ("connect6", "127.0.0.1", port), ("sendmsg6", "::1", port)]


@pytest.mark.kernel
def test_record_layout_matches_compiled_probes(env: Env) -> None:
    """records.py must mirror egressguard.h: compare with the layout BCC took from clang."""
    table = env.probes._bpf[b"eg_origins"]  # private on purpose: this test is about the mirror

    def layout(cls) -> list[tuple[str, int, int]]:
        return [(n, getattr(cls, n).offset, getattr(cls, n).size) for n, *_ in cls._fields_]

    assert ct.sizeof(table.Key) == ct.sizeof(EgTuple)
    assert ct.sizeof(table.Leaf) == ct.sizeof(EgRecord)
    assert layout(table.Key) == layout(EgTuple)
    assert layout(table.Leaf) == layout(EgRecord)


CONNECT_ERRNO = textwrap.dedent("""
    import socket, sys
    try:
        socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
        print("connected")
    except OSError as e:
        print(e.errno)
""")

STALE_ATTACHER = textwrap.dedent("""
    import sys
    from egressguard.kernel.probes import GuardProbes
    GuardProbes(sys.argv[1], ("127.0.0.1", 1), ("::1", 1), [], udp_mode="block").attach()
    print("attached", flush=True)
    sys.stdin.read()
""")


@pytest.mark.kernel
def test_stale_attachment_is_replaced_and_detach_cleans_up(guard_cgroup,
                                                           cgroup_attachments) -> None:
    """A daemon killed with SIGKILL leaves its legacy attachments; the next attach replaces
    them (exactly one set remains), and detach leaves nothing of ours."""
    path = guard_cgroup.path
    attacher = subprocess.Popen([sys.executable, "-c", STALE_ATTACHER, path],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([attacher.stdout], [], [], 30)
        assert ready and attacher.stdout.readline().strip() == "attached"
    finally:
        attacher.send_signal(signal.SIGKILL)
        attacher.wait(timeout=TIMEOUT_S)
        attacher.stdin.close()
        attacher.stdout.close()
    stale = attached_programs(path)
    assert sorted(n for _, _, n in stale) == sorted(n for n, _, _ in PROGRAMS)
    # With the daemon dead, the stale redirect fails closed: connects go to its closed proxy
    # port (1 here) and are refused instead of leaving unguarded.
    with listen(REAL4) as real:
        probe = guard_cgroup.spawn([sys.executable, "-c", CONNECT_ERRNO, REAL4,
                                    str(real.getsockname()[1])], stdout=subprocess.PIPE,
                                   text=True)
        assert probe.communicate(timeout=TIMEOUT_S)[0].strip() == str(errno.ECONNREFUSED)
        assert_no_connection(real)

    probes = GuardProbes(path, ("127.0.0.1", 1), ("::1", 1), [], udp_mode="block")
    try:
        probes.attach()
        now = attached_programs(path)
        assert sorted(n for _, _, n in now) == sorted(n for n, _, _ in PROGRAMS)
        assert not {i for i, _, _ in now} & {i for i, _, _ in stale}
        assert len(cgroup_attachments(path)) == len(PROGRAMS)
        # The new set is live: block mode refuses even DNS.
        _, result = run_udp_agent(guard_cgroup, 9)
        assert result["sendto4_dns"] == 1 and result["connect4_dns"] == 1
    finally:
        probes.detach()
    probes.detach()  # idempotent
    assert attached_programs(path) == []
    assert cgroup_attachments(path) == []
    assert not any(PROG_PREFIX in line for line in cgroup_attachments(path))


def test_root_cgroup_is_refused(cgroup_mount: str) -> None:
    with pytest.raises(ValueError, match="root cgroup"):
        GuardProbes(cgroup_mount, ("127.0.0.1", 15001), ("::1", 15001), [])


@pytest.mark.parametrize("bad", [
    {"exempt_mark": 0}, {"udp_mode": "quic"}, {"dns_ports": (0,)},
    {"proxy4": ("::1", 15001)}, {"proxy6": ("::ffff:127.0.0.1", 15001)},
    {"bypass": ["10.0.0.1"]},
])
def test_bad_settings_are_refused(guard_cgroup, bad: dict) -> None:
    kwargs = {"proxy4": ("127.0.0.1", 15001), "proxy6": ("::1", 15001), "bypass": [], **bad}
    with pytest.raises(ValueError):
        GuardProbes(guard_cgroup.path, **kwargs)


def test_parse_bypass() -> None:
    assert parse_bypass(["127.0.0.53", "::1", "127.0.0.53:53", "[::1]:853",
                         "::ffff:127.0.0.9"]) == [
        ("127.0.0.53", 0), ("::1", 0), ("127.0.0.53", 53), ("::1", 853), ("127.0.0.9", 0)]
    for bad in ("8.8.8.8", "10.1.2.3:53", "[2001:db8::1]:53", "example.com", "127.0.0.1:0",
                "127.0.0.1:x"):
        with pytest.raises(ValueError):
            parse_bypass([bad])


@pytest.mark.kernel
def test_preflight_passes_here_and_names_a_missing_cgroup(guard_cgroup) -> None:
    preflight.check_environment(guard_cgroup.rel)
    with pytest.raises(EnvironmentProblem) as e:
        preflight.check_environment(guard_cgroup.rel + "/missing")
    assert f"{guard_cgroup.path}/missing does not exist" in str(e.value)
    assert "\n" not in str(e.value)


def test_preflight_missing_capabilities() -> None:
    root = "CapEff:\t000001ffffffffff\n"
    assert preflight.missing_capabilities(root, 40) == []
    assert preflight.missing_capabilities("CapEff:\t0000000000000000\n", 40) == [
        "CAP_NET_ADMIN", "CAP_SYS_ADMIN", "CAP_BPF"]
    # Before 5.8 there is no CAP_BPF: CAP_SYS_ADMIN covers it.
    assert preflight.missing_capabilities("CapEff:\t0000000000201000\n", 37) == []


def test_cgroup_resolve_refuses_root_and_escapes() -> None:
    for rel in ("/", "", "/../etc", "/a/./b"):
        with pytest.raises(ValueError):
            cgroup.resolve(rel, "/sys/fs/cgroup")
    assert cgroup.resolve("/agents.slice/x", "/sys/fs/cgroup") == "/sys/fs/cgroup/agents.slice/x"
