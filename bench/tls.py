#!/usr/bin/env python3
"""Intercepted HTTPS vs direct TLS to the same server, side by side in one run (not a test).

- upload MB/s: one POST with a large JSON-lines body (Content-Length, 64 KiB writes), the kind
  of request a dataset upload makes;
- requests/s: small chat-completion POSTs one after another on one keep-alive connection.

"direct": the client (outside the guarded cgroup) talks TLS to the server itself.
"intercepted": the client runs inside the guarded cgroup; the guard terminates its TLS
(tls.intercept.hosts), decodes HTTP/1.1, scans (secrets hold, e-mails mask) and re-encrypts
to the same server. The server is one process on 127.41.0.1 with a test CA; SNI
api.openai.com. Loopback only; every loop is bounded.

    sudo .venv/bin/python bench/tls.py [--mib 128] [--rounds 3] [--requests 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "daemon"))
sys.path.insert(0, str(ROOT))
from egressguard.harness import GuardedHost, base_config, free_port  # noqa: E402
from tests.tools.tls_servers import TestCA  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from proxy import Server as PlainServer, run_client  # noqa: E402  (bench/proxy.py)

SNI = "api.openai.com"

CLIENT = r'''
import json, random, socket, ssl, sys, time
mode, ip, port, cafile, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
ctx = ssl.create_default_context(cafile=cafile)
s = ctx.wrap_socket(socket.create_connection((ip, port)), server_hostname="api.openai.com")
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
def answer():
    got = b""
    while b"\r\n\r\n" not in got:
        got += s.recv(65536)
    head, _, body = got.partition(b"\r\n\r\n")
    need = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    while len(body) < need:
        body += s.recv(65536)
if mode == "upload":
    rng = random.Random(3)
    words = ("the model agent request summarise plan quarter revenue customer support "
             "ticket reply draft code review function test deploy status report").split()
    lines = b""
    while len(lines) < 65536:
        text = " ".join(rng.choice(words) for _ in range(rng.randint(5, 40)))
        lines += json.dumps({"role": "user", "content": text}).encode() + b"\n"
    buf = lines[:65536]
    head = (b"POST /v1/files HTTP/1.1\r\nHost: api.openai.com\r\nContent-Type: application/jsonl"
            b"\r\nContent-Length: %d\r\n\r\n" % (n * len(buf)))
    t = time.perf_counter(); s.sendall(head)
    for _ in range(n): s.sendall(buf)
    answer(); dt = time.perf_counter() - t
    print(json.dumps({"seconds": dt, "bytes": n * len(buf)}))
else:
    body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content":
                       "Summarise the quarterly report for the support team in three bullets."}]}).encode()
    req = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nContent-Type: "
           b"application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    t = time.perf_counter()
    for _ in range(n):
        s.sendall(req); answer()
    print(json.dumps({"seconds": time.perf_counter() - t, "requests": n}))
'''


class Server(PlainServer):
    """TLS HTTP/1.1 sink: reads each request (Content-Length), answers a small JSON body."""

    def __init__(self, host: str, ctx: ssl.SSLContext):
        self.ctx = ctx
        super().__init__(host)

    def _serve(self, raw: socket.socket) -> None:
        try:
            s = self.ctx.wrap_socket(raw, server_side=True)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            buf = b""
            while True:
                while b"\r\n\r\n" not in buf:
                    data = s.recv(1 << 18)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                need = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                got = len(buf)
                buf = buf[need:] if got >= need else b""
                while got < need:
                    data = s.recv(1 << 18)
                    if not data:
                        return
                    got += len(data)
                    if got > need:
                        buf = data[len(data) - (got - need):]
                s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"ok\":true}")
        except (OSError, ssl.SSLError, ValueError, IndexError):
            pass
        finally:
            raw.close()


def run(host: GuardedHost | None, args: list[str]) -> dict:
    return run_client(host, args, CLIENT)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=128, help="MiB per upload")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=2000)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="eg-bench-tls-"))
    os.chmod(work, 0o755)
    ca = TestCA(str(work))
    server = Server("127.41.0.1", ca.server_context([SNI]))
    cfg = base_config(work / "guard", rules=[
        {"name": "secrets-need-approval", "detected": ["secret.*"], "action": "hold"},
        {"name": "no-emails-out", "detected": ["pii.email"], "action": "mask"}])
    cfg["proxy"]["listen"] = f"127.0.0.1:{free_port()}"
    cfg["tls"] = {"intercept": {"hosts": [SNI]}, "upstream_ca_file": ca.ca_file}
    writes = a.mib * 16
    up_d, up_g, rq_d, rq_g = [], [], [], []
    with GuardedHost(work / "guard", cfg) as host:
        pem = subprocess.run([host.python, "-m", "egressguard", "ca", "export", "--config",
                              str(host.config_path)], capture_output=True, text=True,
                             check=True, timeout=60).stdout
        trust = work / "trust.pem"
        trust.write_text(pem)
        os.chmod(trust, 0o644)
        target = [server.host, str(server.port)]
        for _ in range(a.rounds):
            d = run(None, ["upload", *target, ca.ca_file, str(writes)])
            g = run(host, ["upload", *target, str(trust), str(writes)])
            up_d.append(d["bytes"] / d["seconds"] / 1e6)
            up_g.append(g["bytes"] / g["seconds"] / 1e6)
            d = run(None, ["rr", *target, ca.ca_file, str(a.requests)])
            g = run(host, ["rr", *target, str(trust), str(a.requests)])
            rq_d.append(d["requests"] / d["seconds"])
            rq_g.append(g["requests"] / g["seconds"])
    server.stop = True
    md, mg = statistics.median(up_d), statistics.median(up_g)
    print(f"HTTPS upload, JSON lines, {a.mib} MiB x {a.rounds} rounds (median)")
    print(f"  direct TLS    {md:8.1f} MB/s")
    print(f"  intercepted   {mg:8.1f} MB/s   ratio {mg / md:.2f}x")
    rd, rg = statistics.median(rq_d), statistics.median(rq_g)
    print(f"HTTPS requests on one keep-alive connection, {a.requests} x {a.rounds} (median)")
    print(f"  direct TLS    {rd:8.0f} req/s")
    print(f"  intercepted   {rg:8.0f} req/s   ratio {rg / rd:.2f}x")
    return 0


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("bench/tls.py: run as root (it loads the probes)")
    sys.exit(main())
