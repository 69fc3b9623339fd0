"""The streaming contract the proxy relies on ("nothing leaks"):

1. For ANY split of an input into writes (1 byte per write included), the detections
   (detector, start, end) from feed()+close() equal the one-shot result.
2. Every byte of every detection lies at or after the safe_offset in force before the feed()
   (or close()) call that returned it, and safe_offset never decreases.
3. After close(), safe_offset == total bytes fed.

Property tests use plain `random` with fixed seeds (many iterations). Failures print offsets
and detector ids only, never bytes.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from egressguard.scan.engine import ScanEngine
from egressguard.scan.pack import detectors_from_config, load_pack

sys.path.insert(0, str(Path(__file__).parent))   # scan_samples, whatever pytest's import mode

from scan_samples import ALNUM, make_jwt, pem, rand, true_positives  # noqa: E402

Found = tuple[str, int, int]


@pytest.fixture(scope="module")
def engine() -> ScanEngine:
    return ScanEngine(load_pack(), b"stream-test-key")


def stream_scan(engine: ScanEngine, data: bytes, sizes: Iterable[int]) -> list[Found]:
    """Feed `data` in writes of the given sizes, checking guarantees 2 and 3 on the way."""
    stream = engine.open_stream()
    found: list[Found] = []
    pos = 0
    sizes = iter(sizes)
    while pos < len(data):
        n = next(sizes)
        before = stream.safe_offset
        for d in stream.feed(data[pos:pos + n]):
            assert d.start >= before, f"{d.detector} [{d.start},{d.end}) reported after safe_offset {before}"
            found.append((d.detector, d.start, d.end))
        pos += n
        assert before <= stream.safe_offset <= pos, (before, stream.safe_offset, pos)
    before = stream.safe_offset
    for d in stream.close():
        assert d.start >= before, f"{d.detector} [{d.start},{d.end}) at close after safe_offset {before}"
        found.append((d.detector, d.start, d.end))
    assert stream.safe_offset == len(data)
    return found


def one_shot(engine: ScanEngine, data: bytes) -> list[Found]:
    return [(d.detector, d.start, d.end) for d in engine.scan(data)]


def ones() -> Iterator[int]:
    while True:
        yield 1


def random_sizes(rng: random.Random, hi: int) -> Iterator[int]:
    while True:
        yield rng.randint(1, hi) if rng.random() < 0.8 else rng.randint(1, 4)


def corpus(seed: int) -> bytes:
    """Every positive sample, shuffled, between fillers that look a bit like them; one sample
    at offset 0 and one that ends exactly at the end of the stream."""
    rng = random.Random(seed)
    samples = true_positives(seed)
    rng.shuffle(samples)
    fillers = [b" ", b"\n", b" 12 ", b" - ", b" +1 ", b" 2024-01-01 ", b" lorem ipsum ",
               b" key=", b" @ ", b" 4111 ", b" sk-", b" eyJ ", b"\r\n\r\n", b" DE89 "]
    parts = [b"gh" + b"o_" + rand(rng, ALNUM, 36).encode()]
    for s in samples:
        parts.append(rng.choice(fillers))
        parts.append(s.text)
    parts.append(b" ")
    parts.append(pem(rng, "OPENSSH", 70)[0].encode())      # longer than the cap: truncated
    parts.append(b" jwt ")
    parts.append(make_jwt(rng, payload_claims=70).encode())
    parts.append(b" end " + b"FR14" + b"20041010050500013M02606")
    return b"".join(parts)


# ------------------------------------------------------------------------------ guarantee 1-3

def test_corpus_has_findings_of_every_detector(engine: ScanEngine) -> None:
    found = one_shot(engine, corpus(0))
    assert {d for d, _, _ in found} == engine.detector_ids
    assert found[0][1] == 0
    assert found[-1][2] == len(corpus(0))


@pytest.mark.parametrize("seed", range(40))
def test_random_splits_equal_one_shot(engine: ScanEngine, seed: int) -> None:
    data = corpus(seed % 4)
    expected = one_shot(engine, data)
    rng = random.Random(seed)
    hi = [3, 17, 200, 5000][seed % 4]
    got = stream_scan(engine, data, random_sizes(rng, hi))
    assert sorted(got) == sorted(expected)
    assert len(got) == len(set(got))           # each finding reported exactly once


def test_one_byte_writes_equal_one_shot(engine: ScanEngine) -> None:
    data = corpus(1)
    got = stream_scan(engine, data, ones())
    assert sorted(got) == sorted(one_shot(engine, data))
    assert len(got) == len(set(got))


def test_splits_at_every_edge_of_every_finding(engine: ScanEngine) -> None:
    """Writes that end right before, inside and right after each finding's edges."""
    data = corpus(2)
    expected = one_shot(engine, data)
    for _, start, end in expected:
        for cut in {start, start + 1, end - 1, end, end + 1}:
            if 0 < cut < len(data):
                got = stream_scan(engine, data, iter([cut, len(data)]))
                assert sorted(got) == sorted(expected), (start, end, cut)


