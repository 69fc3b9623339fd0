"""SIEM formats: OCSF validated against the pinned 1.4.0 requirements (our data file), CEF and
RFC 5424 escaping with hostile values, ECS fields, and no raw secret in any rendering."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
import yaml

from egressguard.audit.formats import FORMAT_NAMES, FormatContext, render
from egressguard.audit.formats import cef, ocsf, rfc5424
from egressguard.audit.reader import Cursor, LogReader
from egressguard.audit.writer import AuditLog
from egressguard.model import Destination, Detection, Process

OCSF_REQUIREMENTS = Path(ocsf.__file__).with_name("ocsf-1.4.0.yaml")
CTX = FormatContext(hostname="guard-01", version="0.1.0")

# A generated fake, assembled here: never a real key. It only ever enters the tests as the
# *raw value* that must not appear: events carry the masked preview and the fingerprint.
RAW_SECRET = "AKIA" + "QX7Z2MLV" + "9KJ3HN4P"
HOSTILE = 'a|b=c\\d]e"f\nnext\rline ünï ✓ [x] <y>'


def process(**over: object) -> Process:
    base = dict(pid=4242, tgid=4242, uid=65534, gid=65534, comm="python3", cgroup_id=7,
                exe="/usr/bin/python3.11", cmdline=("python3", "agent.py", "--key", "AKIA****HN4P"),
                user="nobody", cgroup_path="/ai-agents", systemd_unit="", container_id="")
    base.update(over)
    return Process(**base)  # type: ignore[arg-type]


def detection(detector: str = "secret.aws_access_key_id", cls: str = "secret") -> Detection:
    return Detection(detector, cls, 120, 20, "AKIA************HN4P", "fp-" + "ab" * 16,
                     "high")


def sample_events() -> list[dict]:
    """One of every kind the daemon writes, shaped as events.audit_record shapes them."""
    p, d = process().to_dict(), Destination("127.10.0.1", 443, "api.openai.com").to_dict()
    flow = {"flow_id": "f-1", "process": p, "destination": d}
    det = detection().to_dict()
    email = detection("pii.email", "pii").to_dict()
    return [
        {"event": "daemon.start", "version": "0.1.0", "pid": 1, "rules": 3},
        {"event": "flow.open", **flow},
        {"event": "flow.detect", **flow, "detections": [email], "masked": [email],
         "action": "mask", "rule": "no-emails-out", "reason": "rule no-emails-out"},
        {"event": "flow.detect", **flow, "detections": [det], "masked": [],
         "action": "hold", "rule": "secrets-need-approval", "reason": "held"},
        {"event": "flow.hold", **flow, "hold_id": "h-1", "detections": [det],
         "rule": "secrets-need-approval", "reason": "held", "timeout_s": 120.0},
        {"event": "flow.decision", **flow, "hold_id": "h-1", "outcome": "approved",
         "decision": {"outcome": "approved", "by": "alice", "by_uid": 1000, "reason": "ok"},
         "who": {"uid": 1000, "user": "alice", "pid": 77}, "reason": "ok",
         "rule": "secrets-need-approval"},
        {"event": "flow.decision", **flow, "hold_id": "h-2", "outcome": "denied",
         "decision": {"outcome": "denied", "by": "alice", "by_uid": 1000, "reason": "no"},
         "reason": "no", "rule": "secrets-need-approval"},
        {"event": "flow.block", **flow, "action": "block", "rule": "no-paste-sites",
         "reason": HOSTILE},
        {"event": "flow.close", **flow, "bytes_up": 1234, "bytes_down": 99, "state": "closed",
         "reset": None, "duration_s": 0.25},
        {"event": "flow.upstream_error", **flow, "error": "ConnectionRefusedError"},
        {"event": "udp.refused", "udp": {"dst_ip": "127.0.0.9", "dst_port": 443}},
        {"event": "approval.refused", "hold_id": "h-3", "attempted": "approve",
         "who": {"uid": 65534, "user": "nobody", "pid": 5}, "code": "own_flow"},
        {"event": "proxy.unknown_origin", "peer": {"ip": "127.0.0.1", "port": 5555}},
        {"event": "audit.chain_reset", "reason": "previous log failed verification"},
        {"event": "flow.block", "flow_id": "f-2",
         "process": process(comm=HOSTILE, exe="/opt/" + HOSTILE,
                            cmdline=("run", HOSTILE)).to_dict(),
         "destination": Destination("::1", 8443, HOSTILE).to_dict(),
         "action": "block", "rule": HOSTILE, "reason": HOSTILE},
    ]


@pytest.fixture(scope="module")
def entries(tmp_path_factory) -> list:
    """The sample events written by the real AuditLog and read back by the real reader."""
    path = tmp_path_factory.mktemp("fmt") / "audit.jsonl"

    async def write() -> None:
        log = AuditLog(path)
        await log.start()
        for ev in sample_events():
            log.append(ev)
        await log.close()

    asyncio.run(write())
    return LogReader(str(path)).read_after(Cursor(), 1000)


# -- OCSF ------------------------------------------------------------------------------------

def _get(obj: dict, dotted: str) -> object:
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def ocsf_problems(event: dict) -> list[str]:
    req = yaml.safe_load(OCSF_REQUIREMENTS.read_text())
    problems = []
    cls = req["classes"].get(event.get("class_uid"))
    if cls is None:
        return [f"class_uid {event.get('class_uid')} is not one we pinned"]
    for key in req["base_required"] + cls["required"]:
        if event.get(key) is None:
            problems.append(f"missing required {key}")
    for group in cls["at_least_one"]:
        if not any(event.get(k) for k in group):
            problems.append(f"needs at least one of {group}")
    for key in req["integers"]:
        if not isinstance(event.get(key), int) or isinstance(event.get(key), bool):
            problems.append(f"{key} is not an integer")
    if event.get("category_uid") != cls["category_uid"]:
        problems.append("category_uid does not belong to the class")
    if event.get("activity_id") not in cls["activity_ids"]:
        problems.append(f"activity_id {event.get('activity_id')} not defined for the class")
    if event.get("type_uid") != event.get("class_uid", 0) * 100 + event.get("activity_id", 0):
        problems.append("type_uid is not class_uid * 100 + activity_id")
    for path, keys in req["objects"].items():
        obj = _get(event, path)
        if obj is None:
            continue
        for key in keys:
            if not isinstance(obj, dict) or obj.get(key) in (None, ""):
                problems.append(f"{path} lacks required {key}")
    for path, allowed in req["enums"].items():
        value = _get(event, path)
        if value is not None and value not in allowed:
            problems.append(f"{path} = {value!r} is not in the enumeration")
    if _get(event, "metadata.version") != req["version"]:
        problems.append("metadata.version is not the pinned version")
    return problems


def test_every_ocsf_event_has_its_class_requirements(entries):
    classes = set()
    for entry in entries:
        out = render("ocsf", entry, CTX).obj
        assert ocsf_problems(out) == [], (entry.event["event"], ocsf_problems(out))
        classes.add(out["class_uid"])
        assert out["unmapped"]["seq"] == entry.seq and out["metadata"]["uid"] == entry.hash
    assert classes == {0, 2006, 4001}


def test_the_validator_catches_what_it_should(entries):
    out = render("ocsf", entries[1], CTX).obj
    for broken, why in (({**out, "type_uid": 1}, "type_uid"),
                        ({k: v for k, v in out.items() if k != "metadata"}, "metadata"),
                        ({**out, "disposition_id": 31}, "disposition_id"),
                        ({**out, "time": "yesterday"}, "time"),
                        ({**out, "metadata": {"version": "1.4.0", "product": {}}},
                         "vendor_name")):
        assert any(why in p for p in ocsf_problems(broken)), why


@pytest.mark.parametrize("index, class_uid, action_id, disposition_id", [
    (1, 4001, None, None),         # flow.open: no decision yet
    (2, 2006, 1, 11),              # masked: allowed, corrected
    (4, 4001, 1, 14),              # held: allowed, delayed
    (5, 4001, 1, 8),               # approved
    (6, 4001, 2, 25),              # denied: rejected
    (7, 4001, 2, 2),               # blocked
])
def test_ocsf_security_control_fields(entries, index, class_uid, action_id, disposition_id):
    out = render("ocsf", entries[index], CTX).obj
    assert out["class_uid"] == class_uid
    assert out.get("action_id") == action_id and out.get("disposition_id") == disposition_id
    if class_uid == 4001:
        assert out["dst_endpoint"] == {"ip": "127.10.0.1", "port": 443,
                                       "hostname": "api.openai.com"}
        assert out["actor"]["process"]["pid"] == 4242
        assert out["connection_info"]["direction_id"] == 2


def test_ocsf_finding_names_the_data_type_and_the_rule(entries):
    out = render("ocsf", entries[3], CTX).obj
    assert out["class_uid"] == 2006
    assert out["data_security"]["detection_pattern"] == "secret.aws_access_key_id"
    assert out["data_security"]["category"] == "secret"
    assert out["data_security"]["policy"]["name"] == "secrets-need-approval"
    assert out["finding_info"]["types"] == ["secret.aws_access_key_id"]
    assert out["actor"]["process"]["file"]["path"] == "/usr/bin/python3.11"


# -- CEF -------------------------------------------------------------------------------------

def parse_cef(line: str) -> tuple[list[str], dict[str, str]]:
    """A strict reader of what the CEF specification allows: 7 header fields split on
    unescaped pipes, then key=value pairs whose values end before the next ` key=`."""
    assert line.startswith("CEF:0|") and "\n" not in line and "\r" not in line
    fields, cur, i = [], "", len("CEF:0|")
    while len(fields) < 6:
        c = line[i]
        if c == "\\":
            assert line[i + 1] in "\\|", f"bad header escape at {i}"
            cur += line[i + 1]
            i += 2
        elif c == "|":
            fields.append(cur)
            cur = ""
            i += 1
        else:
            cur += c
            i += 1
    ext_text = line[i:]
    pairs: dict[str, str] = {}
    keys = list(re.finditer(r"(?:^| )([A-Za-z0-9]+)=", ext_text))
    for n, m in enumerate(keys):
        # a key starts only where the '=' is unescaped
        end = keys[n + 1].start() if n + 1 < len(keys) else len(ext_text)
        raw = ext_text[m.end():end]
        value, j = "", 0
        while j < len(raw):
            if raw[j] == "\\":
                nxt = raw[j + 1]
                value += {"\\": "\\", "=": "=", "n": "\n", "r": "\r"}[nxt]
                j += 2
            else:
                assert raw[j] != "=", "an unescaped = inside a value"
                value += raw[j]
                j += 1
        pairs[m.group(1)] = value
    return ["CEF:0"] + fields, pairs


def test_cef_escapes_hostile_values(entries):
    entry = entries[-1]
    line = render("cef", entry, CTX).text
    header, ext = parse_cef(line)
    assert header[1:6] == ["egressguard", "egressguard", "0.1.0", "flow.block", "flow blocked"]
    assert header[6] == "8"                        # block: severity 8 of 10
    assert ext["reason"] == HOSTILE                 # newlines, =, \, | come back exactly
    assert ext["cs1"] == HOSTILE and ext["cs1Label"] == "rule"
    assert ext["dhost"] == HOSTILE and ext["sproc"] == HOSTILE
    assert ext["externalId"] == str(entry.seq) and ext["cs6"] == entry.hash
    assert ext["act"] == "block" and ext["dst"] == "::1" and ext["dpt"] == "8443"


def test_cef_header_escaping_and_severity_range():
    assert cef.escape_header("a|b\\c\nd") == "a\\|b\\\\c d"
    assert cef.escape_value("a=b\\c\nd\re|f") == "a\\=b\\\\c\\nd\\re|f"
    for entry in sample_events():
        sev = int(cef.render(entry, CTX).split("|")[7 - 1])
        assert 0 <= sev <= 10


# -- RFC 5424 --------------------------------------------------------------------------------

def parse_sd(sd: str) -> tuple[str, dict[str, str]]:
    """Parse one SD-ELEMENT per RFC 5424 section 6.3."""
    m = re.match(r'\[([^ =\]"]+)', sd)
    assert m
    pos, params = m.end(), {}
    while sd[pos] == " ":
        k = re.match(r' ([^ =\]"]+)="', sd[pos:])
        assert k, sd[pos:]
        pos += k.end()
        value = ""
        while sd[pos] != '"':
            if sd[pos] == "\\" and sd[pos + 1] in '"\\]':
                value += sd[pos + 1]
                pos += 2
            else:
                assert sd[pos] != "]", "an unescaped ] inside a value"
                value += sd[pos]
                pos += 1
        params[k.group(1)] = value
        pos += 1
    assert sd[pos] == "]" and pos == len(sd) - 1
    return m.group(1), params


def test_rfc5424_escapes_structured_data_and_cleans_header_fields():
    msg = rfc5424.message("the message ] \" \\", time="2026-12-03T19:43:02.123456Z",
                          severity="high", facility=16, hostname="host name\u00e9",
                          app_name="app" * 30, procid="12", msgid="flow.block",
                          params={"seq": 5, "hash": 'h"]\\', "event": HOSTILE})
    text = msg.decode("utf-8")
    head, _, rest = text.partition(" [")
    pri_version, ts, host, app, procid, msgid = head.split(" ")
    assert pri_version == "<131>1" and ts == "2026-12-03T19:43:02.123456Z"
    assert host == "host_name_" and len(app) == 48 and procid == "12" and msgid == "flow.block"
    sd_end = rest.index("] the message")
    sd_id, params = parse_sd("[" + rest[:sd_end + 1])
    assert sd_id == "egressguard@32473"
    assert params == {"seq": "5", "hash": 'h"]\\', "event": HOSTILE}
    assert rfc5424.frame(b"abc") == b"3 abc"
    assert rfc5424.frame("é".encode()) == b"2 \xc3\xa9"      # octets, not characters


# -- ECS and all formats ---------------------------------------------------------------------

def test_ecs_fields(entries):
    out = render("ecs", entries[7], CTX).obj
    assert out["network"]["direction"] == "egress"
    assert out["event"]["action"] == "flow.block" and out["event"]["outcome"] == "failure"
    assert out["event"]["type"] == ["denied"] and out["event"]["kind"] == "alert"
    assert out["event"]["sequence"] == entries[7].seq and out["event"]["hash"] == entries[7].hash
    assert out["process"]["pid"] == 4242 and out["process"]["executable"] == "/usr/bin/python3.11"
    assert out["destination"] == {"ip": "127.10.0.1", "port": 443, "domain": "api.openai.com"}
    assert out["rule"]["name"] == "no-paste-sites" and out["ecs"]["version"].startswith("8.")
    close = render("ecs", entries[8], CTX).obj
    assert close["event"]["type"] == ["connection", "end"]
    assert close["source"]["bytes"] == 1234 and close["destination"]["bytes"] == 99


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_every_format_is_one_line_with_seq_and_hash_and_no_raw_secret(entries, fmt):
    for entry in entries:
        out = render(fmt, entry, CTX)
        assert "\n" not in out.text and "\r" not in out.text
        assert str(entry.seq) in out.text and entry.hash in out.text
        assert RAW_SECRET not in out.text
        if fmt == "json":
            assert out.text.encode() == entry.line          # byte-exact: the hash re-checks
        elif fmt != "cef":
            assert json.loads(out.text) == out.obj


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_formats_are_total_on_odd_values(fmt):
    """Whatever shape a field has (the writer normalises, but never drops, odd values), every
    format renders it."""
    from egressguard.audit.reader import LogEntry
    odd = [{"seq": 1, "hash": "h", "event": "flow.close", "duration_s": "slow",
            "bytes_up": None, "process": "not a mapping", "destination": ["x"],
            "detections": "none", "time": "not a time"},
           {"seq": 2, "hash": "h", "event": "flow.detect", "detections": [None, 3, {}],
            "decision": 5, "outcome": None},
           {"seq": 3, "hash": "h", "event": "flow.decision", "decision": "yes",
            "who": 7, "rule": ["r"], "reason": {"a": 1}},
           {"seq": 4, "hash": "h", "event": "flow.open", "flow_id": 9,
            "process": {"uid": "x", "pid": [], "cmdline": "a b", "exe": 3},
            "destination": {"ip": None, "port": "p", "host": 1}},
           {"seq": 5, "hash": "h"}]
    for ev in odd:
        out = render(fmt, LogEntry(ev["seq"], "h", json.dumps(ev).encode(), ev), CTX)
        assert "\n" not in out.text and str(ev["seq"]) in out.text
