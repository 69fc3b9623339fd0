"""Audit events in the formats SIEMs ingest: json (native), ocsf, cef, ecs.

Each format turns one written audit event (`reader.LogEntry`) into either a JSON object (json,
ocsf, ecs) or a line of text (cef). Every rendering carries the event's `seq` and `hash`, so a
SIEM can drop the duplicates that at-least-once delivery produces and check the chain.

Formatters are total: any event the writer could have written renders, odd values included
(they were normalised when written). They read only the audit event, which never holds a raw
secret (findings are masked previews and keyed fingerprints).
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field
from typing import Any, Callable

from egressguard import __version__

FORMAT_NAMES = ("json", "ocsf", "cef", "ecs")


@dataclass(frozen=True)
class FormatContext:
    hostname: str = field(default_factory=socket.gethostname)
    version: str = __version__


@dataclass(frozen=True)
class Rendered:
    seq: int
    hash: str
    obj: Any            # a dict (json, ocsf, ecs) or a str (cef)
    text: str           # one line, no newline


def render(fmt: str, entry: Any, ctx: FormatContext) -> Rendered:
    """Render one log entry; `fmt` is one of FORMAT_NAMES."""
    if fmt == "json":
        # The line exactly as written: a SIEM can re-check its hash.
        return Rendered(entry.seq, entry.hash, entry.event, entry.line.decode("utf-8"))
    obj = _formatter(fmt)(entry.event, ctx)
    text = obj if isinstance(obj, str) else compact_json(obj)
    return Rendered(entry.seq, entry.hash, obj, text)


def compact_json(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def _formatter(fmt: str) -> Callable[[dict[str, Any], FormatContext], Any]:
    from egressguard.audit.formats import cef, ecs, ocsf   # each only when used
    return {"ocsf": ocsf.render, "cef": cef.render, "ecs": ecs.render}[fmt]
