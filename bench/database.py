"""Raw Hyperscan cost of the detector database, side by side: what the prefilters buy.

    .venv/bin/python bench/database.py [--mib 8] [--repeat 5]

Scans the same data with three stream databases compiled from the built-in pack:
- `shipped`: the pack as it is (prefilters on);
- `exact`: every detector with its own pattern and folded boundaries, no prefilter;
- `secret only`: the secret.* detectors alone (so `shipped` vs this is what PII costs).

The corpora: the bulk benchmark's binary block (bench/proxy.py), random bytes (compressed or
encrypted uploads), the bulk benchmark's JSON lines, prose, source code, base64 lines and prose
with a finding every KiB (bench/scanner.py). Each database is fed in 64 KiB writes with a
callback that only counts, so this is Hyperscan alone, not the engine around it.

Timing is CPU time of this thread (time.thread_time), best of --repeat, databases interleaved:
on a loaded machine wall-clock time mostly measures the other processes, CPU time much less so.
It prints MB/s per CPU-second and each database's ratio to `exact`.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
import time
from pathlib import Path

import hyperscan

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "daemon"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from egressguard.scan.pack import (DetectorSpec, hyperscan_expression,  # noqa: E402
                                   hyperscan_flags, load_pack)
from scanner import chunks, json_lines, mime, pii_prose, prose, source  # noqa: E402

WRITE = 64 * 1024


def compile_db(specs: list[DetectorSpec]) -> hyperscan.Database:
    db = hyperscan.Database(mode=hyperscan.HS_MODE_STREAM)
    db.compile(expressions=[hyperscan_expression(s) for s in specs], ids=list(range(len(specs))),
               elements=len(specs), flags=[hyperscan_flags(s) for s in specs])
    return db


def corpora(size: int) -> dict[str, bytes]:
    rng = random.Random(2024)
    block = bytes(range(256)) * 256                  # what bench/proxy.py's bulk client sends
    return {
        "binary": (block * (size // len(block) + 1))[:size],
        "random": random.Random(7).randbytes(size),
        "jsonl": json_lines(size, random.Random(3)),
        "prose": prose(size, rng),
        "source": source(size, rng),
        "base64": mime(size, rng),
        "pii": pii_prose(size, rng),
    }


def cpu_seconds(db: hyperscan.Database, parts: list[bytes]) -> tuple[float, int]:
    hits = [0]

    def on_match(_id: int, _from: int, _to: int, _flags: int, _ctx: object) -> None:
        hits[0] += 1

    start = time.thread_time()
    with db.stream(match_event_handler=on_match) as stream:
        for part in parts:
            stream.scan(part)
    return time.thread_time() - start, hits[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=8, help="MiB of each corpus")
    parser.add_argument("--repeat", type=int, default=5, help="best of N runs")
    args = parser.parse_args()
    specs = load_pack(None)
    databases = {
        "shipped": compile_db(specs),
        "exact": compile_db([dataclasses.replace(s, prefilter=None) for s in specs]),
        "secret only": compile_db([s for s in specs if s.cls == "secret"]),
    }
    data = corpora(args.mib * 1024 * 1024)
    print(f"raw Hyperscan, built-in pack ({len(specs)} detectors), {args.mib} MiB per corpus, "
          f"64 KiB writes, MB per CPU-second, best of {args.repeat}")
    print(f"{'corpus':8} " + " ".join(f"{name:>12}" for name in databases)
          + f" {'shipped/exact':>14}  candidates shipped/exact")
    for corpus, blob in data.items():
        parts = chunks(blob, WRITE)
        best = {name: float("inf") for name in databases}
        hits = dict.fromkeys(databases, 0)
        for _ in range(args.repeat):                 # interleaved, so drift hits all alike
            for name, db in databases.items():
                seconds, hits[name] = cpu_seconds(db, parts)
                best[name] = min(best[name], seconds)
        mbs = {name: len(blob) / 1e6 / best[name] for name in databases}
        print(f"{corpus:8} " + " ".join(f"{mbs[name]:>12.0f}" for name in databases)
              + f" {mbs['shipped'] / mbs['exact']:>13.2f}x  {hits['shipped']}/{hits['exact']}")


if __name__ == "__main__":
    main()
