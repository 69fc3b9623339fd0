"""Sinks against real receivers: Debian's rsyslogd (TCP, and TLS with a test CA) and an HTTP
server on loopback speaking HEC. Every seq must arrive; outages lose nothing; status() shows
the lag of a sink whose receiver is down."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from egressguard.audit import segments
from egressguard.audit.formats import FormatContext
from egressguard.audit.reader import Cursor, LogReader
from egressguard.audit.sinkconfig import SinkSpec, TlsSpec
from egressguard.audit.sinks.runner import SinkRunner
from egressguard.audit.writer import AuditLog
from egressguard.config import config_from_text
from egressguard.errors import ConfigError
from egressguard.harness import free_port

from tests.test_audit import flow_event
from tests.test_e2e_guard import wait_for as _wait_for
from tests.tools.receivers import HecServer, Rsyslog, make_test_pki

CTX = FormatContext(hostname="guard-01", version="0.1.0")
SHIP = str(Path(__file__).parent / "tools" / "ship.py")
FAST = {"retry_initial": 0.05, "retry_max": 0.5}


def wait_for(pred, timeout: float = 60.0):
    """tests.test_e2e_guard's wait, with a longer default: receivers run on a loaded machine."""
    return _wait_for(pred, timeout)


def write(path: Path, n: int, start: int = 0, rotate: int | None = None) -> None:
    async def go() -> None:
        log = AuditLog(path, rotate_bytes=rotate)
        await log.start()
        for i in range(start, start + n):
            log.append(flow_event(i))
        await log.close()
    asyncio.run(go())


def log_entries(path: Path) -> list:
    return LogReader(str(path)).read_after(Cursor(), 10**7)


@contextlib.contextmanager
def shipping(log: Path, specs: list, tmp_path: Path) -> Iterator[SinkRunner]:
    """A started SinkRunner with its cursors under tmp_path/state; always stopped."""
    runner = SinkRunner(str(log), specs, str(tmp_path / "state"), ctx=CTX, poll_s=0.05)
    runner.start()
    try:
        yield runner
    finally:
        runner.stop()


def first_error(runner: SinkRunner, name: str) -> dict:
    """Wait for the sink's first failure; its status then."""
    return wait_for(lambda: (s := status_of(runner, name))["last_error"] and s)


def status_of(runner: SinkRunner, name: str) -> dict:
    return next(s for s in runner.status() if s["name"] == name)


def in_order_with_boundary_duplicates(seqs: list[int], n: int) -> int:
    """Every seq 1..n arrived in order; a repeat is allowed only as a restart from an earlier
    seq (a re-sent batch at a reconnect), never a gap. Returns how many restarts there were."""
    restarts, expect = 0, 1
    for s in seqs:
        if s > expect:
            raise AssertionError(f"seq {s} arrived before seq {expect}: a gap")
        if s < expect:
            restarts += 1
        expect = s + 1
    assert expect == n + 1, f"only up to seq {expect - 1} of {n} arrived"
    return restarts


@pytest.fixture
def pki(tmp_path: Path):
    return make_test_pki(tmp_path / "pki")


# -- rsyslog ---------------------------------------------------------------------------------

@pytest.mark.parametrize("transport, fmt", [("tcp", "json"), ("tls", "cef"), ("tls", "ocsf")])
def test_rsyslog_receives_every_seq(tmp_path: Path, pki, transport: str, fmt: str) -> None:
    log = tmp_path / "audit.jsonl"
    write(log, 300)
    tls = None
    if transport == "tls":
        tls = TlsSpec(ca=str(pki.ca), cert=str(pki.client_cert), key=str(pki.client_key))
    with Rsyslog(tmp_path / "rsyslog", pki if transport == "tls" else None) as rs:
        spec = SinkSpec(name="siem", type="syslog", format=fmt, transport=transport,
                        address=("127.0.0.1", rs.port), tls=tls, batch=64, **FAST)
        with shipping(log, [spec], tmp_path) as runner:
            seqs = rs.wait_for(set(range(1, 301)))
            wait_for(lambda: status_of(runner, "siem")["acked_seq"] == 300)
        assert sorted(set(seqs)) == list(range(1, 301)) and len(seqs) == 300
        entries = log_entries(log)
        for line, entry in zip(rs.lines(), entries):
            msgid, sd, msg = line.decode("utf-8").split("\t", 2)
            assert msgid == "flow.detect"
            assert sd == (f'[egressguard@32473 seq="{entry.seq}" hash="{entry.hash}" '
                          'event="flow.detect"]')
            if fmt == "json":
                assert msg.encode() == entry.line          # byte-exact: the hash re-checks
            elif fmt == "cef":
                assert msg.startswith("CEF:0|egressguard|") and f"cs6={entry.hash}" in msg
            else:
                assert json.loads(msg)["unmapped"]["seq"] == entry.seq
        st = status_of(runner, "siem")
        assert st["lag_events"] == 0 and st["last_error"] is None and st["last_success"]
    cursor = json.loads((tmp_path / "state" / "sinks" / "siem.cursor").read_text())
    assert cursor == {"seq": 300, "hash": entries[-1].hash}


