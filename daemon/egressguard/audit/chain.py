"""The audit hash chain (pure: no I/O, no clock unless you pass one).

Every event line carries `prev_hash` (the previous line's `hash`) and its own
`hash = sha256(prev_hash_hex + canonical_json(event without "hash"))`, hex. Changing, deleting,
inserting or reordering any line breaks the chain at or right after that line, which
`audit/verify.py` reports. The first event's prev_hash is GENESIS (64 zeros) and its seq is 1.

Canonical JSON (sorted keys, "," and ":" separators, UTF-8, no NaN/Infinity) makes the hash
independent of how the line was serialised, so any tool (Python, jq + sha256sum, a SIEM) can
re-check it: `prev_hash + canonical(body)` is exactly the line with `"hash":...` removed when the
writer wrote the line canonically, which it does.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, Mapping

GENESIS = "0" * 64

# The fields every event has (README "audit event reference"); extra fields are allowed.
STANDARD_FIELDS = ("seq", "time", "event", "flow_id", "process", "destination", "detections",
                   "action", "rule", "reason", "decision", "prev_hash", "hash")


class ChainError(ValueError):
    """A line that does not continue the chain; the message says why."""


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON bytes: the form that is hashed and the form that is written."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def event_hash(prev_hash: str, body: Mapping[str, Any]) -> str:
    """sha256(prev_hash_hex + canonical_json(body without "hash")), hex."""
    if "hash" in body:
        body = {k: v for k, v in body.items() if k != "hash"}
    h = hashlib.sha256(prev_hash.encode("ascii"))
    h.update(canonical_json(body))
    return h.hexdigest()


def rfc3339(when: dt.datetime | float | None = None) -> str:
    """UTC, microseconds, 'Z': 2026-12-03T19:43:02.123456Z. Accepts a datetime or epoch secs."""
    if when is None:
        when = dt.datetime.now(dt.timezone.utc)
    elif isinstance(when, (int, float)):
        when = dt.datetime.fromtimestamp(when, dt.timezone.utc)
    elif when.tzinfo is None:
        raise ValueError("naive datetime: audit times must be timezone-aware")
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def normalize(event: Mapping[str, Any]) -> dict[str, Any]:
    """Turn an event into plain JSON values so that what is hashed is what is read back.

    Objects with `to_dict()` (model dataclasses) are expanded, enums become their values,
    tuples become lists, NaN/Infinity and non-JSON objects become strings, lone surrogates are
    replaced. The writer must never drop an event, so nothing here raises for odd values."""
    def conv(v: Any) -> Any:
        if isinstance(v, enum.Enum):
            return conv(v.value)        # model.Action -> "allow"
        if v is None or isinstance(v, (bool, int)):
            return v
        if isinstance(v, float):
            return v if math.isfinite(v) else repr(v)
        if isinstance(v, str):
            s = v if type(v) is str else str.__str__(v)
            try:
                s.encode("utf-8")
            except UnicodeEncodeError:
                s = s.encode("utf-8", "replace").decode("utf-8")
            return s
        if isinstance(v, Mapping):
            return {str(conv(k)): conv(x) for k, x in v.items()}
        if isinstance(v, (list, tuple, set, frozenset)):
            return [conv(x) for x in v]
        if hasattr(v, "to_dict"):
            return conv(v.to_dict())
        if isinstance(v, dt.datetime):
            return rfc3339(v) if v.tzinfo else v.isoformat()
        if isinstance(v, (bytes, bytearray, memoryview)):
            return f"<{len(v)} bytes>"  # never raw payload bytes in the audit log
        return str(v)
    return conv(dict(event))


@dataclass
class ChainState:
    """Where the chain stands: the last seq written and its hash."""

    seq: int = 0
    last_hash: str = GENESIS

    def seal(self, event: Mapping[str, Any], time: str | None = None) -> dict[str, Any]:
        """Give `event` the next seq, its time (if absent), prev_hash and hash; advance.

        Caller-supplied seq/prev_hash/hash are overwritten: only the chain decides them."""
        body = normalize(event)
        body.pop("hash", None)
        body["seq"] = self.seq + 1
        body["prev_hash"] = self.last_hash
        if not isinstance(body.get("time"), str):
            body["time"] = time or rfc3339()
        body.setdefault("event", "unknown")
        body["hash"] = event_hash(self.last_hash, body)
        self.seq, self.last_hash = body["seq"], body["hash"]
        return body

    def check(self, event: Mapping[str, Any]) -> None:
        """Verify that `event` (parsed from a line) continues the chain; advance. ChainError
        otherwise, with a message naming what is wrong."""
        seq = event.get("seq")
        prev = event.get("prev_hash")
        got = event.get("hash")
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise ChainError("missing or non-integer seq")
        if not isinstance(prev, str) or not isinstance(got, str):
            raise ChainError("missing prev_hash or hash")
        if seq != self.seq + 1:
            raise ChainError(f"seq {seq} follows seq {self.seq} (expected {self.seq + 1}): "
                             "a line was deleted, inserted or moved here")
        if prev != self.last_hash:
            raise ChainError("prev_hash does not match the previous line's hash: a line was "
                             "deleted, inserted or changed before this one")
        want = event_hash(prev, event)
        if got != want:
            raise ChainError("hash mismatch: this line was edited")
        self.seq, self.last_hash = seq, got


def encode_line(sealed: Mapping[str, Any]) -> bytes:
    """The bytes written for one sealed event: canonical JSON and a newline."""
    return canonical_json(sealed) + b"\n"
