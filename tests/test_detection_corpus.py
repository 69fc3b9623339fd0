"""Measured detection quality: the built-in pack on the labeled corpus (tests/corpus/).

Targets from issue 7: precision >= 0.95 and recall >= 0.95 for every detector, each class and
overall. bench/detection.py prints the same table. Failures name detectors and counts only.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from egressguard.scan.engine import ScanEngine
from egressguard.scan.pack import load_pack

sys.path.insert(0, str(Path(__file__).parent))

from corpus.generate import POSITIVES, build, score  # noqa: E402

ENGINE = ScanEngine(load_pack(), b"corpus-test-key")


def scan(data: bytes) -> list[tuple[str, int, int]]:
    return [(d.detector, d.start, d.end) for d in ENGINE.scan(data)]


@pytest.mark.parametrize("seed", [7, 8])
def test_builtin_pack_meets_precision_and_recall_targets(seed: int) -> None:
    docs = build(seed)
    scores = score(docs, scan)
    assert set(POSITIVES) == ENGINE.detector_ids          # every detector is measured
    below = {k: (s.tp, s.fp, s.fn) for k, s in scores.items()
             if s.precision < 0.95 or s.recall < 0.95}
    assert below == {}
    assert scores["overall"].tp >= 40 * len(POSITIVES) * 0.95


def test_corpus_covers_every_carrier_and_has_hard_negatives() -> None:
    docs = build(7)
    carriers = {d.carrier for d in docs if d.labels}
    assert {"code", "env", "json", "yaml", "log", "http", "form", "chat"} <= carriers
    negatives = [d for d in docs if not d.labels]
    assert len(negatives) >= 300
    kinds = {d.name.split(":")[1].split("#")[0] for d in negatives}
    assert {"aws-doc-id", "uuid", "git-sha1", "base64-blob", "version", "card-no-luhn",
            "ssn-area-9xx", "log-ids"} <= kinds
