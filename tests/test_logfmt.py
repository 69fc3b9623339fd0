"""Daemon log lines: one per record, key=value or JSON, with level; an exception contributes
its class and place, never its message (which can quote input bytes)."""

from __future__ import annotations

import json
import logging

from egressguard.logfmt import JsonFormatter, KeyValueFormatter
from egressguard.logview import as_key_values, log_fields
from egressguard.model import Destination, Detection, FlowInfo, Process

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


# -- event lines (logview): real fields, no dashes --------------------------------------------

def _event_record(event: str, flow: object, fields: dict) -> logging.LogRecord:
    """A record as daemon._log_event makes it (log.info with extra={"fields": view})."""
    view = log_fields(event, flow, fields)
    return _with_fields(logging.LogRecord("egressguard.daemon", logging.INFO, __file__, 1, "%s",
                                          (as_key_values(view),), None), view)


def _with_fields(record: logging.LogRecord, view: dict) -> logging.LogRecord:
    record.fields = view            # what logging's extra= does
    return record


FLOW = FlowInfo(flow_id="f-12", process=Process(pid=42, uid=65534, comm="curl",
                                                cmdline=("curl", "-d", SECRET_ISH)),
                destination=Destination("::1", 39991, "api.example-ai.test"), opened_at=0.0)
DETECTION = Detection(detector="secret.aws_access_key_id", cls="secret", start=3, end=23,
                      preview="AKIA************QQQQ", fingerprint="fp:1")


def test_json_event_lines_carry_real_fields() -> None:
    cases = [
        # policy.reload: the outcome is a field of the event, not of a decision
        ("policy.reload", None, {"outcome": "rejected", "trigger": "SIGHUP",
                                 "policy_hash": "ab12", "previous_hash": "cd34",
                                 "errors": ["x.yaml:3: rules[0]: bad"]},
         {"outcome": "rejected", "trigger": "SIGHUP", "policy_hash": "ab12",
          "errors": ["x.yaml:3: rules[0]: bad"]}),
        # flow.decision arrives without a live flow: its flow is in the fields
        ("flow.decision", None, {"flow_id": "f-12", "process": FLOW.process.to_dict(),
                                 "destination": FLOW.destination.to_dict(), "hold_id": "h-7",
                                 "decision": {"outcome": "approved", "by": "alice"}},
         {"flow": "f-12", "dest": "[::1]:39991", "host": "api.example-ai.test", "pid": 42,
          "uid": 65534, "comm": "curl", "hold_id": "h-7", "outcome": "approved",
          "by": "alice"}),
        ("daemon.start", None, {"version": "0.1", "pid": 9, "cgroup": "/a",
                                "policy_hash": "ab12", "failure_mode": "closed",
                                "adopted_programs": ["eg_connect4"]},
         {"version": "0.1", "pid": 9, "cgroup": "/a", "failure_mode": "closed",
          "adopted_programs": ["eg_connect4"]}),
        ("flow.detect", FLOW, {"verdict": {"action": "hold", "rule": "secrets", "reason": "r"},
                               "detections": [DETECTION.to_dict()]},
         {"flow": "f-12", "action": "hold", "rule": "secrets",
          "detectors": ["secret.aws_access_key_id"]}),
    ]
    for event, flow, fields, want in cases:
        line = JsonFormatter().format(_event_record(event, flow, fields))
        out = json.loads(line)
        assert out["msg"] == event and out["event"] == event
        assert {k: out.get(k) for k in want} == want, (event, out)
        assert "-" not in out.values() and "event=" not in line
        assert SECRET_ISH not in line and "****" not in line     # no cmdline, no previews
        kv = KeyValueFormatter().format(_event_record(event, flow, fields))
        assert f"event={event}" in kv and "=-" not in kv and SECRET_ISH not in kv
