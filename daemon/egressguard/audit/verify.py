"""Verify an audit log: every line must continue the hash chain from the genesis.

`verify(path)` reads the file once, streaming, and stops at the first bad line, naming it
(1-based). What it detects:
- an edited line (its hash no longer matches its content, or it is no longer in the canonical
  form the writer produces, e.g. a duplicated key or changed spacing);
- a deleted, inserted, moved or swapped line (seq gap/repeat, or prev_hash not the previous
  line's hash);
- a line that is not JSON / not an object / not UTF-8, an empty line, a last line without its
  newline (a torn write).

What it cannot detect: **truncation of the tail.** Removing the last N lines leaves a shorter,
perfectly valid chain; a hash chain alone only proves that what is there is unaltered. Catching
that needs the last hash kept somewhere else (shipped to a SIEM, or anchored periodically),
which is outside this module. Likewise an attacker who rewrites the whole file from some line
on, recomputing every hash, produces a valid chain: the chain makes tampering evident only
relative to a copy or an anchor held elsewhere.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from typing import BinaryIO

from egressguard.audit import segments
from egressguard.audit.chain import GENESIS, ChainError, ChainState, canonical_json


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    events: int              # valid events before the first problem (all of them when ok)
    line: int | None         # 1-based line of the first problem, None when ok
    message: str
    last_seq: int = 0        # of the last valid event (the writer resumes from here)
    last_hash: str = GENESIS
    file: str | None = None  # the file of the first problem, for a rotated set
    first_seq: int = 0       # seq of the first event checked (0: none)
    unreadable: bool = False  # a file or folder could not be read: nothing was judged
    set_of: str | None = None  # a rotated segment was given: the active file whose set was checked

    def __str__(self) -> str:
        return self.message


def verify(path: str | os.PathLike[str], start: ChainState | None = None) -> VerifyResult:
    """Check the whole chain in `path`. Never raises for a bad or missing file.

    `start` is where the chain stands before the file's first line: the genesis for a single
    file, the last event of the previous segment for a rotated one."""
    state = ChainState(start.seq, start.last_hash) if start else ChainState()
    base = state.seq
    try:
        f = open(path, "rb")
    except OSError as exc:
        return _unreadable(os.fspath(path), exc)
    try:
        with f:
            return _verify_lines(f, path, state, base)
    except OSError as exc:          # a read error mid-file (EIO): not evidence of tampering
        return _unreadable(os.fspath(path), exc)


def _unreadable(path: str, exc: OSError) -> VerifyResult:
    return VerifyResult(False, 0, None, f"cannot read {exc.filename or path}: "
                                        f"{exc.strerror or exc}", file=path, unreadable=True)


def _verify_lines(f: BinaryIO, path: str | os.PathLike[str], state: ChainState,
                  base: int) -> VerifyResult:
    lineno = 0

    def bad(message: str) -> VerifyResult:
        return VerifyResult(False, state.seq - base, lineno, f"line {lineno}: {message}",
                            state.seq, state.last_hash, os.fspath(path),
                            base + 1 if state.seq > base else 0)

    for raw in f:
        lineno += 1
        if not raw.endswith(b"\n"):
            return bad("last line is incomplete (no newline): a torn write, or the file "
                       "was cut")
        body = raw[:-1]
        if not body.strip():
            return bad("empty line")
        try:
            event = json.loads(body.decode("utf-8"))
        except UnicodeDecodeError:
            return bad("not valid UTF-8")
        except ValueError as exc:
            return bad(f"not valid JSON ({exc.msg} at column {exc.colno})")
        if not isinstance(event, dict):
            return bad("not a JSON object")
        try:
            canonical = canonical_json(event)
        except ValueError:
            canonical = b""
        if canonical != body:
            # The hash covers the parsed values; a non-canonical line may read differently
            # in another JSON parser (duplicate keys: does the first or the last win?).
            return bad("not in canonical form (edited by hand, or a duplicated key)")
        try:
            state.check(event)
        except ChainError as exc:
            return bad(str(exc))
    if state.seq == base:
        return VerifyResult(True, 0, None, "empty log", state.seq, state.last_hash)
    return VerifyResult(True, state.seq - base, None,
                        f"{state.seq - base} events, chain intact (seq {base + 1}..{state.seq}); "
                        "note: a truncated tail cannot be detected by the chain alone",
                        state.seq, state.last_hash, None, base + 1)


def verify_set(path: str | os.PathLike[str]) -> VerifyResult:
    """Check the log that `path` belongs to as one chain. A rotated segment
    (`audit.jsonl.000000000017`) on its own would not start at the genesis, so it is checked
    as part of its set (result.set_of names the active file)."""
    path = os.fspath(path)
    active = segments.active_of(path)
    if active is None:
        return _verify_set(path)
    return replace(_verify_set(active), set_of=active)


def _verify_set(active_path: str) -> VerifyResult:
    """Check a rotated log: every segment, oldest first, then the active file, as one chain
    (each file's first event must link to the previous file's last one).

    The oldest segment present may start after seq 1 when an operator removed older segments:
    its first event is taken as the anchor and the message says from which seq the chain was
    checked. Like a truncated tail, removed leading segments cannot be told apart from a log
    that began there without an outside copy."""
    try:
        files = segments.log_set(active_path)
    except OSError as exc:          # the folder cannot be listed
        return _unreadable(os.path.dirname(os.path.abspath(active_path)), exc)
    if len(files) == 1:
        return verify(active_path)
    state: ChainState | None = None
    total = 0
    first = files[0].first_seq or 0
    if first > 1:
        event = _first_event(files[0].path)
        if event is not None and isinstance(event.get("prev_hash"), str):
            state = ChainState(first - 1, event["prev_hash"])
    for seg in files:
        if seg.active and not os.path.exists(seg.path):
            continue                # between the writer's rename and its new file
        result = verify(seg.path, state)
        total += result.events
        if not result.ok:
            return replace(result, events=total, file=seg.path, first_seq=first)
        state = ChainState(result.last_seq, result.last_hash)
    assert state is not None
    note = "" if first <= 1 else f" (older segments before seq {first} are not present)"
    return VerifyResult(True, total, None,
                        f"{total} events in {len(files)} files, chain intact "
                        f"(seq {first}..{state.seq}){note}; note: a truncated tail cannot be "
                        "detected by the chain alone", state.seq, state.last_hash, None, first)


def _first_event(path: str) -> dict | None:
    try:
        with open(path, "rb") as f:
            event = json.loads(f.readline())
    except (OSError, ValueError):
        return None
    return event if isinstance(event, dict) else None
