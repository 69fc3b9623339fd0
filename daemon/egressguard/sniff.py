"""Find the hostname a client is talking to in the first bytes it sends (sans-IO).

Policy can match `destination.host`, but the kernel only knows the IP. The name is in the first
client bytes: the SNI of a TLS ClientHello, or the Host header of an HTTP/1.x request. This module
is a pure function of the bytes received so far (h11 style: feed what you have, get an answer or
"need more"), so it is tested against byte strings split at every offset, with no sockets.

`sniff_host(prefix)` returns:
- `NEED_MORE` when the bytes so far could still become a ClientHello or HTTP request head;
- the lower-cased host name (no port) when found;
- `""` when the stream is neither, or carries no name (the proxy stops looking).
"""

from __future__ import annotations

import re
from typing import Final

NEED_MORE: Final = None
MAX_SNIFF_BYTES: Final = 16 * 1024   # a ClientHello or HTTP head larger than this gets no name

_HTTP_METHODS = (b"GET ", b"POST ", b"PUT ", b"PATCH ", b"DELETE ", b"HEAD ", b"OPTIONS ",
                 b"CONNECT ", b"TRACE ")
_HOST_RE = re.compile(rb"\r?\nhost:[ \t]*([^\r\n]*)", re.IGNORECASE)
_HOSTNAME_RE = re.compile(r"^[a-z0-9._-]{1,253}$")


def sniff_host(prefix: bytes) -> str | None:
    """Return the host name in `prefix`, NEED_MORE (None), or "" when there is none."""
    if not prefix:
        return NEED_MORE
    if prefix[0] == 0x16:
        return _sniff_tls(prefix)
    if _could_be_http(prefix):
        return _sniff_http(prefix)
    return ""


def _could_be_http(prefix: bytes) -> bool:
    head = prefix[:8]
    return any(m.startswith(head) or head.startswith(m) for m in _HTTP_METHODS)


def _clean(name: str) -> str:
    name = name.strip().lower().rstrip(".")
    return name if _HOSTNAME_RE.match(name) else ""


def _sniff_http(prefix: bytes) -> str | None:
    end = prefix.find(b"\r\n\r\n")
    head = prefix if end < 0 else prefix[:end + 2]
    if not any(prefix.startswith(m) for m in _HTTP_METHODS):
        return NEED_MORE if len(prefix) < 8 else ""
    m = _HOST_RE.search(head)
    if m and (end >= 0 or head.endswith(b"\n", m.end())):
        value = m.group(1).decode("latin-1").strip()
        if value.startswith("["):            # [v6]:port carries no name
            return ""
        return _clean(value.rsplit(":", 1)[0] if value.count(":") == 1 else value)
    if end >= 0 or len(prefix) >= MAX_SNIFF_BYTES:
        return ""
    return NEED_MORE


class _Short(Exception):
    """The ClientHello is not complete yet."""


class _Reader:
    """Bounds-checked big-endian reader over a ClientHello body."""

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None):
        self.data, self.pos = data, pos
        self.end = len(data) if end is None else end

    def take(self, n: int) -> bytes:
        if self.pos + n > self.end:
            raise _Short
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u24(self) -> int:
        return int.from_bytes(self.take(3), "big")

    def vec(self, len_bytes: int) -> "_Reader":
        n = self.u8() if len_bytes == 1 else self.u16()
        if self.pos + n > self.end:
            raise _Short
        sub = _Reader(self.data, self.pos, self.pos + n)
        self.pos += n
        return sub


def _handshake_bytes(prefix: bytes) -> bytes:
    """Concatenate the payloads of the leading TLS handshake records (a ClientHello may span
    several records)."""
    out = bytearray()
    pos = 0
    while pos + 5 <= len(prefix) and prefix[pos] == 0x16:
        n = int.from_bytes(prefix[pos + 3:pos + 5], "big")
        out += prefix[pos + 5:pos + 5 + n]
        if pos + 5 + n > len(prefix):
            break
        pos += 5 + n
    return bytes(out)


def _hello_extensions(prefix: bytes) -> "dict[int, _Reader] | str | None":
    """The ClientHello's extensions by type, NEED_MORE, or "" when this is not one."""
    if len(prefix) >= 3 and prefix[1] != 0x03:
        return ""                                   # not TLS record version 3.x
    hs = _handshake_bytes(prefix)
    try:
        r = _Reader(hs)
        if r.u8() != 0x01:                          # not a ClientHello
            return ""
        body_len = r.u24()
        if body_len > MAX_SNIFF_BYTES:
            return ""
        body = _Reader(hs, r.pos, r.pos + body_len)
        if r.pos + body_len > len(hs):
            raise _Short
        body.take(2 + 32)                           # legacy_version, random
        body.vec(1)                                 # session id
        body.vec(2)                                 # cipher suites
        body.vec(1)                                 # compression methods
        out: dict[int, _Reader] = {}
        if body.pos == body.end:
            return out                              # no extensions
        exts = body.vec(2)
        while exts.pos < exts.end:
            ext_type = exts.u16()
            out.setdefault(ext_type, exts.vec(2))
        return out
    except _Short:
        return NEED_MORE if len(prefix) < MAX_SNIFF_BYTES else ""


def _sniff_tls(prefix: bytes) -> str | None:
    exts = _hello_extensions(prefix)
    if not isinstance(exts, dict):
        return exts
    ext = exts.get(0)                               # server_name
    if ext is None:
        return ""
    try:
        names = ext.vec(2)
        while names.pos < names.end:
            name_type = names.u8()
            name = names.vec(2)
            if name_type == 0:
                return _clean(name.take(name.end - name.pos).decode("ascii", "replace"))
    except _Short:
        pass
    return ""


def client_alpn(prefix: bytes) -> tuple[str, ...]:
    """The protocols a complete ClientHello offers in ALPN (e.g. ("h2", "http/1.1")), in the
    client's order; () when there is none or `prefix` is not a ClientHello."""
    exts = _hello_extensions(prefix[:MAX_SNIFF_BYTES]) if prefix[:1] == b"\x16" else ""
    ext = exts.get(16) if isinstance(exts, dict) else None
    out: list[str] = []
    try:
        if ext is not None:
            protos = ext.vec(2)
            while protos.pos < protos.end and len(out) < 16:
                p = protos.vec(1)
                out.append(p.take(p.end - p.pos).decode("ascii", "replace")[:32])
    except _Short:
        pass
    return tuple(out)
