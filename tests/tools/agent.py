"""A stand-in "AI agent": connect, send a payload (in chunks), read the answer, report JSON.

Run inside the guarded cgroup as an unprivileged user by the tests. Prints one JSON line:
{"sent": N, "received": M, "received_sha256": ..., "error": null | "ConnectionResetError" ...}.
Payload bytes come from a file so that no secret is ever on a command line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import socket
import sys
import threading
import time


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--payload-file", required=True)
    ap.add_argument("--chunk", type=int, default=65536)
    ap.add_argument("--delay", type=float, default=0.0, help="sleep between chunks")
    ap.add_argument("--no-shutdown", action="store_true", help="do not half-close after sending")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--udp", action="store_true")
    ap.add_argument("--tag", default="", help="ignored: lets tests put text on the command line")
    args = ap.parse_args()
    payload = open(args.payload_file, "rb").read()
    fam = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    result: dict[str, object] = {"sent": 0, "received": 0, "error": None}
    if args.udp:
        s = socket.socket(fam, socket.SOCK_DGRAM)
        try:
            s.sendto(payload, (args.host, args.port))
            result["sent"] = len(payload)
        except OSError as exc:
            result["error"] = f"{exc.__class__.__name__}:{exc.errno}"
        print(json.dumps(result))
        return 0
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.settimeout(args.timeout)
    digest = hashlib.sha256()
    received = [0]
    errors: list[str] = []

    def reader() -> None:
        try:
            while True:
                data = s.recv(262144)
                if not data:
                    return
                received[0] += len(data)
                digest.update(data)
        except OSError as exc:
            errors.append(exc.__class__.__name__)

    started = time.monotonic()
    try:
        s.connect((args.host, args.port))
        t = threading.Thread(target=reader, daemon=True)
        t.start()
        view = memoryview(payload)
        for off in range(0, len(payload), args.chunk):
            s.sendall(view[off:off + args.chunk])
            result["sent"] = off + len(view[off:off + args.chunk])
            if args.delay:
                time.sleep(args.delay)
        if not args.no_shutdown:
            s.shutdown(socket.SHUT_WR)
        t.join(args.timeout)
    except OSError as exc:
        errors.append(exc.__class__.__name__)
    finally:
        s.close()
    result["received"] = received[0]
    result["received_sha256"] = digest.hexdigest()
    result["error"] = errors[0] if errors else None
    result["seconds"] = round(time.monotonic() - started, 3)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
