"""Read the ledger: aggregates for `egressctl usage`, rows for `egressctl flows --since`.

Visibility is decided by the caller (the gRPC service): approvers see every row, anyone else
only rows of flows their own uid opened (`uid` filter), the rule `flows`/`pending` follow.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from egressguard.ledger.store import connect

GROUPS = {
    "process": "f.exe",
    "destination": "CASE WHEN f.host != '' THEN f.host ELSE f.dst_ip || ':' || f.dst_port END",
    "provider": "f.provider",
    "user": "CASE WHEN f.user != '' THEN f.user ELSE 'uid:' || f.uid END",
    "class": "d.class",
}

# One definition of "blocked" and "held" for every grouping: a held flow is one a hold rule
# acted on (whatever its outcome), or one an approval request answered.
BLOCKED = "f.action = 'block'"
HELD = "(f.action = 'hold' OR f.approval_id != '')"


def _where(since_s: float, uid: int | None, provider: str = "", host: str = "") -> tuple[str, list[Any]]:
    clauses, args = ["f.closed_at >= ?"], [time.time() - since_s]
    if uid is not None:
        clauses.append("f.uid = ?")
        args.append(uid)
    if provider:
        clauses.append("f.provider = ?")
        args.append(provider)
    if host:
        clauses.append("f.host = ?")
        args.append(host)
    return " AND ".join(clauses), args


def usage(path: str, by: str, since_s: float, uid: int | None) -> list[dict[str, Any]]:
    """One dict per group: flows, bytes up/down, detections (and per class counts)."""
    if by not in GROUPS:
        raise ValueError(f"--by must be one of {', '.join(GROUPS)}")
    where, args = _where(since_s, uid)
    conn = connect(path)
    conn.row_factory = sqlite3.Row
    try:
        if by == "class":
            sql = (f"SELECT d.class AS key, COUNT(DISTINCT f.flow_id) AS flows, "
                   f"SUM(d.count) AS detections, "
                   f"COUNT(DISTINCT CASE WHEN {BLOCKED} THEN f.flow_id END) AS blocked, "
                   f"COUNT(DISTINCT CASE WHEN {HELD} THEN f.flow_id END) AS held "
                   f"FROM flows f JOIN flow_detections d "
                   f"ON d.flow_id = f.flow_id WHERE {where} GROUP BY d.class ORDER BY key")
            rows = [dict(r) for r in conn.execute(sql, args)]
            for r in rows:
                r.update(_bytes_for_class(conn, where, args, r["key"]))
            return rows
        key = GROUPS[by]
        sql = (f"SELECT {key} AS key, COUNT(*) AS flows, SUM(f.bytes_up) AS bytes_up, "
               f"SUM(f.bytes_down) AS bytes_down, SUM(f.requests) AS requests, "
               f"SUM(CASE WHEN {BLOCKED} THEN 1 ELSE 0 END) AS blocked, "
               f"SUM(CASE WHEN {HELD} THEN 1 ELSE 0 END) AS held "
               f"FROM flows f WHERE {where} GROUP BY key ORDER BY bytes_up DESC, key")
        rows = [dict(r) for r in conn.execute(sql, args)]
        found = dict(conn.execute(
            f"SELECT {key} AS key, SUM(d.count) FROM flows f JOIN flow_detections d "
            f"ON d.flow_id = f.flow_id WHERE {where} GROUP BY key", args).fetchall())
        for r in rows:
            r["detections"] = found.get(r["key"], 0)
        return rows
    finally:
        conn.close()


def _bytes_for_class(conn: sqlite3.Connection, where: str, args: list[Any],
                     cls: str) -> dict[str, int]:
    row = conn.execute(
        f"SELECT COALESCE(SUM(f.bytes_up), 0), COALESCE(SUM(f.bytes_down), 0) FROM flows f "
        f"WHERE {where} AND f.flow_id IN (SELECT flow_id FROM flow_detections WHERE class = ?)",
        args + [cls]).fetchone()
    return {"bytes_up": row[0], "bytes_down": row[1]}


def flows(path: str, since_s: float, uid: int | None, provider: str = "", host: str = "",
          limit: int = 1000) -> list[dict[str, Any]]:
    where, args = _where(since_s, uid, provider, host)
    conn = connect(path)
    conn.row_factory = sqlite3.Row
    try:
        out = []
        for r in conn.execute(f"SELECT * FROM flows f WHERE {where} ORDER BY closed_at DESC "
                              f"LIMIT ?", args + [limit]):
            row = dict(r)
            row["detections"] = [
                {"detector": d[0], "class": d[1], "count": d[2],
                 "fields": [x for x in (d[3] or "").split("\n") if x]}
                for d in conn.execute("SELECT detector, class, count, fields FROM "
                                      "flow_detections WHERE flow_id = ? ORDER BY detector",
                                      (row["flow_id"],))]
            out.append(row)
        return out
    finally:
        conn.close()
