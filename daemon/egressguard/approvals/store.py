"""Approval requests, grants and held connections on disk: SQLite (WAL) under state_dir.

Why SQLite and not the audit log: the audit log is the record of what happened; this is the
*state* a restart must resume (pending requests, unused `once` approvals, denials that still
stand, live grants). Each change is written through before it takes effect, in one small
transaction (WAL, synchronous=NORMAL: a power cut may lose the last transaction but never
corrupts the file). Rows are JSON bodies keyed by id: the registry owns the shape, and the store
only needs the id, the state and the wall-clock expiry to load what is still live.

Times: wall clock here (a restart has no other common clock). In memory the registry turns them
into monotonic deadlines, clamped to the original TTL, so a clock that jumps backwards while
the daemon is down cannot stretch an expiry, and one that jumps forwards only shortens it.

A write that fails once the daemon runs (disk full, file removed) is logged as an error and the
change still takes effect in memory: enforcement and the audit log do not depend on the store,
only what a restart can resume does. `failures` counts them.

`waiters` lists connections currently held inline. They cannot survive a restart (the socket is
gone), so on start every row left there (a crash, `kill -9`) is reported as `flow.aborted`.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from typing import Any

from egressguard.errors import EnvironmentProblem

log = logging.getLogger(__name__)

DB_NAME = "approvals.db"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY, state TEXT NOT NULL, expires_at REAL NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS grants (
    id TEXT PRIMARY KEY, live INTEGER NOT NULL, expires_at REAL NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS waiters (
    flow_id TEXT PRIMARY KEY, request_id TEXT NOT NULL, since REAL NOT NULL, body TEXT NOT NULL);
"""


class ApprovalStore:
    """One SQLite file; every method is one transaction. Used from the event loop thread."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.failures = 0
        parent = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(parent, mode=0o700, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            os.chmod(path, 0o600)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) != SCHEMA_VERSION:
                raise EnvironmentProblem(
                    f"approvals store {path} has schema {row[0]}, this egressguard knows "
                    f"{SCHEMA_VERSION}; move the file away (pending requests are then lost)")
        except sqlite3.DatabaseError as exc:
            raise EnvironmentProblem(
                f"cannot open the approvals store {path} (state_dir): {exc}; move the file "
                "away to start with no pending requests") from None
        except OSError as exc:
            raise EnvironmentProblem(
                f"cannot create the approvals store {path} (state_dir): "
                f"{exc.strerror or exc}") from None

    def close(self) -> None:
        self._db.close()

    def _write(self, sql: str, args: tuple[Any, ...]) -> None:
        try:
            self._db.execute(sql, args)
        except sqlite3.Error as exc:
            self.failures += 1
            log.error("approvals store %s: write failed (%s); the change holds in memory but "
                      "will not survive a restart", self.path, exc)

    # -- requests --------------------------------------------------------------------------------
    def put_request(self, rid: str, state: str, expires_at: float, body: dict[str, Any]) -> None:
        self._write("INSERT OR REPLACE INTO requests VALUES (?, ?, ?, ?)",
                    (rid, state, expires_at, json.dumps(body, sort_keys=True)))

    def live_requests(self) -> list[dict[str, Any]]:
        """Requests that may still matter: pending, approved-once unused, denied (for dedup)."""
        rows = self._db.execute(
            "SELECT body FROM requests WHERE state IN ('pending', 'approved-unused', 'denied') "
            "ORDER BY rowid").fetchall()
        return [json.loads(r[0]) for r in rows]

    # -- grants ----------------------------------------------------------------------------------
    def put_grant(self, gid: str, live: bool, expires_at: float, body: dict[str, Any]) -> None:
        self._write("INSERT OR REPLACE INTO grants VALUES (?, ?, ?, ?)",
                    (gid, int(live), expires_at, json.dumps(body, sort_keys=True)))

    def live_grants(self) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT body FROM grants WHERE live=1 ORDER BY rowid").fetchall()
        return [json.loads(r[0]) for r in rows]

    # -- held connections ------------------------------------------------------------------------
    def add_waiter(self, flow_id: str, request_id: str, since: float,
                   body: dict[str, Any]) -> None:
        self._write("INSERT OR REPLACE INTO waiters VALUES (?, ?, ?, ?)",
                    (flow_id, request_id, since, json.dumps(body, sort_keys=True)))

    def remove_waiter(self, flow_id: str) -> None:
        self._write("DELETE FROM waiters WHERE flow_id=?", (flow_id,))

    def take_waiters(self) -> list[dict[str, Any]]:
        """Connections that were held when the daemon last stopped; removes them."""
        rows = self._db.execute("SELECT flow_id, request_id, since, body FROM waiters").fetchall()
        self._db.execute("DELETE FROM waiters")
        return [{"flow_id": f, "request_id": r, "since": s, **json.loads(b)}
                for f, r, s, b in rows]
