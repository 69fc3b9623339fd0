"""The data path of one flow, without I/O: client bytes in -> scan -> verdict -> commands out.

mitmproxy/h11 style: the proxy feeds events (`start`, `client_data`, `client_eof`,
`client_idle`, `upstream_connected`, `decided`) and executes the commands that come back
(`ConnectUpstream`, `SendUpstream`, `HalfCloseUpstream`, `Hold`, `Reset`, `Emit`). Every rule of
enforcement lives here, so it is tested by feeding bytes and reading commands, no sockets.

The one invariant that matters: a byte goes out in `SendUpstream` only after the scanner has
declared it safe (`ScanStream.safe_offset`) and the policy has allowed the flow. Bytes that could
still be part of a secret stay in `pending` (the hold-back window); a held flow keeps everything
it receives (bounded by the proxy's buffer cap) until a human decides.

An approval covers exactly the findings the approver was shown (by fingerprint). A finding a
hold rule names that was not shown (a different secret later on a keep-alive connection, or one
that arrived while the hold was open) opens a new hold before any of its bytes leave.

Client -> server bytes are scanned; server -> client bytes are relayed by the proxy untouched.

TLS interception (opt-in, `tls.intercept`): once the ClientHello's SNI is known and the
selector picks the flow, the relay hands the ClientHello to the proxy (`InterceptTls`) and from
then on is fed the client's *decrypted* bytes. Those go through an HTTP/1.1 codec
(httpcodec.py): the relay scans and masks the decoded view (bodies de-chunked and
decompressed) and the codec turns released view bytes back into wire bytes (original framing,
or a re-encoded body after a mask). Each request is labelled from the endpoint catalog
(`http.request` events: provider, endpoint kind, model, the JSON fields that held findings);
request rules (`request.kind` / `request.class`) decide per request before any of it leaves.

A held intercepted HTTP/1.1 request that is refused (the inline wait ran out, or a denial) is
answered with a `403` whose JSON body names the approval id (approvals/refusal.py), sent on the
TLS session, and the connection closes: the agent learns what to ask for and that a retry can
pass once approved. Only when the client will read it as the answer to that request: the
request's bytes are still here, no request came after it, and it is the connection's first
request or the client had received response bytes since its previous one (it waits for
answers: no pipelining). Otherwise, and for plaintext and non-HTTP flows, a reset.
"""

from __future__ import annotations

import bisect
import enum
import itertools
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from .approvals.refusal import http_refusal
from .httpcodec import HeadDone, HttpError, HttpRequestCodec, RequestDone, RequestHead
from .jsonpaths import field_at, string_spans
from .model import Action, Decision, Destination, Detection, FlowInfo, FlowState, Verdict
from .sniff import MAX_SNIFF_BYTES, NEED_MORE, client_alpn, sniff_host


# ---------------------------------------------------------------------------- commands
@dataclass(frozen=True)
class ConnectUpstream:
    """Open the connection to the original destination (now that the policy allows it)."""


@dataclass(frozen=True)
class SendUpstream:
    data: bytes


@dataclass(frozen=True)
class HalfCloseUpstream:
    """The client finished sending and every byte it sent has been forwarded."""


@dataclass(frozen=True)
class Hold:
    """Ask a human. The proxy opens a hold and later calls `Relay.decided(decision)`."""

    verdict: Verdict
    detections: tuple[Detection, ...]


@dataclass(frozen=True)
class Reset:
    """Abort both sides: the client sees a reset, the destination gets nothing more."""

    reason: str


@dataclass(frozen=True)
class Emit:
    """A flow event for the listeners (audit log, flow table, metrics)."""

    event: str
    fields: dict[str, Any]


