"""Live reload (SIGHUP, `egressctl reload`): re-read the policy and detectors, swap atomically.

The new configuration is parsed and compiled off the event loop (a Hyperscan compile takes
about a second, and the watchdog must keep ticking), then swapped in with one assignment on the
loop: a flow reads the policy and the scan engine once, when it opens, so
- new flows use the new policy;
- flows already open keep the verdict and the scanner they started with;
- held flows keep waiting (the hold registry is the same object; only its approvers, timeout
  and on_timeout for *new* holds and decisions change).

An invalid file is rejected with the same issues `egressguard check` prints, and the old policy
stays in force. Settings the kernel probes, listeners or files were built from cannot change
under a running daemon: a reload that changes one of them is rejected as a whole, naming it,
rather than half applied. Every attempt is a `policy.reload` audit event with the hash.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from egressguard.config import Config
from egressguard.errors import ConfigError, ConfigIssue, EgressGuardError
from egressguard.events import EventBus

log = logging.getLogger("egressguard.reload")

# (field as written in the policy, how to read it from a Config)
RESTART_ONLY: tuple[tuple[str, Callable[[Config], Any]], ...] = (
    ("scope.cgroup", lambda c: c.scope.cgroup),
    ("failure_mode", lambda c: c.failure_mode),
    ("proxy.listen", lambda c: c.proxy.listen),
    ("proxy.listen6", lambda c: c.proxy.listen6),
    ("proxy.bypass", lambda c: c.proxy.bypass),
    ("proxy.udp", lambda c: c.proxy.udp),
    ("proxy.dns_ports", lambda c: c.proxy.dns_ports),
    ("proxy.mark", lambda c: c.proxy.mark),
    ("approvals.socket", lambda c: c.approvals.socket),
    # The mTLS listener, chat channels and grant table are built from these at start.
    ("approvals.remote", lambda c: c.approvals.team.remote),
    ("approvals.chat", lambda c: c.approvals.team.chat),
    ("approvals.identities", lambda c: c.approvals.team.identities),
    ("approvals.grant_ttl", lambda c: c.approvals.team.grant_ttl),
    ("approvals.max_grant_ttl", lambda c: c.approvals.team.max_grant_ttl),
    ("audit.path", lambda c: c.audit.path),
    ("audit.rotate_size", lambda c: c.audit.rotate_size),
    ("audit.sinks", lambda c: c.audit.sinks),
    ("state_dir", lambda c: c.state_dir),
    ("metrics.listen", lambda c: c.metrics.listen),
    # TLS interception (host CA, which hosts) and the ledger are built once at start.
    ("tls", lambda c: c.tls),
    ("ledger", lambda c: c.ledger),
)


def policy_hash(config_path: str, packs: tuple[str, ...] = ()) -> str:
    """sha256 over the policy file and the detector pack files it names, in order: the
    identity of what is enforced, for the audit log and `egressctl status`."""
    h = hashlib.sha256()
    for path in (config_path, *packs):
        h.update(path.encode() + b"\0")
        try:
            with open(path, "rb") as f:
                h.update(f.read())
        except OSError as exc:
            h.update(f"<unreadable: {exc.strerror}>".encode())
        h.update(b"\0")
    return h.hexdigest()


@dataclass
class ReloadResult:
    outcome: str                     # applied | unchanged | rejected
    policy_hash: str
    previous_hash: str
    errors: list[str] = field(default_factory=list)

    @property
    def applied(self) -> bool:
        return self.outcome == "applied"


# Long, or carrying credentials (HEC tokens, webhook URLs): named, values not shown.
_VALUES_NOT_SHOWN = ("audit.sinks", "approvals.remote", "approvals.chat", "approvals.identities",
                     "tls", "ledger")


def restart_only_changes(old: Config, new: Config) -> list[ConfigIssue]:
    issues = []
    for name, get in RESTART_ONLY:
        if get(old) == get(new):
            continue
        what = "changed" if name in _VALUES_NOT_SHOWN else \
            f"changed from {get(old)!r} to {get(new)!r}"
        issues.append(ConfigIssue(new.source, None, name,
                                  f"{what}: this setting takes effect only on a restart "
                                  "(systemctl restart egressguard); nothing was reloaded"))
    return issues


class Reloader:
    """Reloads `state` (runtime.DaemonState) in place; one reload at a time."""

    def __init__(self, state: Any, key: bytes, bus: EventBus,
                 compile_fn: Callable[[Config, bytes], Any],
                 parse_fn: Callable[[str], Config], notifier: Any = None) -> None:
        self.state = state
        self.key = key
        self.bus = bus
        self.compile_fn = compile_fn
        self.parse_fn = parse_fn
        self.notifier = notifier
        self._lock = asyncio.Lock()

    async def reload(self, trigger: str, who: dict[str, Any] | None = None) -> ReloadResult:
        async with self._lock:
            if self.notifier is not None:
                self.notifier.reloading()
            try:
                result = await self._reload(trigger, who)
            finally:
                if self.notifier is not None:
                    self.notifier.ready(self.state.status_line())
            return result

    async def _reload(self, trigger: str, who: dict[str, Any] | None) -> ReloadResult:
        state = self.state
        previous = state.policy_hash
        path = state.config_path
        try:
            new_hash, loaded = await asyncio.to_thread(self._prepare, path)
        except ConfigError as exc:
            return self._finish(trigger, who, ReloadResult(
                "rejected", policy_hash(path), previous, [str(i) for i in exc.issues]))
        except EgressGuardError as exc:
            return self._finish(trigger, who, ReloadResult("rejected", policy_hash(path),
                                                           previous, [str(exc)]))
        if loaded is None:
            return self._finish(trigger, who, ReloadResult("unchanged", new_hash, previous))
        issues = restart_only_changes(state.loaded.config, loaded.config)
        if issues:
            return self._finish(trigger, who, ReloadResult(
                "rejected", new_hash, previous, [str(i) for i in issues]))
        self._apply(loaded, new_hash)
        return self._finish(trigger, who, ReloadResult("applied", new_hash, previous))

    def _prepare(self, path: str) -> tuple[str, Any]:
        """Off the loop: hash, parse, compile. (hash, None) when nothing changed."""
        config = self.parse_fn(path)
        new_hash = policy_hash(path, config.detectors.packs)
        if new_hash == self.state.policy_hash:
            return new_hash, None
        return new_hash, self.compile_fn(config, self.key)

    def _apply(self, loaded: Any, new_hash: str) -> None:
        """On the loop, no await: every part sees the old or the new configuration."""
        state = self.state
        cfg = loaded.config
        state.loaded = loaded
        state.policy_hash = new_hash
        state.loaded_at = time.time()
        registry = state.registry
        from egressguard.approvals.wiring import quorums_of
        registry.set_approvers([f"uid:{ref.uid}" for ref in cfg.approvals.approvers],
                               quorums_of(cfg))
        registry.timeout_s = float(cfg.approvals.timeout)
        registry.request_ttl_s = max(float(cfg.approvals.team.request_ttl or
                                           cfg.approvals.timeout), registry.timeout_s)
        registry.break_glass = cfg.approvals.team.break_glass
        registry.on_timeout = cfg.approvals.on_timeout
        proxy = state.proxy
        proxy.limits = replace(proxy.limits, max_held_bytes=cfg.proxy.max_held_bytes,
                               max_held_total=cfg.proxy.max_held_total,
                               sniff_timeout=cfg.proxy.sniff_timeout)
        state.metrics.set_policy(new_hash, cfg.failure_mode)

    def _finish(self, trigger: str, who: dict[str, Any] | None,
                result: ReloadResult) -> ReloadResult:
        fields: dict[str, Any] = {"outcome": result.outcome, "trigger": trigger,
                                  "policy_hash": result.policy_hash,
                                  "previous_hash": result.previous_hash}
        if who:
            fields["who"] = who
        if result.errors:
            fields["errors"] = result.errors
        self.bus.emit("policy.reload", None, fields)
        if result.outcome == "rejected":
            log.warning("reload rejected trigger=%s errors=%d policy_hash=%s (the running "
                        "policy %s stays in force)", trigger, len(result.errors),
                        result.policy_hash[:12], result.previous_hash[:12])
            for line in result.errors:
                log.warning("reload error: %s", line)
        else:
            log.info("reload %s trigger=%s policy_hash=%s", result.outcome, trigger,
                     result.policy_hash[:12])
        return result
