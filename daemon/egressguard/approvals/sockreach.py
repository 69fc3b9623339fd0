"""Can other local users reach the approvals socket? A warning for `egressguard check`.

The socket itself is 0666 and the daemon decides by uid (SO_PEERCRED), but a user must also be
able to search (x) every folder on its path. A socket inside `state_dir` (which the daemon
creates 0700, as it holds the fingerprint key) or any other folder closed to others leaves
every non-root user, approvers included, with "permission denied" from egressctl. That is a
choice an operator may make on purpose (root-only approvals), so it is a warning, not an error.
"""

from __future__ import annotations

import os
import stat

STATE_DIR_MODE = 0o700      # audit/keys.py creates state_dir so
SOCKET_DIR_MODE = 0o755     # approvals/peercred.py creates a missing socket folder so


def socket_reach_warning(socket_path: str, state_dir: str) -> str | None:
    """A one-line warning naming the first folder other users cannot search, or None."""
    parent = os.path.dirname(os.path.abspath(socket_path))
    state = os.path.abspath(state_dir)
    closed = _first_closed_folder(parent, state)
    if closed is None:
        return None
    folder, mode, why = closed
    return (f"approvals.socket {socket_path}: the folder {folder} is {mode:04o}{why}, so users "
            "other than root cannot reach the socket (egressctl gets permission denied, "
            "approvers included); put the socket in a folder others may enter, such as the "
            "default /run/egressguard/, or chmod o+x the folder if that is intended")


def _first_closed_folder(parent: str, state_dir: str) -> tuple[str, int, str] | None:
    path = "/"
    for part in [p for p in parent.split("/") if p]:
        path = os.path.join(path, part)
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
            why = ""
        except FileNotFoundError:       # the daemon will create it, with a known mode
            mode = STATE_DIR_MODE if path == state_dir else SOCKET_DIR_MODE
            why = " (as the daemon will create it: state_dir)" if path == state_dir \
                else " (as the daemon will create it)"
        except OSError:
            return None                 # cannot tell; say nothing rather than guess
        if not mode & stat.S_IXOTH:
            return path, mode, why
    return None
