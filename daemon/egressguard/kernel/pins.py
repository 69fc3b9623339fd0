"""Where pinned cgroup links live (bpffs), and making sure bpffs is there.

`failure_mode: closed` pins each cgroup link under `<pin root>/cg<cgroup id>/<program name>`, so
the attachment outlives the daemon (a crash, `kill -9`, `systemctl restart`) and the next daemon
finds exactly the links to adopt. The cgroup id (the kernfs inode) names the directory: it is
unique per cgroup until reboot, which is also as long as bpffs contents live.

Only this module knows the layout; kernel/probes.py asks it for paths.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from pathlib import Path

from egressguard.errors import EnvironmentProblem

BPFFS = "/sys/fs/bpf"
PIN_ROOT = BPFFS + "/egressguard"


def is_bpffs(path: str) -> bool:
    """True when `path` lies on a mounted bpf filesystem (checked by fstype in /proc/mounts of
    the longest mount prefix, so a plain directory at /sys/fs/bpf does not pass)."""
    best, fstype = "", ""
    real = os.path.realpath(path)
    with open("/proc/mounts", encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            if len(fields) < 3:
                continue
            mnt = fields[1]
            if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                best, fstype = mnt, fields[2]
    return fstype == "bpf"


def ensure_bpffs(mount_point: str = BPFFS) -> None:
    """Mount bpffs at `mount_point` when nothing is mounted there (systemd mounts it at boot on
    most hosts; minimal VMs and containers often lack it). Raises EnvironmentProblem naming the
    fix when that is impossible."""
    if is_bpffs(mount_point):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    os.makedirs(mount_point, exist_ok=True)
    if libc.mount(b"bpf", mount_point.encode(), b"bpf", 0, b"mode=0700") != 0:
        err = ctypes.get_errno()
        raise EnvironmentProblem(
            f"failure_mode: closed pins the probes in bpffs, but {mount_point} is not a bpf "
            f"filesystem and mounting one failed ({os.strerror(err)}): run "
            f"'mount -t bpf bpf {mount_point}' (or set failure_mode: open)")


def cgroup_pin_dir(cgroup_id: int, root: str = PIN_ROOT) -> Path:
    return Path(root) / f"cg{cgroup_id}"


def pin_path(cgroup_id: int, program: str, root: str = PIN_ROOT) -> Path:
    return cgroup_pin_dir(cgroup_id, root) / program


def pinned_programs(cgroup_id: int, root: str = PIN_ROOT) -> dict[str, Path]:
    """program name -> pin path, for the pins that exist for this cgroup."""
    d = cgroup_pin_dir(cgroup_id, root)
    try:
        return {p.name: p for p in d.iterdir()}
    except FileNotFoundError:
        return {}


def all_pin_dirs(root: str = PIN_ROOT) -> list[Path]:
    try:
        return [p for p in Path(root).iterdir() if p.is_dir() and p.name.startswith("cg")]
    except FileNotFoundError:
        return []


def remove_pin(path: Path) -> None:
    """Unlink a pin and its directory once empty (the pin root itself stays)."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    try:
        path.parent.rmdir()
    except OSError as e:
        if e.errno not in (errno.ENOTEMPTY, errno.ENOENT, errno.EEXIST):
            raise
