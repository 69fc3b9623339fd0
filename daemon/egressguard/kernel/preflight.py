"""Start-up checks for what the eBPF side needs, each failing with a one-line fix.

Run before anything is compiled or attached, so an operator sees "install X" instead of a BCC
traceback or a verifier log. Order matters: each check assumes the previous ones passed.
"""

from __future__ import annotations

import os

from egressguard.errors import EnvironmentProblem
from egressguard.kernel import cgroup

# Capability bit numbers (linux/capability.h).
_CAPS = {"CAP_NET_ADMIN": 12, "CAP_SYS_ADMIN": 21, "CAP_BPF": 39}


def missing_capabilities(status_text: str, cap_last_cap: int) -> list[str]:
    """Capabilities from _CAPS absent in CapEff of a /proc/PID/status text. CAP_BPF only counts
    on kernels that have it (5.8+); before that CAP_SYS_ADMIN covers BPF."""
    cap_eff = 0
    for line in status_text.splitlines():
        if line.startswith("CapEff:"):
            cap_eff = int(line.split()[1], 16)
    return [name for name, bit in _CAPS.items()
            if bit <= cap_last_cap and not cap_eff & (1 << bit)]


def _check_privileges() -> None:
    with open("/proc/self/status", encoding="utf-8") as f:
        status = f.read()
    with open("/proc/sys/kernel/cap_last_cap", encoding="utf-8") as f:
        last_cap = int(f.read())
    missing = missing_capabilities(status, last_cap)
    if missing:
        raise EnvironmentProblem(privilege_problem(os.geteuid(), missing))


def privilege_problem(euid: int, missing: list[str]) -> str:
    """The fix for missing capabilities. Root can lack them too (a container started without
    --cap-add, a unit's CapabilityBoundingSet): "run as root" would not help there."""
    names = ", ".join(missing)
    if euid != 0:
        return (f"egressguard must run as root (missing {names}): start it with sudo or from "
                "its systemd unit")
    return (f"egressguard runs as root but without {names}: its capability bounding set was "
            "reduced (a container needs --cap-add for BPF, NET_ADMIN and SYS_ADMIN; a systemd "
            "unit needs them in CapabilityBoundingSet and AmbientCapabilities)")


def _check_bcc() -> None:
    try:
        import bcc  # noqa: F401
    except ImportError:
        raise EnvironmentProblem(
            "BCC is not importable: install python3-bpfcc (Debian/Ubuntu) and create the venv "
            "with --system-site-packages (the PyPI package named 'bcc' is unrelated)") from None


def _check_headers(release: str | None = None, modules_dir: str = "/lib/modules") -> None:
    """BCC compiles against /lib/modules/<release>/build. The parameters exist for tests only:
    BCC itself always looks there, so no setting or environment variable may move the check
    away from where the compile will really look."""
    release = release or os.uname().release
    build = f"{modules_dir}/{release}/build"
    if not os.path.isdir(build):
        raise EnvironmentProblem(
            f"kernel headers not found at {build}: install linux-headers-{release}; if your "
            "distribution has no such package, install linux-headers-amd64 and link "
            f"{build} -> /usr/src/linux-headers-<ver>-amd64 and /lib/modules/{release}/source "
            "-> /usr/src/linux-headers-<ver>-common (safe: the probes use only stable UAPI "
            "structs)")


def _check_scope(cgroup_rel: str) -> None:
    mount = cgroup.cgroup2_mount()
    try:
        path = cgroup.resolve(cgroup_rel, mount)
    except ValueError as e:
        raise EnvironmentProblem(str(e)) from None
    if not os.path.isdir(path):
        raise EnvironmentProblem(
            f"scope cgroup {path} does not exist: create it with 'mkdir -p {path}' and start the "
            "agents in it, or point scope.cgroup at a systemd slice's cgroup (e.g. "
            "/agents.slice, populated by 'systemd-run --slice=agents.slice ...')")


def check_environment(cgroup_rel: str) -> None:
    """Raise EnvironmentProblem (one line, with the fix) for the first missing prerequisite:
    privileges, BCC, kernel headers, a cgroup2 mount, the scope cgroup `cgroup_rel`."""
    _check_privileges()
    _check_bcc()
    _check_headers()
    _check_scope(cgroup_rel)
