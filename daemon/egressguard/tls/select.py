"""Which TLS flows to open (pure): `tls.intercept.hosts` / `.processes`, and the memory of
clients that refused our certificate (pinning), which `tls.on_intercept_failure` acts on.

The memory is keyed by the whole identity that failed (uid, executable, cgroup, systemd unit,
container, host): one agent failing a handshake must neither switch inspection off for other
users' or other workloads' use of the same program (passthrough) nor deny them (block). Each
entry lives `ttl_s` (`tls.intercept_failure_ttl`), and the table is bounded, so a failure is
never remembered forever and hostile churn cannot grow memory without limit."""

from __future__ import annotations

import fnmatch
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from egressguard.model import Action, Destination, Process
from egressguard.policy.rules import CompiledRule, ProcessCond, RuleSpec

INTERCEPT = "intercept"
PASSTHROUGH = "passthrough"          # not selected for interception: never was going to be opened
UNINSPECTED = "uninspected"          # selected, but let through unopened after a remembered failure
BLOCK = "block"

DEFAULT_TTL_S = 3600.0
MAX_REMEMBERED = 10_000              # oldest entries go first past this (they re-fail, re-learn)

FailureKey = tuple[int, str, str, str, str, str]   # uid, exe, cgroup, unit, container, host


def failure_key(process: Process, host: str) -> FailureKey:
    return (process.uid, process.exe, process.cgroup_path, process.systemd_unit,
            process.container_id, host)


@dataclass
class InterceptSelector:
    """`choose(process, host)` -> intercept | passthrough | uninspected | block."""

    hosts: tuple[str, ...] = ()
    processes: tuple[ProcessCond, ...] = ()
    on_failure: str = BLOCK                       # what a pinned client's next attempts get
    ttl_s: float = DEFAULT_TTL_S                  # how long one failure is remembered
    clock: Any = time.time
    _failed: OrderedDict[FailureKey, float] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._procs = [CompiledRule(RuleSpec("tls.intercept", Action.ALLOW, process=p))
                       for p in self.processes]

    @property
    def enabled(self) -> bool:
        return bool(self.hosts)

    def wants(self, process: Process, host: str) -> bool:
        """The configuration selects this flow (before pinning memory)."""
        if not host or not any(fnmatch.fnmatchcase(host, g) for g in self.hosts):
            return False
        if not self._procs:
            return True
        anywhere = Destination("0.0.0.0", 0)
        return any(r.matches_flow(process, anywhere) for r in self._procs)

    def choose(self, process: Process, host: str) -> str:
        if not self.wants(process, host):
            return PASSTHROUGH
        if self.failed_at(process, host) is None:
            return INTERCEPT
        return UNINSPECTED if self.on_failure == PASSTHROUGH else BLOCK

    def failed_at(self, process: Process, host: str) -> float | None:
        """When this identity's failure for `host` was recorded, if still remembered."""
        key = failure_key(process, host)
        with self._lock:
            self._expire()
            return self._failed.get(key)

    def record_failure(self, process: Process, host: str) -> None:
        """A client refused our certificate: this identity's next attempts (for ttl_s) get
        `on_failure`."""
        key = failure_key(process, host)
        with self._lock:
            self._failed.pop(key, None)
            self._failed[key] = self.clock()
            while len(self._failed) > MAX_REMEMBERED:
                self._failed.popitem(last=False)

    def remembered(self) -> list[dict[str, Any]]:
        """The live entries, oldest first (for status and metrics)."""
        with self._lock:
            self._expire()
            now = self.clock()
            return [{"uid": k[0], "exe": k[1], "cgroup": k[2], "unit": k[3], "container": k[4],
                     "host": k[5], "failed_at": at,
                     "expires_in_s": round(max(0.0, at + self.ttl_s - now), 1)}
                    for k, at in self._failed.items()]

    def _expire(self) -> None:
        """Entries are in insertion (= failure time) order: drop from the front."""
        cutoff = self.clock() - self.ttl_s
        while self._failed:
            key, at = next(iter(self._failed.items()))
            if at > cutoff:
                break
            self._failed.popitem(last=False)
