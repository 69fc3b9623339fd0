"""Sink throughput: events/s per sink and format to a local receiver, side by side in one run.

    .venv/bin/python bench/sinks.py [--events 20000] [--batch 500]

One audit log of N realistic flow events is written first (the real AuditLog). Then each sink
ships the whole log from an empty cursor to its receiver on loopback, and the time until its
last batch is acknowledged is measured:
- syslog over TCP and over TLS (gtls) to Debian's rsyslogd (writes every message to a file);
- HEC to a small Python HTTP server (tests/tools/receivers.py; a real Splunk would differ);
- file (fsync per batch).
"render only" is reading the log and formatting, with no I/O: the ceiling for every sink.
Ratios are against file/json, measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from egressguard.audit.formats import FORMAT_NAMES, FormatContext, render  # noqa: E402
from egressguard.audit.reader import Cursor, LogReader  # noqa: E402
from egressguard.audit.sinkconfig import SinkSpec, TlsSpec  # noqa: E402
from egressguard.audit.sinks.runner import SinkRunner  # noqa: E402
from egressguard.audit.writer import AuditLog  # noqa: E402
from egressguard.model import Destination, Detection, Process  # noqa: E402
from tests.tools.receivers import HecServer, Rsyslog, make_test_pki  # noqa: E402

CTX = FormatContext()


def event(i: int) -> dict:
    return {"event": "flow.detect", "flow_id": f"f-{i}",
            "process": Process(pid=4000 + i % 50, uid=65534, comm="python3",
                               exe="/usr/bin/python3.11", user="nobody",
                               cmdline=("python3", "agent.py", "--task", str(i))).to_dict(),
            "destination": Destination("127.10.0.1", 443, "api.openai.com").to_dict(),
            "detections": [Detection("pii.email", "pii", 10, 20, "j***@corp.example",
                                     "ab" * 16, "medium").to_dict()],
            "action": "mask", "rule": "no-emails-out", "reason": "rule no-emails-out"}


def write_log(path: Path, n: int) -> None:
    async def go() -> None:
        log = AuditLog(path)
        await log.start()
        for i in range(n):
            log.append(event(i))
        await log.close()
    asyncio.run(go())


def ship(log: Path, state: Path, spec: SinkSpec, n: int) -> float:
    runner = SinkRunner(str(log), [spec], str(state), poll_s=0.01)
    t0 = time.perf_counter()
    runner.start()
    try:
        deadline = time.monotonic() + 600
        while runner.status()[0]["acked_seq"] < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{spec.name}: {runner.status()[0]}")
            time.sleep(0.005)
        return n / (time.perf_counter() - t0)
    finally:
        runner.stop()


def render_only(log: Path, fmt: str, n: int) -> float:
    t0 = time.perf_counter()
    reader, cursor, done = LogReader(str(log)), Cursor(), 0
    while batch := reader.read_after(cursor, 500):
        for e in batch:
            render(fmt, e, CTX)
        done += len(batch)
        cursor = Cursor(batch[-1].seq, batch[-1].hash)
    assert done == n
    return n / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=500)
    args = ap.parse_args()
    n = args.events
    work = Path(tempfile.mkdtemp(prefix="eg-bench-sinks-"))
    log = work / "audit.jsonl"
    write_log(log, n)
    pki = make_test_pki(work / "pki")
    rows: list[tuple[str, str, float]] = []
    for fmt in FORMAT_NAMES:
        rows.append(("render only", fmt, render_only(log, fmt, n)))
    run = 0

    def measure(label: str, fmt: str, **kw: object) -> None:
        nonlocal run
        run += 1
        spec = SinkSpec(name=f"s{run}", format=fmt, batch=args.batch, **kw)  # type: ignore
        rows.append((label, fmt, ship(log, work / f"state{run}", spec, n)))

    for fmt in FORMAT_NAMES:
        measure("file", fmt, type="file", path=str(work / f"out-{fmt}.jsonl"))
    with Rsyslog(work / "rsyslog") as rs:
        for fmt in FORMAT_NAMES:
            measure("syslog tcp", fmt, type="syslog", address=("127.0.0.1", rs.port))
    with Rsyslog(work / "rsyslog-tls", pki) as rs:
        for fmt in ("json", "cef"):
            measure("syslog tls", fmt, type="syslog", transport="tls",
                    address=("127.0.0.1", rs.port), tls=TlsSpec(ca=str(pki.ca)))
    with HecServer("bench-token") as hec:
        for fmt in ("json", "cef"):
            measure("hec (python server)", fmt, type="hec", url=hec.url, token="bench-token")
    base = next(r for label, f, r in rows if label == "file" and f == "json")
    load = os.getloadavg()
    print(f"{n} events, batch {args.batch}, load average {load[0]:.2f} {load[1]:.2f} "
          f"(2 cores)")
    print("| sink | format | events/s | vs file/json |\n|---|---|---|---|")
    for label, fmt, rate in rows:
        print(f"| {label} | {fmt} | {rate:,.0f} | {rate / base:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
