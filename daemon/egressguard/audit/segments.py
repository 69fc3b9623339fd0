"""The audit log as a set of files: rotated segments plus the active file.

Rotation by size renames the active file `audit.jsonl` to `audit.jsonl.<first seq, 12 digits>`
and starts a new, empty active file whose first event links (`prev_hash`) to the last event of
that segment, so the hash chain runs across files. Naming a segment by the seq of its first
event (not `.1`, `.2` as logrotate does) means a name never changes once given: a sink that is
reading a segment while the writer rotates again never sees its file renamed under it, and
finding the file that holds seq N is a lookup in sorted names.

Files set aside by the writer after a failed verification (`<name>.broken-<time>...`) never
match the segment pattern, so they are never part of the set.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

SEQ_DIGITS = 12
TAIL_READ = 1 << 20        # bytes read from a file's end to find its last complete line


@dataclass(frozen=True)
class Segment:
    """One file of the set; `first_seq` is None for the active file when it is empty."""

    path: str
    first_seq: int | None
    active: bool


def segment_path(active_path: str, first_seq: int) -> str:
    return f"{active_path}.{first_seq:0{SEQ_DIGITS}d}"


def rotated(active_path: str) -> list[Segment]:
    """The rotated segments of `active_path`, oldest first."""
    folder = os.path.dirname(os.path.abspath(active_path))
    base = os.path.basename(active_path)
    pattern = re.compile(re.escape(base) + r"\.(\d{%d,})" % SEQ_DIGITS + "$")
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []               # PermissionError goes to the caller: a set it cannot see
    out = []
    for name in names:
        m = pattern.match(name)
        if m:
            out.append(Segment(os.path.join(folder, name), int(m.group(1)), False))
    out.sort(key=lambda s: s.first_seq or 0)
    return out


def active_of(path: str) -> str | None:
    """The active file a rotated segment belongs to (`audit.jsonl.000000000017` ->
    `audit.jsonl`), None when `path` is not named like a segment."""
    m = re.fullmatch(r"(.+)\.\d{%d,}" % SEQ_DIGITS, path)
    return m.group(1) if m and os.path.basename(m.group(1)) else None


def log_set(active_path: str) -> list[Segment]:
    """Every file of the log in chain order: rotated segments, then the active file (which may
    not exist for a moment while the writer rotates)."""
    return rotated(active_path) + [Segment(active_path, first_seq(active_path), True)]


def first_seq(path: str) -> int | None:
    """seq of the first event in `path`, None when the file is missing, empty or unreadable."""
    try:
        with open(path, "rb") as f:
            line = f.readline()
    except OSError:
        return None
    return _seq_of(line)


def last_event(path: str) -> dict | None:
    """The last complete event of `path` (a torn last line is ignored), or None."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            start = max(0, size - TAIL_READ)
            f.seek(start)
            data = f.read()
    except OSError:
        return None
    end = data.rfind(b"\n")
    if end < 0:
        return None
    begin = data.rfind(b"\n", 0, end) + 1
    if begin == 0 and start > 0:
        return None                 # one line longer than TAIL_READ: not an event we wrote
    try:
        event = json.loads(data[begin:end])
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def head_seq(active_path: str) -> int:
    """The seq of the newest event written to the set (0 when the log is empty)."""
    for seg in reversed(log_set(active_path)):
        event = last_event(seg.path)
        if event is not None and isinstance(event.get("seq"), int):
            return event["seq"]
    return 0


def _seq_of(line: bytes) -> int | None:
    if not line.endswith(b"\n"):
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None
    seq = event.get("seq") if isinstance(event, dict) else None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None
