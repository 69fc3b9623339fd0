"""Daemon logs: one key=value (or, with --log-format json, JSON) line per event on stderr
(journald keeps them), with levels.

Log lines carry ids, names and masked previews only: the data path never logs payload bytes.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        msg = record.getMessage().replace("\n", "\\n")
        line = f'time={ts}.{int(record.msecs):03d}Z level={record.levelname.lower()} ' \
               f'logger={record.name} msg="{msg}"'
        if record.exc_info and record.exc_info[1] is not None:
            # The exception's class and where it was raised, not its message: messages of
            # codec or parser errors can quote input bytes, and input may be a secret.
            exc = record.exc_info[1]
            tb = traceback.extract_tb(exc.__traceback__)
            where = f"{tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno}" if tb else "?"
            line += f' error="{exc.__class__.__name__}" at="{where}"'
        return line


class JsonFormatter(KeyValueFormatter):
    """The same fields as one JSON object per line, for log shippers that parse JSON. An
    event's line carries the event's fields as JSON fields (msg is the event name)."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        out = {"time": f"{ts}.{int(record.msecs):03d}Z", "level": record.levelname.lower(),
               "logger": record.name, "msg": record.getMessage()}
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):         # an event (logview): its fields, not a string
            out["msg"] = fields.get("event", out["msg"])
            out.update({k: v for k, v in fields.items() if k not in out})
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]            # class and place only, as above
            tb = traceback.extract_tb(exc.__traceback__)
            out["error"] = exc.__class__.__name__
            out["at"] = f"{tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno}" if tb else "?"
        return json.dumps(out, ensure_ascii=False)


def setup_logging(level: str, fmt: str = "kv") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
