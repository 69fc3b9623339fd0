"""Which TLS flows to open (pure): `tls.intercept.hosts` / `.processes`, and the memory of
clients that refused our certificate (pinning), which `tls.on_intercept_failure` acts on."""

from __future__ import annotations

import fnmatch
import threading
import time
from dataclasses import dataclass, field

from egressguard.model import Process
from egressguard.policy.rules import CompiledRule, ProcessCond, RuleSpec
from egressguard.model import Action, Destination

INTERCEPT = "intercept"
PASSTHROUGH = "passthrough"
BLOCK = "block"


@dataclass
class InterceptSelector:
    """`choose(process, host)` -> intercept | passthrough | block."""

    hosts: tuple[str, ...] = ()
    processes: tuple[ProcessCond, ...] = ()
    on_failure: str = BLOCK                       # what a pinned client's next attempts get
    _failed: dict[tuple[str, str], float] = field(default_factory=dict)
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
        with self._lock:
            failed = (process.exe, host) in self._failed
        return self.on_failure if failed else INTERCEPT

    def record_failure(self, process: Process, host: str) -> None:
        """A client refused our certificate: its next attempts get `on_failure`."""
        with self._lock:
            self._failed[(process.exe, host)] = time.time()
