"""Daemon log lines: one per record, key=value or JSON, with level; an exception contributes
its class and place, never its message (which can quote input bytes)."""

from __future__ import annotations

import json
import logging

from egressguard.logfmt import JsonFormatter, KeyValueFormatter

SECRET_ISH = "AKIA" + "Q" * 16


def _record(exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError(f"bad input {SECRET_ISH}")
        except ValueError as e:
            exc_info = (type(e), e, e.__traceback__)
    return logging.LogRecord("egressguard.test", logging.WARNING, __file__, 1,
                             "reload rejected\nerrors=%d", (2,), exc_info)


def test_json_lines_carry_fields_not_exception_messages() -> None:
    line = JsonFormatter().format(_record(exc=True))
    assert "\n" not in line
    out = json.loads(line)
    assert out["level"] == "warning" and out["logger"] == "egressguard.test"
    assert out["msg"] == "reload rejected\nerrors=2"
    assert out["error"] == "ValueError" and out["at"].startswith("test_logfmt.py:")
    assert SECRET_ISH not in line


def test_key_value_lines_are_one_line() -> None:
    line = KeyValueFormatter().format(_record(exc=True))
    assert "\n" not in line and 'level=warning' in line and 'error="ValueError"' in line
    assert SECRET_ISH not in line