def test_rsyslog_parses_hostile_structured_data_as_sent(tmp_path: Path) -> None:
    """Escaping checked by a real RFC 5424 parser: rsyslog's."""
    from egressguard.audit.formats import rfc5424
    import socket
    hostile = 'x"]\\ [fake@1 seq="999"] \u00fcn\u00efc\u00f6de\nline'
    msg = rfc5424.message("payload ] [ \" \\ é", time="2026-12-03T19:43:02.123456Z",
                          severity="high", facility=16, hostname="guard 01",
                          app_name="egressguard", procid="1", msgid="flow.block",
                          params={"seq": 1, "hash": hostile, "event": "flow.block"})
    with Rsyslog(tmp_path / "rsyslog") as rs:
        with socket.create_connection(("127.0.0.1", rs.port), 5) as s:
            s.sendall(rfc5424.frame(msg))
        wait_for(lambda: rs.lines(), 20)
        msgid, sd, text = rs.lines()[0].decode("utf-8").split("\t", 2)
    assert msgid == "flow.block"
    # rsyslog shows a control character as #ooo (its escapeControlCharactersOnReceive)
    shown = rfc5424.sd_escape(hostile).replace("\n", "#012")
    assert sd == f'[egressguard@32473 seq="1" hash="{shown}" event="flow.block"]'
    assert rs.seqs() == [1]                          # the forged seq="999" stayed inside
    assert text.startswith("payload ] [")


def test_tls_client_certificate_is_presented(tmp_path: Path, pki) -> None:
    """rsyslog requiring a client certificate of the test CA: accepted with cert and key,
    refused without."""
    log = tmp_path / "audit.jsonl"
    write(log, 20)
    with Rsyslog(tmp_path / "rsyslog", pki, client_certs=True) as rs:
        bare = SinkSpec(name="bare", type="syslog", transport="tls", tls=TlsSpec(ca=str(pki.ca)),
                        address=("127.0.0.1", rs.port), **FAST)
        with shipping(log, [bare], tmp_path / "a") as runner:
            st = first_error(runner, "bare")
        assert st["acked_seq"] == 0 and rs.seqs() == []
        mutual = SinkSpec(name="mutual", type="syslog", transport="tls", address=("127.0.0.1",
                          rs.port), tls=TlsSpec(ca=str(pki.ca), cert=str(pki.client_cert),
                                                key=str(pki.client_key)), **FAST)
        with shipping(log, [mutual], tmp_path / "b") as runner:
            wait_for(lambda: status_of(runner, "mutual")["acked_seq"] == 20)
        # acked means rsyslog's TCP stack has the bytes; its file is written a moment later
        assert sorted(set(rs.wait_for(set(range(1, 21)), 20))) == list(range(1, 21))


