"""Detection quality and cost: precision/recall/F1 on the labeled corpus, and scan speed of the
built-in pack and of gitleaks' imported default rules.

    .venv/bin/python bench/detection.py [--mib 8] [--repeat 3] [--gitleaks PATH]

1. Precision, recall and F1 of the built-in pack per detector, per class and overall, on
   tests/corpus/ (generated, labeled; see tests/corpus/generate.py).
2. MB/s in stream mode with 16 KiB writes: our `ScanStream.feed` next to raw Hyperscan
   `Stream.scan` on the very same database (the ratio is the engine's own overhead), for the
   built-in pack and for gitleaks' default config imported (scripts/fetch-gitleaks-config.sh
   puts it in .venv/share/egressguard/), on prose, source code and the corpus itself.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "daemon"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import random  # noqa: E402

from corpus.generate import build, score  # noqa: E402
from egressguard.scan.engine import ScanEngine  # noqa: E402
from egressguard.scan.gitleaks import load_gitleaks  # noqa: E402
from egressguard.scan.pack import load_pack  # noqa: E402
from scanner import chunks, measure, prose, source  # noqa: E402

DEFAULT_GITLEAKS = ROOT / ".venv" / "share" / "egressguard" / "gitleaks-default.toml"
WRITE = 16 * 1024


def quality(engine: ScanEngine) -> None:
    docs = build(7) + build(8)
    scores = score(docs, lambda data: [(d.detector, d.start, d.end) for d in engine.scan(data)])
    labeled = sum(len(d.labels) for d in docs)
    print(f"corpus: {len(docs)} documents, {labeled} labeled findings, "
          f"{sum(1 for d in docs if not d.labels)} hard negatives")
    print(f"{'detector / class':34} {'TP':>5} {'FP':>4} {'FN':>4} {'precision':>9} "
          f"{'recall':>7} {'F1':>6}")
    order = sorted(k for k in scores if "." in k and not k.startswith("class:"))
    order += ["class:secret", "class:pii", "overall"]
    for k in order:
        s = scores[k]
        print(f"{k:34} {s.tp:>5} {s.fp:>4} {s.fn:>4} {s.precision:>9.3f} {s.recall:>7.3f} "
              f"{s.f1:>6.3f}")


def speed(packs: dict[str, ScanEngine], mib: int, repeat: int) -> None:
    rng = random.Random(2024)
    size = mib * 1024 * 1024
    corpus = b"".join(d.text for d in build(9))
    texts = {"prose": prose(size, rng), "source": source(size, rng),
             "corpus": (corpus * (size // len(corpus) + 1))[:size]}
    print(f"\nstream mode, {WRITE // 1024} KiB writes, {mib} MiB per text, best of {repeat}")
    print(f"{'pack':22} {'text':7} {'raw MB/s':>9} {'ours MB/s':>10} {'ratio':>6}")
    for name, engine in packs.items():
        for text_name, data in texts.items():
            raw, feed = measure(engine, chunks(data, WRITE), repeat)
            mb = len(data) / 1e6
            print(f"{name:22} {text_name:7} {mb / raw:>9.1f} {mb / feed:>10.1f} "
                  f"{raw / feed:>6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--gitleaks", type=Path, default=DEFAULT_GITLEAKS)
    args = parser.parse_args()
    builtin = ScanEngine(load_pack(), b"bench-key")
    print(f"built-in pack: {len(builtin.detector_ids)} detectors, hold-back "
          f"{builtin.hold_back} B")
    quality(builtin)
    packs = {"built-in": builtin}
    if args.gitleaks.is_file():
        imported = load_gitleaks(args.gitleaks)
        packs["gitleaks default"] = ScanEngine(list(imported.specs), b"bench-key")
        rules = {s.report_id for s in imported.specs}
        print(f"\ngitleaks default config: {imported.rule_count} rules, {len(rules)} imported, "
              f"{len(imported.skipped)} not imported: "
              + ", ".join(s.rule_id for s in imported.skipped))
    else:
        print(f"\n(no gitleaks config at {args.gitleaks}: run scripts/fetch-gitleaks-config.sh)")
    speed(packs, args.mib, args.repeat)


if __name__ == "__main__":
    main()