WHOLE_REQUEST_CAP = 16 * 1024 * 1024   # keep a request whole up to this, without proxy.max_held_bytes
MAX_FIELDS = 16          # JSON field paths listed per detector and request
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}")
_MEDIA_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]{1,64}/[a-z0-9!#$&^_.+-]{1,64}")


@dataclass(frozen=True)
class InterceptTls:
    """Terminate the client's TLS with a leaf for `host`; `client_hello` is what the client sent
    so far (the proxy feeds it to the TLS session first). From now on `client_data` gets the
    decrypted bytes, and the upstream connection is TLS to `host`, verified."""

    host: str
    client_hello: bytes


@dataclass(frozen=True)
class SendClient:
    """Answer the client ourselves (an HTTP response on an intercepted flow), then close both
    sides. The destination gets nothing more."""

    data: bytes
    reason: str


Command = (ConnectUpstream | SendUpstream | HalfCloseUpstream | Hold | Reset | Emit
           | InterceptTls | SendClient)


# ---------------------------------------------------------------------------- collaborators
class ScanStreamLike(Protocol):
    safe_offset: int

    def feed(self, data: bytes) -> list[Detection]: ...

    def close(self) -> list[Detection]: ...

    def flush_idle(self, final: bool) -> list[Detection]: ...


class PolicyLike(Protocol):
    needs_host: bool

    def decide_connect(self, process: Any, dest: Destination) -> Any: ...

    def decide_content(self, cd: Any, detections: list[Detection]) -> Any: ...


def mask_detection(buf: bytearray, offset: int, det: Detection, masker: Any) -> None:
    """Rewrite a detection's bytes in `buf` (which starts at absolute `offset`) in place.

    A detection may begin before `offset` (its first bytes already forwarded): only after a
    final idle flush, the documented limit of `ScanStream.flush_idle`. Then only its
    remaining bytes are masked. They are masked as the tail of the whole span with the
    forwarded part replaced by NUL bytes, so the masker keeps nothing it would not keep in
    the whole value: it never recognizes a "public prefix" in a fragment (an AWS key id
    fragment would otherwise keep 4 secret letters), while an e-mail's domain stays readable.
    (Before, a negative start sliced from the END of `buf` and masked the wrong bytes.)"""
    already = max(0, offset - det.start)
    lo, hi = det.start - offset + already, det.end - offset
    if hi <= lo:
        return
    masked = masker(b"\0" * already + bytes(buf[lo:hi]), det.detector)
    buf[lo:hi] = masked[already:]


def _unique(detections: Any) -> tuple[Detection, ...]:
    """One detection per fingerprint, first occurrence kept (a hold lists each value once)."""
    seen: dict[str, Detection] = {}
    for d in detections:
        seen.setdefault(d.fingerprint, d)
    return tuple(seen.values())


class Phase(str, enum.Enum):
    SNIFFING = "sniffing"          # waiting for SNI/Host before the connect-time decision
    CONNECTING = "connecting"      # allowed, upstream not connected yet
    FORWARDING = "forwarding"
    HELD = "held"
    CLOSED = "closed"


_STRENGTH = {Action.ALLOW: 0, Action.MASK: 1, Action.HOLD: 2, Action.BLOCK: 3}


@dataclass
class Relay:
    """One flow's client->server path. Create one per accepted connection."""

    flow: FlowInfo
    policy: PolicyLike
    stream: ScanStreamLike
    masker: Any                       # scan.mask.mask_span
    redact: Callable[[bytes], bytes] | None = None   # scan.redact.redact_bytes with the engine
    interceptor: Any = None           # tls.select.InterceptSelector (None: never intercept)
    catalog: Any = None               # catalog.Catalog (None: no provider labels)
    max_decoded: int = 16 * 1024 * 1024
    max_held: int | None = None       # proxy.max_held_bytes: the HTTP codec's cap too
    _let_out_request: int | None = None   # view start of an open request a pause released
    phase: Phase = Phase.SNIFFING
    pending: bytearray = field(default_factory=bytearray)   # received, not yet forwarded
    forwarded: int = 0                # absolute offset of pending[0]
    received: int = 0
    approved_by: Decision | None = None
    covered: set[str] = field(default_factory=set)      # fingerprints a human approved
    _shown: tuple[Detection, ...] = ()                  # findings shown in the open hold
    _unshown: list[Detection] = field(default_factory=list)   # found while held, not shown
    _unshown_verdict: Verdict | None = None
    hold_open: bool = False
    client_done: bool = False
    upstream_open: bool = False
    connect_sent: bool = False        # ConnectUpstream already given (at most once per flow)
    half_closed: bool = False
    _sniffed: str | None = None       # the host name found ("" for none), None while looking
    _sniff_buf: bytearray = field(default_factory=bytearray)
    _connect_decision: Any = None
    codec: HttpRequestCodec | None = None      # set once the flow is intercepted
    _provider: Any = None
    _requests: list[RequestHead] = field(default_factory=list)   # recent, for JSON fields
    _request_holds: list[Verdict] = field(default_factory=list)  # asked while a hold was open
    _done_requests: list[RequestHead] = field(default_factory=list)  # not yet labelled
    # Per recent request (by view offset): whether the client had been answered since its
    # previous request when this one began, so a response of ours is read as this one's.
    _in_turn: dict[int, bool] = field(default_factory=dict)
    _down_at_head: int = -1           # flow.bytes_down when the last request head arrived

    # ------------------------------------------------------------------ events
    def start(self) -> list[Command]:
        """The connection was accepted and its process and destination are known."""
        self._label_provider()
        out: list[Command] = [Emit("flow.open", {})]
        if self.policy.needs_host or self._may_intercept:
            self.phase = Phase.SNIFFING
            return out
        return out + self._decide_connect()

    def sniff_timeout(self) -> list[Command]:
        """The client sent nothing naming a host in time (e.g. a server-speaks-first protocol)."""
        if self.phase is not Phase.SNIFFING:
            return []
        # Go on looking for the name (for the audit log) from the FIRST byte: the head may
        # have started before the timeout, and sniffing only later chunks would never see it.
        self._sniff_buf = bytearray(self.pending)
        return self._decide_then_scan_pending()

    def client_data(self, data: bytes) -> list[Command]:
        if self.phase is Phase.CLOSED or not data:
            return []
        self.received += len(data)
        self.flow.bytes_up = self.received
        if self.codec is not None:
            try:
                view, events = self.codec.feed(data)
            except Exception as exc:          # noqa: BLE001 - hostile input must not escape
                return self._http_error(exc)
            return self._http_view(view, events)
        self.pending += data
        if self.phase is Phase.SNIFFING:
            if self._sniff(bytes(self.pending)) is NEED_MORE:
                return []
            return self._decide_then_scan_pending()
        if self._sniffed is None:
            # Still looking for the name: no rule needed it, or the client waited past
            # sniff_timeout before sending it. The audit log shows it either way, and host
            # rules are checked again before any byte goes out (see _forward).
            self._sniff_buf += data
            host = self._sniff(bytes(self._sniff_buf))
            if host and self._may_intercept and self.forwarded == 0 \
                    and self.pending[:1] == b"\x16":
                out = self._late_client_hello(host)
                if self.phase is Phase.CLOSED:
                    return out
            if host and self.policy.needs_host:
                out = self._recheck_with_host()
                if self.phase is Phase.CLOSED:
                    return out
                return out + self._scan(data)
        return self._scan(data)

    def _late_client_hello(self, host: str) -> list[Command]:
        """A ClientHello that arrived after sniff_timeout, for a host the selector opens: the
        stream is already being scanned as sent, so it can no longer be intercepted. Nothing
        of it has left (see _forward): fail closed rather than let it through unopened."""
        from .tls.select import PASSTHROUGH
        if self.interceptor.choose(self.flow.process, host) == PASSTHROUGH:
            return []
        verdict = Verdict(Action.BLOCK, "tls.intercept",
                          "the TLS ClientHello arrived after proxy.sniff_timeout: too late to "
                          "intercept this host")
        self.flow.verdict = verdict
        return [Emit("flow.block", {"verdict": verdict.to_dict()})] + self._reset(verdict.reason)

    def client_idle(self, final: bool) -> list[Command]:
        """The client paused. Release what cannot be the start of a secret (`final=False`), or
        settle the tail for good after a longer pause (`final=True`): request/response
        protocols must not deadlock on the hold-back window."""
        if self.phase in (Phase.CLOSED, Phase.SNIFFING) or not self.pending:
            return []
        if final and self.codec is not None:
            # A request whose body stops arriving (a client waiting on `Expect: 100-continue`,
            # a slow streamed upload) is released as it is scanned after this pause.
            self._let_out_request = self.codec.open_request_start
        return self._after_detections(self.stream.flush_idle(final))

    def client_eof(self) -> list[Command]:
        """The client half-closed: everything it sent can now be judged completely."""
        if self.phase is Phase.CLOSED:
            return []
        self.client_done = True
        if self.phase is Phase.SNIFFING:
            out = self._decide_then_scan_pending()
            if self.phase is Phase.CLOSED:
                return out
            return out + self._finish_stream()
        if self.codec is not None:
            view, events = self.codec.eof()
            out = self._http_view(view, events)
            if self.phase is Phase.CLOSED:
                return out
            return out + self._finish_stream()
        return self._finish_stream()

    def upstream_connected(self) -> list[Command]:
        self.upstream_open = True
        if self.phase is Phase.CONNECTING:
            self.phase = Phase.FORWARDING
            self.flow.state = FlowState.FORWARDING
        return self._forward()

    def decided(self, decision: Decision) -> list[Command]:
        """A human (or the hold timeout) decided on the hold this relay asked for."""
        self.hold_open = False
        if self.phase is Phase.CLOSED:
            return []
        # The hold registry already audited the decision (with who decided and why).
        out: list[Command] = []
        if not decision.approved:
            self.flow.state = FlowState.EXPIRED if decision.timed_out else FlowState.DENIED
            why = ("hold expired" if decision.timed_out else "hold aborted" if decision.aborted
                   else f"denied by {decision.by_user}")
            if not decision.aborted and self._refusable() is not None:
                return out + self._close([SendClient(http_refusal(decision), why)])
            return out + self._reset(why)
        self.approved_by = decision
        self.flow.state = FlowState.APPROVED
        self.covered.update(d.fingerprint for d in self._shown)
        unseen = _unique(d for d in self._unshown if d.fingerprint not in self.covered)
        self._unshown.clear()
        if unseen:
            # Found while the hold was open: the approver never saw these. Ask again before
            # any byte leaves (nothing was forwarded since the hold opened).
            assert self._unshown_verdict is not None
            return out + self._hold(self._unshown_verdict, unseen)
        if self._request_holds:
            # A later request that a request rule holds arrived while this hold was open.
            return out + self._hold(self._request_holds.pop(0), ())
        if not self.upstream_open:
            self.phase = Phase.CONNECTING
            # A content hold can open after ConnectUpstream was given but before the
            # connection completed: ask for it only once (upstream_connected will follow).
            return out + self._connect()
        self.phase = Phase.FORWARDING
        return out + self._forward()

    def upstream_tls_failed(self, reason: str) -> list[Command]:
        """The destination's certificate did not verify: a blocked flow, never a downgrade.
        The client (whose TLS we terminated) gets a 502 saying so."""
        if self.phase is Phase.CLOSED:
            return []
        verdict = Verdict(Action.BLOCK, "tls.verify",
                          f"upstream TLS verification failed: {reason}")
        self.flow.verdict = verdict
        self.flow.state = FlowState.BLOCKED
        body = {"error": "egressguard: the destination's TLS certificate did not verify",
                "host": self.flow.destination.host, "flow_id": self.flow.flow_id}
        return self._close([Emit("tls.upstream_verify_failed", {"error": reason}),
                            Emit("flow.block", {"verdict": verdict.to_dict()}),
                            SendClient(http_response(502, "Bad Gateway", body), verdict.reason)])

    def intercept_failed(self, reason: str) -> list[Command]:
        """The client refused our certificate (pinning, or it does not trust the host CA)."""
        if self.phase is Phase.CLOSED:
            return []
        ttl: float | None = None
        if self.interceptor is not None:
            self.interceptor.record_failure(self.flow.process, self.flow.destination.host)
            ttl = self.interceptor.ttl_s
        # The flow is cut here and nothing reached the destination: a blocked flow, by the
        # interception itself (not the connect-time verdict, which no longer describes it).
        self.flow.verdict = Verdict(Action.BLOCK, "tls.intercept",
                                    f"client refused the interception certificate: {reason}")
        self.flow.state = FlowState.BLOCKED
        out: list[Command] = [Emit("tls.intercept_failed", {
            "error": reason,
            "next_attempts": self.interceptor.on_failure if self.interceptor else "block",
            "remembered_for_s": ttl,
            "remembered_for": "this uid, executable, cgroup, unit and container, this host"})]
        return out + self.abort("client refused the interception certificate")

    def abort(self, reason: str) -> list[Command]:
        """Something outside the relay failed (upstream unreachable, buffer cap, shutdown)."""
        if self.phase is Phase.CLOSED:
            return []
        return self._reset(reason)

    # ------------------------------------------------------------------ decisions
    def _sniff(self, prefix: bytes) -> str | None:
        """Look for SNI/Host in the first bytes; record the name on the flow once found."""
        host = sniff_host(prefix[:MAX_SNIFF_BYTES])
        if host is NEED_MORE:
            return NEED_MORE
        if host:
            host = self._host_to_record(prefix[:MAX_SNIFF_BYTES], host)
        self._sniffed = host
        self._sniff_buf = bytearray()
        if host:
            d = self.flow.destination
            self.flow.destination = Destination(d.ip, d.port, host, d.transport, d.provider,
                                                client_alpn(prefix))
            self._label_provider()
        return host

    def _label_provider(self) -> None:
        if self.catalog is None:
            return
        d = self.flow.destination
        self._provider = self.catalog.provider_for(d.host, d.ip, d.port)
        if self._provider is not None and d.provider != self._provider.id:
            self.flow.destination = Destination(d.ip, d.port, d.host, d.transport,
                                                self._provider.id, d.alpn)

    @property
    def _may_intercept(self) -> bool:
        return self.interceptor is not None and self.interceptor.enabled

    def _host_to_record(self, prefix: bytes, host: str) -> str:
        """The sniffed name with every finding in it masked, as policy and records see it.

        An agent can carry a secret in a host name (`<key>.attacker.example`, in the Host
        header or the SNI), and the name goes to the audit log and to egressctl. The sniffer
        lower-cases it while detectors are case-sensitive, so the prefix is redacted as sent
        (with its context) and each place the name occurs in it, any case, is compared: a
        byte masked in any occurrence is masked in the name. Host globs still match, since
        masking keeps the length and the labels without findings."""
        if self.redact is None:
            return host
        masked_prefix = self.redact(prefix)
        if masked_prefix == prefix:
            return host
        needle = host.encode("ascii", "replace")
        name = bytearray(needle)
        lowered = prefix.lower()
        at = lowered.find(needle)
        while at >= 0:
            for i in range(len(name)):
                if masked_prefix[at + i] != prefix[at + i]:
                    name[i] = ord("*")
            at = lowered.find(needle, at + 1)
        return name.decode("ascii")

    def _decide_connect(self) -> list[Command]:
        cd = self.policy.decide_connect(self.flow.process, self.flow.destination)
        self._connect_decision = cd
        verdict: Verdict = cd.verdict
        self.flow.verdict = verdict
        self.flow.state = FlowState.INSPECTING
        if verdict.action is Action.BLOCK:
            return [Emit("flow.block", {"verdict": verdict.to_dict()})] + self._reset(verdict.reason)
        if verdict.action is Action.HOLD:
            return self._hold(verdict, ())
        self.phase = Phase.CONNECTING
        return self._connect()

    def _recheck_with_host(self) -> list[Command]:
        """The name arrived after the connect-time decision was taken without it: decide
        again, so waiting past sniff_timeout cannot get around a host rule. A stricter verdict
        (block, hold) wins; an approval already given stands."""
        if self.approved_by is not None:
            return []
        cd = self.policy.decide_connect(self.flow.process, self.flow.destination)
        self._connect_decision = cd
        verdict: Verdict = cd.verdict
        if verdict.action is Action.BLOCK:
            self.flow.verdict = verdict
            return [Emit("flow.block", {"verdict": verdict.to_dict()})] + self._reset(
                verdict.reason)
        if verdict.action is Action.HOLD and self.phase is not Phase.HELD:
            return self._hold(verdict, ())
        return []

    def _connect(self) -> list[Command]:
        if self.connect_sent:
            return []
        self.connect_sent = True
        return [ConnectUpstream()]

    def _decide_then_scan_pending(self) -> list[Command]:
        """Leave SNIFFING: decide on the destination, then scan what arrived meanwhile, once."""
        out = self._maybe_intercept()
        if self.phase is Phase.CLOSED:
            return out
        out += self._decide_connect()
        if self.phase is Phase.CLOSED or not self.pending:
            return out
        return out + self._scan(bytes(self.pending))

    def _maybe_intercept(self) -> list[Command]:
        """A TLS ClientHello to a host the selector picks: open it (InterceptTls), refuse it
        (a client that refused our certificate before, with on_intercept_failure: block), or
        leave it alone (passthrough: SNI still recorded and usable in rules)."""
        host = self._sniffed
        if not self._may_intercept or not host or self.pending[:1] != b"\x16":
            return []
        from .tls.select import BLOCK, INTERCEPT, UNINSPECTED
        choice = self.interceptor.choose(self.flow.process, host)
        if choice == UNINSPECTED:
            # Selected for interception, let through unopened because this identity refused
            # our certificate before (on_intercept_failure: passthrough): never silently.
            self.flow.tls_passthrough = "intercept_failure"
            failed_at = self.interceptor.failed_at(self.flow.process, host)
            return [Emit("tls.passthrough", {
                "reason": "intercept_failure", "sni": host,
                "detail": "this identity refused the interception certificate for this host "
                          "before; tls.on_intercept_failure is passthrough: NOT inspected",
                "failed_at": failed_at})]
        if choice == BLOCK:
            verdict = Verdict(Action.BLOCK, "tls.on_intercept_failure",
                              "this process refused the interception certificate for this "
                              "host before; tls.on_intercept_failure is block")
            self.flow.verdict = verdict
            return [Emit("flow.block", {"verdict": verdict.to_dict()})] + self._reset(
                verdict.reason)
        if choice != INTERCEPT:
            return []
        hello = bytes(self.pending)
        self.pending.clear()
        self.received = 0
        self.flow.bytes_up = 0
        self.flow.intercepted = True
        self.codec = HttpRequestCodec(max_decoded=self.max_decoded, max_held=self.max_held)
        return [Emit("tls.intercept", {"sni": host}), InterceptTls(host, hello)]

    @property
    def buffered(self) -> int:
        """Bytes this flow keeps: pending plus the HTTP codec's (a held compressed request),
        what the proxy's held-buffer caps count."""
        return len(self.pending) + (self.codec.buffered if self.codec is not None else 0)

    @property
    def codec_holding(self) -> bool:
        """The codec is receiving a compressed request, kept whole until it ends."""
        return self.codec is not None and self.codec.receiving_whole

    def refuse_held(self, reason: str) -> list[Command]:
        """The proxy's held-buffer total is reached while the codec holds a request whole."""
        if self.phase is Phase.CLOSED:
            return []
        verdict = Verdict(Action.BLOCK, "proxy.max_held_total", reason)
        self.flow.verdict = verdict
        return [Emit("flow.block", {"verdict": verdict.to_dict()})] + self._reset(reason)

    # ------------------------------------------------------------------ HTTP (intercepted)
    def _http_error(self, exc: Exception) -> list[Command]:
        # HttpError texts never echo header values (httpcodec); anything else the codec
        # raised on hostile input (a bug) is named by its type only, and still fails closed.
        why = str(exc) if isinstance(exc, HttpError) else \
            f"the request could not be parsed ({type(exc).__name__})"
        verdict = Verdict(Action.BLOCK, "http", f"cannot inspect the request: {why}")
        self.flow.verdict = verdict
        self.flow.state = FlowState.BLOCKED
        return [Emit("flow.block", {"verdict": verdict.to_dict()})] + self._reset(verdict.reason)

    def _http_view(self, view: bytes, events: list[Any]) -> list[Command]:
        """New decoded bytes and request events: request rules first (before a byte of the
        request can leave), then scan the view, then label finished requests."""
        out: list[Command] = []
        self.pending += view
        for ev in events:
            if isinstance(ev, HeadDone):
                out += self._on_request_head(ev.request)
                if self.phase is Phase.CLOSED:
                    return out
        if self.phase is Phase.SNIFFING:
            return out
        out += self._scan(view) if view else self._forward()
        if self.phase is Phase.CLOSED:
            return out
        self._done_requests += [ev.request for ev in events if isinstance(ev, RequestDone)]
        return out + self._label_requests()

    def _label_requests(self, force: bool = False) -> list[Command]:
        """`http.request` for each finished request, once the scanner has passed its end (so
        every finding in it is known and gets its JSON field), or now when the flow ends."""
        out: list[Command] = []
        while self._done_requests and (force or self.stream.safe_offset
                                       >= self._done_requests[0].body_end):
            out += self._on_request_done(self._done_requests.pop(0))
        return out

    def _describe(self, req: RequestHead) -> Any:
        assert self.catalog is not None
        return self.catalog.describe(self._provider, req.method, req.path, req.body,
                                     req.content_type)

    def _on_request_head(self, req: RequestHead) -> list[Command]:
        self._requests = (self._requests + [req])[-8:]
        # Response bytes arrived since the previous head: the client waited for its answer
        # (the proxy counts bytes_down before the client can read them).
        self._in_turn = {r.view_start: self._in_turn.get(r.view_start, False)
                         for r in self._requests[:-1]}
        self._in_turn[req.view_start] = (self._down_at_head < 0
                                         or self.flow.bytes_down > self._down_at_head)
        self._down_at_head = self.flow.bytes_down
        decide = getattr(self.policy, "decide_request", None)
        if decide is None or self.catalog is None or self._connect_decision is None:
            return []
        verdict = decide(self._connect_decision, self._describe(req))
        if verdict is None or verdict.action is Action.ALLOW:
            return []
        if verdict.action is Action.BLOCK:
            self.flow.verdict = verdict
            return [Emit("flow.block", {"verdict": verdict.to_dict()})] + self._reset(
                verdict.reason)
        if verdict.action is Action.HOLD:
            if self.hold_open or self.phase is Phase.HELD:
                self._request_holds.append(verdict)
                return []
            return self._hold(verdict, ())
        return []

    def _on_request_done(self, req: RequestHead) -> list[Command]:
        info = self._describe(req) if self.catalog is not None else None
        spans = self._spans(req)
        fields: dict[str, list[str]] = {}
        for d in req.detections:
            if d.start < req.body_end:
                path = _field(spans, req, d) or ("(head)" if d.start < req.body_start
                                                 else "(body)")
                paths = fields.setdefault(d.detector, [])
                if path not in paths and len(paths) < MAX_FIELDS:
                    paths.append(path)
        rec: dict[str, Any] = {
            "method": req.method, "path": self._masked_path(req),
            "content_type": self._recordable(req.content_type, _MEDIA_TYPE),
            "content_encoding": ",".join(req.encodings),
            "body_bytes": req.raw_body_len, "decoded_bytes": req.body_end - req.body_start,
            "fields": fields}
        if info is not None:
            rec.update(info.to_dict())
            rec["model"] = self._recordable(rec.get("model", ""), _MODEL_NAME)
        req.body = b""            # labelled: the captured body is not kept (memory)
        return [Emit("http.request", rec)]

    def _recordable(self, value: str, shape: re.Pattern[str]) -> str:
        """A request-derived string (model, content type) as the audit log may show it: the
        client chose it, so it can carry a secret. Verbatim only when it has the expected
        shape and the detectors find nothing in it; otherwise by its length only."""
        if not value:
            return value
        raw = value.encode("utf-8", "surrogateescape")
        if shape.fullmatch(value) and (self.redact is None or self.redact(raw) == raw):
            return value
        return f"<redacted, {len(raw)} bytes>"

    def _spans(self, req: RequestHead) -> list[tuple[int, int, str]]:
        """The finished request's JSON string spans, walked once (keys holding a finding are
        masked in paths). Empty while the request is incomplete or not JSON."""
        if not req.done or (req.content_type and "json" not in req.content_type):
            return []
        if req.spans is None:
            base = req.body_start
            found = sorted((d.start - base, d.end - base) for d in req.detections
                           if d.end > base)
            starts = [a for a, _ in found]
            reach = list(itertools.accumulate((b for _, b in found), max))

            def hidden(s: int, e: int) -> bool:
                i = bisect.bisect_left(starts, e)
                return i > 0 and reach[i - 1] > s

            req.spans = string_spans(req.body, hidden)
        return req.spans

    def _masked_path(self, req: RequestHead) -> str:
        """The path (never the query), with every finding in it masked."""
        path = req.path
        if not req.detections:
            return path
        # Offset of the path in the view: after "METHOD ", and after scheme://host for an
        # absolute-form target.
        line_start = req.view_start + len(req.method) + 1 + max(0, req.target.find(path))
        buf = bytearray(path.encode("latin-1", "replace"))
        for d in req.detections:
            if d.start < line_start + len(buf) and d.end > line_start:
                mask_detection(buf, line_start, d, self.masker)
        return buf.decode("latin-1")

    def _request_of(self, det: Detection) -> RequestHead | None:
        return self._request_at(det.start)

    def _request_at(self, offset: int) -> RequestHead | None:
        for req in reversed(self._requests):       # newest first: the first that starts
            if offset >= req.view_start:           # at or before the offset holds it
                return req
        return None

    def _refusable(self) -> RequestHead | None:
        """The held request, if a response of ours would be read as its answer: intercepted
        HTTP, the request's bytes still here (held), the last request the client sent (the
        first one not released is the newest), and the client not pipelining."""
        if self.codec is None or not self.pending or not self._requests:
            return None
        req = self._request_at(self.forwarded)
        if req is not self._requests[-1] or not self._in_turn.get(req.view_start, False):
            return None
        return req

    def _field_of(self, det: Detection) -> str | None:
        """Known at once only when the request was complete (else `http.request` has it)."""
        req = self._request_of(det)
        return _field(self._spans(req), req, det) if req is not None else None

    def _scan(self, data: bytes) -> list[Command]:
        return self._after_detections(self.stream.feed(data))

    def _finish_stream(self) -> list[Command]:
        return self._after_detections(self.stream.close())

    def _after_detections(self, detections: list[Detection]) -> list[Command]:
        out: list[Command] = []
        if detections:
            out += self._act_on(detections)
            if self.phase is Phase.CLOSED:
                return out
        out += self._forward()
        return out + self._label_requests() if self._done_requests else out

    def _act_on(self, detections: list[Detection]) -> list[Command]:
        self.flow.detections.extend(detections)
        if self.codec is not None:
            for d in detections:
                req = self._request_of(d)
                if req is not None:
                    req.detections.append(d)
        content = self.policy.decide_content(self._connect_decision, detections)
        verdict: Verdict = content.verdict
        action = verdict.action
        to_ask = _unique(d for d in content.hold if d.fingerprint not in self.covered)
        if action is Action.HOLD and self.approved_by is not None and not to_ask:
            # Every finding a hold rule named was shown to the human who released this flow
            # (the same secret again on a keep-alive connection): recorded, not re-asked.
            action = Action.ALLOW
            verdict = Verdict(Action.ALLOW, verdict.rule,
                              f"{verdict.reason}; covered by the approval already given")
        masked = [d for d in content.mask if d.end > self.forwarded]
        for det in masked:
            mask_detection(self.pending, self.forwarded, det, self.masker)
        out: list[Command] = [Emit("flow.detect", {
            "detections": [self._detection_dict(d) for d in detections],
            "verdict": verdict.to_dict(),
            "masked": [d.to_dict() for d in masked],
        })]
        current = self.flow.verdict.action if self.flow.verdict else Action.ALLOW
        if _STRENGTH[action] >= _STRENGTH[current] or action is Action.BLOCK:
            self.flow.verdict = verdict
        if action is Action.BLOCK:
            self.flow.state = FlowState.BLOCKED
            return out + [Emit("flow.block", {"verdict": verdict.to_dict()})] + self._reset(
                verdict.reason)
        if action is Action.HOLD and (self.hold_open or self.phase is Phase.HELD):
            shown = {d.fingerprint for d in self._shown}
            self._unshown += [d for d in to_ask if d.fingerprint not in shown]
            self._unshown_verdict = self._unshown_verdict or verdict
            return out
        if action is Action.HOLD:
            return out + self._hold(verdict, tuple(detections))
        return out

    def _detection_dict(self, det: Detection) -> dict[str, Any]:
        d = det.to_dict()
        if self.codec is not None:
            path = self._field_of(det)
            if path:
                d["field"] = path
        return d

    def _hold(self, verdict: Verdict, detections: tuple[Detection, ...]) -> list[Command]:
        self.phase = Phase.HELD
        self.hold_open = True
        self._shown = detections
        self._unshown_verdict = None
        self.flow.state = FlowState.HELD
        self.flow.verdict = verdict
        # The hold registry audits `flow.hold` with the hold id once it has one.
        return [Hold(verdict, detections)]

    def _forward(self) -> list[Command]:
        """Send every byte that is both scanned-safe and allowed."""
        if self.phase is not Phase.FORWARDING or not self.upstream_open:
            return []
        if self._sniffed is None and (self.policy.needs_host or self._may_intercept) \
                and not self.client_done:
            return []      # a host rule may still apply once the name is complete
        safe = min(self.stream.safe_offset, self.forwarded + len(self.pending))
        if self.codec is not None and not self.client_done:
            safe = self._whole_request_limit(safe)
        out: list[Command] = []
        n = safe - self.forwarded
        chunk = b""
        if n > 0:
            if n == len(self.pending):
                chunk = bytes(self.pending)
                self.pending.clear()
            else:
                # One copy, not two: slicing a bytearray copies, and bytes() copies again.
                # (A 256 KiB read costs 52 -> 38 us here; the view is released before del.)
                with memoryview(self.pending) as view:
                    chunk = view[:n].tobytes()
                del self.pending[:n]
            self.forwarded = safe
        wire = self.codec.wire(chunk) if self.codec is not None else chunk
        if wire:
            self.flow.bytes_delivered += len(wire)
            out.append(SendUpstream(wire))
        if self.client_done and not self.pending and not self.half_closed and not (
                self.codec is not None and self.codec.holding):
            self.half_closed = True
            out.append(HalfCloseUpstream())
        return out

    def _whole_request_limit(self, safe: int) -> int:
        """An intercepted HTTP request goes out whole once its body is scanned, not head first:
        so a request held for a finding in its body leaves nothing at the destination, not
        even its head. Released as scanned only once the client pauses for
        `proxy.partial_wait` in the middle of the body, or the request outgrows
        `proxy.max_held_bytes` (it cannot be kept whole). A compressed request needs nothing
        here: the codec keeps it whole, head included, until it is complete."""
        assert self.codec is not None
        start = self.codec.open_request_start
        if start is None or self.codec.receiving_whole or start == self._let_out_request:
            return safe
        if len(self.pending) >= (self.max_held or WHOLE_REQUEST_CAP):
            self._let_out_request = start        # too large to keep whole: it streams from now on
            return safe
        return min(safe, max(start, self.forwarded))

    def _reset(self, reason: str) -> list[Command]:
        if self.flow.state not in (FlowState.DENIED, FlowState.EXPIRED):
            self.flow.state = FlowState.BLOCKED
        return self._close([Reset(reason)])

    def _close(self, final: list[Command]) -> list[Command]:
        """End the flow with `final` (a Reset, or our own answer): label the requests seen,
        drop what was never released."""
        labels = self._label_requests(force=True) if self._done_requests else []
        self.phase = Phase.CLOSED
        self.pending.clear()
        return labels + final


def _field(spans: list[tuple[int, int, str]], req: RequestHead, det: Detection) -> str | None:
    """The JSON field of `det` (view offsets) inside `req`'s decoded body, if any."""
    if not spans or det.start < req.body_start:
        return None
    return field_at(spans, det.start - req.body_start, det.end - req.body_start)


def http_response(status: int, reason: str, body: dict[str, Any]) -> bytes:
    """A complete HTTP/1.1 JSON response that closes the connection (for SendClient)."""
    import json
    data = json.dumps(body, sort_keys=True).encode()
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode() + data
