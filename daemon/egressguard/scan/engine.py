"""The streaming scanner: one Hyperscan stream database, one `ScanStream` per flow direction.

How a finding is made (and why):

1. Hyperscan, in stream mode WITHOUT start-of-match (SOM makes many patterns "too large" and
   halves the speed), reports (detector, end offset) candidates. A greedy pattern reports many
   ends for one token; that is expected.
2. A candidate is decided only once the `not_after` bytes behind its end have arrived (or the
   stream has closed): that is what stops a token that could still grow from being finalized.
   Candidates whose next bytes rule them out are dropped first, cheaply.
3. Python `re` re-matches a bounded window behind the end: `(?<!not_before)(?:pattern)\\Z`
   searched from `end - width` with `endpos=end` gives the leftmost start of a match ending
   exactly there. The validator runs on that span (and `context_before` bytes before it); if
   it refuses, the next start is tried (a few at most).
4. Each (detector, end) is decided once, and yields at most one span, so a finding is never
   reported twice. Detectors with `keep_longest` additionally drop a validated span contained
   in a longer validated span of the same detector (digit groups), which is why such a span
   is held until every span that could contain it has been decided.

Everything a decision depends on lies within a bounded distance of the candidate's end, so the
result is the same for any split of the input into writes. The stream keeps only a tail of
the data it has seen (enough for the widest re-match), never the whole flow.

`safe_offset`: no byte before it can belong to a finding reported later. Future Hyperscan
candidates end after the current total, so they start no earlier than `total - hold_back`;
undecided candidates and held spans pull it further back. The proxy forwards only bytes before
it.

Threading: Hyperscan scratch space is per thread, and the database's default scratch is used.
All streams of one engine must be fed and closed from ONE thread (the proxy's event-loop
thread). Use a separate ScanEngine per thread if that ever changes.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import hyperscan
import regex

from ..model import Detection
from . import mask, validators
from .allow import suppressed
from .idle import anchor_length, charset
from .pack import (CONFIDENCES, DetectorSpec, folds_not_after, hyperscan_expression,
                   hyperscan_flags)

#: How many start positions are tried for one candidate end when the validator refuses the
#: leftmost one (e.g. "12 4111 1111 1111 1111": the card starts at the second group).
MAX_START_TRIES = 8


@dataclass(frozen=True)
class _Compiled:
    """A detector prepared for re-matching."""

    index: int
    spec: DetectorSpec
    end_re: re.Pattern[bytes]            # (?<!not_before)(?:pattern)\Z
    after_re: re.Pattern[bytes] | None   # not_after
    width: int
    lookahead: int
    folded: bool                         # Hyperscan matched the not_after byte too
    context: int
    validate: validators.Validator | None
    params: Mapping[str, Any]
    partial_re: Any                      # `regex` (?<!not_before)(?:pattern)\Z, partial=True
    chars: bytes                         # every byte a match can contain (idle pre-filter)
    anchor: int                          # length of the distinctive literal prefix (AKIA, sk-)
    confidence: int                      # index of the base confidence in CONFIDENCES


@dataclass(frozen=True)
class _Span:
    """A resolved finding: the secret's absolute span and how sure it is."""

    start: int
    end: int
    confidence: str


@dataclass
class _Held:
    """A validated keep_longest span waiting until no longer span can still contain it."""

    detector: int
    start: int
    end: int
    release_at: int
    detection: Detection


