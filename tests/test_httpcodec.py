"""httpcodec.py, sans-IO: requests fed split at every offset give the same view and events,
unmasked views go back to the wire byte for byte, masked compressed bodies are re-encoded with
fixed framing, and hostile input is an HttpError (never a crash, never an unbounded buffer)."""

from __future__ import annotations

import gzip
import re
import struct
import zlib

import brotli
import pytest

from egressguard.httpcodec import (BROTLI_QUALITY, HeadDone, HttpError, HttpRequestCodec,
                                   RequestDone)

BODY = b'{"model":"gpt-4o","messages":[{"role":"user","content":"mail jo@example.org now"}]}'


def cl(body: bytes, path: str = "/v1/chat/completions", extra: bytes = b"") -> bytes:
    return (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: api.openai.com\r\n" + extra
            + b"Content-Length: %d\r\n\r\n" % len(body) + body)


def chunked(pieces: list[bytes], trailers: bytes = b"") -> bytes:
    out = b"POST /v1/files HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    for i, p in enumerate(pieces):
        out += b"%x%s\r\n%s\r\n" % (len(p), b";n=%d" % i if i % 2 else b"", p)
    return out + b"0\r\n" + trailers + b"\r\n"


def without_extensions(raw: bytes) -> bytes:
    """`raw` as the codec forwards it: chunk extensions (never scanned) dropped."""
    return re.sub(rb"(?m)^([0-9a-f]+);n=\d+\r\n", rb"\1\r\n", raw)


def bare_gzip(body: bytes) -> bytes:
    """gzip with a header that carries nothing (no name, no mtime): forwarded as sent."""
    return gzip.compress(body, mtime=0)


def reencoded_br(body: bytes) -> bytes:
    return brotli.compress(body, quality=BROTLI_QUALITY)


def encoded(body: bytes, enc: str) -> bytes:
    data = {"gzip": bare_gzip, "deflate": zlib.compress, "br": brotli.compress}[enc](body)
    return cl(data, "/v1/messages", b"Content-Encoding: " + enc.encode() + b"\r\n")


def run(raw: bytes, cuts: list[int]) -> tuple[bytes, bytes, list[str]]:
    """Feed `raw` cut at `cuts`, release every view byte at once; (view, wire, events)."""
    c = HttpRequestCodec()
    view, wire, events = b"", b"", []
    last = 0
    for cut in cuts + [len(raw)]:
        v, ev = c.feed(raw[last:cut])
        last = cut
        view += v
        events += [type(e).__name__ for e in ev]
        wire += c.wire(v)
    v, ev = c.eof()
    view += v
    wire += c.wire(v)
    return view, wire, events


