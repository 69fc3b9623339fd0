"""The ledger's SQLite file (stdlib sqlite3, WAL): one row per closed flow, one per
(flow, detector) with its count and the JSON fields that held it.

Writes go through one writer thread (the event loop never waits on the disk); queries open
their own read connection (WAL lets them run while the writer writes). Nothing here can hold a
payload: rows are built by `ledger.listener` from flow metadata only (detector ids, classes,
counts, field paths, byte counts), never bytes of the stream or a detection's value.
"""

from __future__ import annotations

import logging
import os
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("egressguard.ledger")

SCHEMA = """
CREATE TABLE IF NOT EXISTS flows (
  flow_id TEXT PRIMARY KEY,
  opened_at REAL NOT NULL, closed_at REAL NOT NULL,
  pid INTEGER, uid INTEGER, user TEXT, exe TEXT, comm TEXT, unit TEXT, container TEXT,
  dst_ip TEXT, dst_port INTEGER, host TEXT, provider TEXT, alpn TEXT,
  bytes_up INTEGER NOT NULL, bytes_down INTEGER NOT NULL, bytes_from_client INTEGER NOT NULL,
  action TEXT, rule TEXT, state TEXT, intercepted INTEGER NOT NULL,
  requests INTEGER NOT NULL, models TEXT, endpoint_kinds TEXT, approval_id TEXT,
  tls_passthrough TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS flows_closed ON flows(closed_at);
CREATE TABLE IF NOT EXISTS flow_detections (
  flow_id TEXT NOT NULL REFERENCES flows(flow_id) ON DELETE CASCADE,
  detector TEXT NOT NULL, class TEXT NOT NULL, count INTEGER NOT NULL, fields TEXT,
  PRIMARY KEY (flow_id, detector)
);
"""
FLOW_COLUMNS = ("flow_id", "opened_at", "closed_at", "pid", "uid", "user", "exe", "comm", "unit",
                "container", "dst_ip", "dst_port", "host", "provider", "alpn", "bytes_up", "bytes_down",
                "bytes_from_client", "action", "rule", "state", "intercepted", "requests",
                "models", "endpoint_kinds", "approval_id", "tls_passthrough")
# Columns added after the first release: (name, definition) for ALTER TABLE on older files.
ADDED_COLUMNS = (("tls_passthrough", "TEXT NOT NULL DEFAULT ''"),)


@dataclass
class FlowRow:
    values: dict[str, Any]
    detections: list[tuple[str, str, int, str]] = field(default_factory=list)
    # (detector, class, count, JSON field paths joined by "\n")


def connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=10, check_same_thread=False)
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    """A ledger written by an older version lacks later columns: add them (rows keep the
    default), so upgrading never needs the file deleted."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(flows)")}
    for name, definition in ADDED_COLUMNS:
        if name not in have:
            conn.execute(f"ALTER TABLE flows ADD COLUMN {name} {definition}")


class LedgerStore:
    """Owns the database file and its writer thread."""

    def __init__(self, path: str, retention_s: float):
        self.path = path
        self.retention_s = retention_s
        os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        conn = connect(path)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(SCHEMA)
        _add_missing_columns(conn)
        conn.commit()
        conn.close()
        self._queue: queue.SimpleQueue[FlowRow | str | threading.Event | None] = \
            queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)
        self._thread.start()
        self._queue.put("purge")

    def add(self, row: FlowRow) -> None:
        self._queue.put(row)

    def purge_now(self) -> None:
        self._queue.put("purge")

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is done (tests, shutdown)."""
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        conn = connect(self.path)
        conn.execute("PRAGMA synchronous=NORMAL")
        last_purge = 0.0
        try:
            while True:
                item = self._queue.get()
                batch = [item]
                while len(batch) < 512:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                stop = None in batch
                rows = [b for b in batch if isinstance(b, FlowRow)]
                if rows:
                    self._write(conn, rows)
                now = time.time()
                if "purge" in batch or now - last_purge > 3600:
                    self._purge(conn, now)
                    last_purge = now
                for b in batch:
                    if isinstance(b, threading.Event):
                        b.set()
                if stop:
                    return
        finally:
            conn.close()

    def _write(self, conn: sqlite3.Connection, rows: list[FlowRow]) -> None:
        cols = ",".join(FLOW_COLUMNS)
        marks = ",".join("?" * len(FLOW_COLUMNS))
        try:
            with conn:
                for r in rows:
                    conn.execute(f"INSERT OR REPLACE INTO flows ({cols}) VALUES ({marks})",
                                 [r.values.get(c) for c in FLOW_COLUMNS])
                    conn.executemany(
                        "INSERT OR REPLACE INTO flow_detections VALUES (?,?,?,?,?)",
                        [(r.values["flow_id"], *d) for d in r.detections])
        except sqlite3.Error as exc:
            # The audit log (hash-chained) still has every flow; say loudly that the ledger
            # lost these rows rather than crash the writer.
            log.error("ledger: %d flow row(s) not written: %s", len(rows), exc)

    def _purge(self, conn: sqlite3.Connection, now: float) -> None:
        try:
            with conn:
                conn.execute("DELETE FROM flows WHERE closed_at < ?", (now - self.retention_s,))
        except sqlite3.Error as exc:
            log.error("ledger: retention purge failed: %s", exc)
