"""The `ledger:` section of the configuration."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

LEDGER_KEYS = ("path", "retention")
_RETENTION = re.compile(r"^\s*(\d+)\s*(h|d)\s*$")


@dataclass(frozen=True)
class LedgerConfig:
    path: str = ""                   # "" -> <state_dir>/ledger.db
    retention: float = 90 * 86400.0  # seconds

    def db_path(self, state_dir: str) -> str:
        return self.path or os.path.join(state_dir, "ledger.db")


def parse_ledger(c: Any, node: Any) -> LedgerConfig:
    d = LedgerConfig()
    if node is None:
        return d
    m = c.mapping(node, "ledger", LEDGER_KEYS)
    if m is None:
        return d
    path = c.path(m["path"], "ledger.path") if "path" in m else None
    retention = d.retention
    if "retention" in m:
        n = m["retention"]
        v = n.value if n.kind == "scalar" else None
        mm = _RETENTION.match(v) if isinstance(v, str) else None
        if mm and int(mm.group(1)) > 0:
            retention = int(mm.group(1)) * (3600.0 if mm.group(2) == "h" else 86400.0)
        else:
            c.issue(n.line, "ledger.retention",
                    f"{n.plain()!r} is not a retention period (e.g. 90d or 48h, more than zero)")
    return LedgerConfig(path or "", retention)
