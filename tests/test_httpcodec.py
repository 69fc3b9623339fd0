"""httpcodec.py, sans-IO: requests fed split at every offset give the same view and events,
unmasked views go back to the wire byte for byte, masked compressed bodies are re-encoded with
fixed framing, and hostile input is an HttpError (never a crash, never an unbounded buffer)."""

from __future__ import annotations

import gzip
import zlib

import brotli
import pytest

from egressguard.httpcodec import HeadDone, HttpError, HttpRequestCodec, RequestDone

BODY = b'{"model":"gpt-4o","messages":[{"role":"user","content":"mail jo@example.org now"}]}'


def cl(body: bytes, path: str = "/v1/chat/completions", extra: bytes = b"") -> bytes:
    return (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: api.openai.com\r\n" + extra
            + b"Content-Length: %d\r\n\r\n" % len(body) + body)


def chunked(pieces: list[bytes], trailers: bytes = b"") -> bytes:
    out = b"POST /v1/files HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    for i, p in enumerate(pieces):
        out += b"%x%s\r\n%s\r\n" % (len(p), b";n=%d" % i if i % 2 else b"", p)
    return out + b"0\r\n" + trailers + b"\r\n"


def encoded(body: bytes, enc: str) -> bytes:
    data = {"gzip": gzip.compress, "deflate": zlib.compress, "br": brotli.compress}[enc](body)
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


def test_every_split_gives_the_same_view_and_the_original_wire_bytes() -> None:
    whole_view, whole_wire, whole_events = run(STREAM, [])
    assert whole_wire == STREAM
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
    assert out == raw and not c.holding


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


def test_after_an_upgrade_bytes_pass_as_raw() -> None:
    raw = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n\x81\x05hello"
    view, wire, events = run(raw, [])
    assert view == raw and wire == raw and events == ["HeadDone", "RequestDone"]
