"""Real SIEM-side receivers on loopback for the sink tests and bench/sinks.py.

- `Rsyslog`: Debian's rsyslogd, started with its own config, work directory, pid file and a
  free loopback port (TCP, or TLS with gtls and a test CA), never the system's rsyslog service.
  It writes `MSGID <TAB> STRUCTURED-DATA <TAB> MSG` per message, as rsyslog parsed them, so a
  test sees exactly what a SIEM behind it would.
- `HecServer`: a small HTTP server that records every request (path, headers, body) and
  answers like Splunk's HTTP Event Collector; `fail_with` makes it answer errors.
- `make_test_pki`: a throw-away CA, a server certificate for 127.0.0.1 and a client
  certificate, made with `cryptography`.
Every wait is bounded; `stop()` ends what `start()` began.
"""

from __future__ import annotations

import datetime as dt
import http.server
import ipaddress
import json
import os
import re
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from egressguard.harness import free_port, terminate

SEQ = re.compile(rb'seq="(\d+)"')


# -- certificates --------------------------------------------------------------------------

@dataclass(frozen=True)
class TestPki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_test_pki(folder: Path) -> TestPki:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
        os.chmod(path, 0o600)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("egressguard test CA"))
          .issuer_name(name("egressguard test CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now)
          .not_valid_after(now + dt.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False,
                                       False), critical=True)
          .sign(ca_key, hashes.SHA256()))

    def leaf(cn: str, server: bool) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        b = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca.subject)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now).not_valid_after(now + dt.timedelta(days=2))
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.ExtendedKeyUsage(
                 [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH if server
                  else x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
        if server:
            b = b.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
        return b.sign(ca_key, hashes.SHA256()), key

    pki = TestPki(folder / "ca.pem", folder / "server.pem", folder / "server.key",
                  folder / "client.pem", folder / "client.key")
    pki.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for (cert, key), cpath, kpath in ((leaf("127.0.0.1", True), pki.server_cert, pki.server_key),
                                      (leaf("egressguard", False), pki.client_cert,
                                       pki.client_key)):
        cpath.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        write_key(key, kpath)
    return pki


# -- rsyslog -------------------------------------------------------------------------------

@dataclass
class Rsyslog:
    workdir: Path
    tls: TestPki | None = None
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    udp_port: int | None = None          # also listen on UDP (imudp) when set
    client_certs: bool = False           # TLS: require a client certificate from the test CA

    @property
    def output(self) -> Path:
        return self.workdir / "received.log"

    def config(self) -> str:
        work = self.workdir / "work"
        work.mkdir(parents=True, exist_ok=True)
        glob = [f'workDirectory="{work}"', 'maxMessageSize="256k"']
        mod = ""
        if self.tls:
            glob += ['defaultNetstreamDriver="gtls"',
                     f'defaultNetstreamDriverCAFile="{self.tls.ca}"',
                     f'defaultNetstreamDriverCertFile="{self.tls.server_cert}"',
                     f'defaultNetstreamDriverKeyFile="{self.tls.server_key}"']
            auth = "x509/certvalid" if self.client_certs else "anon"
            mod = f' streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="{auth}"'
        return "\n".join([
            f"global({' '.join(glob)})",
            f'module(load="imtcp"{mod})',
            'template(name="egt" type="string" '
            'string="%msgid%\\t%structured-data%\\t%msg%\\n")',
            'ruleset(name="eg") {',
            f'  action(type="omfile" file="{self.output}" template="egt")',
            '}',
            f'input(type="imtcp" address="127.0.0.1" port="{self.port}" ruleset="eg")',
            *(['module(load="imudp")',
               f'input(type="imudp" address="127.0.0.1" port="{self.udp_port}" ruleset="eg")']
              if self.udp_port else []),
            ""])

    def start(self, timeout: float = 20.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "rsyslog.conf"
        conf.write_text(self.config())
        self.proc = subprocess.Popen(
            ["rsyslogd", "-n", "-f", str(conf), "-i", str(self.workdir / "rsyslog.pid")],
            stdout=subprocess.DEVNULL, stderr=open(self.workdir / "rsyslog.stderr", "ab"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rsyslogd exited: "
                                   f"{(self.workdir / 'rsyslog.stderr').read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("rsyslogd did not listen in time")

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        terminate(self.proc, timeout, kill_wait=5)
        self.proc = None

    def lines(self) -> list[bytes]:
        try:
            return [ln for ln in self.output.read_bytes().split(b"\n") if ln]
        except FileNotFoundError:
            return []

    def seqs(self) -> list[int]:
        out = []
        for ln in self.lines():
            m = SEQ.search(ln.split(b"\t", 2)[1] if ln.count(b"\t") >= 2 else ln)
            if m:
                out.append(int(m.group(1)))
        return out

    def wait_for(self, want: set[int], timeout: float = 60.0) -> list[int]:
        deadline = time.monotonic() + timeout
        seqs: list[int] = []
        while time.monotonic() < deadline:
            seqs = self.seqs()
            if want <= set(seqs):
                return seqs
            time.sleep(0.1)
        return seqs

    def __enter__(self) -> "Rsyslog":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- HEC -----------------------------------------------------------------------------------

@dataclass
class HecRequest:
    path: str
    headers: dict[str, str]
    body: bytes

    def events(self) -> list[dict]:
        """HEC's batch format: JSON objects one after another (whitespace between)."""
        dec = json.JSONDecoder()
        text, i, out = self.body.decode("utf-8"), 0, []
        while i < len(text):
            while i < len(text) and text[i].isspace():
                i += 1
            if i == len(text):
                break
            obj, i = dec.raw_decode(text, i)
            out.append(obj)
        return out


class HecServer:
    def __init__(self, token: str, tls: TestPki | None = None):
        self.token = token
        self.requests: list[HecRequest] = []
        self.fail_with: int | None = None
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:   # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                if outer.fail_with is not None:
                    return self._answer(outer.fail_with, {"text": "Server is busy", "code": 9})
                if self.headers.get("Authorization") != f"Splunk {outer.token}":
                    return self._answer(403, {"text": "Invalid token", "code": 4})
                with outer.lock:
                    outer.requests.append(HecRequest(self.path, dict(self.headers), body))
                self._answer(200, {"text": "Success", "code": 0})

            def _answer(self, status: int, obj: dict) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.scheme = "http"
        if tls is not None:
            import ssl
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(tls.server_cert), str(tls.server_key))
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/services/collector/event"

    def events(self) -> list[dict]:
        with self.lock:
            return [e for r in self.requests for e in r.events()]

    def __enter__(self) -> "HecServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
