"""HTTP/1.1 request streams, decoded for scanning and re-framed for the wire (sans-IO).

On an intercepted TLS flow the relay must scan what a server will *understand*, not the bytes
on the wire: chunked framing splits a secret in two, and a gzip body hides it completely. This
codec sits between the client's plaintext and the relay:

- `feed(raw)` parses requests and returns the **view**: each request head as sent, then its body
  with the chunked framing removed and gzip/deflate/br content encodings decoded, then trailers.
  The relay scans, masks (same length) and releases view bytes exactly as it does for a raw
  stream.
- `wire(view_bytes)` turns the view bytes the relay releases back into wire bytes: the original
  framing (chunk sizes, CRLFs) is put back around them, so an unmasked request goes out byte
  for byte as the client sent it, less its chunk extensions.
- A request with a content encoding is *held whole* inside the codec until its last view byte
  is released. Unchanged, its original (compressed) bytes go out; masked, its body is re-encoded
  with the same codings and its framing fixed (Content-Length, or one chunk).

The rule that keeps this honest: **only bytes that were in the scanned view go out verbatim.**
Framing is rebuilt from what was parsed (chunk extensions are dropped); a compressed body whose
raw bytes hold data no decoder put in the view (a gzip name or comment, MTIME, a second member,
brotli metadata) is re-encoded from the view; data after the end of a compressed stream, a CR or
LF that is not part of CRLF, duplicate Content-Length headers, CONNECT and Upgrade are refused
(this codec does not see responses, so it cannot know that a server switched protocols). Error
texts never echo header values: they reach the audit log.

Why not h11: h11 is a fine sans-IO parser, but it hands out decoded body data and re-serialises
heads itself, so the exact framing the client sent (chunk sizes, header spelling)
would be lost; forwarding the original bytes when the verdict is allow is a requirement here.
The parser is small: request line, headers, Content-Length / chunked, trailers; anything it
cannot parse is an `HttpError`, which the relay treats as fail-closed (the flow is blocked).

Every size is bounded (head, chunk-size line, decoded body), so hostile input costs bounded
memory; a decoded body over `max_decoded` is an error too (a decompression bomb must not be
forwarded unscanned).
"""

from __future__ import annotations

import enum
import re
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import brotli

MAX_HEAD = 64 * 1024
MAX_CHUNK_LINE = 4 * 1024
MAX_CODINGS = 3                          # Content-Encoding layers decoded (more: HttpError)
DEFAULT_MAX_DECODED = 16 * 1024 * 1024
DEFAULT_CAPTURE = 4 * 1024 * 1024       # decoded body kept for metadata (JSON paths, model)
BROTLI_QUALITY = 5                       # re-encoding: 11 (the default) costs seconds per MiB

