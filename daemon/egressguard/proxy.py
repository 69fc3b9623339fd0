"""The transparent proxy: sockets only. Every decision is the relay's (relay.py).

The probes rewrite a guarded process's connect() to land here. On accept the proxy asks the
kernel maps for the original destination and the process (keyed by the client's address and
port, as the proxy sees it as its peer), builds a `Relay`, and then just moves bytes:
client -> relay -> upstream for what the relay releases, upstream -> client untouched.

Intercepted TLS (the relay says `InterceptTls`): the client's TLS is terminated here with a
`tls.pipe.TlsPipe` (ssl.MemoryBIO: the ClientHello was already read while sniffing) presenting
a leaf minted by the host CA; the relay then sees plaintext. The upstream connection is TLS to
the same name, verified against the system trust store (asyncio's own TLS); a verification
failure is the relay's `upstream_tls_failed` (a blocked flow and a 502 to the client).

Backpressure: the client is read only while the relay can take more (upstream drained, or the
held buffer below its cap); the upstream is read only while the client drains. Reads are large
(256 KiB) and the relay forwards slices of one buffer, because per-chunk copies and small reads
are what make an asyncio relay slow (a naive one measured 0.2-0.4x of direct here).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import itertools
import logging
import socket
import ssl
import struct
import termios
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from .events import EventBus
from .model import Decision, Destination, FlowInfo, FlowState, Process
from .relay import (ConnectUpstream, Emit, HalfCloseUpstream, Hold, InterceptTls, Phase, Relay,
                    Reset, SendClient, SendUpstream)
from .scan.redact import redact_bytes
from .tls.pipe import TlsFailed, TlsPipe

log = logging.getLogger("egressguard.proxy")

READ_SIZE = 256 * 1024
HOLD_PROBE_INTERVAL = 0.25   # seconds between checks that a held flow's client is still there
HELD_CAP_RECHECK = 0.25      # seconds between checks of the total cap by a flow paused on it
ANSWER_LINGER = 5.0          # seconds we read (and drop) a client's bytes after answering it
_TCP_CLOSE = 7               # tcpi_state after a reset (linux/tcp_states.h)


@dataclass(frozen=True)
class ProxyLimits:
    """Bounds that keep hostile clients from hurting the daemon."""

    max_held_bytes: int = 16 * 1024 * 1024   # per flow, while held / connecting / sniffing
    max_held_total: int = 256 * 1024 * 1024  # all flows together; past it new flows are refused
    sniff_timeout: float = 1.0               # wait this long for SNI/Host when a rule needs it
    partial_wait: float = 0.5                # pause after which a partial-match tail is settled
    connect_timeout: float = 10.0
    max_flows: int = 4096


@dataclass(frozen=True)
class Origin:
    """What the kernel recorded at connect(): where the process wanted to go, and who it is."""

    destination: Destination
    process: Process


OriginLookup = Callable[[str, int], Origin | None]


class GuardProxy:
    """Accepts redirected connections and runs one `FlowHandler` per connection."""

    def __init__(self, *, listen4: tuple[str, int], listen6: tuple[str, int] | None,
                 lookup_origin: OriginLookup, engine_provider: Callable[[], Any],
                 policy_provider: Callable[[], Any], masker: Callable[[bytes, str], bytes],
                 holds: Any, bus: EventBus, mark: int, limits: ProxyLimits,
                 ca: Any = None, upstream_tls: ssl.SSLContext | None = None,
                 interceptor: Any = None, catalog: Any = None,
                 max_decoded: int = 16 * 1024 * 1024):
        self.listen4, self.listen6 = listen4, listen6
        self.lookup_origin = lookup_origin
        self.engine_provider = engine_provider
        self.policy_provider = policy_provider
        self.masker = masker
        self.holds = holds
        self.bus = bus
        self.mark = mark
        self.limits = limits
        self.ca = ca                              # tls.ca.HostCA (interception)
        self.upstream_tls = upstream_tls
        self.interceptor = interceptor if ca is not None else None
        self.catalog = catalog
        self.max_decoded = max_decoded
        self.flows: dict[str, FlowInfo] = {}
        self.held_total = 0          # bytes buffered in all relays (kept by FlowHandler.execute)
        self.recent: deque[FlowInfo] = deque(maxlen=500)
        self._servers: list[asyncio.base_events.Server] = []
        self._handlers: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)
        self._boot = f"{int(time.time()):x}"

    async def start(self) -> None:
        """Listen on the proxy addresses. Raises OSError (e.g. address in use) for the caller to
        turn into a clear message."""
        self._servers.append(await asyncio.start_server(
            self._accept, self.listen4[0], self.listen4[1], reuse_address=True,
            limit=READ_SIZE, backlog=1024))
        if self.listen6:
            self._servers.append(await asyncio.start_server(
                self._accept, self.listen6[0], self.listen6[1], reuse_address=True,
                limit=READ_SIZE, backlog=1024, family=socket.AF_INET6))

    async def stop(self) -> None:
        for srv in self._servers:
            srv.close()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)
        for srv in self._servers:
            with contextlib.suppress(Exception):
                await srv.wait_closed()

    def all_flows(self) -> list[FlowInfo]:
        """Open flows first, then recently closed ones (for `egressctl flows`)."""
        return list(self.flows.values()) + list(reversed(self.recent))

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            if len(self.flows) >= self.limits.max_flows:
                self.bus.emit("proxy.refused", None, {"reason": "too many open flows"})
                _abort(writer)
                return
            if self.held_total >= self.limits.max_held_total:
                # Memory for held bytes is spent: a new flow could only add to it. Refuse it
                # loudly (RST + audit) rather than accept what cannot be buffered.
                self.bus.emit("proxy.refused", None, {
                    "reason": f"held-buffer total cap reached ({self.held_total} of "
                              f"proxy.max_held_total={self.limits.max_held_total} bytes): new "
                              "flows are refused until held flows are decided"})
                _abort(writer)
                return
            await FlowHandler(self, reader, writer).run()
        except Exception:  # noqa: BLE001 - one bad flow must never take the daemon down
            log.exception("flow handler failed")
            _abort(writer)
        finally:
            self._handlers.discard(task)

    def new_flow_id(self) -> str:
        return f"f-{self._boot}-{next(self._ids)}"


class FlowHandler:
    """Runs one flow: executes relay commands, pumps both directions."""

    def __init__(self, proxy: GuardProxy, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter):
        self.proxy = proxy
        self.limits = proxy.limits
        self.c_reader, self.c_writer = reader, writer
        self.u_reader: asyncio.StreamReader | None = None
        self.u_writer: asyncio.StreamWriter | None = None
        self.relay: Relay | None = None
        self.flow: FlowInfo | None = None
        self.closed = asyncio.Event()
        self.wakeup = asyncio.Event()          # relay state changed (decision, upstream ready)
        self.tasks: set[asyncio.Task[Any]] = set()
        self.hold: Any = None                  # the approvals Waiter while held inline
        self.reset_reason: str | None = None
        self._last_data = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None
        self._timers: list[asyncio.TimerHandle] = []
        self._held_counted = 0               # this flow's share of proxy.held_total
        self.client_tls: TlsPipe | None = None    # set when the relay intercepts
        self.answered = False                     # we answered the client ourselves (SendClient)
        self.tls_host: str | None = None          # upstream TLS server name (intercepted)

    # ------------------------------------------------------------------ life cycle
    async def run(self) -> None:
        peer = self.c_writer.get_extra_info("peername")
        origin = await self._find_origin(peer[0], peer[1])
        if origin is None:
            # Not redirected by our probes (someone connected to the proxy directly): we do not
            # know where it wanted to go, so it goes nowhere.
            self.proxy.bus.emit("proxy.unknown_origin", None,
                                {"peer": {"ip": peer[0], "port": peer[1]}})
            _abort(self.c_writer)
            return
        engine = self.proxy.engine_provider()
        self.flow = FlowInfo(self.proxy.new_flow_id(), origin.process, origin.destination,
                             time.time())
        self.relay = Relay(self.flow, self.proxy.policy_provider(), engine.open_stream(),
                           self.proxy.masker, redact=lambda data: redact_bytes(engine, data),
                           interceptor=self.proxy.interceptor, catalog=self.proxy.catalog,
                           max_decoded=self.proxy.max_decoded,
                           max_held=self.limits.max_held_bytes)
        self.proxy.flows[self.flow.flow_id] = self.flow
        try:
            self.execute(self.relay.start())
            if self.relay.phase is Phase.SNIFFING:
                self._later(self.limits.sniff_timeout,
                            lambda: self.execute(self.relay.sniff_timeout()))
            await self._pump_client()
            if self.answered:
                await self._drain_answered_client()
            await self._wait_until_done()
        except asyncio.CancelledError:
            self.execute(self.relay.abort("egressguard is stopping"))
            raise
        except (ConnectionError, OSError) as exc:
            self.execute(self.relay.abort(f"client connection error: {exc.__class__.__name__}"))
        finally:
            self._cleanup()

    async def _find_origin(self, ip: str, port: int) -> Origin | None:
        # The sockops entry is written when the client's handshake completes, before the proxy
        # can accept; a couple of short retries only cover scheduling noise.
        ip = _unmap(ip)
        for delay in (0, 0.001, 0.005, 0.02):
            if delay:
                await asyncio.sleep(delay)
            origin = self.proxy.lookup_origin(ip, port)
            if origin is not None:
                return origin
        return None

    async def _pump_client(self) -> None:
        """Read the client while the relay can take more; feed it; honour backpressure."""
        assert self.relay is not None
        relay = self.relay
        while relay.phase is not Phase.CLOSED:
            limits = self.proxy.limits
            if relay.codec_holding and self.proxy.held_total >= limits.max_held_total:
                # A compressed request is inspected whole, so waiting for room would not free
                # any: refuse it (the per-flow cap is the codec's, see HttpRequestCodec).
                self.execute(relay.refuse_held(
                    f"proxy.max_held_total={limits.max_held_total} bytes reached while a "
                    "compressed request was held whole for inspection"))
                return
            if relay.phase is not Phase.FORWARDING and relay.buffered >= limits.max_held_bytes:
                # Held (or not yet connected) and the buffer is full: stop reading; TCP
                # backpressure makes the client wait.
                self.wakeup.clear()
                await self.wakeup.wait()
                continue
            if relay.phase is not Phase.FORWARDING and relay.pending and \
                    self.proxy.held_total >= limits.max_held_total:
                # All flows' held bytes together are at the cap: the same backpressure, and a
                # recheck, since other flows' decisions free the space.
                self.wakeup.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.wakeup.wait(), HELD_CAP_RECHECK)
                continue
            data = await self.c_reader.read(READ_SIZE)
            if relay.phase is Phase.CLOSED:
                return       # answered or reset while we waited: these bytes are not scanned
            if self.client_tls is not None:
                data, ended = self._decrypt(data)
                if relay.phase is Phase.CLOSED:
                    return
                if ended:
                    if data:
                        self.execute(relay.client_data(data))
                    self.execute(relay.client_eof())
                    return
                if not data:
                    continue
            elif not data:
                self.execute(relay.client_eof())
                return
            self._last_data = asyncio.get_running_loop().time()
            self.execute(relay.client_data(data))
            if relay.pending and self._client_drained():
                # The client has nothing more in flight right now: it may be waiting for an
                # answer, so release what cannot be the start of a secret (see flush_idle).
                self.execute(relay.client_idle(final=False))
            if relay.pending and self._idle_timer is None:
                self._idle_timer = asyncio.get_running_loop().call_later(
                    self.limits.partial_wait, self._on_idle)
            if self.u_writer is not None and relay.phase is Phase.FORWARDING:
                await self.u_writer.drain()

    def _decrypt(self, raw: bytes) -> tuple[bytes, bool]:
        """Client TLS bytes -> (plaintext, client finished). A failed handshake (the client
        refused our certificate: pinning, or the host CA is not trusted) is the relay's
        `intercept_failed`."""
        assert self.client_tls is not None and self.relay is not None
        pipe = self.client_tls
        if not raw:
            if not pipe.handshake_done:
                self.execute(self.relay.intercept_failed("client closed during the handshake"))
            return b"", True
        try:
            out, plain = pipe.feed(raw)
        except TlsFailed as exc:
            if pipe.handshake_done:       # a broken session, not a refused certificate
                self.execute(self.relay.abort(f"client TLS error: {exc}"))
            else:
                self.execute(self.relay.intercept_failed(str(exc)))
            return b"", True
        if out:
            self.c_writer.write(out)
        return plain, pipe.closed

    async def _client_request_started(self, timeout: float = 2.0) -> None:
        """Before answering the client ourselves (a 502), let its TLS handshake finish and its
        request arrive (bounded): a response sent into an unfinished handshake is lost, and
        closing with its request unread would reset the connection under it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline and self.relay is not None and self.relay.received == 0 \
                and self.relay.phase is not Phase.CLOSED:
            await asyncio.sleep(0.01)

    def _to_client(self, data: bytes) -> None:
        self.c_writer.write(self.client_tls.send(data) if self.client_tls is not None else data)

    async def _wait_until_done(self) -> None:
        await self.closed.wait()

    def _client_drained(self) -> bool:
        """True when neither the stream buffer nor the kernel holds more bytes from the client.
        (StreamReader has no public "buffered" accessor; `_buffer` is stable in CPython.)"""
        if getattr(self.c_reader, "_buffer", b""):
            return False
        sock = self.c_writer.get_extra_info("socket")
        if sock is None:
            return True
        try:
            return fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0") == b"\0\0\0\0"
        except OSError:
            return True

    def _on_idle(self) -> None:
        """The client paused longer than `partial_wait` with bytes still held back: settle the
        tail so request/response protocols never deadlock on the hold-back window."""
        self._idle_timer = None
        relay = self.relay
        if relay is None or relay.phase is Phase.CLOSED or not relay.pending:
            return
        loop = asyncio.get_running_loop()
        idle_for = loop.time() - self._last_data
        if idle_for + 1e-3 < self.limits.partial_wait:
            self._idle_timer = loop.call_later(self.limits.partial_wait - idle_for, self._on_idle)
            return
        self.execute(relay.client_idle(final=True))

    # ------------------------------------------------------------------ commands
    def execute(self, commands: list[Any]) -> None:
        for cmd in commands:
            if isinstance(cmd, SendUpstream):
                assert self.u_writer is not None
                self.u_writer.write(cmd.data)
            elif isinstance(cmd, Emit):
                self.proxy.bus.emit(cmd.event, self.flow, cmd.fields)
            elif isinstance(cmd, ConnectUpstream):
                self._spawn(self._connect_upstream())
            elif isinstance(cmd, HalfCloseUpstream):
                if self.u_writer is not None and self.tls_host is not None:
                    # TLS has no half-close: the client is done, so end the upstream session
                    # (close_notify after every byte is written).
                    self.u_writer.close()
                elif self.u_writer is not None and self.u_writer.can_write_eof():
                    with contextlib.suppress(OSError):
                        self.u_writer.write_eof()
            elif isinstance(cmd, Hold):
                self._spawn(self._hold(cmd))
            elif isinstance(cmd, Reset):
                self.reset_reason = cmd.reason
                self._reset_both()
            elif isinstance(cmd, InterceptTls):
                self._start_client_tls(cmd)
            elif isinstance(cmd, SendClient):
                self.reset_reason = cmd.reason
                self._answer_client(cmd.data)
        if self.relay is not None:
            held = self.relay.buffered          # pending and the HTTP codec's buffers
            self.proxy.held_total += held - self._held_counted
            self._held_counted = held
        self.wakeup.set()

    def _start_client_tls(self, cmd: InterceptTls) -> None:
        assert self.proxy.ca is not None
        self.client_tls = TlsPipe(self.proxy.ca.server_context(cmd.host))
        self.tls_host = cmd.host
        out, _ = self.client_tls.feed(cmd.client_hello)
        if out:
            self.c_writer.write(out)

    def _answer_client(self, data: bytes) -> None:
        """Send our own response, then close gracefully: close_notify and FIN after the data,
        not a reset. The socket is closed only once the client has closed its side (or after
        ANSWER_LINGER): closing with client bytes unread makes the kernel send a reset, which
        can destroy our answer before the client reads it (a client still sending a held
        request's body only reads the response after its last byte)."""
        self.answered = True
        with contextlib.suppress(Exception):
            self._to_client(data)
            if self.client_tls is not None:
                self.c_writer.write(self.client_tls.close())
            if self.c_writer.can_write_eof():
                self.c_writer.write_eof()
        if self.u_writer is not None:
            _abort(self.u_writer)
        # Bounded: a client that neither reads nor closes is reset then (ends the drain below).
        self._later(ANSWER_LINGER, lambda: _abort(self.c_writer))
        self.closed.set()

    async def _drain_answered_client(self) -> None:
        """Read and drop what the client still sends after our answer, until it closes (its
        bytes are never forwarded or scanned: the flow is over)."""
        with contextlib.suppress(ConnectionError, OSError):
            while await self.c_reader.read(READ_SIZE):
                pass

    async def _connect_upstream(self) -> None:
        assert self.flow is not None and self.relay is not None
        dest = self.flow.destination
        family = socket.AF_INET6 if ipaddress.ip_address(dest.ip).version == 6 else socket.AF_INET
        sock: socket.socket | None = None
        try:
            # Created inside the try: socket() itself fails under fd exhaustion (EMFILE), and
            # that must abort this flow, not kill the task and leave the flow hanging open.
            sock = socket.socket(family, socket.SOCK_STREAM)
            # The mark tells our probes not to redirect this socket (the daemon may itself run
            # inside a guarded cgroup's parent slice).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, self.proxy.mark)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (dest.ip, dest.port)),
                                   self.limits.connect_timeout)
            if self.tls_host is not None:
                try:
                    self.u_reader, self.u_writer = await asyncio.open_connection(
                        sock=sock, limit=READ_SIZE, ssl=self.proxy.upstream_tls,
                        server_hostname=self.tls_host,
                        ssl_handshake_timeout=self.limits.connect_timeout)
                    # asyncio's TLS transport pauses writers at 64 KiB: far below one read.
                    self.u_writer.transport.set_write_buffer_limits(high=4 * READ_SIZE)
                except ssl.SSLError as exc:
                    sock.close()
                    why = getattr(exc, "verify_message", "") or str(exc.reason or exc)
                    await self._client_request_started()
                    self.execute(self.relay.upstream_tls_failed(why))
                    return
            else:
                self.u_reader, self.u_writer = await asyncio.open_connection(sock=sock,
                                                                             limit=READ_SIZE)
        except (OSError, asyncio.TimeoutError) as exc:
            if sock is not None:
                sock.close()
            self.proxy.bus.emit("flow.upstream_error", self.flow,
                                {"error": f"{exc.__class__.__name__}: {exc}"})
            self.execute(self.relay.abort("upstream unreachable"))
            return
        self.execute(self.relay.upstream_connected())
        self._spawn(self._pump_upstream())

    async def _pump_upstream(self) -> None:
        """Server -> client: relayed untouched, with backpressure; half-close propagates."""
        assert self.u_reader is not None and self.flow is not None
        try:
            while True:
                data = await self.u_reader.read(READ_SIZE)
                if self.answered:
                    break        # our own answer ended the client's stream (TLS and TCP)
                if not data:
                    if self.client_tls is not None:
                        with contextlib.suppress(Exception):
                            self.c_writer.write(self.client_tls.close())
                    if self.c_writer.can_write_eof():
                        with contextlib.suppress(OSError):
                            self.c_writer.write_eof()
                    break
                self.flow.bytes_down += len(data)
                self._to_client(data)
                await self.c_writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if self.relay is not None and self.relay.client_done or self.reset_reason:
                self.closed.set()
            else:
                # The server closed first: the client may still be sending; end when it does.
                self._spawn(self._close_when_client_done())

    async def _close_when_client_done(self) -> None:
        while self.relay is not None and not self.relay.client_done and not self.reset_reason:
            self.wakeup.clear()
            await self.wakeup.wait()
        self.closed.set()

    async def _hold(self, cmd: Hold) -> None:
        """Wait for the decision, watching the client meanwhile.

        While a flow is held the proxy often reads nothing from the client (it already sent
        EOF, or the held buffer is at its cap and reading is paused for backpressure), so a
        client reset would go unnoticed and the hold would stay pending for a connection that
        no longer exists. Every HOLD_PROBE_INTERVAL the client socket's TCP state is checked;
        a reset client aborts the hold (audited as aborted). A client that closed with a FIN
        is indistinguishable from one that half-closed and waits for the answer, so that one
        stays held (until a decision or the hold timeout), as TCP semantics require."""
        assert self.flow is not None and self.relay is not None
        pending = self.proxy.holds.open(self.flow, cmd.verdict, list(cmd.detections))
        self.hold = pending
        waiter = asyncio.ensure_future(pending.wait())
        try:
            while not waiter.done():
                await asyncio.wait({waiter}, timeout=HOLD_PROBE_INTERVAL)
                if not waiter.done() and self._client_reset():
                    # The connection is gone; the approval request stays pending (approvals/).
                    pending.detach("client connection reset")
                    self.hold = None
                    self.execute(self.relay.abort("client connection reset while held"))
                    return
        finally:
            if not waiter.done():
                waiter.cancel()
        decision: Decision = waiter.result()
        self.hold = None
        self.execute(self.relay.decided(decision))

    def _client_reset(self) -> bool:
        """True when the client's connection is gone for good (reset: TCP_CLOSE), read from
        TCP_INFO without consuming the socket's pending error."""
        if self.c_writer.transport.is_closing():
            return True
        sock = self.c_writer.get_extra_info("socket")
        if sock is None:
            return True
        try:
            state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
        except OSError:
            return True
        return state == _TCP_CLOSE

    def _reset_both(self) -> None:
        _abort(self.c_writer)
        if self.u_writer is not None:
            _abort(self.u_writer)
        self.closed.set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        """A helper task (upstream connect/pump, hold) that dies of an unexpected exception
        must not leave its flow half-alive: the flow would wait forever for an event that task
        was to produce, holding the client's and upstream's fds (found with EMFILE under 1000
        concurrent flows). Log it (class and place only, see logfmt) and reset the flow."""
        self.tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        log.error("flow task failed", exc_info=(type(exc), exc, exc.__traceback__))
        if self.relay is not None:
            self.execute(self.relay.abort(f"internal error: {exc.__class__.__name__}"))
        if not self.closed.is_set():
            self._reset_both()

    def _later(self, delay: float, fn: Callable[[], None]) -> None:
        self._timers.append(asyncio.get_running_loop().call_later(delay, fn))

    def _cleanup(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        for handle in self._timers:
            handle.cancel()
        if self.hold is not None:
            self.hold.detach("client connection closed")
        for task in list(self.tasks):
            task.cancel()
        if self.u_writer is not None:
            self.u_writer.close()
        self.c_writer.close()
        self.proxy.held_total -= self._held_counted
        self._held_counted = 0
        if self.flow is not None:
            flow = self.flow
            if flow.state not in (FlowState.BLOCKED, FlowState.DENIED, FlowState.EXPIRED):
                flow.state = FlowState.CLOSED
            close: dict[str, Any] = {
                # up: what reached the destination; from_client: what the client sent us
                # (a held flow that expired has the second and none of the first).
                "bytes_up": flow.bytes_delivered, "bytes_from_client": flow.bytes_up,
                "bytes_down": flow.bytes_down,
                "state": flow.state.value, "reset": self.reset_reason,
                "duration_s": round(time.time() - flow.opened_at, 3)}
            if flow.tls_passthrough:
                close["tls_passthrough"] = flow.tls_passthrough
            self.proxy.bus.emit("flow.close", flow, close)
            self.proxy.flows.pop(flow.flow_id, None)
            self.proxy.recent.append(flow)


def _unmap(ip: str) -> str:
    """'::ffff:127.0.0.1' -> '127.0.0.1' (a v4-mapped peer on a dual-stack listener)."""
    if ip.startswith("::ffff:") and "." in ip:
        return ip[7:]
    return ip


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with RST, not FIN: the peer must see the connection fail, not a clean end."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


