"""cgroup v2 discovery: where the hierarchy is mounted, the guarded cgroup's path and id.

The mount point differs between hosts (/sys/fs/cgroup on a unified systemd host,
/sys/fs/cgroup/unified on a hybrid one), so it is always read from /proc/mounts, never assumed.
"""

from __future__ import annotations

import os
import re

from egressguard.errors import EnvironmentProblem


def cgroup2_mount(mounts_file: str = "/proc/mounts") -> str:
    """The first cgroup2 mount point, or EnvironmentProblem naming the fix."""
    with open(mounts_file, encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 3 and fields[2] == "cgroup2":
                # /proc/mounts escapes space, tab, newline and backslash as octal (\040).
                return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1])
    raise EnvironmentProblem(
        "no cgroup v2 hierarchy is mounted: mount it (mount -t cgroup2 none /sys/fs/cgroup) "
        "or boot with systemd.unified_cgroup_hierarchy=1"
    )


def resolve(cgroup_rel: str, mount: str | None = None) -> str:
    """Absolute path of a cgroup given relative to the cgroup2 mount (e.g. "/agents.slice").

    Refuses the root cgroup and paths that escape the mount: attaching there would redirect
    the whole host's connections."""
    mount = mount or cgroup2_mount()
    rel = cgroup_rel.strip("/")
    parts = rel.split("/") if rel else []
    if not parts or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"scope cgroup {cgroup_rel!r}: must name a child cgroup, e.g. /agents")
    return os.path.join(mount, *parts)


def is_root(path: str, mount: str | None = None) -> bool:
    """True when `path` is the root of the cgroup2 hierarchy (the same directory as the mount)."""
    return os.path.samefile(path, mount or cgroup2_mount())


def cgroup_id(path: str) -> int:
    """The cgroup id the kernel reports (bpf_get_current_cgroup_id): the kernfs inode number."""
    return os.stat(path).st_ino


def cgroup_of_pid(pid: int) -> str:
    """The cgroup v2 path of a process relative to the mount (the "0::" line of /proc/PID/cgroup).
    Raises OSError (e.g. ProcessLookupError/FileNotFoundError) when the process is gone."""
    with open(f"/proc/{pid}/cgroup", encoding="utf-8") as f:
        for line in f:
            if line.startswith("0::"):
                return line[3:].rstrip("\n")
    return ""
