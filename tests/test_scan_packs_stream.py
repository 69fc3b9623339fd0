"""Hypothesis: whatever the pack, a split at any byte boundaries finds exactly what one piece
finds, and never reports a byte it already released (the streaming contract, see
test_scan_stream.py), for the grown built-in pack on the labeled corpus (every detector, every
carrier, the hard negatives too) and for our gitleaks-format test rules."""

from __future__ import annotations

import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from egressguard.scan.engine import ScanEngine
from egressguard.scan.gitleaks import load_gitleaks
from egressguard.scan.pack import load_pack

sys.path.insert(0, str(Path(__file__).parent))

from corpus.generate import build  # noqa: E402
from scan_samples import streamed  # noqa: E402

BUILTIN = ScanEngine(load_pack(), b"packs-stream-key")
IMPORTED = ScanEngine(list(load_gitleaks(Path(__file__).parent / "data" / "gitleaks"
                                         / "rules.toml").specs), b"packs-stream-key")
DOCS = build(11, per_detector=3, negative_copies=1)


def one_shot(engine: ScanEngine, data: bytes) -> list[tuple[str, int, int]]:
    return sorted((d.detector, d.start, d.end) for d in engine.scan(data))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(picks=st.lists(st.integers(0, len(DOCS) - 1), min_size=1, max_size=25),
       seps=st.sampled_from([b"", b" ", b"\n", b"\r\n", b"&", b'"']),
       cuts=st.lists(st.integers(0, 10_000), max_size=40))
def test_builtin_pack_on_corpus_splits_like_one_shot(picks, seps, cuts) -> None:
    data = seps.join(DOCS[i].text for i in picks)
    cuts = [c % (len(data) + 1) for c in cuts]
    assert streamed(BUILTIN, data, cuts) == one_shot(BUILTIN, data)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(picks=st.lists(st.integers(0, len(DOCS) - 1), min_size=1, max_size=10),
       step=st.integers(1, 7))
def test_builtin_pack_small_writes_like_one_shot(picks, step) -> None:
    data = b" ".join(DOCS[i].text for i in picks)
    assert streamed(BUILTIN, data, list(range(0, len(data), step))) == one_shot(BUILTIN, data)


TOKENS = [b"acme_", b"widget_key = '", b"tok-", b"key+v1:", b"pk-", b"mid-", b"alt1_", b"alt2_",
          b"generic_secret = ", b"base_", b"'", b'"', b" ", b"\n", b"\\n", b";"]


@settings(max_examples=80, deadline=None)
@given(parts=st.lists(st.one_of(st.sampled_from(TOKENS),
                                st.text("abcdef0123456789ABCDEF", min_size=1, max_size=40)
                                .map(str.encode)), min_size=1, max_size=40),
       cuts=st.lists(st.integers(0, 2000), max_size=20))
def test_imported_rules_split_like_one_shot(parts, cuts) -> None:
    data = b"".join(parts)
    cuts = [c % (len(data) + 1) for c in cuts]
    assert streamed(IMPORTED, data, cuts) == one_shot(IMPORTED, data)
