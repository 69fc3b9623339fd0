"""The hostname sniffer, fed byte strings split at every offset (h11 style, no sockets)."""

from __future__ import annotations

import socket
import ssl
import threading

import pytest

from egressguard.sniff import NEED_MORE, sniff_host


def real_client_hello(server_name: str | None) -> bytes:
    """The first flight of Python's own TLS client, captured over a socketpair."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    a, b = socket.socketpair()
    got: list[bytes] = []

    def read() -> None:
        b.settimeout(5)
        got.append(b.recv(65536))

    t = threading.Thread(target=read)
    t.start()
    with ctx.wrap_socket(a, server_hostname=server_name, do_handshake_on_connect=False) as tls:
        tls.settimeout(0.5)
        try:
            tls.do_handshake()
        except (socket.timeout, ssl.SSLError, OSError):
            pass
    t.join(5)
    b.close()
    return got[0]


@pytest.mark.parametrize("name", ["api.openai.com", "example.test"])
def test_tls_sni_at_every_split(name: str) -> None:
    hello = real_client_hello(name)
    assert sniff_host(hello) == name
    assert sniff_host(b"") is NEED_MORE
    for cut in range(1, len(hello)):
        # a prefix never yields a wrong answer; the whole hello always yields the name
        assert sniff_host(hello[:cut]) in (NEED_MORE, name)
    assert sniff_host(hello + b"\x17\x03\x03\x00\x05hello") == name


def test_tls_without_sni_is_empty() -> None:
    hello = real_client_hello(None)
    assert sniff_host(hello) == ""


def test_http_host_at_every_split() -> None:
    req = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: API.OpenAI.com:443\r\n"
           b"Content-Length: 2\r\n\r\n{}")
    assert sniff_host(req) == "api.openai.com"
    for cut in range(1, len(req)):
        assert sniff_host(req[:cut]) in (NEED_MORE, "api.openai.com")


def test_http_without_host_header_is_empty() -> None:
    assert sniff_host(b"GET / HTTP/1.0\r\nAccept: */*\r\n\r\n") == ""


def test_http_host_ipv6_literal_has_no_name() -> None:
    assert sniff_host(b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n") == ""


@pytest.mark.parametrize("garbage", [b"SSH-2.0-OpenSSH_9.2\r\n", b"\x00\x01\x02\x03",
                                     b"\x16\x01\x00\x00\x00", b"\x16\x03\x01\x00\x04\x02\x00\x00\x00",
                                     b"hello world"])
def test_not_tls_or_http_is_empty(garbage: bytes) -> None:
    assert sniff_host(garbage) == ""


def test_huge_header_without_end_gives_up() -> None:
    assert sniff_host(b"GET / HTTP/1.1\r\nX: " + b"a" * 20000) == ""


def test_hostile_hostname_is_rejected() -> None:
    assert sniff_host(b"GET / HTTP/1.1\r\nHost: evil\x00name\r\n\r\n") == ""
