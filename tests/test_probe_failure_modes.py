"""How the probes' attachment behaves when the process holding it dies (the kernel half of
`failure_mode`), measured on the real kernel with a real SIGKILL.

- closed: pinned cgroup links survive SIGKILL; guarded connects are refused (the proxy port is
  closed) and never reach the destination; the next attach adopts the pins (same link ids,
  new program ids: no duplicate), and detach removes links and pins.
- open: unpinned links die with the process; guarded connects then reach the destination
  directly, and nothing of ours is left on the cgroup.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import subprocess
import sys
import textwrap

import pytest

from egressguard.kernel import pins
from egressguard.kernel.probes import PROGRAMS, GuardProbes, attached_programs, remove_guard
from tests.test_kernel_probes import REAL4, TIMEOUT_S, assert_no_connection, listen

pytestmark = pytest.mark.kernel

HOLDER = textwrap.dedent("""
    import sys
    from egressguard.kernel.probes import GuardProbes
    p = GuardProbes(sys.argv[1], ("127.0.0.1", 1), ("::1", 1), [], failure_mode=sys.argv[2])
    p.attach()
    print("attached", flush=True)
    sys.stdin.read()
""")

CONNECT_ERRNO = textwrap.dedent("""
    import socket, sys
    s = socket.socket()
    s.settimeout(5)
    print(s.connect_ex((sys.argv[1], int(sys.argv[2]))), flush=True)
""")


def attach_in_child_then_kill(cgroup_path: str, mode: str) -> None:
    """Attach from a separate process, then SIGKILL it: no chance to clean up."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, cgroup_path, mode],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([holder.stdout], [], [], 60)
        assert ready and holder.stdout.readline().strip() == "attached"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=TIMEOUT_S)
        holder.stdin.close()
        holder.stdout.close()


def connect_from_cgroup(cg, port: int) -> int:
    probe = cg.spawn([sys.executable, "-c", CONNECT_ERRNO, REAL4, str(port)],
                     stdout=subprocess.PIPE, text=True)
    return int(probe.communicate(timeout=TIMEOUT_S)[0].strip())


def bpftool_links(cgroup_path: str) -> list[str]:
    out = subprocess.run(["bpftool", "cgroup", "show", cgroup_path], capture_output=True,
                         text=True, timeout=10, check=True).stdout
    return [line for line in out.splitlines()[1:] if line.strip()]


def test_closed_mode_survives_sigkill_and_is_adopted(guard_cgroup, cgroup_attachments) -> None:
    path = guard_cgroup.path
    attach_in_child_then_kill(path, "closed")
    stale = attached_programs(path)
    assert sorted(n for _, _, n in stale) == sorted(n for n, _, _ in PROGRAMS)
    pinned = pins.pinned_programs(guard_cgroup.id)
    assert sorted(pinned) == sorted(n for n, _, _ in PROGRAMS)
    with listen(REAL4) as real:  # dead daemon: a fast refusal, and nothing reaches the server
        assert connect_from_cgroup(guard_cgroup, real.getsockname()[1]) == errno.ECONNREFUSED
        assert_no_connection(real)

    probes = GuardProbes(path, ("127.0.0.1", 1), ("::1", 1), [], failure_mode="closed")
    try:
        probes.attach()
        assert sorted(probes.adopted) == sorted(n for n, _, _ in PROGRAMS)
        now = attached_programs(path)
        assert len(now) == len(PROGRAMS) == len(cgroup_attachments(path))
        assert not {i for i, _, _ in now} & {i for i, _, _ in stale}
        assert all(s["attached"] and s["via"] == "pinned link"
                   for s in probes.attachment_state())
    finally:
        probes.detach()
    assert attached_programs(path) == [] and cgroup_attachments(path) == []
    assert pins.pinned_programs(guard_cgroup.id) == {}


def test_open_mode_attachment_dies_with_the_process(guard_cgroup, cgroup_attachments) -> None:
    path = guard_cgroup.path
    attach_in_child_then_kill(path, "open")
    assert attached_programs(path) == [] and cgroup_attachments(path) == []
    assert pins.pinned_programs(guard_cgroup.id) == {}
    with listen(REAL4) as real:  # dead daemon: guarded processes go direct
        assert connect_from_cgroup(guard_cgroup, real.getsockname()[1]) == 0
        conn, _ = real.accept()
        conn.close()


def test_open_mode_takes_over_a_closed_mode_predecessor(guard_cgroup) -> None:
    path = guard_cgroup.path
    attach_in_child_then_kill(path, "closed")
    probes = GuardProbes(path, ("127.0.0.1", 1), ("::1", 1), [], failure_mode="open")
    try:
        probes.attach()
        assert probes.adopted == []
        assert len(attached_programs(path)) == len(PROGRAMS)
        assert pins.pinned_programs(guard_cgroup.id) == {}
        assert all(s["via"] == "link" for s in probes.attachment_state())
    finally:
        probes.detach()
    assert attached_programs(path) == []


def test_release_keeps_closed_mode_enforcing_and_remove_guard_cleans_up(guard_cgroup) -> None:
    path = guard_cgroup.path
    probes = GuardProbes(path, ("127.0.0.1", 1), ("::1", 1), [], failure_mode="closed")
    probes.attach()
    probes.release()
    assert not probes.attached
    assert len(attached_programs(path)) == len(PROGRAMS)
    assert sorted(remove_guard(path)) == sorted(n for n, _, _ in PROGRAMS)
    assert attached_programs(path) == [] and bpftool_links(path) == []
    assert pins.pinned_programs(guard_cgroup.id) == {}
    assert remove_guard(path) == []   # idempotent


def test_defunct_pins_of_a_removed_cgroup_are_collected(cgroup_mount) -> None:
    from tests.conftest import make_guard_cgroup
    with make_guard_cgroup(cgroup_mount) as gone:
        attach_in_child_then_kill(gone.path, "closed")
        gone_id = gone.id
    assert pins.pinned_programs(gone_id)          # the cgroup went; its pins stayed
    with make_guard_cgroup(cgroup_mount) as cg:
        probes = GuardProbes(cg.path, ("127.0.0.1", 1), ("::1", 1), [])
        try:
            probes.attach()
        finally:
            probes.detach()
    assert pins.pinned_programs(gone_id) == {}
    assert not os.path.exists(pins.cgroup_pin_dir(gone_id))
