"""Read the written audit log in seq order, across rotation, for the SIEM sinks.

Sinks ship what is on disk, not what is in memory, so an outage of a sink or a restart of the
daemon loses nothing: a sink's cursor is the (seq, hash) of the last event its receiver
acknowledged, and `LogReader.read_after(cursor)` returns the events after it, whichever file
they are in now.

How rotation is followed without skipping or repeating a file: the reader keeps its file open
and reads complete lines only. At the end of the file it checks whether the file is still the
active one (same inode); if it was rotated, it reads once more (the writer's last batch may have
landed between the two checks), then opens the file whose first event is the next seq: the
segment of that name, or the active file. It never goes by file names alone, and it checks that
every event's seq is the one expected, so a gap or a chain reset is an error, not a silent skip.

`ChainMoved` means the cursor no longer names an event of this log (the event at the cursor's
seq has another hash, or the log is shorter): the writer found the old log tampered and started
a new chain (audit.chain_reset). The runner then ships the new chain from its start.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, BinaryIO

from egressguard.audit import segments


@dataclass(frozen=True)
class Cursor:
    """The last event a sink's receiver acknowledged (seq 0: nothing yet)."""

    seq: int = 0
    hash: str = ""


@dataclass(frozen=True)
class LogEntry:
    seq: int
    hash: str
    line: bytes                 # the canonical JSON line as written, without the newline
    event: dict[str, Any]


class ChainMoved(Exception):
    """The cursor does not name an event of the current log (see the module docstring)."""


class LogCorrupt(Exception):
    """A line that is not an event, or an unexpected seq: the message says where."""


class LogReader:
    def __init__(self, active_path: str):
        self.active_path = os.fspath(active_path)
        self._fh: BinaryIO | None = None
        self._next: int | None = None       # seq expected on the next line (None: any)
        self._at: int = -1                  # the seq of the cursor the file is positioned at

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self._at = -1

    def read_after(self, cursor: Cursor, max_events: int = 500) -> list[LogEntry]:
        """Up to `max_events` events with seq > cursor.seq, in order ([] when none yet)."""
        if self._fh is None or self._at != cursor.seq:
            self._position(cursor)
        out: list[LogEntry] = []
        try:
            while len(out) < max_events and self._fh is not None:
                entry = self._next_line()
                if entry is None:
                    if not self._advance():
                        break
                    continue
                out.append(entry)
        except BaseException:
            self.close()            # the next call positions from the cursor again
            raise
        if out:
            self._at = out[-1].seq
        return out

    # -- positioning --------------------------------------------------------------------

    def _position(self, cursor: Cursor) -> None:
        self.close()
        for _ in range(100):             # the writer may rotate while we look: look again
            if self._try_position(cursor):
                return
        raise LogCorrupt(f"{self.active_path}: the log kept changing while positioning")

    def _try_position(self, cursor: Cursor) -> bool:
        files = [s for s in segments.log_set(self.active_path) if s.first_seq is not None]
        if not files:
            if cursor.seq:
                raise ChainMoved(f"the log is empty but the cursor is at seq {cursor.seq}")
            self._open(self.active_path, None)
            self._at = 0
            return True
        holder = files[0] if cursor.seq == 0 else \
            next((s for s in reversed(files) if s.first_seq <= cursor.seq), None)
        if holder is None:
            raise ChainMoved(f"the log starts at seq {files[0].first_seq}, after the cursor "
                             f"(seq {cursor.seq})")
        if not self._open_expecting(holder.path, holder.first_seq):
            return False                 # it was rotated (or replaced) since the listing
        self._next = None                # the first file may start anywhere (old ones pruned)
        if cursor.seq == 0:
            self._at = 0
            return True
        while True:
            entry = self._next_line()
            if entry is None:
                break
            if entry.seq == cursor.seq:
                if cursor.hash and entry.hash != cursor.hash:
                    self.close()
                    raise ChainMoved(f"the event at seq {cursor.seq} has another hash than "
                                     "the one acknowledged: the chain was reset")
                self._at = cursor.seq
                return True
        self.close()
        raise ChainMoved(f"seq {cursor.seq} is not in the log (it ends before it)")

    def _open_expecting(self, path: str, first: int | None) -> bool:
        """Open `path` if its first event is seq `first`; the file is left at its start."""
        self._open(path, first)
        if self._fh is None:
            return False
        line = self._fh.readline()
        self._fh.seek(0)
        if first is not None and segments._seq_of(line) != first:
            self._fh.close()
            self._fh = None
            return False
        return True

    def _open(self, path: str, expect: int | None) -> None:
        try:
            self._fh = open(path, "rb")
        except FileNotFoundError:
            self._fh = None
        self._path = path
        self._next = expect

    # -- reading --------------------------------------------------------------------------

    def _next_line(self) -> LogEntry | None:
        assert self._fh is not None
        pos = self._fh.tell()
        raw = self._fh.readline()
        if not raw.endswith(b"\n"):
            self._fh.seek(pos)          # nothing, or a line still being written
            return None
        body = raw[:-1]
        try:
            event = json.loads(body)
        except ValueError:
            raise LogCorrupt(f"{self._path}: byte {pos}: not a JSON line") from None
        seq = event.get("seq") if isinstance(event, dict) else None
        if not isinstance(seq, int) or not isinstance(event.get("hash"), str):
            raise LogCorrupt(f"{self._path}: byte {pos}: not an audit event")
        if self._next is not None and seq != self._next:
            self._fh.seek(pos)
            raise LogCorrupt(f"{self._path}: seq {seq} where seq {self._next} was expected")
        self._next = seq + 1
        return LogEntry(seq, event["hash"], body, event)

    def _advance(self) -> bool:
        """At the end of the current file: move to the next file if there is one. True when
        the reader moved (or found more lines), False when there is nothing more yet."""
        if self._fh is None:
            self._open(self.active_path, self._next)
            return self._fh is not None
        if self._is_active():
            return False
        entry = self._next_line()        # the writer's last batch before the rename
        if entry is not None:
            self._fh.seek(self._fh.tell() - len(entry.line) - 1)
            self._next = entry.seq
            return True
        nxt = self._next
        if nxt is None:
            return False
        old = self._fh
        candidate = segments.segment_path(self.active_path, nxt)
        for _ in range(100):             # the writer may rotate again while we move
            if os.path.exists(candidate):
                old.close()
                self._open(candidate, nxt)
                return True
            if self._open_expecting(self.active_path, nxt):
                old.close()
                return True
            first = segments.first_seq(self.active_path)
            if first is None:
                self._fh = old
                return False             # the new active file has no event yet
            if first != nxt and not os.path.exists(candidate):
                self._fh = old
                raise ChainMoved(f"the log continues with seq {first}, not {nxt}: the chain "
                                 "was reset")
        self._fh = old
        return False

    def _is_active(self) -> bool:
        assert self._fh is not None
        try:
            st = os.stat(self.active_path)
        except FileNotFoundError:
            return False
        mine = os.fstat(self._fh.fileno())
        return (st.st_ino, st.st_dev) == (mine.st_ino, mine.st_dev)
