"""What the last audit record of a run says about the probes, and why a start failed.

A run ends with `daemon.stop` when it reached "ready", or with `daemon.start_failed` when it did
not. Both say what this run did with the probes and what the kernel has attached to the cgroup
now, asked from the kernel rather than assumed: a closed-mode predecessor killed with SIGKILL
leaves pinned probes that a failed start never touched, and they keep refusing guarded
connects; the record must not claim they are gone.
"""

from __future__ import annotations

import asyncio

from egressguard.errors import EgressGuardError


def probes_outcome(attached_by_this_run: bool, failure_mode: str) -> str:
    """`kept` (closed mode leaves them enforcing), `detached`, or `not attached by this run`."""
    if not attached_by_this_run:
        return "not attached by this run"
    return "kept" if failure_mode == "closed" else "detached"


def probes_on_cgroup(cgroup_path: str) -> list[str]:
    """Names of the egressguard programs attached to the cgroup right now (sorted); [] when
    the cgroup is gone or cannot be asked."""
    from egressguard.kernel.probes import PROG_PREFIX, attached_programs
    try:
        return sorted(name for _, _, name in attached_programs(cgroup_path)
                      if name.startswith(PROG_PREFIX))
    except OSError:
        return []


def start_failure_reason(exc: BaseException | None) -> str:
    """The operator's one-line reason (the same words `run` prints after `error:`)."""
    if exc is None:
        return "unknown"
    if isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError)):
        return "interrupted before ready"
    if isinstance(exc, EgressGuardError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
