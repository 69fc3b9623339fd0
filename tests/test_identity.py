"""Process identity: cgroup path parsing (literal paths, no kernel) and /proc enrichment of
real processes in a test cgroup (needs root for the cgroup, no eBPF)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from egressguard.kernel.identity import (
    container_id,
    identity_from_pid,
    process_identity,
    systemd_unit,
    user_name,
)
from egressguard.kernel.records import ConnRecord

ID = "4f3c2b1a" * 8  # 64 hex
POD = "pod0b5e3a4c_1d2e_4f60_8a9b_0c1d2e3f4a5b"


@pytest.mark.parametrize("path, unit, cid", [
    ("/", "", ""),
    ("/system.slice/sshd.service", "sshd.service", ""),
    ("/user.slice/user-1000.slice/session-3.scope", "session-3.scope", ""),
    ("/user.slice/user-1000.slice/user@1000.service/app.slice/app-gnome-term-42.scope",
     "app-gnome-term-42.scope", ""),
    (f"/system.slice/docker-{ID}.scope", f"docker-{ID}.scope", ID),
    (f"/docker/{ID}", "", ID),
    (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-{POD}.slice/"
     f"cri-containerd-{ID}.scope", f"cri-containerd-{ID}.scope", ID),
    (f"/kubepods/besteffort/{POD}/{ID}", "", ID),
    (f"/kubepods.slice/kubepods-burstable.slice/crio-{ID}.scope", f"crio-{ID}.scope", ID),
    (f"/machine.slice/libpod-{ID}.scope/container", f"libpod-{ID}.scope", ID),
    # conmon is the runtime's monitor process, not the container
    (f"/machine.slice/libpod-conmon-{ID}.scope", f"libpod-conmon-{ID}.scope", ""),
    (f"/system.slice/crio-conmon-{ID}.scope", f"crio-conmon-{ID}.scope", ""),
    # not 64 hex: no container id
    (f"/docker/{ID[:63]}", "", ""),
    (f"/docker/{ID.upper()}", "", ""),
    # the innermost container wins (docker in docker)
    (f"/docker/{ID}/docker/{'a' * 64}", "", "a" * 64),
    ("/egressguard.slice/agents.service/worker", "agents.service", ""),
])
def test_cgroup_path_parsing(path: str, unit: str, cid: str) -> None:
    assert systemd_unit(path) == unit
    assert container_id(path) == cid


def test_user_name() -> None:
    assert user_name(0) == "root"
    assert user_name(65534) == "nobody"
    assert user_name(4_242_424) == "uid:4242424"


def _sleeper(guard_cgroup) -> subprocess.Popen:
    return guard_cgroup.spawn([sys.executable, "-c", "import sys; sys.stdin.read()", "marker"],
                              stdin=subprocess.PIPE)


def test_identity_of_a_live_process(guard_cgroup) -> None:
    proc = _sleeper(guard_cgroup)
    p = identity_from_pid(proc.pid, guard_cgroup.mount)
    assert (p.pid, p.tgid, p.uid, p.gid, p.user) == (proc.pid, proc.pid, 65534, 65534, "nobody")
    assert p.exe == os.path.realpath(sys.executable)
    assert p.cmdline[-1] == "marker"
    assert p.cgroup_path == guard_cgroup.rel
    assert p.cgroup_id == guard_cgroup.id
    assert (p.systemd_unit, p.container_id) == ("", "")


def test_identity_after_the_process_exited_keeps_kernel_fields(guard_cgroup) -> None:
    """Short-lived tools exit before the proxy asks: keep what the kernel recorded, find the
    cgroup by its id, leave exe/cmdline empty rather than guess."""
    proc = _sleeper(guard_cgroup)
    pid = proc.pid
    proc.kill()
    proc.wait(timeout=5)
    rec = ConnRecord(family=socket.AF_INET, dst_ip="127.20.0.7", dst_port=443, pid=pid,
                     tgid=pid, uid=65534, gid=65534, comm="python3",
                     cgroup_id=guard_cgroup.id, cookie=7)
    p = process_identity(rec, guard_cgroup.mount)
    assert (p.pid, p.uid, p.comm, p.user, p.cgroup_id) == (pid, 65534, "python3", "nobody",
                                                           guard_cgroup.id)
    assert (p.exe, p.cmdline) == ("", ())
    assert p.cgroup_path == guard_cgroup.rel


def test_identity_trusts_the_kernel_cgroup_id_over_proc(guard_cgroup) -> None:
    """If /proc says another cgroup than the kernel recorded (the process moved after its
    connect), the path follows the recorded cgroup id."""
    rec = ConnRecord(family=socket.AF_INET, dst_ip="127.20.0.7", dst_port=443, pid=os.getpid(),
                     tgid=os.getpid(), uid=0, gid=0, comm="pytest",
                     cgroup_id=guard_cgroup.id, cookie=7)
    p = process_identity(rec, guard_cgroup.mount)
    assert p.cgroup_path == guard_cgroup.rel
    assert p.exe == os.path.realpath(sys.executable)
