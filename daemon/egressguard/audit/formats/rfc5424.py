"""RFC 5424 syslog messages and RFC 5425/6587 octet-counting framing (`LEN SP MSG`).

    <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD-ID seq="N" hash="H" event="E"] MSG

- HOSTNAME, APP-NAME, PROCID and MSGID are printable US-ASCII without spaces (33-126), cut to
  255/48/128/32 characters, "-" when empty; anything else is replaced by "_".
- SD-PARAM values escape `"`, `\\` and `]` with a backslash (RFC 5424 section 6.3.3); an SD-ID
  or PARAM-NAME may not contain `=`, space, `]` or `"`.
- MSG is the event in the sink's format, UTF-8, one line (every format escapes newlines).
With octet counting the receiver never has to guess where a message ends, so a hostile value
cannot start a forged message.
"""

from __future__ import annotations

from typing import Any

FACILITIES = {"kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6,
              "news": 7, "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "local0": 16,
              "local1": 17, "local2": 18, "local3": 19, "local4": 20, "local5": 21,
              "local6": 22, "local7": 23}
# our severity -> syslog severity (6 informational, 5 notice, 4 warning, 3 error, 2 critical)
SYSLOG_SEVERITY = {"info": 6, "low": 5, "medium": 4, "high": 3, "critical": 2}
SD_ID = "egressguard@32473"     # 32473: the enterprise number RFC 5612 reserves for examples


def header_field(value: Any, limit: int) -> str:
    s = "".join(c if 33 <= ord(c) <= 126 else "_" for c in str(value))[:limit]
    return s or "-"


def sd_name(value: str, limit: int = 32) -> str:
    s = "".join(c if 33 <= ord(c) <= 126 and c not in '= ]"' else "_" for c in value)[:limit]
    return s or "_"


def sd_escape(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def message(text: str, *, time: str, severity: str, facility: int, hostname: str,
            app_name: str, procid: str, msgid: str, params: dict[str, Any],
            sd_id: str = SD_ID) -> bytes:
    pri = facility * 8 + SYSLOG_SEVERITY.get(severity, 5)
    sd = "[" + sd_name(sd_id) + "".join(f' {sd_name(k)}="{sd_escape(v)}"'
                                        for k, v in params.items()) + "]"
    head = (f"<{pri}>1 {header_field(time, 64)} {header_field(hostname, 255)} "
            f"{header_field(app_name, 48)} {header_field(procid, 128)} "
            f"{header_field(msgid, 32)} {sd}")
    return (head + " " + text).encode("utf-8", "replace")


def frame(msg: bytes) -> bytes:
    """Octet counting: the message's length in bytes, a space, the message."""
    return b"%d " % len(msg) + msg