FUZZ_TOKENS = [
    b"4111", b" ", b"-", b"1", b"+1 ", b"415", b"555", b"2671", b"@", b"a", b".com", b".", b"x",
    b"sk-", b"ant-", b"proj-", b"gh" + b"p_", b"AK" + b"IA", b"eyJ", b"DE89", b"3704", b"\n",
    b"-----BEGIN RSA PRIVATE KEY-----\n", b"ABCD", b"://u:", b"pw9Zk", b"@h.io", b"00", b"_",
    b"aws_secret=", b"xo" + b"xb-", b"12345", b"AI" + b"za", b"(", b")", b"0000", b"sk" + b"_live_",
]


@pytest.mark.parametrize("seed", range(12))
def test_fuzzed_near_misses_split_like_one_shot(engine: ScanEngine, seed: int) -> None:
    """Random soup of pattern fragments: many partial matches, undecided candidates and
    keep_longest groups, at every kind of chunk boundary."""
    rng = random.Random(1000 + seed)
    pieces = []
    for _ in range(2500):
        if rng.random() < 0.02:
            pieces.append(rng.choice(true_positives(seed)).text)
        elif rng.random() < 0.3:
            pieces.append(rand(rng, ALNUM, rng.randint(1, 50)).encode())
        else:
            pieces.append(rng.choice(FUZZ_TOKENS))
    data = b"".join(pieces)
    expected = one_shot(engine, data)
    for hi in (1, 7, 300):
        sizes = ones() if hi == 1 and seed % 4 == 0 else random_sizes(rng, max(hi, 2))
        got = stream_scan(engine, data, sizes)
        assert sorted(got) == sorted(expected), hi


def test_custom_capped_detector_streams_like_one_shot() -> None:
    specs = detectors_from_config([
        {"id": "custom.blob", "class": "secret", "pattern": "BLOB:[a-z]{4,}", "max_width": 40,
         "not_before": "[A-Za-z]", "not_after": "[a-z]"},
        {"id": "custom.word", "class": "pii", "pattern": "zz[0-9]{2,30}", "keep_longest": True},
    ], "test.yaml")
    eng = ScanEngine(specs, b"k")
    rng = random.Random(77)
    data = b"".join(rng.choice([b"BLOB:", b"abc", b"q", b" ", b"zz", b"12", b"9"])
                    for _ in range(5000))
    expected = one_shot(eng, data)
    assert expected
    for seed in range(10):
        got = stream_scan(eng, data, random_sizes(random.Random(seed), 1 + seed * 10))
        assert sorted(got) == sorted(expected), seed


# ------------------------------------------------------------------------------ greedy tokens

def test_growing_token_is_neither_reported_nor_released_early(engine: ScanEngine) -> None:
    rng = random.Random(3)
    token = b"gh" + b"p_" + rand(rng, ALNUM, 40).encode()
    stream = engine.open_stream()
    assert stream.feed(b"token: ") == []
    token_start = 7
    for i in range(len(token)):                      # the token could grow after every byte
        reported = stream.feed(token[i:i + 1])
        assert reported == []
        assert stream.safe_offset <= token_start
    (d,) = stream.feed(b" ")
    assert (d.detector, d.start, d.end) == ("secret.github_token", token_start, token_start + len(token))
    assert stream.close() == []