STREAM = (cl(BODY) + chunked([b"hello ", b"wor", b"ld"], b"X-Sum: 1\r\n") + encoded(BODY, "gzip")
          + encoded(BODY, "br") + encoded(BODY, "deflate")
          + b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
# What goes out: the same, but chunk extensions dropped and the brotli body re-encoded (brotli
# metadata blocks are never decoded into the view, and cannot be ruled out).
STREAM_WIRE = without_extensions(STREAM).replace(
    encoded(BODY, "br"), cl(reencoded_br(BODY), "/v1/messages", b"Content-Encoding: br\r\n"))


def test_every_split_gives_the_same_view_and_the_original_wire_bytes() -> None:
    whole_view, whole_wire, whole_events = run(STREAM, [])
    assert whole_wire == STREAM_WIRE
    assert whole_view.count(BODY) == 4          # identity + three decoded encodings
    assert b"hello world" in whole_view and b"X-Sum: 1\r\n" in whole_view
    assert whole_events == ["HeadDone", "RequestDone"] * 6
    for cut in range(1, len(STREAM)):
        assert run(STREAM, [cut]) == (whole_view, whole_wire, whole_events), cut


def test_one_byte_writes() -> None:
    assert run(STREAM, list(range(1, len(STREAM)))) == run(STREAM, [])


def test_wire_follows_partial_releases_and_keeps_framing_in_place() -> None:
    raw = chunked([b"abcdef", b"ghij"])
    c = HttpRequestCodec()
    view, _ = c.feed(raw)
    out = b""
    for i in range(len(view)):              # release one view byte at a time
        out += c.wire(view[i:i + 1])
    out += c.wire(b"")
    assert out == without_extensions(raw) and not c.holding


def test_compressed_request_is_held_until_its_last_view_byte() -> None:
    raw = encoded(BODY, "gzip")
    c = HttpRequestCodec()
    view, _ = c.feed(raw)
    assert c.wire(view[:-1]) == b"" and c.holding
    assert c.wire(view[-1:]) == raw


@pytest.mark.parametrize("enc", ["gzip", "deflate", "br"])
def test_masked_compressed_body_is_reencoded_and_content_length_fixed(enc: str) -> None:
    raw = encoded(BODY, enc)
    c = HttpRequestCodec()
    view, events = c.feed(raw)
    req = events[-1].request
    masked = bytearray(view)
    i = masked.find(b"jo@example.org")
    masked[i:i + 2] = b"**"
    out = c.wire(bytes(masked))
    head, _, body = out.partition(b"\r\n\r\n")
    assert b"Content-Length: %d\r\n" % len(body) in head + b"\r\n"
    dec = {"gzip": gzip.decompress, "deflate": zlib.decompress, "br": brotli.decompress}[enc]
    assert dec(body) == bytes(masked[req.body_start:req.body_end])


def test_masked_compressed_chunked_body_becomes_one_chunk() -> None:
    data = gzip.compress(BODY)
    raw = (b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n%s\r\n" % (10, data[:10])
           + b"%x\r\n%s\r\n0\r\n\r\n" % (len(data) - 10, data[10:]))
    c = HttpRequestCodec()
    view, _ = c.feed(raw)
    masked = view.replace(b"jo@", b"**@")
    out = c.wire(masked)
    body = out.split(b"\r\n\r\n", 1)[1]
    size, _, rest = body.partition(b"\r\n")
    assert gzip.decompress(rest[:int(size, 16)]) == BODY.replace(b"jo@", b"**@")
    assert rest[int(size, 16):] == b"\r\n0\r\n\r\n"


def test_request_metadata() -> None:
    c = HttpRequestCodec()
    _, events = c.feed(cl(BODY, "/v1/chat/completions?key=abc"))
    head, done = events
    assert isinstance(head, HeadDone) and isinstance(done, RequestDone)
    req = done.request
    assert (req.method, req.path, req.header("host")) == ("POST", "/v1/chat/completions",
                                                          "api.openai.com")
    assert req.body == BODY and req.body_end - req.body_start == len(BODY)


@pytest.mark.parametrize("raw, why", [
    (b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", "both"),
    (b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", "Content-Length"),
    (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", "Content-Length"),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", "transfer-encoding"),
    (b"POST / HTTP/1.1\r\nContent-Encoding: zstd\r\nContent-Length: 1\r\n\r\nx", "zstd"),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc", "CRLF"),
    (b"\x16\x03\x01\x02\x00\x01\x00", "not an HTTP"),
    (b"GET / HTTP/1.1\r\nbad header\r\n\r\n", "header"),
    (b"POST / HTTP/1.1\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\nnope", "corrupt"),
])
def test_hostile_input_is_an_http_error(raw: bytes, why: str) -> None:
    with pytest.raises(HttpError, match=why):
        HttpRequestCodec().feed(raw)


def test_heads_and_chunk_lines_are_bounded() -> None:
    with pytest.raises(HttpError, match="head larger"):
        HttpRequestCodec().feed(b"GET / HTTP/1.1\r\nX: " + b"a" * 70_000)
    with pytest.raises(HttpError, match="chunk-size line"):
        HttpRequestCodec().feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                                + b"1" * 5000)


def test_decompression_bomb_is_refused() -> None:
    bomb = gzip.compress(b"\0" * (32 * 1024 * 1024))
    raw = cl(bomb, "/x", b"Content-Encoding: gzip\r\n")
    with pytest.raises(HttpError, match="too large|larger"):
        HttpRequestCodec(max_decoded=1024 * 1024).feed(raw)


@pytest.mark.parametrize("first", [
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
    b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n"])
def test_upgrade_and_connect_are_refused_not_followed_raw(first: bytes) -> None:
    """Going raw on the client's word let a later gzip request through undecoded (red team):
    the codec does not see the server's 101 / 2xx, so it refuses both."""
    z = gzip.compress(KEY)
    second = cl(z, "/", b"Content-Encoding: gzip\r\n")
    c = HttpRequestCodec()
    with pytest.raises(HttpError, match="cannot be inspected on an intercepted flow"):
        c.feed(first + second)


KEY = b"AKIA" + b"Q4RZ7MXV" + b"2LKJ3HNP"       # a generated fake, never a real key


def wire_of(raw: bytes) -> tuple[bytes, bytes]:
    """Feed `raw`, release its whole view unchanged: (view, wire)."""
    c = HttpRequestCodec()
    view, _ = c.feed(raw)
    v, _ = c.eof()
    view += v
    return view, c.wire(view)


@pytest.mark.parametrize("sep", [b"\n", b"\r"])
def test_bare_cr_or_lf_in_a_head_is_refused(sep: bytes) -> None:
    """A lenient server splits a header line at a bare LF (or CR): `X-Pad: a<LF>Content-
    Encoding: gzip` is a gzip body to it, one header to a CRLF-only parser (red team)."""
    z = gzip.compress(b'{"k": "' + KEY + b'"}')
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nX-Pad: a" + sep
            + b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(z))
    with pytest.raises(HttpError, match="bare CR or LF"):
        HttpRequestCodec().feed(head + z)


def test_a_bare_lf_head_fails_at_once_and_is_never_forwarded_at_eof() -> None:
    z = gzip.compress(KEY)
    raw = (b"POST / HTTP/1.1\nHost: a\nContent-Encoding: gzip\nContent-Length: %d\n\n"
           % len(z) + z)
    with pytest.raises(HttpError, match="bare CR or LF"):
        HttpRequestCodec().feed(raw)
    c = HttpRequestCodec()
    assert c.feed(b"POST / HTTP/1.1\r\nHost: a\r\nX: 1") == (b"", [])
    assert c.eof() == (b"", []) and c.wire(b"") == b""     # an unfinished head never goes out


def test_chunk_extensions_are_dropped_not_forwarded_unscanned() -> None:
    raw = (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"2;note=" + KEY + b"\r\nhi\r\n0\r\n\r\n")
    view, wire = wire_of(raw)
    assert KEY not in view and KEY not in wire
    assert wire == raw.replace(b";note=" + KEY, b"")


def _gzip_with_comment(payload: bytes, comment: bytes) -> bytes:
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    deflated = co.compress(payload) + co.flush()
    hdr = b"\x1f\x8b\x08\x10\x00\x00\x00\x00\x00\xff" + comment + b"\x00"
    return hdr + deflated + struct.pack("<II", zlib.crc32(payload), len(payload))


@pytest.mark.parametrize("body", [
    _gzip_with_comment(b'{"messages": []}', KEY),            # FCOMMENT: skipped by zlib
    gzip.compress(b'{"messages": []}', mtime=0x41414141),    # MTIME: 4 bytes never decoded
    bare_gzip(b'{"a": 1}') + bare_gzip(b'{"b": 2}'),         # a second member's header
], ids=["fcomment", "mtime", "members"])
def test_gzip_header_fields_never_go_out_the_body_is_reencoded(body: bytes) -> None:
    raw = cl(body, "/", b"Content-Encoding: gzip\r\n")
    view, wire = wire_of(raw)
    head, _, sent = wire.partition(b"\r\n\r\n")
    assert KEY not in wire and sent != body
    assert sent == gzip.compress(gzip.decompress(body), mtime=0)
    assert b"Content-Length: %d\r\n" % len(sent) in head + b"\r\n"


@pytest.mark.parametrize("enc, body", [
    ("deflate", zlib.compress(b'{"messages": []}') + KEY),
    ("br", brotli.compress(b'{"messages": []}') + KEY),
    ("gzip", bare_gzip(b'{"messages": []}') + KEY),
])
def test_bytes_after_the_end_of_a_compressed_stream_are_refused(enc: str, body: bytes) -> None:
    raw = cl(body, "/", b"Content-Encoding: " + enc.encode() + b"\r\n")
    with pytest.raises(HttpError, match="after the end|corrupt"):
        HttpRequestCodec().feed(raw)
    c = HttpRequestCodec()                     # the tail in a later read: the same
    c.feed(raw[:-len(KEY)])
    with pytest.raises(HttpError, match="after the end|corrupt"):
        c.feed(raw[-len(KEY):])


def test_duplicate_content_length_is_refused_even_when_equal() -> None:
    """After a mask only one of two headers could be rewritten: the server would frame the
    re-encoded body by the stale one (request smuggling)."""
    z = gzip.compress(BODY)
    raw = (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n"
           b"Content-Length: %d\r\n\r\n" % (len(z), len(z)) + z)
    with pytest.raises(HttpError, match="Content-Length"):
        HttpRequestCodec().feed(raw)


def test_long_content_coding_chains_are_refused() -> None:
    raw = cl(b"x", "/", b"Content-Encoding: " + b",".join([b"gzip"] * 12_500) + b"\r\n")
    with pytest.raises(HttpError, match="12500 content codings"):
        HttpRequestCodec().feed(raw)


def test_hundreds_of_gzip_members_in_one_read_decode_iteratively() -> None:
    body = b"".join(bare_gzip(b"%d," % i) for i in range(3000))
    view, wire = wire_of(cl(body, "/", b"Content-Encoding: gzip\r\n"))
    assert view.endswith(b"".join(b"%d," % i for i in range(3000)))
    assert gzip.decompress(wire.partition(b"\r\n\r\n")[2]) == view.partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize("raw", [
    b"GET / HTTP/1.\xff\r\nHost: a\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Encoding: " + KEY + b"\r\nContent-Length: 1\r\n\r\nx",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: " + KEY + b"\r\n\r\n",
])
def test_errors_are_http_errors_that_never_echo_header_values(raw: bytes) -> None:
    with pytest.raises(HttpError) as info:
        HttpRequestCodec().feed(raw)
    assert KEY.decode() not in str(info.value) and "\xff" not in str(info.value)


def test_a_held_compressed_request_counts_and_is_capped() -> None:
    """The codec's buffers are held bytes too (red team: a zlib bomb with its trailer
    withheld grew the daemon past max_held_total): counted, and refused past max_held."""
    comp = zlib.compress(b"A" * (4 * 1024 * 1024), 9)
    head = (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Encoding: deflate\r\n"
            b"Content-Length: %d\r\n\r\n" % len(comp))
    c = HttpRequestCodec()
    c.feed(head + comp[:len(comp) // 2])
    assert c.buffered > len(comp) // 2
    capped = HttpRequestCodec(max_held=1024 * 1024)
    with pytest.raises(HttpError, match="max_held_bytes"):
        capped.feed(head + comp[:-4])


def test_compressed_bytes_that_decode_to_nothing_still_count_against_the_cap() -> None:
    empty_stored_block = b"\x00\x00\x00\xff\xff"         # a non-final stored block of 0 bytes
    body = empty_stored_block * 100_000
    raw = (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Encoding: deflate\r\n"
           b"Content-Length: %d\r\n\r\n" % (len(body) + 10) + body)
    with pytest.raises(HttpError, match="max_held_bytes"):
        HttpRequestCodec(max_held=64 * 1024).feed(raw)