class ScanEngine:
    """Compiles all detectors into ONE Hyperscan stream database, once, at construction."""

    def __init__(self, detectors: Sequence[DetectorSpec], fingerprint_key: bytes, *,
                 phone_region: str = "US"):
        if not detectors:
            raise ValueError("ScanEngine needs at least one detector")
        ids = [d.id for d in detectors]
        if len(set(ids)) != len(ids):
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            raise ValueError(f"duplicate detector ids: {', '.join(dupes)}")
        self._key = bytes(fingerprint_key)
        self._dets = [self._prepare(i, d, phone_region) for i, d in enumerate(detectors)]
        #: The ids findings can carry (alternatives of one imported rule share one).
        self.detector_ids: frozenset[str] = frozenset(d.report_id for d in detectors)
        # A folded detector learns of a match one byte late (when the boundary byte arrives),
        # so it can still report a match ending at the current end: it reaches one byte
        # further back than its width - 1.
        reach = max(c.width - 1 + c.folded for c in self._dets)
        #: Bytes at the end of the data fed so far that may still belong to a future finding:
        #: the widest possible match (capped, pack.MAX_WIDTH) - 1, + 1 if that detector's
        #: end boundary is matched by Hyperscan. safe_offset >= total - hold_back - (bytes
        #: of undecided candidates), and == total after close().
        self.hold_back: int = reach
        # Tail kept per stream: the widest re-match + its validator context + the lookbehind
        # byte, measured from the earliest end that may still be undecided.
        self._retain = (max(c.width + c.context for c in self._dets) + 1
                        + max(c.lookahead for c in self._dets))
        self._db = self._compile()

    @staticmethod
    def _prepare(index: int, spec: DetectorSpec, phone_region: str) -> _Compiled:
        flags = re.IGNORECASE if spec.caseless else 0
        behind = f"(?<!{spec.not_before})" if spec.not_before else ""
        end_re = re.compile(f"{behind}(?:{spec.pattern})\\Z".encode("ascii"), flags)
        after = re.compile(spec.not_after.encode("ascii"), flags) if spec.not_after else None
        params = dict(spec.params)
        if spec.validator == "phone":
            params.setdefault("region", phone_region)
        # Ends in \Z on purpose: with partial=True, `search` then finds the leftmost start from
        # which SOME path of the pattern runs into the end of the data (a partial match) or
        # ends exactly there. Without \Z, regex returns per start the first match it finds,
        # and when that is a complete match ending earlier ("bob@example.com" in
        # "bob@example.com.u1-x", "DE89 3704 0044 0532" before a space) the start was skipped
        # although the value could still go on from it: its first bytes were released at a
        # non-final flush and the longer finding came from before safe_offset.
        partial_re = regex.compile(f"{behind}(?:{spec.pattern})\\Z".encode("ascii"),
                                   regex.IGNORECASE if spec.caseless else 0)
        return _Compiled(
            index=index, spec=spec, end_re=end_re, after_re=after, width=spec.width,
            lookahead=spec.lookahead, folded=folds_not_after(spec), context=spec.context_before,
            validate=validators.VALIDATORS[spec.validator] if spec.validator else None,
            params=params, partial_re=partial_re,
            chars=charset(spec.pattern, spec.caseless), anchor=anchor_length(spec.pattern),
            confidence=CONFIDENCES.index(spec.confidence),
        )

    def _compile(self) -> hyperscan.Database:
        db = hyperscan.Database(mode=hyperscan.HS_MODE_STREAM)
        specs = [c.spec for c in self._dets]
        db.compile(
            expressions=[hyperscan_expression(s) for s in specs],
            ids=list(range(len(specs))),
            elements=len(specs),
            flags=[hyperscan_flags(s) for s in specs],
        )
        return db

    @property
    def database(self) -> hyperscan.Database:
        """The compiled stream database (for benchmarks comparing raw Hyperscan)."""
        return self._db

    def open_stream(self) -> ScanStream:
        """A new stream for one direction of one flow (offsets start at 0)."""
        return ScanStream(self)

    def scan(self, data: bytes) -> list[Detection]:
        """One-shot scan of a complete buffer: feed(data) + close()."""
        stream = self.open_stream()
        found = stream.feed(data)
        found.extend(stream.close())
        return found


