"""A sink's durable cursor: the (seq, hash) of the last event its receiver acknowledged.

Kept as `<state_dir>/sinks/<sink name>.cursor` (JSON), replaced atomically (write a temporary
file, fsync, rename, fsync the folder), so a crash at any moment leaves either the old cursor or
the new one. An old cursor only means some events are sent again (at-least-once), never that
one is skipped.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile

from egressguard.audit.reader import Cursor

log = logging.getLogger("egressguard.sinks")


class CursorStore:
    def __init__(self, state_dir: str):
        self.folder = os.path.join(os.fspath(state_dir), "sinks")

    def path(self, name: str) -> str:
        return os.path.join(self.folder, f"{name}.cursor")

    def load(self, name: str) -> Cursor:
        try:
            with open(self.path(name), "rb") as f:
                data = json.load(f)
            return Cursor(int(data["seq"]), str(data.get("hash", "")))
        except FileNotFoundError:
            return Cursor()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # Unreadable: ship from the start (duplicates) rather than skip anything.
            log.error("sink %s: cursor %s unreadable (%s); shipping from the start", name,
                      self.path(name), exc)
            return Cursor()

    def save(self, name: str, cursor: Cursor) -> None:
        if not os.path.isdir(self.folder):
            os.makedirs(self.folder, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=self.folder)
        try:
            os.write(fd, json.dumps({"seq": cursor.seq, "hash": cursor.hash}).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.rename(tmp, self.path(name))
        except OSError:
            os.unlink(tmp)
            raise
        dfd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
