#!/usr/bin/env python3
"""Load and soak, guarded vs direct in one run (not a test; numbers go in the README).

1. Concurrency: N connections (default 1,000) open at once through the guard, each doing a
   few request/responses: daemon RSS idle vs with N flows open (RSS per open flow), p50/p99
   round trip guarded vs direct, errors.
2. Soak: a steady rate of new flows (default 20/s, 64 KiB each, 1 in 100 with an e-mail the
   policy masks) for --soak-seconds (run 600 for the README): daemon RSS over time (growth),
   daemon CPU per GB scanned, p50/p99 flow latency guarded vs a direct run of the same load,
   errors. The direct baseline runs first, for min(--soak-seconds, 60) s.

The server is an asyncio line server on 127.40.1.1 ("ok\\n" per request line). Everything is
loopback; every wait is bounded. Prints the machine's load average, since it is shared.

    sudo .venv/bin/python bench/load.py [--connections 1000] [--soak-seconds 600]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "daemon"))
from egressguard.harness import GuardedHost, base_config, free_port  # noqa: E402

CLIENT = str(Path(__file__).with_name("load_client.py"))
SERVER_IP = "127.40.1.1"


class LineServer:
    """Answers every request line with "ok\\n"; an asyncio loop on its own thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.port = 0
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            server = self.loop.run_until_complete(asyncio.start_server(
                self._serve, SERVER_IP, 0, limit=4 << 20, backlog=4096))
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            self.loop.run_forever()

        threading.Thread(target=run, daemon=True).start()
        ready.wait(10)

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while True:
                await r.readuntil(b"\n")
                w.write(b"ok\n")
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            w.close()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


def start_client(host: GuardedHost | None, args: list[str]) -> subprocess.Popen[str]:
    argv = ["/usr/bin/python3", CLIENT, *args]
    kw = dict(stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    return host.agent(argv, **kw) if host else subprocess.Popen(argv, **kw)


def read_line(proc: subprocess.Popen[str], timeout: float) -> dict:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        proc.kill()
        raise RuntimeError("load client did not answer in time")
    return json.loads(proc.stdout.readline())


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def ms(v: float) -> str:
    return f"{v * 1e3:7.2f} ms"


def concurrency(host: GuardedHost, daemon: psutil.Process, port: int, n: int,
                rounds: int) -> None:
    results = {}
    for label, where in (("direct", None), ("guarded", host)):
        rss_idle = daemon.memory_info().rss
        proc = start_client(where, ["concurrent", SERVER_IP, str(port), str(n), str(rounds)])
        opened = read_line(proc, 300)
        rss_open = daemon.memory_info().rss
        status = json.loads(host.egressctl("status", "--json").stdout)
        proc.stdin.write("\n")
        proc.stdin.flush()
        final = read_line(proc, 600)
        proc.wait(60)
        results[label] = (opened, final, rss_idle, rss_open, status["open_flows"])
    print(f"1) {n} concurrent connections, {rounds} request/responses each")
    for label, (opened, final, rss_idle, rss_open, flows) in results.items():
        errors = {**opened["errors"], **final["errors"]}
        print(f"  {label:8} open {final['open']:5}  p50 {ms(pct(final['lat'], .5))}  "
              f"p99 {ms(pct(final['lat'], .99))}  errors {errors or 0}")
        if label == "guarded":
            per = (rss_open - rss_idle) / max(1, flows)
            print(f"  daemon RSS {rss_idle / 2**20:.1f} MiB idle -> {rss_open / 2**20:.1f} MiB "
                  f"with {flows} flows open: {per / 1024:.1f} KiB per open flow")
    d, g = results["direct"][1]["lat"], results["guarded"][1]["lat"]
    print(f"  added    p50 {ms(pct(g, .5) - pct(d, .5))}  p99 {ms(pct(g, .99) - pct(d, .99))}")


def soak(host: GuardedHost, daemon: psutil.Process, port: int, seconds: float, rate: float,
         kib: int) -> None:
    base_s = min(seconds, 60.0)
    direct_proc = start_client(None, ["soak", SERVER_IP, str(port), str(base_s), str(rate),
                                      str(kib)])
    direct = read_line(direct_proc, base_s + 180)
    direct_proc.wait(60)
    cpu0 = sum(daemon.cpu_times()[:2])
    samples = [(0.0, daemon.memory_info().rss)]
    proc = start_client(host, ["soak", SERVER_IP, str(port), str(seconds), str(rate), str(kib)])
    t0 = time.monotonic()
    step = max(5.0, seconds / 20)
    while proc.poll() is None and time.monotonic() - t0 < seconds + 240:
        ready, _, _ = select.select([proc.stdout], [], [], step)
        samples.append((time.monotonic() - t0, daemon.memory_info().rss))
        if ready:
            break
    guarded = json.loads(proc.stdout.readline())
    proc.wait(60)
    cpu = sum(daemon.cpu_times()[:2]) - cpu0
    status = json.loads(host.egressctl("status", "--json").stdout)
    gb = guarded["bytes"] / 1e9
    print(f"2) soak: {rate:g} new flows/s of {kib} KiB for {seconds:g} s guarded "
          f"({guarded['flows']} flows, {gb:.2f} GB); direct baseline {base_s:g} s")
    for label, r in (("direct", direct), ("guarded", guarded)):
        print(f"  {label:8} p50 {ms(pct(r['lat'], .5))}  p99 {ms(pct(r['lat'], .99))}  "
              f"flows {r['flows']}  errors {r['errors'] or 0}")
    print(f"  added    p50 {ms(pct(guarded['lat'], .5) - pct(direct['lat'], .5))}  "
          f"p99 {ms(pct(guarded['lat'], .99) - pct(direct['lat'], .99))}")
    print(f"  daemon CPU {cpu:.1f} s = {cpu / gb if gb else float('nan'):.2f} s per GB scanned, "
          f"{cpu / max(1, guarded['flows']) * 1e3:.2f} ms per flow (small flows: the per-flow "
          "work, identity and audit, dominates)")
    print("  daemon RSS over time (s: MiB): " + ", ".join(
        f"{t:.0f}: {rss / 2**20:.1f}" for t, rss in samples))
    half = [rss for t, rss in samples if t >= seconds / 2]
    print(f"  RSS growth over the second half: {(max(half) - min(half)) / 2**20:.1f} MiB; "
          f"open flows at the end: {status['open_flows']}; held bytes: {status['held_bytes']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--soak-seconds", type=float, default=60.0)
    ap.add_argument("--rate", type=float, default=20.0, help="new flows per second in the soak")
    ap.add_argument("--kib", type=int, default=64, help="KiB per soak flow")
    a = ap.parse_args()
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"({os.cpu_count()} cores)")
    work = Path(tempfile.mkdtemp(prefix="eg-load-"))
    os.chmod(work, 0o755)
    cfg = base_config(work, rules=[
        {"name": "secrets-need-approval", "detected": ["secret.*"], "action": "hold"},
        {"name": "no-emails-out", "detected": ["pii.email"], "action": "mask"}])
    cfg["proxy"]["listen"] = f"127.0.0.1:{free_port()}"
    server = LineServer()
    try:
        with GuardedHost(work, cfg) as host:
            daemon = psutil.Process(host.proc.pid)
            concurrency(host, daemon, server.port, a.connections, a.rounds)
            soak(host, daemon, server.port, a.soak_seconds, a.rate, a.kib)
    finally:
        server.stop()
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("bench/load.py: run as root (it loads the probes)")
    sys.exit(main())
