"""Syslog sink: RFC 5424 over TCP (RFC 6587 octet counting), TLS (RFC 5425), or UDP.

What "delivered" means here. Plain syslog has no application acknowledgement (RELP would), so
a batch counts as delivered when the receiver's TCP stack has acknowledged every byte of it:
after writing, the sink waits until the socket's send queue (SIOCOUTQ: bytes not yet acked by
the peer) is empty. A batch whose bytes were still unacknowledged when the connection broke is
sent again on the next connection, which is where the only duplicates come from. Before each
batch the sink checks that the receiver has not closed the connection (a syslog receiver never
sends anything, so end-of-file means it went away), so a batch is never written into a
connection that is already dead. What remains: bytes the receiver's kernel acknowledged but the
receiver process never read (it was killed with its receive buffer full).

A receiver may also accept a connection and then drop it: rsyslog over its session limit, or a
TLS 1.3 server refusing the client's certificate, which TLS 1.3 only says after the handshake
has completed on the client's side. So a new connection is used only after it has stayed open
for a short settle time (SETTLE_TCP / SETTLE_TLS); a receiver that drops it sooner fails the
connect instead of swallowing the first batch.

UDP sends one datagram per message and has no acknowledgement at all: a receiver that is down
loses events. It exists for legacy receivers only and is documented as lossy.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import socket
import ssl
import struct
import termios
import time
from typing import Any

from egressguard.audit.formats import FormatContext, Rendered
from egressguard.audit.formats import rfc5424
from egressguard.audit.formats.common import severity
from egressguard.audit.sinks.base import SinkError

CONNECT_TIMEOUT = 10.0
SETTLE_TCP = 0.2            # seconds a new connection must stay open before it is used
SETTLE_TLS = 1.0
ACK_TIMEOUT = 15.0          # for the receiver's TCP stack to acknowledge one batch
MAX_UDP = 65000


class SyslogSink:
    def __init__(self, spec: Any, ctx: FormatContext):
        self.spec = spec
        self.ctx = ctx
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._udp: socket.socket | None = None
        self._procid = str(os.getpid())

    def encode(self, item: Rendered, event: dict[str, Any]) -> bytes:
        return rfc5424.message(
            item.text, time=str(event.get("time", "-")), severity=severity(event),
            facility=self.spec.facility, hostname=self.ctx.hostname,
            app_name=self.spec.app_name, procid=self._procid,
            msgid=str(event.get("event", "-")),
            params={"seq": item.seq, "hash": item.hash, "event": event.get("event", "")})

    async def send(self, batch: list[Rendered], events: list[dict[str, Any]]) -> None:
        messages = [self.encode(item, ev) for item, ev in zip(batch, events)]
        if self.spec.transport == "udp":
            await asyncio.to_thread(self._send_udp, messages)
            return
        await self._ensure_connected()
        assert self._writer is not None and self._reader is not None
        if self._reader.at_eof() or self._writer.is_closing():
            raise SinkError("the receiver closed the connection")
        self._writer.write(b"".join(rfc5424.frame(m) for m in messages))
        try:
            await asyncio.wait_for(self._writer.drain(), ACK_TIMEOUT)
        except (OSError, asyncio.TimeoutError) as exc:
            raise SinkError(f"write failed: {_why(exc)}") from None
        await self._wait_acked()

    async def _ensure_connected(self) -> None:
        if self._writer is not None:
            return
        host, port = self.spec.address
        tls = self._tls_context() if self.spec.transport == "tls" else None
        try:
            self._reader, self._writer = await asyncio.wait_for(asyncio.open_connection(
                host, port, ssl=tls,
                server_hostname=(self.spec.tls.server_name or host) if tls else None),
                CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
            self._reader = self._writer = None
            raise SinkError(f"cannot connect to {host}:{port}: {_why(exc)}") from None
        reader = self._reader
        try:
            await asyncio.wait_for(reader.read(1), SETTLE_TLS if tls else SETTLE_TCP)
        except asyncio.TimeoutError:
            return                       # still open and silent: a syslog receiver's normal
        except (OSError, ssl.SSLError) as exc:
            await self.close()
            raise SinkError(f"{host}:{port} dropped the connection: {_why(exc)}") from None
        await self.close()               # EOF (or bytes, which a syslog receiver never sends)
        raise SinkError(f"{host}:{port} closed the connection right after accepting it"
                        + (" (does it require a client certificate?)" if tls else ""))

    def _tls_context(self) -> ssl.SSLContext:
        t = self.spec.tls
        ctx = ssl.create_default_context(cafile=t.ca) if t.ca else ssl.create_default_context()
        if not t.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if t.cert:
            ctx.load_cert_chain(t.cert, t.key)
        return ctx

    async def _wait_acked(self) -> None:
        assert self._writer is not None and self._reader is not None
        sock = self._writer.get_extra_info("socket")
        deadline = time.monotonic() + ACK_TIMEOUT
        delay = 0.001
        while True:
            if self._reader.at_eof():
                raise SinkError("the receiver closed the connection before acknowledging")
            try:
                pending = _unacked_bytes(sock.fileno())
            except OSError as exc:
                raise SinkError(f"connection lost: {_why(exc)}") from None
            if pending == 0:
                return
            if time.monotonic() > deadline:
                raise SinkError(f"the receiver did not acknowledge {pending} bytes within "
                                f"{ACK_TIMEOUT:g}s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _send_udp(self, messages: list[bytes]) -> None:
        if self._udp is None:
            host, port = self.spec.address
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            self._udp = socket.socket(family, socket.SOCK_DGRAM)
            self._udp.connect((host, port))
        for m in messages:
            try:
                self._udp.send(m[:MAX_UDP])
            except OSError as exc:
                raise SinkError(f"UDP send failed: {_why(exc)}") from None

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.transport.abort()
        if self._udp is not None:
            self._udp.close()
            self._udp = None


def _unacked_bytes(fd: int) -> int:
    """Bytes in the socket's send queue not yet acknowledged by the peer (SIOCOUTQ)."""
    buf = fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0\0\0\0")
    return struct.unpack("i", buf)[0]


def _why(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or exc.__class__.__name__