class ScanStream:
    """Scans one byte stream incrementally. Not thread-safe; see the module docstring."""

    def __init__(self, engine: ScanEngine):
        self._engine = engine
        self._dets = engine._dets
        self._hits: list[tuple[int, int]] = []
        append = self._hits.append
        shift = tuple(int(c.folded) for c in self._dets)

        def on_match(det: int, _from: int, to: int, _flags: int, _ctx: Any) -> None:
            append((to - shift[det], det))   # (end of the real match, detector)

        # hyperscan 0.9.1 keeps only a borrowed reference to the callback (a freed closure
        # segfaults in scan()), so the stream holds it. It also only scans inside the
        # Stream's context manager: enter it here, leave it in close().
        self._on_match = on_match
        self._hs = engine._db.stream(match_event_handler=on_match)
        self._hs.__enter__()
        self._tail = b""          # the last bytes seen (at most engine._retain)
        self._total = 0           # bytes fed so far
        self._pending: list[tuple[int, int]] = []   # (end, detector) awaiting lookahead bytes
        self._held: dict[int, deque[_Held]] = {}     # keep_longest spans, per detector
        self._closed = False
        self._idle_ends: set[tuple[int, int]] = set()   # end-of-data candidates decided idle
        # (detector id, start) of findings reported ending exactly at the current total: an
        # anchored tail that is one of them need not be held by a final idle flush.
        self._reported_at_end: set[tuple[str, int]] = set()
        # (detector, start, end) of spans reported recently: two candidate ends can resolve to
        # the same secret when a detector reports a group (a value followed by an optional
        # quote), and it must be reported once, whichever writes brought the two ends.
        self._recent: dict[tuple[int, int, int], None] = {}
        #: Bytes before this offset can never be part of a finding reported later.
        self.safe_offset = 0

    # -------------------------------------------------------------- public

    @property
    def total(self) -> int:
        """Bytes fed so far."""
        return self._total

    def feed(self, data: bytes) -> list[Detection]:
        """Scan the next bytes; returns findings decided by them (absolute offsets)."""
        if self._closed:
            raise ValueError("feed() on a closed ScanStream")
        if not data:
            return []
        data = bytes(data)
        self._hs.scan(data)
        start = self._total
        self._total += len(data)
        found: list[Detection] = []
        if self._hits or self._pending or self._held:
            window, window_start = self._window(data, start)
            found = self._decide(window, window_start, final=False)
        # A folded detector reports a match ending at an idle point when the next byte
        # arrives, i.e. in this feed: any such end was decided by flush_idle already.
        self._idle_ends.clear()
        self._reported_at_end = {(d.detector, d.start) for d in found if d.end == self._total}
        self._keep_tail(data)
        self._advance_safe_offset()
        return found

    def close(self) -> list[Detection]:
        """End of stream: decide everything still open. Afterwards safe_offset == total."""
        if self._closed:
            return []
        self._closed = True
        self._hs.__exit__(None, None, None)
        if self._total:
            # Folded detectors cannot see a match that ends exactly at the end of the stream
            # (there is no boundary byte after it): try that end for each of them.
            self._hits.extend((self._total, c.index) for c in self._dets if c.folded)
        window_start = self._total - len(self._tail)
        found = self._decide(self._tail, window_start, final=True)
        self.safe_offset = self._total
        return found

    def flush_idle(self, final: bool) -> list[Detection]:
        """The writer paused: release what can no longer be part of a finding.

        The hold-back window assumes more bytes may come. For request/response protocols they
        will not until the peer answers, so waiting for them would deadlock. When the client
        pauses, the proxy calls this:

        - `final=False` (right away): unless a candidate is undecided (then nothing moves),
          move `safe_offset` up to the earliest byte from which some detector could still
          match if the stream went on (a partial match reaching the end, found with the
          `regex` module's partial matching on the suffix made only of bytes that detector's
          matches can contain). Nothing that could become a secret is released.
        - `final=True` (after a longer pause): decide the undecided candidates as if the
          stream ended here (without ending it) and release partial tails too, except those
          that already hold a detector's distinctive literal prefix ("AKIA", "sk-ant-",
          "-----BEGIN"): those stay until more bytes arrive or the stream closes, unless
          that tail is exactly a finding reported already (a request that ends in a whole
          key is reported here and then released: the policy has acted on it). A tail
          shorter than the prefix ("gh", "AKI") is released: only public prefix bytes.

        Documented limit: a writer that pauses longer than the final wait in the middle of a
        value without a distinctive prefix (an e-mail, a card number) has the part before the
        pause forwarded; the rest is still detected and acted on.
        """
        if self._closed or not self._total:
            return []
        if self._pending and not final:
            # A likely finding is still undecided (its boundary byte has not come): release
            # nothing, not even the bytes before it, so a request that ends in a secret reaches
            # the destination whole or not at all. The final flush decides it.
            return []
        found: list[Detection] = []
        if final:
            ends = [(self._total, c.index) for c in self._dets if c.folded]
            self._hits.extend(e for e in ends if e not in self._idle_ends)
            found = self._decide(self._tail, self._total - len(self._tail), final=True)
            self._idle_ends.update(ends)
            self._reported_at_end.update(
                (d.detector, d.start) for d in found if d.end == self._total)
        partial_start, complete_at_end = self._partial_start(final)
        if complete_at_end and not final:
            return found      # a whole match ends at the last byte: undecided, as above
        bound = min(self._total, partial_start)
        for end, det in self._pending:
            bound = min(bound, end - self._dets[det].width)
        for queue in self._held.values():
            bound = min(bound, queue[0].start)
        if bound > self.safe_offset:
            self.safe_offset = bound
        return found

    def _partial_start(self, final: bool) -> tuple[int, bool]:
        """Earliest offset from which a match could still reach past the current end, and
        whether some detector has a complete match ending at the last byte (a folded detector
        hears of it only when the next byte comes, so it is undecided)."""
        tail, total = self._tail, self._total
        base = total - len(tail)
        earliest = total
        complete_at_end = False
        for c in self._dets:
            region = tail[-c.width:]
            suffix = len(region) - len(region.rstrip(c.chars))
            if not suffix:
                continue
            pos = len(tail) - suffix
            # The leftmost start whose bytes up to the end are a prefix of a match (or a whole
            # match); every later start gives a shorter one, so it decides for this detector.
            m = c.partial_re.search(tail, pos, partial=True)
            if m is None or m.end() == m.start():
                continue
            complete_at_end = complete_at_end or not m.partial
            if final and not (c.anchor >= 3 and m.end() - m.start() >= c.anchor):
                continue
            if final and (c.spec.report_id, base + m.start()) in self._reported_at_end:
                # The whole anchored tail was reported (a request ending in a complete key):
                # the policy has acted on it, so holding it would only stall the request. If
                # the token goes on, the longer finding is reported (and acted on) again.
                continue
            earliest = min(earliest, base + m.start())
        return earliest, complete_at_end

    def __enter__(self) -> ScanStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------- deciding candidates

    def _window(self, data: bytes, start: int) -> tuple[bytes, int]:
        """The bytes needed to decide the open candidates: from the earliest reach back of
        any candidate to the current end. Usually a slice of `data` alone."""
        ends = [e for e, _ in self._hits] + [e for e, _ in self._pending]
        earliest = min(ends) if ends else self._total
        if self._held:
            earliest = min(earliest, min(q[0].start for q in self._held.values()))
        need = max(0, earliest - self._engine._retain)
        if need >= start:
            return data[need - start:], need
        tail_start = start - len(self._tail)
        return self._tail[max(0, need - tail_start):] + data, max(need, tail_start)

    def _decide(self, window: bytes, window_start: int, final: bool) -> list[Detection]:
        open_set = set(self._pending) | set(self._hits)
        if self._idle_ends:
            open_set -= self._idle_ends
        candidates = sorted(open_set)
        self._hits.clear()
        self._pending = []
        found: list[Detection] = []
        for end, det in candidates:
            c = self._dets[det]
            if not final and end + c.lookahead > self._total:
                self._pending.append((end, det))
                continue
            # For a truncating detector: does some match also end one byte later? (Hyperscan
            # has already reported it if so: the byte that ends it is the one that blocked.)
            grows = c.spec.truncate and (end + 1, det) in open_set
            span = self._resolve(c, end, window, window_start, grows)
            if span is None:
                continue
            key = (det, span.start, span.end)
            if key in self._recent:
                continue
            self._recent[key] = None
            detection = self._detection(c, span, window, window_start)
            if c.spec.keep_longest:
                self._hold(c, span, detection)
            else:
                found.append(detection)
        found.extend(self._release(final))
        found.sort(key=lambda d: (d.start, d.end, d.detector))
        self._forget_recent()
        return found

    def _forget_recent(self) -> None:
        """Drop remembered spans that no future candidate can resolve to again: a candidate
        ends after the current total minus the widest lookahead, and reaches back at most the
        retained tail, so spans ending before that can never recur."""
        horizon = self._total - self._engine._retain
        if self._recent and next(iter(self._recent))[2] < horizon:
            self._recent = {k: None for k in self._recent if k[2] >= horizon}

    def _resolve(self, c: _Compiled, end: int, window: bytes, window_start: int,
                 grows: bool) -> _Span | None:
        """The span ending at `end` that passes boundaries and validation, or None."""
        rel_end = end - window_start
        lo = max(0, end - c.width) - window_start
        if c.after_re is not None:
            stop = min(end + c.lookahead, self._total) - window_start
            if c.after_re.match(window, rel_end, stop) is not None:
                # The token goes on. Only a truncating detector reports it, and only where
                # its pattern cannot follow the token any further (a repeat hit its cap).
                if not c.spec.truncate or grows:
                    return None
        pos = lo
        for _ in range(MAX_START_TRIES):
            m = c.end_re.search(window, pos, rel_end)
            if m is None:
                return None
            span = self._validated(c, m, window, window_start, end)
            if span is not None:
                return span
            pos = m.start() + 1
        return None

    def _validated(self, c: _Compiled, m: re.Match[bytes] | None, window: bytes,
                   window_start: int, end: int) -> _Span | None:
        """Every check after the regex, in the order that costs least first: the secret group,
        keywords, entropy, the validator, allowlists. All of them look only at bytes between
        `context_before` before the match and the match's end, so the result does not depend
        on how the stream was split."""
        if m is None:
            return None
        spec = c.spec
        s, e = m.start(), m.end()
        gs, ge = s, e
        if spec.secret_group is not None:
            gs, ge = _group_span(m, spec.secret_group)
            if gs >= ge:
                return None
        secret = window[gs:ge]
        level = c.confidence
        if spec.keywords or spec.hint_keywords:
            near = window[max(0, s - c.context):e].lower()
            hit = any(k in near for k in spec.keywords) or any(k in near for k in spec.hint_keywords)
            if spec.keywords and not hit:
                return None
            level += hit
        if spec.min_entropy is not None and validators.shannon_entropy(secret) < spec.min_entropy:
            return None
        if spec.require_digit and not any(48 <= b <= 57 for b in secret):
            return None
        if c.validate is not None:
            context = window[max(0, gs - c.context):gs] if c.context else b""
            try:
                ok = c.validate(secret, context, c.params)
            except Exception:  # noqa: BLE001 - a validator bug must not kill the flow
                ok = False
            if not ok:
                return None
            level += 1
        if spec.allowlists:
            line_start = window.rfind(b"\n", max(0, s - c.context), s) + 1 or max(0, s - c.context)
            if suppressed(spec.allowlists, secret, window[s:e], window[line_start:e]):
                return None
        return _Span(gs + window_start, ge + window_start,
                     CONFIDENCES[min(level, len(CONFIDENCES) - 1)])

    def _detection(self, c: _Compiled, span: _Span, window: bytes,
                   window_start: int) -> Detection:
        start, end = span.start, span.end
        raw = window[start - window_start:end - window_start]
        spec = c.spec
        return Detection(
            detector=spec.report_id,
            cls=spec.cls,
            start=start,
            end=end,
            preview=mask.preview(raw, spec.report_id),
            fingerprint=mask.fingerprint(self._engine._key, mask.canonical(spec.report_id, raw)),
            severity=spec.severity,
            confidence=span.confidence,
        )

    # -------------------------------------------------------------- keep_longest

    def _hold(self, c: _Compiled, span: _Span, detection: Detection) -> None:
        """Park a keep_longest span; a longer span containing earlier ones evicts them.

        A container always ends later than what it contains, and one detector's candidates
        are decided in end order, so by `release_at` (start + width + lookahead) every
        possible container has been decided. Each detector's queue therefore holds
        non-nested spans in end (and so start) order: eviction looks only at its back,
        release only at its front."""
        start, end = span.start, span.end
        queue = self._held.setdefault(c.index, deque())
        while queue and queue[-1].end > start:
            if queue[-1].start >= start:
                queue.pop()          # contained in the new span
            else:
                break                # overlaps without being contained: keep both
        queue.append(_Held(c.index, start, end, start + c.width + c.lookahead, detection))

    def _release(self, final: bool) -> Iterator[Detection]:
        for det in list(self._held):
            queue = self._held[det]
            while queue and (final or queue[0].release_at <= self._total):
                yield queue.popleft().detection
            if not queue:
                del self._held[det]

    # -------------------------------------------------------------- bookkeeping

    def _keep_tail(self, data: bytes) -> None:
        retain = self._engine._retain
        if len(data) >= retain:
            self._tail = data[-retain:]
        else:
            tail = self._tail + data
            self._tail = tail[-retain:] if len(tail) > retain else tail

    def _advance_safe_offset(self) -> None:
        bound = self._total - self._engine.hold_back
        for end, det in self._pending:
            bound = min(bound, end - self._dets[det].width)
        for queue in self._held.values():
            bound = min(bound, queue[0].start)
        if bound > self.safe_offset:
            self.safe_offset = bound


def _group_span(m: re.Match[bytes], group: int) -> tuple[int, int]:
    """The secret's span within a match: group `group`, or with 0 the first group that
    matched something (what gitleaks reports when a rule sets no secretGroup)."""
    if group:
        return m.span(group)
    for g in range(1, (m.re.groups or 0) + 1):
        gs, ge = m.span(g)
        if ge > gs:
            return gs, ge
    return m.span()
