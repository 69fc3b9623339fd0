"""Mask findings in text that describes a flow, such as a process's command line.

Agents pass data on argv (`curl -d "key=..."`, `python agent.py --token ...`), and the command
line is part of every flow's process identity: in the audit log, in `egressctl`, in the flow
table. It goes through the same detectors as the payload, and every finding is masked with the
same same-length masks, before anything records it. Low-severity findings (IP addresses) are
left readable: on a command line they are where the process connects, which is what an
approver needs to see.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .mask import mask_span

MAX_ARG_BYTES = 64 * 1024      # longer arguments are cut (with a marker) before scanning


def redact_bytes(engine: Any, data: bytes) -> bytes:
    """`data` with every finding of `engine` masked in place (same length)."""
    found = [d for d in engine.scan(data) if d.severity != "low"]
    if not found:
        return data
    out = bytearray(data)
    for det in found:
        out[det.start:det.end] = mask_span(bytes(out[det.start:det.end]), det.detector)
    return bytes(out)


def redact_args(engine: Any, args: Sequence[str]) -> tuple[str, ...]:
    """Each argument scanned on its own (a secret does not span two arguments)."""
    out = []
    for arg in args:
        raw = arg.encode("utf-8", "surrogateescape")
        cut = len(raw) > MAX_ARG_BYTES
        clean = redact_bytes(engine, raw[:MAX_ARG_BYTES])
        text = clean.decode("utf-8", "replace")
        out.append(text + ("...[cut]" if cut else ""))
    return tuple(out)
