"""`egressguard detach --config FILE`: take the guard off its cgroup for good.

With `failure_mode: closed` a stopped daemon leaves its probes attached on purpose (guarded
processes are refused rather than unguarded). Decommissioning, or handing the cgroup back to
unguarded use, is this explicit step. It refuses while a daemon still serves the policy's
approvals socket, since that daemon would keep enforcing with nothing attached.
"""

from __future__ import annotations

import socket
import sys

from egressguard.errors import EgressGuardError

EXIT_OK, EXIT_FAIL = 0, 1


def _daemon_running(socket_path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        probe.connect(socket_path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


def detach(path: str) -> int:
    from egressguard.daemon import parse_config
    from egressguard.kernel.cgroup import cgroup2_mount, resolve
    from egressguard.kernel.preflight import check_environment
    from egressguard.kernel.probes import remove_guard
    try:
        config = parse_config(path)
        check_environment(config.scope.cgroup)
        cgroup_path = resolve(config.scope.cgroup, cgroup2_mount())
    except EgressGuardError as exc:
        from egressguard.cli.main import _print_error
        return _print_error(exc)
    if _daemon_running(config.approvals.socket):
        print(f"error: egressguard is still running (it answers on {config.approvals.socket}): "
              "stop it first (systemctl stop egressguard)", file=sys.stderr)
        return EXIT_FAIL
    removed = remove_guard(cgroup_path)
    if removed:
        print(f"detached {len(removed)} egressguard program(s) from {cgroup_path}: "
              f"{', '.join(sorted(removed))}; its processes are no longer guarded")
    else:
        print(f"nothing of egressguard was attached to {cgroup_path}")
    return EXIT_OK
