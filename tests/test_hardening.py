"""Which systemd hardening the probes tolerate, measured by applying the same kernel mechanism
to a real attach (systemd is not PID 1 here, so the unit itself cannot be started):
- MemoryDenyWriteExecute: prctl(PR_SET_MDWE, REFUSE_EXEC_GAIN), the rule systemd enforces;
  BCC compiles and loads, and the ctypes ring-buffer callback still delivers a UDP refusal.
- ProtectKernelTunables: makes /sys, and so /sys/fs/bpf, read-only (here: a read-only bind in a
  private mount namespace); closed mode cannot pin and says so in one line, leaving nothing
  attached.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from egressguard.kernel.probes import attached_programs

pytestmark = pytest.mark.kernel

UNDER_MDWE = textwrap.dedent("""
    import ctypes, json, os, socket, subprocess, sys
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(65, 1, 0, 0, 0) != 0:           # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
        print(json.dumps({"mdwe": os.strerror(ctypes.get_errno())})); sys.exit(0)
    from egressguard.kernel.probes import GuardProbes
    events = []
    p = GuardProbes(sys.argv[1], ("127.0.0.1", 1), ("::1", 1), [], udp_mode="block",
                    on_event=events.append, failure_mode="open")
    p.attach()
    try:
        agent = (f"echo $$ > {sys.argv[1]}/cgroup.procs; exec {sys.executable} -c "
                 "\\"import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\\n"
                 "try: s.sendto(b'x', ('127.0.0.1', 9))\\nexcept OSError as e: print(e.errno)\\"")
        out = subprocess.run(["sh", "-c", agent], capture_output=True, text=True,
                             timeout=10).stdout.strip()
        p.poll_events(2000)
        print(json.dumps({"mdwe": "on", "agent_errno": out,
                          "events": [type(e).__name__ for e in events]}))
    finally:
        p.detach()
""")


def test_probes_work_under_memory_deny_write_execute(guard_cgroup) -> None:
    import json
    res = subprocess.run([sys.executable, "-c", UNDER_MDWE, guard_cgroup.path],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["mdwe"] == "on", f"this kernel has no PR_SET_MDWE: {out['mdwe']}"
    assert out["agent_errno"] == "1"                 # EPERM: refused in the kernel ...
    assert "UdpRefusal" in out["events"]             # ... and reported through the callback
    assert attached_programs(guard_cgroup.path) == []


def test_read_only_bpffs_is_a_clear_start_up_error(guard_cgroup) -> None:
    from egressguard.kernel.pins import ensure_bpffs
    ensure_bpffs()          # so there is a bpffs mount to make read-only
    script = ("from egressguard.kernel.probes import GuardProbes\n"
              "from egressguard.errors import EnvironmentProblem\n"
              "import sys\n"
              "try:\n"
              "    GuardProbes(sys.argv[1], ('127.0.0.1', 1), ('::1', 1), []).attach()\n"
              "except EnvironmentProblem as e:\n"
              "    print('problem:', e)\n")
    res = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         'mount -o remount,bind,ro /sys/fs/bpf && exec "$@"', "sh",
         sys.executable, "-c", script, guard_cgroup.path],
        capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "problem: failure_mode: closed pins the probes" in res.stdout
    assert "Read-only file system" in res.stdout and "ProtectKernelTunables" in res.stdout
    assert attached_programs(guard_cgroup.path) == []
