#!/usr/bin/env python3
"""What the HTTP/1.1 codec costs per request body, side by side in one run (not a test).

Sans-IO: `HttpRequestCodec.feed` (parse, de-chunk, decode) then `wire` (the bytes that go out)
for one POST with a JSON body, released unchanged, in 64 KiB reads. The cases differ only in
how the body is encoded, to show what re-encoding costs when the compressed bytes carry data
the view lacks (a gzip MTIME, brotli: see README "TLS interception and HTTP/1.1 decoding"):

- identity: Content-Length, forwarded as sent;
- gzip, bare header (mtime 0): decoded, the original compressed bytes forwarded;
- gzip with an MTIME (Python's gzip.compress default): decoded, then re-encoded;
- brotli: decoded, then re-encoded (quality BROTLI_QUALITY).

    .venv/bin/python bench/httpcodec.py [--mib 4] [--rounds 5]
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import time
from pathlib import Path

import brotli

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "daemon"))
from egressguard.httpcodec import HttpRequestCodec  # noqa: E402

READ = 64 * 1024


def body(mib: int) -> bytes:
    line = json.dumps({"role": "user", "content": "summarise the quarterly numbers " * 4})
    n = mib * 1024 * 1024 // (len(line) + 1) + 1
    return ("\n".join([line] * n)).encode()[:mib * 1024 * 1024]


def request(data: bytes, coding: str) -> bytes:
    extra = b"Content-Encoding: %s\r\n" % coding.encode() if coding else b""
    return (b"POST /v1/files HTTP/1.1\r\nHost: api.openai.com\r\nContent-Type: application/jsonl"
            b"\r\n" + extra + b"Content-Length: %d\r\n\r\n" % len(data) + data)


def once(raw: bytes) -> tuple[float, int]:
    codec = HttpRequestCodec()
    t = time.perf_counter()
    out = 0
    for i in range(0, len(raw), READ):
        view, _ = codec.feed(raw[i:i + READ])
        out += len(codec.wire(view))
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    plain = body(args.mib)
    cases = {
        "identity": request(plain, ""),
        "gzip, bare header (forwarded as sent)": request(gzip.compress(plain, mtime=0), "gzip"),
        "gzip with MTIME (re-encoded)": request(gzip.compress(plain, mtime=1), "gzip"),
        "brotli (re-encoded)": request(brotli.compress(plain, quality=5), "br"),
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.rounds):          # interleaved: load changes hit every case alike
        for name, raw in cases.items():
            times[name].append(once(raw)[0])
    base = statistics.median(times["identity"])
    mb = len(plain) / 1e6
    print(f"{args.mib} MiB decoded body, median of {args.rounds}, 64 KiB reads")
    print(f"{'case':40} {'decoded MB/s':>12} {'time vs identity':>17}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:40} {mb / med:12.0f} {med / base:16.1f}x")


if __name__ == "__main__":
    main()
