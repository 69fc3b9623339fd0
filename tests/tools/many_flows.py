"""A stand-in agent that opens N connections one after another, each sending the payload file
and reading the answer: many flow events from one process. Prints {"flows": N, "errors": E}."""

from __future__ import annotations

import argparse
import json
import socket


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--payload-file", required=True)
    ap.add_argument("--count", type=int, default=100)
    args = ap.parse_args()
    payload = open(args.payload_file, "rb").read()
    errors = 0
    for _ in range(args.count):
        try:
            with socket.create_connection((args.host, args.port), timeout=30) as s:
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)
                while s.recv(65536):
                    pass
        except OSError:
            errors += 1
    print(json.dumps({"flows": args.count, "errors": errors}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