def test_udp_for_legacy_receivers(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    write(log, 50)
    with Rsyslog(tmp_path / "rsyslog", udp_port=free_port()) as rs:
        assert rs.udp_port is not None
        spec = SinkSpec(name="legacy", type="syslog", transport="udp", format="ecs",
                        address=("127.0.0.1", rs.udp_port), **FAST)
        with shipping(log, [spec], tmp_path) as runner:
            # loopback rarely drops a datagram, but UDP promises nothing: this checks the
            # format and framing (one message per datagram, no length prefix), not delivery
            seqs = rs.wait_for(set(range(1, 51)), 30)
            wait_for(lambda: status_of(runner, "legacy")["acked_seq"] == 50)   # sent: all UDP knows
    assert set(seqs) == set(range(1, 51))
    assert json.loads(rs.lines()[0].split(b"\t", 2)[2])["event"]["sequence"] == seqs[0]


def test_tls_receiver_with_a_certificate_of_another_ca_is_refused(tmp_path: Path, pki) -> None:
    other = make_test_pki(tmp_path / "other")
    log = tmp_path / "audit.jsonl"
    write(log, 10)
    with Rsyslog(tmp_path / "rsyslog", other) as rs:        # its certificate is not ours
        spec = SinkSpec(name="siem", type="syslog", transport="tls", tls=TlsSpec(ca=str(pki.ca)),
                        address=("127.0.0.1", rs.port), **FAST)
        with shipping(log, [spec], tmp_path) as runner:
            st = first_error(runner, "siem")
        assert "certificate verify failed" in st["last_error"]
        assert st["acked_seq"] == 0 and rs.seqs() == []


def test_outage_of_rsyslog_loses_none_of_5000_events(tmp_path: Path) -> None:
    """rsyslog stops; 5,000 events are written (the log rotates meanwhile); status shows the
    lag; rsyslog starts again: all arrive, in order, duplicates only at the reconnect."""
    log = tmp_path / "audit.jsonl"
    write(log, 10)
    rs = Rsyslog(tmp_path / "rsyslog")
    rs.start()
    spec = SinkSpec(name="siem", type="syslog", format="json", address=("127.0.0.1", rs.port),
                    batch=200, **FAST)
    with shipping(log, [spec], tmp_path) as runner:
        rs.wait_for(set(range(1, 11)))
        rs.stop()
        write(log, 5000, start=10, rotate=256 * 1024)
        assert len(segments.rotated(str(log))) >= 2
        st = first_error(runner, "siem")
        assert st["lag_events"] >= 4800 and st["head_seq"] == 5010
        rs.start()
        seqs = rs.wait_for(set(range(1, 5011)), 120)
        wait_for(lambda: status_of(runner, "siem")["lag_events"] == 0)
        rs.stop()
    restarts = in_order_with_boundary_duplicates(seqs, 5010)
    assert restarts <= 2 and len(seqs) - 5010 <= 2 * spec.batch


def test_status_shows_growing_lag_while_the_receiver_is_down(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    port = free_port()                                       # nothing listens here yet
    spec = SinkSpec(name="down", type="syslog", address=("127.0.0.1", port), **FAST)
    other = SinkSpec(name="beats", type="file", path=str(tmp_path / "ship.jsonl"))
    with shipping(log, [spec, other], tmp_path) as runner:
        write(log, 100)
        st = first_error(runner, "down")
        assert st["lag_events"] == 100 and st["acked_seq"] == 0
        assert "cannot connect" in st["last_error"] and st["last_success"] is None
        assert {k for k in st} >= {"name", "kind", "format", "acked_seq", "lag_events",
                                   "last_error", "last_success"}
        write(log, 150, start=100)
        wait_for(lambda: status_of(runner, "down")["lag_events"] == 250)
        # the other sink was not held up by the one that is down
        wait_for(lambda: status_of(runner, "beats")["acked_seq"] == 250)
        assert status_of(runner, "beats")["lag_events"] == 0
        with Rsyslog(tmp_path / "rsyslog", port=port) as rs:
            wait_for(lambda: status_of(runner, "down")["lag_events"] == 0)
            st = status_of(runner, "down")
            assert st["last_error"] is None and st["last_success"] and st["acked_seq"] == 250
            # acked means rsyslog's TCP stack has the bytes; its file is written a moment later
            assert sorted(set(rs.wait_for(set(range(1, 251)), 20))) == list(range(1, 251))


def test_restart_resumes_from_the_durable_cursor(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    out = tmp_path / "ship.jsonl"
    spec = SinkSpec(name="beats", type="file", path=str(out), batch=50)
    for round_ in range(3):                 # ship, stop, write more, start again
        write(log, 120, start=120 * round_)
        with shipping(log, [spec], tmp_path) as runner:
            wait_for(lambda: status_of(runner, "beats")["acked_seq"] == 120 * (round_ + 1))
    lines = out.read_bytes().splitlines()
    assert [json.loads(ln)["seq"] for ln in lines] == list(range(1, 361))   # no repeats
    assert lines == [e.line for e in log_entries(log)]


def test_a_reset_chain_is_shipped_from_its_start(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    out = tmp_path / "ship.jsonl"
    spec = SinkSpec(name="beats", type="file", path=str(out), batch=50)
    write(log, 40)
    with shipping(log, [spec], tmp_path) as runner:
        wait_for(lambda: status_of(runner, "beats")["acked_seq"] == 40)
        with open(log, "ab") as fh:
            fh.write(b"tampered\n")
        write(log, 5)                         # the writer sets the log aside: new chain
        wait_for(lambda: len(out.read_bytes().splitlines()) == 46)
    events = [json.loads(ln) for ln in out.read_bytes().splitlines()]
    assert events[40]["event"] == "audit.chain_reset" and events[40]["seq"] == 1
    assert [e["seq"] for e in events[40:]] == list(range(1, 7))


# -- HEC -------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["json", "cef", "ecs"])
def test_hec_requests_headers_token_and_batches(tmp_path: Path, fmt: str,
                                                caplog: pytest.LogCaptureFixture) -> None:
    log = tmp_path / "audit.jsonl"
    write(log, 250)
    token = "0b7e" + "c0de-1111-2222-3333-" + "444455556666"
    caplog.set_level(logging.DEBUG)
    with HecServer(token) as hec:
        hec.fail_with = 503                    # busy first: retried, nothing lost
        spec = SinkSpec(name="splunk", type="hec", format=fmt, url=hec.url, token=token,
                        index="security", sourcetype="", batch=100, **FAST)
        with shipping(log, [spec], tmp_path) as runner:
            st = first_error(runner, "splunk")
            assert "503" in st["last_error"] and token not in json.dumps(runner.status())
            hec.fail_with = None
            wait_for(lambda: status_of(runner, "splunk")["acked_seq"] == 250)
        requests = list(hec.requests)
    assert token not in caplog.text
    assert len(requests) == 3                                    # 100 + 100 + 50
    entries = log_entries(log)
    got = [e for r in requests for e in r.events()]
    assert [e["fields"]["seq"] for e in got] == list(range(1, 251))
    for req in requests:
        assert req.path == "/services/collector/event"
        assert req.headers["Authorization"] == f"Splunk {token}"
        assert req.headers["Content-Type"] == "application/json"
    for ev, entry in zip(got, entries):
        assert ev["fields"]["hash"] == entry.hash
        assert ev["host"] == "guard-01" and ev["source"] == "egressguard"
        assert ev["index"] == "security"
        assert ev["sourcetype"] == {"json": "_json", "cef": "cef", "ecs": "_json"}[fmt]
        assert abs(ev["time"] - time_of(entry.event)) < 1e-5
        if fmt == "json":
            assert ev["event"] == entry.event
        elif fmt == "cef":
            assert isinstance(ev["event"], str) and ev["event"].startswith("CEF:0|")
        else:
            assert ev["event"]["event"]["sequence"] == entry.seq


def time_of(event: dict) -> float:
    import datetime as dt
    return dt.datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp()


def test_hec_over_https_verifies_the_server(tmp_path: Path, pki) -> None:
    log = tmp_path / "audit.jsonl"
    write(log, 40)
    with HecServer("tok", tls=pki) as hec:
        good = SinkSpec(name="good", type="hec", url=hec.url, token="tok",
                        tls=TlsSpec(ca=str(pki.ca)), **FAST)
        bad = SinkSpec(name="bad", type="hec", url=hec.url, token="tok",
                       tls=TlsSpec(ca=str(make_test_pki(tmp_path / "other").ca)), **FAST)
        with shipping(log, [good, bad], tmp_path) as runner:
            wait_for(lambda: status_of(runner, "good")["acked_seq"] == 40)
            st = first_error(runner, "bad")
        assert [e["fields"]["seq"] for e in hec.events()] == list(range(1, 41))
    assert "certificate verify failed" in st["last_error"] and st["acked_seq"] == 0


def test_hec_wrong_token_is_an_error_not_a_loss(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    write(log, 20)
    with HecServer("right-token") as hec:
        spec = SinkSpec(name="splunk", type="hec", url=hec.url, token="wrong-token", **FAST)
        with shipping(log, [spec], tmp_path) as runner:
            st = first_error(runner, "splunk")
    assert "403" in st["last_error"] and "Invalid token" in st["last_error"]
    assert st["acked_seq"] == 0 and st["lag_events"] == 20


# -- file and stdout -------------------------------------------------------------------------

def ship_process(log: Path, state: Path, spec: dict, until: int = 0,
                 **popen: object) -> subprocess.Popen:
    argv = [sys.executable, SHIP, str(log), str(state), json.dumps(spec)]
    return subprocess.Popen(argv + (["--until-acked", str(until)] if until else []), **popen)


def test_stdout_sink_writes_one_event_per_line(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    write(log, 30)
    proc = ship_process(log, tmp_path / "state", {"name": "journal", "type": "stdout",
                                                  "format": "ecs"}, until=30,
                        stdout=subprocess.PIPE)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0
    docs = [json.loads(ln) for ln in out.splitlines()]
    assert [d["event"]["sequence"] for d in docs] == list(range(1, 31))
    assert all(d["network"]["direction"] == "egress" for d in docs)


def test_kill_9_of_the_shipper_during_5000_events_loses_nothing(tmp_path: Path) -> None:
    """rsyslog down, 5,000 events written, the shipper started, rsyslog back, the shipper
    killed with SIGKILL mid-delivery and started again: every seq arrives, in order, with
    repeats only where the shipper restarted (from its durable cursor)."""
    log = tmp_path / "audit.jsonl"
    rs = Rsyslog(tmp_path / "rsyslog")
    spec = {"name": "siem", "type": "syslog", "format": "cef", "batch": 50,
            "address": ["127.0.0.1", rs.port], **FAST}
    write(log, 5000, rotate=512 * 1024)
    first = ship_process(log, tmp_path / "state", spec)
    second: subprocess.Popen | None = None
    try:
        rs.start()
        wait_for(lambda: len(rs.seqs()) > 1500, 120)
        first.kill()
        first.wait(10)
        cursor = json.loads((tmp_path / "state" / "sinks" / "siem.cursor").read_text())
        assert 1500 <= cursor["seq"] < 5000
        second = ship_process(log, tmp_path / "state", spec, until=5000)
        assert second.wait(180) == 0
        seqs = rs.wait_for(set(range(1, 5001)), 60)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)
        rs.stop()
    assert in_order_with_boundary_duplicates(seqs, 5000) <= 2
    assert len(seqs) - 5000 <= 2 * 50


# -- configuration ---------------------------------------------------------------------------

def sinks_config(tmp_path: Path, sinks: str) -> str:
    return (f"scope: {{cgroup: /x}}\naudit:\n  path: {tmp_path}/audit.jsonl\n"
            f"  rotate_size: 1MiB\n  sinks:\n{sinks}")


def test_config_reads_every_sink_type(tmp_path: Path, pki) -> None:
    (tmp_path / "hec.token").write_text("tok-from-file\n")
    cfg = config_from_text(sinks_config(tmp_path, f"""\
    - {{name: siem, type: syslog, address: "127.0.0.1:6514", transport: tls, format: cef,
       tls: {{ca: {pki.ca}, cert: {pki.client_cert}, key: {pki.client_key}}},
       facility: authpriv, retry_max: 10s}}
    - {{name: splunk, type: hec, url: "https://127.0.0.1:8088", token_file: hec.token,
       index: security, batch: 50}}
    - {{name: beats, type: file, path: ship.jsonl, format: ecs}}
    - {{name: journal, type: stdout, format: ocsf}}
"""), str(tmp_path / "policy.yaml"), base_dir=str(tmp_path))
    siem, splunk, beats, journal = cfg.audit.sinks
    assert cfg.audit.rotate_size == 1024 * 1024
    assert siem.address == ("127.0.0.1", 6514) and siem.tls.ca == str(pki.ca)
    assert siem.facility == 10 and siem.retry_max == 10.0 and siem.format == "cef"
    assert splunk.url == "https://127.0.0.1:8088/services/collector/event"
    assert splunk.token == "tok-from-file" and splunk.batch == 50
    assert "tok-from-file" not in repr(splunk)
    assert beats.path == str(tmp_path / "ship.jsonl") and journal.format == "ocsf"


def test_config_errors_name_line_and_field(tmp_path: Path) -> None:
    text = sinks_config(tmp_path, """\
    - {name: a, type: syslog}
    - {name: a, type: file, path: audit.jsonl}
    - {name: "bad name", type: stdout, format: xml}
    - {name: h, type: hec, url: "ftp://x"}
    - {name: t, type: syslog, address: "127.0.0.1:99999", transport: tcp, tls: {ca: /x}}
    - {type: kafka}
""")
    with pytest.raises(ConfigError) as err:
        config_from_text(text, str(tmp_path / "policy.yaml"), base_dir=str(tmp_path))
    msgs = [str(i) for i in err.value.issues]
    expected = [
        (6, "audit.sinks[0].address", "required"),
        (7, "audit.sinks[1].path", "is the audit log itself"),
        (7, "audit.sinks[1].name", "'a' is already the name of the sink on line 6"),
        (8, "audit.sinks[2].name", "'bad name'"),
        (8, "audit.sinks[2].format", "'xml' is not one of"),
        (9, "audit.sinks[3].url", "not an http"),
        (9, "audit.sinks[3].token", "exactly one of token or token_file"),
        (10, "audit.sinks[4].address", "port must be 1-65535"),
        (10, "audit.sinks[4].tls", "only used with transport: tls"),
        (11, "audit.sinks[5].type", "'kafka' is not one of"),
    ]
    for line, field, text_ in expected:
        assert any(f":{line}: {field}: " in m and text_ in m for m in msgs), (field, msgs)
