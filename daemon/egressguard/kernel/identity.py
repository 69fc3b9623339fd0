"""Who is behind a connection: the kernel's exact facts plus what /proc adds.

The connect hook records pid/tgid/uid/gid/comm/cgroup id in the agent's own context, so those
are exact. The rest (executable, command line, user name, cgroup path, systemd unit, container
id) is read from /proc right after accept. By then the process may have exited (short-lived
tools): we keep the kernel fields and leave what we cannot read empty, never guess.
"""

from __future__ import annotations

import os
import pwd
import re

import psutil

from egressguard import model
from egressguard.kernel import cgroup
from egressguard.kernel.records import ConnRecord

_HEX64 = r"[0-9a-f]{64}"
# One cgroup path component naming a container, as the common runtimes create them:
#   docker-<id>.scope (docker, systemd driver)      /docker/<id> (docker, cgroupfs driver)
#   cri-containerd-<id>.scope (containerd CRI)      crio-<id>.scope (cri-o)
#   libpod-<id>.scope (podman)                      /kubepods/.../<id> (cgroupfs driver)
# "crio-conmon-<id>" / "libpod-conmon-<id>" are the runtime monitors, not the container.
_CONTAINER = re.compile(rf"^(?:docker-|cri-containerd-|crio-|libpod-)?({_HEX64})(?:\.scope)?$")


def user_name(uid: int) -> str:
    """The account name, or "uid:N" when the uid has no passwd entry (common in containers)."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid:{uid}"


def systemd_unit(cgroup_path: str) -> str:
    """The innermost systemd unit in a cgroup path: its last *.service or *.scope component."""
    for part in reversed(cgroup_path.split("/")):
        if part.endswith((".service", ".scope")):
            return part
    return ""


def container_id(cgroup_path: str) -> str:
    """The 64-hex container id in a cgroup path (innermost match), or ""."""
    for part in reversed(cgroup_path.split("/")):
        m = _CONTAINER.match(part)
        if m:
            return m.group(1)
    return ""


def _cgroup_path(pid: int, cgroup_id: int, cgroup_mount: str) -> str:
    """The process's cgroup path (relative to the mount), checked against the kernel's cgroup id
    when there is one: a process can move between connect and this read. On a mismatch, or if
    the process is gone, find the cgroup by id under the mount; "" if that fails too."""
    try:
        path = cgroup.cgroup_of_pid(pid)
    except OSError:
        path = ""
    if not cgroup_id:
        return path
    try:
        if path and cgroup.cgroup_id(os.path.join(cgroup_mount, path.lstrip("/"))) == cgroup_id:
            return path
    except OSError:
        pass
    for dirpath, _dirs, _files in os.walk(cgroup_mount):
        try:
            if cgroup.cgroup_id(dirpath) == cgroup_id:
                return "/" + os.path.relpath(dirpath, cgroup_mount).removeprefix(".")
        except OSError:
            continue
    return ""


def process_identity(rec: ConnRecord, cgroup_mount: str) -> model.Process:
    """model.Process for a connect record: kernel fields from `rec`, the rest from /proc."""
    exe, cmdline = "", ()
    try:
        p = psutil.Process(rec.tgid)
        with p.oneshot():
            cmdline = tuple(p.cmdline())
            exe = p.exe()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        pass
    path = _cgroup_path(rec.tgid, rec.cgroup_id, cgroup_mount)
    return model.Process(
        pid=rec.tgid, tgid=rec.tgid, uid=rec.uid, gid=rec.gid, comm=rec.comm,
        cgroup_id=rec.cgroup_id, exe=exe, cmdline=cmdline, user=user_name(rec.uid),
        cgroup_path=path, systemd_unit=systemd_unit(path), container_id=container_id(path),
    )


def identity_from_pid(pid: int, cgroup_mount: str | None = None) -> model.Process:
    """model.Process for a live process, all from /proc (no kernel record): for tests and for
    callers that only have a pid. Raises psutil.NoSuchProcess if it is gone."""
    p = psutil.Process(pid)
    with p.oneshot():
        uids, gids = p.uids(), p.gids()
    with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as f:
        comm = f.read().rstrip("\n")  # the kernel's comm, as bpf_get_current_comm sees it
    mount = cgroup_mount or cgroup.cgroup2_mount()
    path = cgroup.cgroup_of_pid(pid)
    rec = ConnRecord(family=0, dst_ip="", dst_port=0, pid=pid, tgid=pid, uid=uids.effective,
                     gid=gids.effective, comm=comm,
                     cgroup_id=cgroup.cgroup_id(os.path.join(mount, path.lstrip("/"))),
                     cookie=0)
    return process_identity(rec, mount)
