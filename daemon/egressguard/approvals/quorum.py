"""Who may decide on a request, and how many approvals it needs. Pure.

`approvals.approvers` (global) lists who may decide on any request. A rule may ask for more:
`rules[].approvals: {required: 2, approvers: [...]}` -- its own approver list (replacing the
global one for that rule's holds) and a quorum. People are counted by uid: an approver reached
through the Unix socket, mTLS or chat is mapped to one local uid (`approvals.identities`), so
the same person cannot count twice by switching channels. Any deny by an eligible approver
denies at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class QuorumSpec:
    """A rule's `approvals` section. `approvers` None: the global approvers list."""

    required: int = 1
    approvers: tuple[str, ...] | None = None


class ApproverSet:
    """Approver entries ("name" or "uid:N") compiled for lookup."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.names: set[str] = set()
        self.uids: set[int] = set()
        for entry in entries:
            entry = str(entry).strip()
            if entry.startswith("uid:"):
                num = entry[4:]
                if not num.isdigit():
                    raise ValueError(f"approver {entry!r}: expected uid:N with N a number")
                self.uids.add(int(num))
            elif entry:
                self.names.add(entry)

    def __contains__(self, who: object) -> bool:
        uid, user = getattr(who, "uid", None), getattr(who, "user", None)
        return uid in self.uids or user in self.names

    def __bool__(self) -> bool:
        return bool(self.names or self.uids)


class ApprovalRules:
    """Per-rule approver sets and quorums, with the global list as the fallback."""

    def __init__(self, approvers: Iterable[str],
                 quorums: Mapping[str, QuorumSpec] | None = None) -> None:
        self.default = ApproverSet(approvers)
        self.quorums = dict(quorums or {})
        self._sets = {rule: ApproverSet(q.approvers) for rule, q in self.quorums.items()
                      if q.approvers is not None}

    def approvers_for(self, rule: str) -> ApproverSet:
        return self._sets.get(rule, self.default)

    def required_for(self, rule: str) -> int:
        q = self.quorums.get(rule)
        return q.required if q else 1

    def is_any_approver(self, who: object) -> bool:
        return who in self.default or any(who in s for s in self._sets.values())
