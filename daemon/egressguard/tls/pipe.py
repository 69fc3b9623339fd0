"""Server-side TLS on memory buffers (ssl.MemoryBIO), for the client half of an intercepted flow.

The proxy has already read the ClientHello (it sniffed the SNI from it before deciding to
intercept), so asyncio's `start_tls` cannot be used: it would start from the socket and never
see those bytes. `TlsPipe` is fed raw bytes from the client and returns what to send back plus
the decrypted application data; `send()` encrypts. No sockets here.
"""

from __future__ import annotations

import ssl


class TlsFailed(Exception):
    """The TLS handshake with the client failed (e.g. it rejected our certificate)."""


class TlsPipe:
    """One client connection's TLS session (we are the server)."""

    def __init__(self, context: ssl.SSLContext):
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(self._in, self._out, server_side=True)
        self.handshake_done = False
        self.closed = False           # the client sent close_notify

    def feed(self, raw: bytes) -> tuple[bytes, bytes]:
        """Client bytes in -> (bytes to send to the client, decrypted application data)."""
        if raw:
            self._in.write(raw)
        plain = bytearray()
        if not self.handshake_done:
            try:
                self._ssl.do_handshake()
                self.handshake_done = True
            except ssl.SSLWantReadError:
                return self._out.read(), b""
            except ssl.SSLError as exc:
                raise TlsFailed(_why(exc)) from None
        while True:
            try:
                data = self._ssl.read(256 * 1024)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self.closed = True
                break
            except ssl.SSLError as exc:
                raise TlsFailed(_why(exc)) from None
            if not data:
                self.closed = True
                break
            plain += data
        return self._out.read(), bytes(plain)

    def send(self, plain: bytes) -> bytes:
        """Encrypt application data for the client."""
        view = memoryview(plain)
        while view:
            n = self._ssl.write(view)
            view = view[n:]
        return self._out.read()

    def close(self) -> bytes:
        """close_notify for the client (best effort)."""
        try:
            self._ssl.unwrap()
        except ssl.SSLError:
            pass
        return self._out.read()

    @property
    def alpn(self) -> str:
        return self._ssl.selected_alpn_protocol() or ""


def _why(exc: ssl.SSLError) -> str:
    """A short reason without payload bytes (OpenSSL's reason code, e.g. TLSV1_ALERT_UNKNOWN_CA)."""
    return str(exc.reason or exc.__class__.__name__).lower()
