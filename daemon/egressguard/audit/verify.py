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
from dataclasses import dataclass

from egressguard.audit.chain import GENESIS, ChainError, ChainState, canonical_json


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    events: int              # valid events before the first problem (all of them when ok)
    line: int | None         # 1-based line of the first problem, None when ok
    message: str
    last_seq: int = 0        # of the last valid event (the writer resumes from here)
    last_hash: str = GENESIS

    def __str__(self) -> str:
        return self.message


def verify(path: str | os.PathLike[str]) -> VerifyResult:
    """Check the whole chain in `path`. Never raises for a bad or missing file."""
    state = ChainState()
    lineno = 0

    def bad(message: str) -> VerifyResult:
        return VerifyResult(False, state.seq, lineno, f"line {lineno}: {message}",
                            state.seq, state.last_hash)

    try:
        f = open(path, "rb")
    except OSError as exc:
        return VerifyResult(False, 0, None, f"cannot read {os.fspath(path)}: "
                                            f"{exc.strerror or exc}")
    with f:
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
    if state.seq == 0:
        return VerifyResult(True, 0, None, "empty log")
    return VerifyResult(True, state.seq, None,
                        f"{state.seq} events, chain intact (seq 1..{state.seq}); "
                        "note: a truncated tail cannot be detected by the chain alone",
                        state.seq, state.last_hash)
