"""A `prefilter` only changes speed, never findings.

The built-in pack gives some detectors (e-mail, card, AWS secret key, ...) a cheaper Hyperscan
expression that finds candidate ends; the pattern, boundaries and validator still decide. This
compares, on every true-positive and hard-negative sample and on mixed random text, the
findings of the real pack with those of the same pack with every prefilter removed, and checks
the property that makes it so directly: every end offset Hyperscan reports for a detector's
exact expression (pattern and folded boundaries) is also reported for its prefilter.
"""

from __future__ import annotations

import dataclasses
import functools
import random

import hyperscan
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from egressguard.scan.engine import ScanEngine
from egressguard.scan.pack import DetectorSpec, hyperscan_expression, hyperscan_flags, load_pack
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
        b"7", b"a", b"GB82 WEST 1234 5698 7654 32", b"DE89370400440532013000", b" ",
        # the open repeats of the card and e-mail prefilters: runs past 19 digits, a float
        # fraction, grouped digits, labels past 63 characters, many labels
        b"4111 1111 1111 1111", b"4111111111111111", b"1111 1111 1111 1111 1111 11",
        b"0.", b"5500-0000-0000-0004", b"9" * 25, b"jane.doe@", b"a" * 70, b"example.com",
        b"mail.co.uk.example.org", b"@x."]
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


# Detectors whose prefilter covers every end of the PATTERN (not only of validated findings).
# The AWS secret key's prefilter also requires the keyword the validator insists on, so it
# covers only the validated findings; the findings tests above cover it.
_PATTERN_SUPERSETS = ("pii.email", "pii.payment_card", "pii.us_ssn", "pii.phone", "pii.iban")

# Bytes that make up these detectors' matches and near misses, plus a few that break them.
_NEAR_MISS = st.lists(st.sampled_from([
    b"0", b"1", b"4", b"5", b"9", b"2", b"7", b"4111", b"1111", b" ", b"-", b".", b"(", b")",
    b"+", b"+1", b"+44", b"@", b"a", b"Z", b"GB", b"DE", b"82", b"x" * 64, b"com", b"_", b"\n",
    b"555", b"2671", b"123-45-", b"6789", b"\xff", b"4111 1111 1111 1111", b"11111111",
    b"info", b"example", b"DE89 3704 0044 0532 0130 00",
]), max_size=60).map(b"".join)


@functools.lru_cache(maxsize=32)
def _database(expression: bytes, flags: int) -> hyperscan.Database:
    db = hyperscan.Database(mode=hyperscan.HS_MODE_STREAM)
    db.compile(expressions=[expression], ids=[0], elements=1, flags=[flags])
    return db


def _ends(spec: DetectorSpec, data: bytes, exact: bool, step: int) -> set[int]:
    """End offsets Hyperscan reports for the detector's prefilter (or exact) expression when
    `data` is streamed in `step`-byte writes."""
    if exact:
        spec = dataclasses.replace(spec, prefilter=None)
    db = _database(hyperscan_expression(spec), hyperscan_flags(spec))
    ends: set[int] = set()

    def on_match(_id: int, _from: int, to: int, _flags: int, _ctx: object) -> None:
        ends.add(to)

    with db.stream(match_event_handler=on_match) as stream:
        for pos in range(0, len(data), step):
            stream.scan(data[pos:pos + step])
    return ends


@pytest.mark.parametrize("det_id", _PATTERN_SUPERSETS)
def test_prefilter_ends_cover_every_end_of_the_pattern(det_id: str) -> None:
    spec = {s.id: s for s in load_pack(None)}[det_id]
    assert spec.prefilter, det_id

    # Byte soups of up to 60 pieces are large on purpose (long digit runs, long labels).
    @settings(max_examples=300, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=_NEAR_MISS, step=st.integers(1, 64))
    def check(data: bytes, step: int) -> None:
        missing = _ends(spec, data, True, step) - _ends(spec, data, False, step)
        assert not missing, f"{det_id}: the prefilter misses ends {sorted(missing)}"

    check()


def test_prefilter_ends_cover_the_long_edge_cases() -> None:
    """The places where the prefilters' open repeats differ from the patterns' counted ones."""
    specs = {s.id: s for s in load_pack(None)}
    cases = [b"x 4111 1111 1111 1111 y", b"4" * 19 + b" ", b"4" * 13 + b"-" + b"1" * 6 + b"_",
             b"1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1", b"0.4111111111111111,",
             b"a@" + b"b" * 63 + b".example.com ", b"a@b.c.d.e.example.com", b"a@b.co.uk",
             b"call +44 20 7946 0958 or (415) 555-2671.", b"GB82 WEST 1234 5698 7654 32 ",
             b"ssn 078-05-1120 and 219 09 9999."]
    for det_id in _PATTERN_SUPERSETS:
        for data in cases:
            exact = _ends(specs[det_id], data, True, len(data))
            assert exact <= _ends(specs[det_id], data, False, len(data)), (det_id, data)
