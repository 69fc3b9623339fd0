"""Live grants: create, find, use, revoke, expire, persist. Used by holds.HoldRegistry.

A grant is made when a request is approved with a scope wider than `once` (see scope.py for
what it covers). This table owns the live grants, their monotonic expiry timers and their rows
in the store; every use, revoke and expiry is audited through `on_event` before it takes
effect. Runs on the event loop thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from egressguard.approvals.scope import (PROCESS, DestinationKey, Grant, ProcessKey,
                                         new_grant_id)
from egressguard.approvals.store import ApprovalStore
from egressguard.model import Detection, FlowInfo

log = logging.getLogger(__name__)

AUDIT_GRANT = "grant.create"
AUDIT_GRANT_USE = "grant.use"
AUDIT_GRANT_REVOKE = "grant.revoke"
AUDIT_GRANT_EXPIRE = "grant.expire"


class GrantTable:
    def __init__(self, on_event: Callable[[str, dict[str, Any]], None], default_ttl_s: float,
                 max_ttl_s: float, store: ApprovalStore | None = None) -> None:
        self._on_event = on_event
        self.default_ttl_s = min(default_ttl_s, max_ttl_s)
        self.max_ttl_s = max_ttl_s
        self.store = store
        self._grants: dict[str, Grant] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def live(self) -> list[Grant]:
        """Live grants, oldest first."""
        return sorted(self._grants.values(), key=lambda g: g.created_at)

    def get(self, grant_id: str) -> Grant | None:
        return self._grants.get(grant_id)

    def find(self, flow: FlowInfo, rule: str) -> Grant | None:
        """The oldest live grant that answers a hold of `flow` by `rule`."""
        return next((g for g in self.live() if g.matches(flow, rule)), None)

    def make(self, *, scope: str, rule: str, flow: FlowInfo, request_id: str,
             approvers: list[dict[str, Any]], reason: str, ttls: list[float]) -> Grant:
        """A new grant (not yet live: `add` it once the decision is audited). The TTL is the
        shortest asked for, or the default, and never more than the maximum."""
        ttl = min(ttls) if ttls else self.default_ttl_s
        capped = ttl > self.max_ttl_s
        ttl = min(ttl, self.max_ttl_s)
        now_w = time.time()
        gid = new_grant_id()
        while gid in self._grants:
            gid = new_grant_id()
        return Grant(id=gid, scope=scope, rule=rule, process=ProcessKey.of(flow.process),
                     destination=None if scope == PROCESS else DestinationKey.of(flow.destination),
                     request_id=request_id, approvers=approvers, reason=reason,
                     created_at=now_w, expires_at=now_w + ttl, ttl_s=ttl,
                     deadline=time.monotonic() + ttl, capped=capped)

    def add(self, grant: Grant, flow_id: str) -> None:
        self._on_event(AUDIT_GRANT, {**grant.to_dict(), "flow_id": flow_id,
                                     "hold_id": grant.request_id, "describe": grant.describe()})
        self._grants[grant.id] = grant
        self._save(grant)
        self._arm(grant)

    def use(self, grant: Grant, flow: FlowInfo, rule: str, detections: list[Detection]) -> None:
        """A flow the grant answers: audited with what it carried."""
        self._on_event(AUDIT_GRANT_USE, {
            "grant_id": grant.id, "flow_id": flow.flow_id, "hold_id": grant.request_id,
            "scope": grant.scope, "rule": rule,
            "detections": [d.to_dict() for d in detections], "approvers": grant.approvers,
            "reason": grant.reason, "uses": grant.uses + 1,
            "expires_in_s": round(max(0.0, grant.deadline - time.monotonic()), 3)})
        grant.uses += 1
        self._save(grant)

    def revoke(self, grant: Grant, who: dict[str, Any], reason: str) -> None:
        self._on_event(AUDIT_GRANT_REVOKE, {"grant_id": grant.id, "who": who, "reason": reason,
                                            "scope": grant.scope, "uses": grant.uses,
                                            "describe": grant.describe()})
        grant.revoked = {"who": who, "reason": reason, "at": time.time()}
        self._drop(grant)

    def restore(self, bodies: list[dict[str, Any]], now_wall: float, now_mono: float,
                remaining: Callable[[float, float, float], float]) -> None:
        for body in bodies:
            g = Grant.from_dict(body)
            g.deadline = now_mono + remaining(g.expires_at, g.ttl_s, now_wall)
            self._grants[g.id] = g
            self._arm(g)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self.store = None

    # -- internals -------------------------------------------------------------------------------
    def _arm(self, grant: Grant) -> None:
        self._timers[grant.id] = asyncio.get_running_loop().call_later(
            max(0.0, grant.deadline - time.monotonic()), self._expired, grant.id)

    def _expired(self, grant_id: str) -> None:
        grant = self._grants.get(grant_id)
        if grant is None:
            return
        try:
            self._on_event(AUDIT_GRANT_EXPIRE, {"grant_id": grant.id, "scope": grant.scope,
                                                "uses": grant.uses, "describe": grant.describe()})
        except Exception:
            log.exception("audit hook failed on a grant expiry (%s)", grant_id)
        self._drop(grant)

    def _drop(self, grant: Grant) -> None:
        timer = self._timers.pop(grant.id, None)
        if timer is not None:
            timer.cancel()
        self._grants.pop(grant.id, None)
        self._save(grant)

    def _save(self, grant: Grant) -> None:
        if self.store is not None:
            self.store.put_grant(grant.id, grant.id in self._grants and grant.revoked is None,
                                 grant.expires_at, grant.to_dict())
