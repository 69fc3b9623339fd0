"""Policy evaluation: pure functions of (rules, process, destination, detections).

Two moments, because the proxy learns things in two steps:

1. **connect** (`decide_connect`): we know the process and the destination (and the host once
   SNI/Host has been sniffed, when `needs_host`). Rules are walked in order; the first rule
   *without* `detected` whose conditions hold gives the verdict, else `default_action`. Rules
   *with* `detected` that come before that rule and whose process/destination conditions hold
   stay live: they are the only rules that can act on content. Later content rules are dead,
   because "first match wins" means the connect rule already decided for them.
2. **content** (`decide_content`): for each detection, the first live content rule that names
   it. The flow's action is the strongest of those (block > hold > mask > allow); detections
   whose rule said `mask` are listed for masking. No matched detection: the connect verdict
   stands.

No I/O, no clock, no globals: a `Policy` is an immutable snapshot, safe to swap on reload and
to share between flows. Reasons name rules and detector ids, never matched text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from egressguard.model import Action, Destination, Detection, Process, Verdict
from egressguard.policy.rules import CompiledRule, RuleSpec

# block > hold > mask > allow: the most protective verdict wins when detections disagree.
STRENGTH = {Action.ALLOW: 0, Action.MASK: 1, Action.HOLD: 2, Action.BLOCK: 3}


@dataclass(frozen=True)
class ConnectDecision:
    """The connect-time verdict plus the content rules still able to act on this flow."""

    verdict: Verdict
    content_rules: tuple[CompiledRule, ...] = ()
    request_rules: tuple[CompiledRule, ...] = ()   # live request rules (intercepted HTTP)

    @property
    def needs_content(self) -> bool:
        """False when no content rule is live: scanning can only add audit detail."""
        return bool(self.content_rules)


@dataclass(frozen=True)
class ContentDecision:
    """The verdict after content was seen.

    `mask`: detections whose rule said mask (the proxy masks these bytes even when the flow's
    overall action is stronger, e.g. a hold that is later approved). `hold`: detections whose
    rule said hold (an approval covers only those a human was shown; another one asks again).
    `matched`: each detection that a live rule named, with that rule's name, for the audit log."""

    verdict: Verdict
    mask: tuple[Detection, ...] = ()
    hold: tuple[Detection, ...] = ()
    matched: tuple[tuple[Detection, str], ...] = ()


def _with_reason(base: str, rule: RuleSpec) -> str:
    return f"{base}; {rule.reason}" if rule.reason else base


class Policy:
    """Compiled rules + default action. Build once per configuration (re)load."""

    def __init__(self, rules: Sequence[RuleSpec], default_action: Action = Action.ALLOW):
        if default_action is Action.MASK:
            # mask needs something to mask; config.py refuses it too, this guards direct use
            raise ValueError("default_action cannot be mask")
        self.rules: tuple[CompiledRule, ...] = tuple(CompiledRule(r) for r in rules)
        self.default_action = default_action
        self.needs_host: bool = any(r.uses_host for r in self.rules)

    @classmethod
    def from_config(cls, config: "object") -> "Policy":
        """From a `config.Config` (typed loosely to keep policy/ free of config imports)."""
        return cls(config.rules, config.default_action)  # type: ignore[attr-defined]

    def decide_connect(self, process: Process, dest: Destination) -> ConnectDecision:
        live: list[CompiledRule] = []
        requests: list[CompiledRule] = []
        for rule in self.rules:
            if not rule.matches_flow(process, dest):
                continue
            if rule.is_content_rule:
                live.append(rule)
                continue
            if rule.is_request_rule:
                # Like content rules: only a request can tell (intercepted HTTP flows).
                requests.append(rule)
                continue
            verdict = Verdict(rule.action, rule.name,
                              _with_reason(f'rule "{rule.name}" matched', rule.spec))
            return ConnectDecision(verdict, tuple(live), tuple(requests))
        verdict = Verdict(self.default_action, "default",
                          f"no rule matched; default_action is {self.default_action.value}")
        return ConnectDecision(verdict, tuple(live), tuple(requests))

    def decide_request(self, cd: ConnectDecision, info: "object") -> Verdict | None:
        """The first live request rule that matches this request (a catalog.RequestInfo), or
        None. Its action applies to the request before any byte of it leaves."""
        for rule in cd.request_rules:
            if rule.matches_request(info):
                what = f"{getattr(info, 'kind', '')} request ({getattr(info, 'cls', '')})"
                return Verdict(rule.action, rule.name,
                               _with_reason(f'rule "{rule.name}": {what}', rule.spec))
        return None

    def decide_content(self, cd: ConnectDecision,
                       detections: Sequence[Detection]) -> ContentDecision:
        matched: list[tuple[Detection, CompiledRule]] = []
        for det in detections:
            for rule in cd.content_rules:
                if rule.matches_detection(det):
                    matched.append((det, rule))
                    break
        if not matched:
            return ContentDecision(cd.verdict)

        # Strongest action; ties go to the earliest detection, so the reason is stable.
        top = max(STRENGTH[r.action] for _, r in matched)
        best_rule = next(r for _, r in matched if STRENGTH[r.action] == top)
        ids: list[str] = []
        for d, r in matched:
            if r is best_rule and d.detector not in ids:
                ids.append(d.detector)
        shown = ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
        reason = _with_reason(f'rule "{best_rule.name}": {shown} detected', best_rule.spec)
        return ContentDecision(
            verdict=Verdict(best_rule.action, best_rule.name, reason),
            mask=tuple(d for d, r in matched if r.action is Action.MASK),
            hold=tuple(d for d, r in matched if r.action is Action.HOLD),
            matched=tuple((d, r.name) for d, r in matched),
        )
