"""A `prefilter` only changes speed, never findings.

The built-in pack gives some detectors (e-mail, AWS secret key) a cheaper Hyperscan expression
that finds candidate ends; the pattern, boundaries and validator still decide. This compares,
on every true-positive and hard-negative sample and on mixed random text, the findings of the
real pack with those of the same pack with every prefilter removed.
"""

from __future__ import annotations

import dataclasses
import random

from egressguard.scan.engine import ScanEngine
from egressguard.scan.pack import hyperscan_expression, load_pack
from tests.scan_samples import false_positives, true_positives

KEY = b"k" * 32


def _pair() -> tuple[ScanEngine, ScanEngine]:
    specs = load_pack(None)
    assert any(s.prefilter for s in specs), "the built-in pack is expected to use prefilters"
    bare = [dataclasses.replace(s, prefilter=None) for s in specs]
    return ScanEngine(specs, KEY), ScanEngine(bare, KEY)


def _spans(engine: ScanEngine, data: bytes) -> list[tuple[str, int, int]]:
    return [(d.detector, d.start, d.end) for d in engine.scan(data)]


def test_prefilter_pattern_means_the_pattern_without_its_leading_boundary() -> None:
    specs = {s.id: s for s in load_pack(None)}
    for det_id in ("pii.us_ssn", "pii.phone", "pii.iban"):
        spec = specs[det_id]
        assert spec.prefilter == spec.pattern and spec.not_before, det_id
        expr = hyperscan_expression(spec).decode()
        assert not expr.startswith("(?:^|"), f"{det_id}: the boundary must not be folded in"


def test_prefilters_find_exactly_what_the_patterns_find() -> None:
    fast, exact = _pair()
    texts = [s.text for s in true_positives()] + [t for _, t in false_positives()]
    for i, text in enumerate(texts):
        assert _spans(fast, text) == _spans(exact, text), f"sample #{i} differs"


def test_prefilters_agree_on_mixed_random_text_split_anyhow() -> None:
    fast, exact = _pair()
    rng = random.Random(5)
    pieces = [s.text for s in true_positives()] + [
        b"secret: ", b"AWS_SECRET_ACCESS_KEY=", b" access key ", b"mail me at ", b"@", b".",
        b"user.name+tag", b"example.co", b"m ", b"\n", b'"', b"=", b"x" * 50,
        # digit runs and boundaries for the `prefilter: pattern` detectors (SSN, phone, IBAN)
        b"123-45-6789", b"078-05-1120", b"+44 20 7946 0958", b"(415) 555-", b"0132", b"-",
        b"7", b"a", b"GB82 WEST 1234 5698 7654 32", b"DE89370400440532013000", b" "]
    for case in range(300):
        data = b"".join(rng.choice(pieces) for _ in range(rng.randint(1, 12)))
        stream = fast.open_stream()
        found = []
        pos = 0
        while pos < len(data):
            step = rng.randint(1, 40)
            found += stream.feed(data[pos:pos + step])
            pos += step
        found += stream.close()
        got = sorted((d.detector, d.start, d.end) for d in found)
        assert got == sorted(_spans(exact, data)), f"case {case} differs"