def test_token_at_end_of_stream_is_reported_at_close(engine: ScanEngine) -> None:
    rng = random.Random(4)
    token = b"sk" + b"_live_" + rand(rng, ALNUM, 30).encode()
    stream = engine.open_stream()
    assert stream.feed(b"k=" + token) == []
    assert stream.safe_offset <= 2
    (d,) = stream.close()
    assert (d.detector, d.start, d.end) == ("secret.stripe_key", 2, 2 + len(token))
    assert stream.safe_offset == 2 + len(token)


def test_undecided_multi_byte_lookahead_holds_bytes(engine: ScanEngine) -> None:
    stream = engine.open_stream()
    assert stream.feed(b"mail bob@example.com") == []
    assert stream.feed(b".") == []                       # ".xy" could still extend the domain
    assert stream.feed(b" ") == []                       # not_after may look 8 bytes ahead
    assert stream.safe_offset <= 5
    (d,) = stream.feed(b" is mine")
    assert (d.detector, d.start, d.end) == ("pii.email", 5, 20)


def test_keep_longest_holds_a_prefix_until_the_longer_match_is_decided(engine: ScanEngine) -> None:
    stream = engine.open_stream()
    first = stream.feed(b"tel +49 30 901820")
    assert first == []
    assert stream.safe_offset <= 4
    rest = stream.feed(b" ok" + b" " * 100)
    assert [(d.detector, d.start, d.end) for d in rest] == [("pii.phone", 4, 17)]


# ------------------------------------------------------------------------------ bookkeeping

def test_safe_offset_trails_by_hold_back_on_clean_data(engine: ScanEngine) -> None:
    stream = engine.open_stream()
    assert stream.safe_offset == 0
    stream.feed(b"lorem ipsum dolor sit amet " * 2000)
    assert stream.safe_offset == stream.total - engine.hold_back
    stream.feed(b"x")
    assert stream.safe_offset == stream.total - engine.hold_back
    assert stream.close() == []
    assert stream.safe_offset == stream.total


def test_short_stream_releases_nothing_until_close(engine: ScanEngine) -> None:
    stream = engine.open_stream()
    stream.feed(b"hello")
    assert stream.safe_offset == 0
    stream.close()
    assert stream.safe_offset == 5


def test_offsets_are_absolute_across_writes(engine: ScanEngine) -> None:
    stream = engine.open_stream()
    stream.feed(b"a" * 10_000)
    got = stream.feed(b" mail bob@example.com now ")
    got += stream.close()
    assert [(d.start, d.end) for d in got] == [(10_006, 10_021)]


def test_tail_memory_is_bounded(engine: ScanEngine) -> None:
    stream = engine.open_stream()
    chunk = (b"the quick brown fox 4111 1111 1111 1111 jumps " * 1500)[:65536]
    for _ in range(32):
        stream.feed(chunk)
        assert len(stream._tail) <= engine._retain
    stream.close()


def test_closed_stream_refuses_feed_and_close_is_idempotent(engine: ScanEngine) -> None:
    stream = engine.open_stream()
    stream.feed(b"abc")
    stream.close()
    assert stream.close() == []
    with pytest.raises(ValueError):
        stream.feed(b"more")
    assert stream.feed is not None


def test_empty_feed_is_a_no_op(engine: ScanEngine) -> None:
    stream = engine.open_stream()
    assert stream.feed(b"") == []
    assert stream.safe_offset == 0 and stream.total == 0
    assert stream.close() == []


def test_context_manager_closes(engine: ScanEngine) -> None:
    with engine.open_stream() as stream:
        stream.feed(b"abc")
    assert stream.safe_offset == 3


def test_many_streams_share_one_engine(engine: ScanEngine) -> None:
    data = corpus(3)
    expected = sorted(one_shot(engine, data))
    streams = [engine.open_stream() for _ in range(5)]
    results: list[list[Found]] = [[] for _ in streams]
    for pos in range(0, len(data), 997):               # interleaved writes
        for i, s in enumerate(streams):
            results[i] += [(d.detector, d.start, d.end) for d in s.feed(data[pos:pos + 997])]
    for i, s in enumerate(streams):
        results[i] += [(d.detector, d.start, d.end) for d in s.close()]
        assert sorted(results[i]) == expected
