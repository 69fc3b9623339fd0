"""Local HTTPS servers that stand in for AI providers, with their own test CA.

`TestCA` makes a CA and leaf certificates with `cryptography` (independent of egressguard's
host CA code). `HttpsRecorder` listens on 127.x.y.z, terminates TLS with a leaf for the names
it is given (the test sends SNI such as api.openai.com to 127.10.0.1), records every plaintext
byte each connection delivered, and answers each complete HTTP/1.1 request with a small JSON
body. Its request parser is deliberately separate from egressguard's. Threads, bounded
timeouts; `close()` stops everything.
"""

from __future__ import annotations

import datetime
import gzip
import json
import os
import socket
import ssl
import subprocess
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


class TestCA:
    """A throw-away CA in `directory`: `ca.pem` plus leaves on demand."""

    __test__ = False

    def __init__(self, directory: str, name: str = "egressguard test CA"):
        self.dir = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(hours=1))
                     .not_valid_after(now + datetime.timedelta(days=2))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
                     .add_extension(x509.KeyUsage(True, False, False, False, False, True, True,
                                                  False, False), True)
                     .sign(self.key, hashes.SHA256()))
        self.ca_file = os.path.join(directory, f"{name.replace(' ', '-')}.pem")
        with open(self.ca_file, "wb") as fh:
            fh.write(self.cert.public_bytes(serialization.Encoding.PEM))
        os.chmod(self.ca_file, 0o644)

    def server_context(self, names: list[str]) -> ssl.SSLContext:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                               False)
                .sign(self.key, hashes.SHA256()))
        path = os.path.join(self.dir, f"leaf-{names[0]}-{os.urandom(3).hex()}.pem")
        with open(path, "wb") as fh:
            fh.write(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
            fh.write(cert.public_bytes(serialization.Encoding.PEM))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(path)
        return ctx


@dataclass
class Request:
    """One complete request as the server understood it."""

    head: bytes
    raw: bytes                       # exactly the plaintext bytes of this request
    body: bytes                      # de-chunked, still content-encoded

    def header(self, name: str) -> str:
        for line in self.head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == name.lower().encode():
                return v.strip().decode("latin-1")
        return ""

    @property
    def decoded_body(self) -> bytes:
        enc = self.header("content-encoding").lower()
        if enc == "gzip":
            return gzip.decompress(self.body)
        if enc == "deflate":
            return zlib.decompress(self.body)
        if enc == "br":
            import brotli
            return brotli.decompress(self.body)
        return self.body


@dataclass
class Conn:
    data: bytearray = field(default_factory=bytearray)
    sent: int = 0
    requests: list[Request] = field(default_factory=list)
    error: str = ""


def _parse(buf: bytes) -> tuple[Request, int] | None:
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buf[:end]
    pos = end + 4
    req = Request(head, b"", b"")
    te = req.header("transfer-encoding").lower()
    if te == "chunked":
        body = bytearray()
        while True:
            i = buf.find(b"\r\n", pos)
            if i < 0:
                return None
            size = int(buf[pos:i].split(b";")[0], 16)
            pos = i + 2
            if size == 0:
                j = buf.find(b"\r\n\r\n", pos - 2)
                if j < 0:
                    return None
                pos = j + 4
                break
            if len(buf) < pos + size + 2:
                return None
            body += buf[pos:pos + size]
            pos += size + 2
        return Request(head, buf[:pos], bytes(body)), pos
    n = int(req.header("content-length") or 0)
    if len(buf) < pos + n:
        return None
    return Request(head, buf[:pos + n], buf[pos:pos + n]), pos + n


class HttpsRecorder:
    """A TLS HTTP/1.1 server on `host` with a leaf (from `ca`) for `names`."""

    def __init__(self, host: str, ca: TestCA, names: list[str]):
        self.ctx = ca.server_context(names)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.host, self.port = host, self.sock.getsockname()[1]
        self.connections: list[Conn] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads.append(t)

    @property
    def requests(self) -> list[Request]:
        return [r for c in self.connections for r in c.requests]

    @property
    def total_bytes(self) -> int:
        return sum(len(c.data) for c in self.connections)

    @property
    def total_sent(self) -> int:
        return sum(c.sent for c in self.connections)

    def all_data(self) -> bytes:
        return b"".join(bytes(c.data) for c in self.connections)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            conn = Conn()
            self.connections.append(conn)
            t = threading.Thread(target=self._serve, args=(raw, conn), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, raw: socket.socket, conn: Conn) -> None:
        raw.settimeout(30)
        try:
            tls = self.ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            conn.error = type(exc).__name__
            raw.close()
            return
        buf = b""
        try:
            while not self._stop.is_set():
                data = tls.recv(256 * 1024)
                if not data:
                    break
                conn.data += data
                buf += data
                while (parsed := _parse(buf)) is not None:
                    req, used = parsed
                    buf = buf[used:]
                    conn.requests.append(req)
                    body = json.dumps({"ok": True, "received": len(req.raw)}).encode()
                    resp = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                            b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                    tls.sendall(resp)
                    conn.sent += len(resp)
        except (ssl.SSLError, OSError) as exc:
            conn.error = type(exc).__name__
        finally:
            tls.close()

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        for t in self._threads:
            t.join(5)

    def __enter__(self) -> "HttpsRecorder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def trust_bundle(host: Any, directory: Path, *also: str) -> str:
    """A CA bundle an agent (as nobody) can read: the daemon's host CA (`egressguard ca
    export`) plus the PEM files in `also` (a test CA the upstream servers use)."""
    res = subprocess.run([host.python, "-m", "egressguard", "ca", "export", "--config",
                          str(host.config_path)], capture_output=True, text=True, timeout=30,
                         check=True)
    bundle = directory / "trust.pem"
    bundle.write_text(res.stdout + "".join(Path(p).read_text() for p in also))
    os.chmod(bundle, 0o644)
    return str(bundle)
