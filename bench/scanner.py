"""Scanner throughput: ScanStream.feed vs raw Hyperscan Stream.scan on the same database.

    .venv/bin/python bench/scanner.py [--mib 16] [--repeat 3]

Prints MB/s for prose-like text, source-code-like text (both clean: no candidates at all) and
base64 mail-attachment text (a candidate shape on every line), and prose with a finding every
KiB, in 16 KiB and 64 KiB writes, and the ratio feed/raw (target >= 0.8 on clean text). The raw baseline uses the very database the engine compiled
and a callback that only counts, so the difference is the engine's own per-write overhead
(candidate bookkeeping, tail retention, re-matching of the few candidates clean data yields).
The data is synthetic and generated with a fixed seed; it contains no secrets.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "daemon"))

from egressguard.scan.engine import ScanEngine  # noqa: E402
from egressguard.scan.pack import load_pack  # noqa: E402

WORDS = (
    "the of and to in is that it was for on are as with his they at be this from have or by "
    "one had not but what all were when we there can an your which their said if do will each "
    "about how up out them then she many some so these would other into has more her two like "
    "him see time could no make than first been its who now people my made over did down only "
    "way find use may water long little very after words called just where most know agent "
    "network request response policy approval proxy stream detector token budget meeting"
).split()
IDENTS = (
    "self data buf result value items config request response handler stream offset length "
    "index count name path error logger client server session token timeout retries cache"
).split()


def prose(size: int, rng: random.Random) -> bytes:
    """Sentences of common words with punctuation, numbers and line breaks."""
    out: list[str] = []
    n = 0
    while n < size:
        words = [rng.choice(WORDS) for _ in range(rng.randint(6, 18))]
        if rng.random() < 0.2:
            words.insert(rng.randrange(len(words)), str(rng.randint(1, 2030)))
        sentence = " ".join(words).capitalize() + rng.choice([". ", ", ", "? ", ".\n\n"])
        out.append(sentence)
        n += len(sentence)
    return "".join(out).encode()[:size]


def source(size: int, rng: random.Random) -> bytes:
    """Python-like code: defs, calls, string literals, numbers, comments, indentation."""
    out: list[str] = []
    n = 0
    while n < size:
        a, b, c = (rng.choice(IDENTS) for _ in range(3))
        line = rng.choice([
            f"def {a}_{b}({c}, {a}=None):\n",
            f"    {a} = {b}.get('{c}', {rng.randint(0, 99999)})\n",
            f"    if {a} is None or len({b}) > {rng.randint(1, 4096)}:\n",
            f"        raise ValueError(f\"bad {a}: {{{b}!r}}\")\n",
            f"    return [{a}[i] for i in range({c}, 0x{rng.randint(0, 65535):04x})]\n",
            f"# {a} {b} {c}: see docs/{a}.md#{b}\n",
            f"    self.{a}_{b} = {{'{c}': {rng.random():.6f}, \"{a}\": [{b}, {c}]}}\n",
        ])
        out.append(line)
        n += len(line)
    return "".join(out).encode()[:size]


def json_lines(size: int, rng: random.Random) -> bytes:
    """JSON lines like prompts or a dataset (the kind bench/proxy.py's bulktext client sends):
    words, ids, quotes, braces; no findings."""
    words = ("the model agent request summarise plan quarter revenue customer support "
             "ticket reply draft code review function test deploy status report").split()
    out: list[bytes] = []
    n = 0
    while n < size:
        text = " ".join(rng.choice(words) for _ in range(rng.randint(5, 40)))
        line = json.dumps({"role": "user", "id": rng.randint(1, 10**6), "content": text}).encode()
        out.append(line + b"\n")
        n += len(line) + 1
    return b"".join(out)[:size]


def mime(size: int, rng: random.Random) -> bytes:
    """Candidate-heavy traffic: base64 attachment lines (76 chars) with mail headers and
    numbers between them. Every base64 line is a Hyperscan candidate for the 40-character
    AWS-secret shape, so this measures the cost of deciding candidates, not just scanning."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    out: list[str] = []
    n = 0
    while n < size:
        if rng.random() < 0.05:
            line = (f"Content-Type: application/octet-stream; name=part{rng.randint(1, 999)}.bin"
                    f"\r\nX-Ref: {rng.randint(10**8, 10**9)}\r\n\r\n")
        else:
            line = "".join(rng.choice(alphabet) for _ in range(76)) + "\r\n"
        out.append(line)
        n += len(line)
    return "".join(out).encode()[:size]


def pii_prose(size: int, rng: random.Random) -> bytes:
    """Prose with a finding about every 1 KiB (a test card number, a fictional email or a
    555 phone number): the cost of deciding, validating, masking and fingerprinting."""
    base = prose(size, rng)
    out = bytearray()
    for i in range(0, len(base), 1024):
        out += base[i:i + 1024]
        out += rng.choice([b" 4111 1111 1111 1111 ", b" jane.doe@example.com ",
                           b" +1 415 555 2671 "])
    return bytes(out[:size])


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def bench_raw(engine: ScanEngine, parts: list[bytes]) -> float:
    hits = [0]

    def on_match(_id: int, _from: int, _to: int, _flags: int, _ctx: object) -> None:
        hits[0] += 1

    start = time.perf_counter()
    with engine.database.stream(match_event_handler=on_match) as stream:
        for part in parts:
            stream.scan(part)
    return time.perf_counter() - start


def bench_feed(engine: ScanEngine, parts: list[bytes]) -> float:
    start = time.perf_counter()
    stream = engine.open_stream()
    for part in parts:
        stream.feed(part)
    stream.close()
    return time.perf_counter() - start


def measure(engine: ScanEngine, parts: list[bytes], repeat: int) -> tuple[float, float]:
    """Best-of-`repeat` seconds for raw Hyperscan and for our feed, runs interleaved so that
    drift (other load on the machine) hits both alike."""
    raw_runs, feed_runs = [], []
    for _ in range(repeat):
        raw_runs.append(bench_raw(engine, parts))
        feed_runs.append(bench_feed(engine, parts))
    return min(raw_runs), min(feed_runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=16, help="MiB of each kind of text")
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs")
    args = parser.parse_args()
    engine = ScanEngine(load_pack(), b"bench-key")
    rng = random.Random(2024)
    size = args.mib * 1024 * 1024
    corpora = {"prose": prose(size, rng), "source": source(size, rng),
               "base64": mime(size, rng), "pii": pii_prose(size, rng)}
    print(f"built-in pack: {len(engine.detector_ids)} detectors, hold_back={engine.hold_back} B, "
          f"{args.mib} MiB per corpus, best of {args.repeat}")
    print(f"{'text':8} {'write':>6} {'raw MB/s':>10} {'feed MB/s':>10} {'ratio':>6}")
    for name, data in corpora.items():
        found = len(engine.scan(data))
        for write in (16 * 1024, 64 * 1024):
            raw, feed = measure(engine, chunks(data, write), args.repeat)
            mb = len(data) / 1e6
            print(f"{name:8} {write // 1024:>4}Ki {mb / raw:>10.1f} {mb / feed:>10.1f} "
                  f"{raw / feed:>6.2f}   ({found} findings)")


if __name__ == "__main__":
    main()
