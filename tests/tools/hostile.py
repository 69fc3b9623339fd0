"""Hostile "agents" for tests/test_hostile.py: run inside the guarded cgroup as nobody.

Each mode prints one JSON line with what it saw. Every loop is bounded in count and time.
Payloads come from files or are generated from a seed (never a secret on a command line).

    hostile.py stream HOST PORT --size N --seed S      N pseudo-random bytes, no newline
    hostile.py slowloris HOST PORT --conns N --seconds T --interval I
    hostile.py many HOST PORT --conns N --batch B       N concurrent request/replies
    hostile.py writes HOST PORT --payload-file F --split K --delay D
                                                         two writes split at K, then wait
    hostile.py flood HOST PORT --payload-file F --extra N --seconds T
                                                         the payload, then up to N more bytes
    hostile.py hold-then-reset HOST PORT --payload-file F --wait T
                                                         send, then close with RST after T
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import resource
import selectors
import socket
import struct
import sys
import threading
import time

CHUNK = 256 * 1024


def _connect(host: str, port: int, timeout: float) -> socket.socket:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect((host, port))
    return s


def _gen(size: int, seed: int) -> "bytes":
    # Pseudo-random, no newline, no '@' (so nothing looks like an e-mail to the masker).
    return random.Random(seed).randbytes(size).replace(b"\n", b"x").replace(b"@", b"#")


def stream(a: argparse.Namespace) -> dict:
    data = _gen(a.size, a.seed)
    want = hashlib.sha256(data).hexdigest()
    s = _connect(a.host, a.port, 60)
    t0 = time.monotonic()
    err = None
    try:
        view = memoryview(data)
        for off in range(0, len(data), CHUNK):
            s.sendall(view[off:off + CHUNK])
        s.shutdown(socket.SHUT_WR)
        while s.recv(65536):
            pass
    except OSError as exc:
        err = exc.__class__.__name__
    finally:
        s.close()
    return {"sent": len(data), "sha256": want, "error": err,
            "seconds": round(time.monotonic() - t0, 3)}


def slowloris(a: argparse.Namespace) -> dict:
    socks = []
    errors = 0
    for _ in range(a.conns):
        try:
            socks.append(_connect(a.host, a.port, 5))
        except OSError:
            errors += 1
    print(json.dumps({"connected": len(socks)}), flush=True)
    sent = 0
    deadline = time.monotonic() + a.seconds
    while time.monotonic() < deadline:
        for s in socks:
            try:
                s.send(b"A")
                sent += 1
            except OSError:
                errors += 1
        time.sleep(a.interval)
    for s in socks:
        s.close()
    return {"conns": len(socks), "bytes_sent": sent, "errors": errors}


def many(a: argparse.Namespace) -> dict:
    """Open `conns` connections in batches (all kept open), then send a small request on each
    and read each full reply (the server replies after the request's end marker)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < a.conns + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, a.conns + 256), hard))
    socks: list[socket.socket] = []
    errors: list[str] = []
    t0 = time.monotonic()
    for i in range(0, a.conns, a.batch):
        for _ in range(min(a.batch, a.conns - i)):
            try:
                socks.append(_connect(a.host, a.port, 30))
            except OSError as exc:
                errors.append(f"connect:{exc.__class__.__name__}")
        time.sleep(0.05)
    for i, s in enumerate(socks):
        try:
            s.sendall(b"req %06d END\n" % i)
        except OSError as exc:
            errors.append(f"send:{exc.__class__.__name__}")
    ok = 0
    deadline = time.monotonic() + a.timeout
    sel = selectors.DefaultSelector()
    bufs: dict[int, bytearray] = {}
    for i, s in enumerate(socks):
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, i)
        bufs[i] = bytearray()
    open_ = len(socks)
    while open_ and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=1.0):
            i = key.data
            try:
                chunk = key.fileobj.recv(4096)
            except OSError as exc:
                errors.append(f"recv:{exc.__class__.__name__}")
                chunk = b""
            if chunk:
                bufs[i] += chunk
                if bufs[i].endswith(b"\n"):
                    if bytes(bufs[i]) == b"ok %06d\n" % i:
                        ok += 1
                    else:
                        errors.append("bad reply")
                    sel.unregister(key.fileobj)
                    open_ -= 1
            else:
                sel.unregister(key.fileobj)
                open_ -= 1
                errors.append("eof before reply")
    for s in socks:
        s.close()
    return {"opened": len(socks), "ok": ok, "errors": errors[:20], "n_errors": len(errors),
            "seconds": round(time.monotonic() - t0, 3)}


def writes(a: argparse.Namespace) -> dict:
    data = open(a.payload_file, "rb").read()
    s = _connect(a.host, a.port, a.wait)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    err = None
    try:
        s.sendall(data[:a.split])
        time.sleep(a.delay)
        s.sendall(data[a.split:])
        print(json.dumps({"sent": len(data)}), flush=True)
        while s.recv(65536):     # until the proxy resets us (deny) or the timeout
            pass
    except OSError as exc:
        err = exc.__class__.__name__
    finally:
        s.close()
    return {"error": err}


def flood(a: argparse.Namespace) -> dict:
    """Send the payload (which gets the flow held), then keep sending up to `extra` more bytes
    until the proxy stops reading (backpressure) or resets us; report how far it got."""
    data = open(a.payload_file, "rb").read()
    s = _connect(a.host, a.port, 60)
    s.sendall(data)
    s.setblocking(False)
    sent = 0
    err: str | None = None
    filler = b"z" * 65536
    progress: dict[str, object] = {"sent": 0, "error": None}

    def report() -> None:
        print(json.dumps(progress), flush=True)

    deadline = time.monotonic() + a.seconds
    last_progress = time.monotonic()
    stalled_reported = False
    while sent < a.extra and time.monotonic() < deadline:
        try:
            n = s.send(filler[: min(len(filler), a.extra - sent)])
            sent += n
            last_progress = time.monotonic()
        except BlockingIOError:
            if not stalled_reported and time.monotonic() - last_progress > 1.0:
                progress["sent"] = sent
                progress["stalled"] = True
                report()
                stalled_reported = True
            sel = selectors.DefaultSelector()
            sel.register(s, selectors.EVENT_WRITE)
            sel.select(0.2)
            sel.close()
        except OSError as exc:
            err = exc.__class__.__name__
            break
    if err is None:
        # Wait for the verdict: a reset (deny) or the end of the deadline.
        s.setblocking(True)
        s.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            while s.recv(65536):
                pass
        except OSError as exc:
            err = exc.__class__.__name__
    s.close()
    return {"sent": sent, "error": err, "final": True}


def hold_then_reset(a: argparse.Namespace) -> dict:
    data = open(a.payload_file, "rb").read()
    s = _connect(a.host, a.port, 30)
    s.sendall(data)
    print(json.dumps({"sent": len(data)}), flush=True)
    # Wait for the test to say "go" on stdin (the hold is visible), then vanish.
    sys.stdin.readline()
    if a.rst:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    return {"closed": True}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode")
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--size", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--conns", type=int, default=1)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--interval", type=float, default=0.5)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--payload-file")
    ap.add_argument("--split", type=int, default=0)
    ap.add_argument("--delay", type=float, default=0.05)
    ap.add_argument("--wait", type=float, default=30.0)
    ap.add_argument("--extra", type=int, default=0)
    ap.add_argument("--rst", action="store_true")
    a = ap.parse_args()
    fn = {"stream": stream, "slowloris": slowloris, "many": many, "writes": writes,
          "flood": flood, "hold-then-reset": hold_then_reset}[a.mode]
    print(json.dumps(fn(a)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