_TOKEN = re.compile(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_CONTENT_LENGTH = re.compile(rb"(?im)^(content-length[ \t]*:[ \t]*)(\d+)")
DECODABLE = ("gzip", "x-gzip", "deflate", "br")
# Codings named in an error as they are; any other value is reported by its length only (a
# header value is attacker-chosen and can carry a secret: it must not reach the audit log).
_KNOWN_CODINGS = frozenset(DECODABLE + ("identity", "chunked", "compress", "x-compress", "zstd",
                                        "dcb", "dcz", "exi", "pack200-gzip", "aes128gcm"))
_TOO_LARGE = "decoded body too large (tls.max_decoded_body, proxy.max_held_bytes)"
_BARE_CR_OR_LF = re.compile(rb"\r(?!\n)|(?<!\r)\n")


def _named(values: list[str]) -> str:
    """Codings for an error message: known names verbatim, anything else by length only."""
    return ", ".join(v if v in _KNOWN_CODINGS else f"<unknown, {len(v)} bytes>" for v in values)


class HttpError(Exception):
    """The client's bytes are not an HTTP/1.1 request stream we can inspect."""


@dataclass
class RequestHead:
    """One request as the policy and ledger see it. `view_start` is the head's offset in the
    view; `body_start`/`body_end` the decoded body's (set when the request completes)."""

    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    view_start: int
    head_len: int
    chunked: bool = False
    content_length: int = 0
    encodings: tuple[str, ...] = ()
    body_start: int = 0
    body_end: int = 0
    raw_body_len: int = 0
    body: bytes = b""                    # decoded, up to the capture cap
    body_truncated: bool = False
    done: bool = False                   # body and trailers complete
    detections: list[Any] = field(default_factory=list)   # the relay's findings in it
    spans: list[tuple[int, int, str]] | None = None       # JSON string spans, once done

    def header(self, name: str) -> str:
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return ""

    @property
    def path(self) -> str:
        """The target without query or fragment (the query can carry keys: never recorded)."""
        t = self.target
        if "://" in t:                       # absolute form
            t = "/" + t.split("://", 1)[1].partition("/")[2]
        return t.split("?", 1)[0].split("#", 1)[0]

    @property
    def content_type(self) -> str:
        return self.header("content-type").split(";", 1)[0].strip().lower()


@dataclass(frozen=True)
class HeadDone:
    """A request head is complete (its bytes are in the view returned with this event)."""

    request: RequestHead


@dataclass(frozen=True)
class RequestDone:
    """A request's body (and trailers) are complete."""

    request: RequestHead


HttpEvent = HeadDone | RequestDone


class _State(enum.Enum):
    HEAD = "head"
    BODY = "body"
    CHUNK_SIZE = "chunk-size"
    CHUNK_DATA = "chunk-data"
    CHUNK_END = "chunk-end"
    TRAILERS = "trailers"


# ---------------------------------------------------------------------------- wire items
@dataclass
class _Frame:
    data: bytes


@dataclass
class _Verbatim:
    n: int = 0
    done: int = 0
    open: bool = True


@dataclass
class _Held:
    """A request with a content encoding: kept whole until its view is released."""

    head_len: int
    chunked: bool
    encodings: tuple[str, ...]
    raw: bytearray = field(default_factory=bytearray)
    view: bytearray = field(default_factory=bytearray)   # released bytes are written over it
    released: int = 0
    changed: bool = False            # a released byte differs from the view (masked)
    reencode: bool = False           # the raw bytes carry data the view lacks: never forward
    body_len: int = 0
    complete: bool = False

    @property
    def size(self) -> int:
        return len(self.raw) + len(self.view)

    def release(self, data: bytes) -> None:
        end = self.released + len(data)
        if not self.changed and self.view[self.released:end] != data:
            self.changed = True
        self.view[self.released:end] = data
        self.released = end

    def must_reencode(self) -> None:
        """Part of the compressed bytes never reached the view (a gzip header's name or
        comment, brotli metadata): only a re-encoding of the view may go out."""
        self.reencode = True
        self.raw = bytearray()

    def wire_bytes(self) -> bytes:
        if not self.changed and not self.reencode:
            return bytes(self.raw)
        # Masked (or unscanned bytes in the original): re-encode the released view, fix the
        # framing. Masks keep lengths, so the head, body and trailer boundaries still hold.
        head = bytes(self.view[:self.head_len])
        body = bytes(self.view[self.head_len:self.head_len + self.body_len])
        trailers = bytes(self.view[self.head_len + self.body_len:])
        encoded = encode_body(body, self.encodings)
        if self.chunked:
            chunk = b"%x\r\n%s\r\n" % (len(encoded), encoded) if encoded else b""
            return head + chunk + b"0\r\n" + trailers + b"\r\n"
        head = _CONTENT_LENGTH.sub(lambda m: m.group(1) + str(len(encoded)).encode(), head,
                                   count=1)
        return head + encoded


# ---------------------------------------------------------------------------- codings
class _Decoder:
    """Content-coding decoders applied in reverse order of `Content-Encoding`, bounded."""

    def __init__(self, encodings: tuple[str, ...], limit: int):
        self.stages = [_stage(e) for e in reversed(encodings)]
        self.limit = limit
        self.total = 0

    def feed(self, data: bytes) -> bytes:
        for stage in self.stages:
            data = stage.feed(data, self.limit - self.total + 1)
        self.total += len(data)
        if self.total > self.limit:
            raise HttpError(f"decoded body larger than {self.limit} bytes (tls.max_decoded_body, "
                          "proxy.max_held_bytes)")
        return data

    @property
    def unscanned(self) -> bool:
        """Some compressed bytes carried data that no stage decoded into the view."""
        return any(stage.unscanned for stage in self.stages)

    def finish(self) -> bytes:
        # Each stage's tail goes through the later stages once, then they finish in turn:
        # linear in the number of stages (at most MAX_CODINGS anyway).
        data = b""
        for i, stage in enumerate(self.stages):
            if i:
                data = stage.feed(data, self.limit - self.total + 1)
            data += stage.finish()
        out = data
        self.total += len(out)
        if self.total > self.limit:
            raise HttpError(f"decoded body larger than {self.limit} bytes (tls.max_decoded_body, "
                          "proxy.max_held_bytes)")
        return out


_GZIP_HEADER = 10
_GZIP_OS = frozenset(range(14)) | {255}


def _gzip_header_is_bare(header: bytes) -> bool:
    """True when a gzip member header carries nothing but fixed fields: no FEXTRA, FNAME,
    FCOMMENT or FHCRC (zlib skips them: they never reach the view), MTIME zero, and the XFL
    and OS bytes one of their defined values. Anything else and the body is re-encoded."""
    flg, mtime, xfl, os_ = header[3], header[4:8], header[8], header[9]
    return flg == 0 and mtime == b"\0\0\0\0" and xfl in (0, 2, 4) and os_ in _GZIP_OS


class _Zlib:
    def __init__(self, gzip: bool):
        self.gzip = gzip
        self.obj: Any = None
        self.head = b""
        self.members = 0
        self.unscanned = False

    def _start(self, data: bytes) -> bytes | None:
        """Open a decoder once enough of the stream's (or gzip member's) header is here;
        the bytes to decompress, or None while the header is incomplete."""
        self.head += data
        if self.gzip:
            if len(self.head) < _GZIP_HEADER:
                return None
            self.members += 1
            if self.members > 1 or not _gzip_header_is_bare(self.head):
                self.unscanned = True
            self.obj = zlib.decompressobj(31)
        else:
            # "deflate" is zlib-wrapped by the RFC; some clients send raw deflate.
            if len(self.head) < 2:
                return None
            cmf, flg = self.head[0], self.head[1]
            zlib_wrapped = (cmf & 0x0F) == 8 and (cmf * 256 + flg) % 31 == 0
            self.obj = zlib.decompressobj(15 if zlib_wrapped else -15)
        data, self.head = self.head, b""
        return data

    def feed(self, data: bytes, limit: int) -> bytes:
        out = bytearray()
        try:
            # Iterative over gzip members: one read may hold hundreds of them.
            while data:
                if self.obj is not None and self.obj.eof:
                    if not self.gzip:
                        raise HttpError("data after the end of the compressed body")
                    self.obj = None              # another gzip member: a fresh decoder
                if self.obj is None:
                    started = self._start(data)
                    if started is None:
                        break
                    data = started
                out += self.obj.decompress(data, max(limit - len(out), 1))
                if self.obj.unconsumed_tail:
                    raise HttpError(_TOO_LARGE)
                data = self.obj.unused_data if self.obj.eof else b""
        except zlib.error as exc:
            raise HttpError(f"corrupt compressed body: {exc}") from None
        return bytes(out)

    def finish(self) -> bytes:
        if self.head:
            raise HttpError("corrupt compressed body: truncated")
        if self.obj is None:
            return b""
        if not self.obj.eof:
            raise HttpError("corrupt compressed body: truncated")
        return self.obj.flush()


class _Brotli:
    # Brotli metadata meta-blocks are skipped by every decoder (never in the view) and the
    # Python binding cannot tell whether a stream has one: a brotli body is always re-encoded.
    unscanned = True

    def __init__(self) -> None:
        self.obj = brotli.Decompressor()

    def feed(self, data: bytes, limit: int) -> bytes:
        try:
            out = self.obj.process(data, output_buffer_limit=max(limit, 1))
            if len(out) >= limit and not self.obj.can_accept_more_data():
                raise HttpError(_TOO_LARGE)
        except brotli.error as exc:
            raise HttpError(f"corrupt compressed body: {exc}") from None
        return out

    def finish(self) -> bytes:
        if not self.obj.is_finished():
            raise HttpError("corrupt compressed body: truncated")
        return b""


def _stage(encoding: str) -> Any:
    if encoding in ("gzip", "x-gzip"):
        return _Zlib(gzip=True)
    if encoding == "deflate":
        return _Zlib(gzip=False)
    return _Brotli()


def encode_body(body: bytes, encodings: tuple[str, ...]) -> bytes:
    """Apply `encodings` in order (as `Content-Encoding: a, b` means: a first, then b)."""
    import gzip
    for enc in encodings:
        if enc in ("gzip", "x-gzip"):
            body = gzip.compress(body, mtime=0)
        elif enc == "deflate":
            body = zlib.compress(body)
        else:
            body = brotli.compress(body, quality=BROTLI_QUALITY)
    return body


# ---------------------------------------------------------------------------- the codec
class HttpRequestCodec:
    """Client -> server HTTP/1.1 stream: raw bytes in, view bytes and events out; released view
    bytes back to wire bytes."""

    def __init__(self, max_decoded: int = DEFAULT_MAX_DECODED,
                 capture: int = DEFAULT_CAPTURE, max_held: int | None = None):
        self.max_decoded = max_decoded
        self.capture = capture
        # A compressed request is held whole (raw and view) until it completes: past
        # `max_held` bytes it is refused rather than buffered (the proxy's per-flow cap).
        self.max_held = max_held
        self.state = _State.HEAD
        self.view_len = 0                  # view bytes produced so far
        self._buf = bytearray()
        self._items: deque[_Frame | _Verbatim | _Held] = deque()
        self._req: RequestHead | None = None
        self._held: _Held | None = None
        self._decoder: _Decoder | None = None
        self._remaining = 0
        self._out = bytearray()
        self._events: list[HttpEvent] = []
        self._head_seen = 0                # bytes of an unfinished head already searched
        self.requests = 0

    # ------------------------------------------------------------------ parsing
    def feed(self, raw: bytes) -> tuple[bytes, list[HttpEvent]]:
        """Parse `raw`; return (view bytes, events). Raises HttpError on malformed input."""
        self._buf += raw
        self._out = bytearray()
        self._events = []
        while self._step():
            pass
        return bytes(self._out), self._events

    def eof(self) -> tuple[bytes, list[HttpEvent]]:
        """The client finished. A request cut off in the middle of a compressed body is
        dropped (it could only reach the server truncated, and its tail was never decoded),
        and so is an unfinished head: never parsed, its framing is unknown (a head with bare
        LF line ends would otherwise go out with its body undecoded)."""
        self._out = bytearray()
        self._events = []
        if self._held is not None and not self._held.complete:
            self._items = deque(i for i in self._items if i is not self._held)
            self._held = None
        if self.state is _State.HEAD:
            self._buf.clear()
        for item in self._items:
            if isinstance(item, _Verbatim):
                item.open = False
        return bytes(self._out), self._events

    @property
    def buffered(self) -> int:
        """Bytes this codec keeps (unparsed input, a held request's raw bytes and view): the
        proxy counts them in its held-buffer caps like the relay's pending bytes."""
        held = sum(i.size for i in self._items if isinstance(i, _Held))
        return len(self._buf) + held

    @property
    def receiving_whole(self) -> bool:
        """A compressed request is being received: kept whole, it needs its end to arrive
        before any of it can be released (so waiting for buffer room would free nothing)."""
        return self._held is not None

    def _check_held(self) -> None:
        if self.max_held is not None and self._held is not None \
                and self._held.size > self.max_held:
            raise HttpError(f"compressed request larger than {self.max_held} bytes held "
                            "(proxy.max_held_bytes): it is inspected whole")

    def _step(self) -> bool:
        st = self.state
        if st is _State.HEAD:
            return self._parse_head()
        if st in (_State.BODY, _State.CHUNK_DATA):
            if not self._buf:
                return False
            take = min(self._remaining, len(self._buf))
            data = bytes(self._buf[:take])
            del self._buf[:take]
            self._remaining -= take
            self._content(data)
            if self._remaining == 0:
                if st is _State.BODY:
                    self._request_done()
                else:
                    self.state = _State.CHUNK_END
            return True
        if st is _State.CHUNK_SIZE:
            i = self._buf.find(b"\r\n")
            if i < 0:
                if len(self._buf) > MAX_CHUNK_LINE:
                    raise HttpError("chunk-size line too long")
                return False
            line = bytes(self._buf[:i])
            del self._buf[:i + 2]
            size_txt = line.split(b";", 1)[0].strip(b" \t")
            if not size_txt or not re.fullmatch(rb"[0-9a-fA-F]{1,15}", size_txt) \
                    or b"\r" in line or b"\n" in line:
                raise HttpError("bad chunk size")
            # Chunk extensions are never scanned (not in the view): they are dropped, only the
            # size goes out (RFC 9112 7.1.1: a recipient ignores extensions it does not know).
            self._frame(size_txt + b"\r\n")
            size = int(size_txt, 16)
            if size == 0:
                self.state = _State.TRAILERS
            else:
                self._remaining = size
                self.state = _State.CHUNK_DATA
            return True
        if st is _State.CHUNK_END:
            if len(self._buf) < 2:
                return False
            if self._buf[:2] != b"\r\n":
                raise HttpError("chunk data not followed by CRLF")
            del self._buf[:2]
            self._frame(b"\r\n")
            self.state = _State.CHUNK_SIZE
            return True
        if st is _State.TRAILERS:
            i = self._buf.find(b"\r\n")
            if i < 0:
                if len(self._buf) > MAX_HEAD:
                    raise HttpError("trailers too long")
                return False
            line = bytes(self._buf[:i + 2])
            del self._buf[:i + 2]
            if _BARE_CR_OR_LF.search(line[:-2]):
                raise HttpError("bare CR or LF in a trailer line")
            if line == b"\r\n":
                self._frame(line)
                self._request_done()
            else:
                self._trailer(line)         # trailers can carry data: they are scanned
            return True
        return False

    def _parse_head(self) -> bool:
        # Empty lines before a request line are allowed (RFC 9112 2.2): pass them through.
        n = 0
        while self._buf[n:n + 2] == b"\r\n":
            n += 2
        if n:
            self._emit_view(bytes(self._buf[:n]))
            del self._buf[:n]
            self._head_seen = 0
        # Search only what arrived since the last look (a few bytes back for a split CRLF):
        # a head sent one byte per TLS record must not cost quadratic time.
        end = self._buf.find(b"\r\n\r\n", max(0, self._head_seen - 3))
        # A CR or LF that is not part of CRLF: lenient servers split lines there, this codec
        # would not (a hidden Content-Encoding, or a head that never ends): refuse it at once.
        bare = _BARE_CR_OR_LF.search(self._buf, max(0, self._head_seen - 1),
                                     len(self._buf) if end < 0 else end + 4)
        if bare is not None and (end >= 0 or bare.end() < len(self._buf)):
            raise HttpError("bare CR or LF in the request head (only CRLF ends a line)")
        if end < 0:
            self._head_seen = len(self._buf)
            if len(self._buf) > MAX_HEAD:
                raise HttpError(f"request head larger than {MAX_HEAD} bytes")
            if self._buf and not _could_start_request(bytes(self._buf[:16])):
                raise HttpError("not an HTTP/1.1 request")
            return False
        head = bytes(self._buf[:end + 4])
        del self._buf[:end + 4]
        self._head_seen = 0
        req = _parse_request_head(head, self.view_len)
        self._req = req
        self.requests += 1
        if req.method == "CONNECT" or req.header("upgrade"):
            # After a 101 or a 2xx the connection carries another protocol this codec cannot
            # follow; going raw on the client's word alone let any later request through
            # unparsed. Refused on intercepted flows (the proxy does not read responses).
            raise HttpError(f"{'CONNECT' if req.method == 'CONNECT' else 'Upgrade'} cannot be "
                            "inspected on an intercepted flow (refused)")
        if req.encodings and (req.chunked or req.content_length):
            self._held = _Held(len(head), req.chunked, req.encodings)
            self._held.raw += head
            self._items.append(self._held)
            # Decoded output is bounded by the held cap too, so one read of a bomb never
            # inflates past it (before, up to max_decoded at once).
            limit = min(self.max_decoded, self.max_held or self.max_decoded)
            self._decoder = _Decoder(req.encodings, limit)
        self._emit_view(head)
        self._events.append(HeadDone(req))
        req.body_start = self.view_len
        if req.chunked:
            self.state = _State.CHUNK_SIZE
        elif req.content_length:
            self._remaining = req.content_length
            self.state = _State.BODY
        else:
            self._request_done()
        return True

    def _content(self, data: bytes) -> None:
        assert self._req is not None
        self._req.raw_body_len += len(data)
        if self._held is not None:
            assert self._decoder is not None
            if not self._held.reencode:
                self._held.raw += data
            decoded = self._decoder.feed(data)
            if self._decoder.unscanned and not self._held.reencode:
                self._held.must_reencode()
            self._check_held()          # compressed bytes that decode to nothing count too
        else:
            decoded = data
        self._body_view(decoded)

    def _body_view(self, decoded: bytes) -> None:
        assert self._req is not None
        if not decoded:
            return
        req = self._req
        room = self.capture - len(req.body)
        if room > 0:
            req.body += decoded[:room]
        if len(decoded) > room:
            req.body_truncated = True
        if self._held is not None:
            self._held.body_len += len(decoded)
        self._emit_view(decoded)
        self._check_held()

    def _trailer(self, line: bytes) -> None:
        self._finish_decoding()
        if self._held is not None and not self._held.reencode:
            self._held.raw += line
        self._emit_view(line)

    def _finish_decoding(self) -> None:
        if self._decoder is not None:
            tail = self._decoder.finish()
            if self._decoder.unscanned and self._held is not None and not self._held.reencode:
                self._held.must_reencode()
            self._decoder = None
            self._body_view(tail)

    def _request_done(self) -> None:
        req = self._req
        assert req is not None
        self._finish_decoding()
        req.body_end = req.body_start + (self._held.body_len if self._held is not None
                                         else req.raw_body_len)
        if self._held is not None:
            self._held.complete = True
            self._held = None
        req.done = True
        self._events.append(RequestDone(req))
        self._req = None
        self.state = _State.HEAD

    # ------------------------------------------------------------------ view and wire
    def _emit_view(self, data: bytes) -> None:
        if not data:
            return
        self._out += data
        self.view_len += len(data)
        if self._held is not None:
            self._held.view += data
            return
        last = self._items[-1] if self._items else None
        if isinstance(last, _Verbatim) and last.open:
            last.n += len(data)
        else:
            self._items.append(_Verbatim(len(data)))

    def _frame(self, data: bytes) -> None:
        if self._held is not None:
            if not self._held.reencode:
                self._held.raw += data
            return
        last = self._items[-1] if self._items else None
        if isinstance(last, _Verbatim):
            last.open = False
        self._items.append(_Frame(data))

    def wire(self, view: bytes) -> bytes:
        """The wire bytes for the next released `view` bytes (may be empty: framing that
        follows the last released byte is emitted as soon as nothing unreleased precedes it)."""
        out = bytearray()
        pos = 0
        items = self._items
        while items:
            item = items[0]
            if isinstance(item, _Frame):
                out += item.data
                items.popleft()
                continue
            if isinstance(item, _Verbatim):
                take = min(item.n - item.done, len(view) - pos)
                out += view[pos:pos + take]
                pos += take
                item.done += take
                if item.done == item.n:
                    if item.open and len(items) == 1:
                        break                    # may still grow
                    items.popleft()
                    continue
                break
            take = min(len(item.view) - item.released, len(view) - pos)
            item.release(view[pos:pos + take])
            pos += take
            if item.complete and item.released == len(item.view):
                out += item.wire_bytes()
                items.popleft()
                continue
            break
        if pos != len(view):
            raise AssertionError("released more view bytes than were fed")
        return bytes(out)

    @property
    def open_request_start(self) -> int | None:
        """The view offset of the request whose head is complete and whose body is still
        arriving, or None between requests."""
        return self._req.view_start if self._req is not None else None

    @property
    def holding(self) -> bool:
        """True while wire bytes are still owed (a held message, framing not yet sent)."""
        return any(not (isinstance(i, _Verbatim) and i.done == i.n) for i in self._items)


def _could_start_request(prefix: bytes) -> bool:
    m = re.match(rb"[A-Z]{1,20}", prefix)
    return bool(m) and (m.end() == len(prefix) or prefix[m.end():m.end() + 1] == b" ")


def _parse_request_head(head: bytes, view_start: int) -> RequestHead:
    lines = head[:-4].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _TOKEN.match(parts[0]) or parts[2] not in (b"HTTP/1.1",
                                                                        b"HTTP/1.0"):
        raise HttpError("malformed request line")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.match(name):
            raise HttpError("malformed header line")
        headers.append((name.decode("ascii"), value.strip().decode("latin-1")))
    req = RequestHead(parts[0].decode("ascii"), parts[1].decode("latin-1"),
                      parts[2].decode("ascii"), headers, view_start, len(head))
    te = [v.strip().lower() for k, vs in headers if k.lower() == "transfer-encoding"
          for v in vs.split(",") if v.strip()]
    cls = [v for k, v in headers if k.lower() == "content-length"]
    if te:
        if te[-1] != "chunked" or any(t != "chunked" for t in te):
            raise HttpError(f"unsupported transfer-encoding {_named(te)}")
        if cls:
            # RFC 9112 6.3: both present is a smuggling vector; refuse rather than guess.
            raise HttpError("both Transfer-Encoding and Content-Length")
        req.chunked = True
    elif cls:
        # Two Content-Length headers, even equal: a re-encoded body would fix only one.
        if len(cls) != 1 or not re.fullmatch(r"[0-9]{1,15}", cls[0]):
            raise HttpError("invalid Content-Length (one header, decimal digits only)")
        req.content_length = int(cls[0])
    ce = [v.strip().lower() for k, vs in headers if k.lower() == "content-encoding"
          for v in vs.split(",") if v.strip()]
    ce = [c for c in ce if c != "identity"]
    unknown = [c for c in ce if c not in DECODABLE]
    if unknown:
        # The scanner cannot see inside zstd & co: fail closed rather than forward blind.
        raise HttpError(f"content-encoding {_named(unknown)} cannot be inspected")
    if len(ce) > MAX_CODINGS:
        # Each layer is a decoder stage on the event loop: a chain of thousands wedges it.
        raise HttpError(f"{len(ce)} content codings (at most {MAX_CODINGS} are inspected)")
    req.encodings = tuple(ce)
    return req
