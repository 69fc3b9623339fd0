"""Real TCP servers on loopback that stand in for "external" destinations in tests.

`RecordingServer` accepts connections on 127.x.y.z (or ::1), records every byte each connection
sent, and answers with a callback's bytes. Tests then assert exactly what reached the
destination: nothing for a blocked or denied flow, the byte-exact payload once for an approved
one. Threads, bounded timeouts; `close()` stops everything.
"""

from __future__ import annotations

import hashlib
import socket
import threading
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Received:
    """What one connection delivered to the server."""

    data: bytearray = field(default_factory=bytearray)
    sha256: "hashlib._Hash" = field(default_factory=hashlib.sha256)
    size: int = 0
    closed: bool = False
    keep: bool = True

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self.sha256.update(chunk)
        if self.keep:
            self.data += chunk


Responder = Callable[[bytes], bytes]   # whole request -> response (sent after the client's EOF)


class RecordingServer:
    """Accept, record, optionally answer (echo while reading, or reply after EOF)."""

    def __init__(self, host: str, port: int = 0, *, respond: Responder | None = None,
                 echo: bool = False, keep_bytes: bool = True,
                 reply_after: bytes | None = None):
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(256)
        self.sock.settimeout(0.2)
        self.host, self.port = host, self.sock.getsockname()[1]
        self.respond, self.echo, self.keep = respond, echo, keep_bytes
        self.reply_after = reply_after       # reply as soon as the data ends with this marker
        self.connections: list[Received] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept_loop, daemon=True)
        self._accepter.start()

    @property
    def total_bytes(self) -> int:
        return sum(c.size for c in self.connections)

    def all_data(self) -> bytes:
        return b"".join(bytes(c.data) for c in self.connections)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            rec = Received(keep=self.keep)
            self.connections.append(rec)
            t = threading.Thread(target=self._serve, args=(conn, rec), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket, rec: Received) -> None:
        conn.settimeout(60)
        try:
            while not self._stop.is_set():
                try:
                    chunk = conn.recv(262144)
                except socket.timeout:
                    break
                if not chunk:
                    break
                rec.add(chunk)
                if self.echo:
                    conn.sendall(chunk)
                if self.reply_after is not None and bytes(rec.data).endswith(self.reply_after):
                    conn.sendall(self.respond(bytes(rec.data)) if self.respond else b"OK\n")
            if self.respond is not None and self.reply_after is None:
                conn.sendall(self.respond(bytes(rec.data)))
            try:
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        except OSError:
            pass
        finally:
            rec.closed = True
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._accepter.join(5)
        self.sock.close()
        for t in self._threads:
            t.join(5)

    def __enter__(self) -> "RecordingServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
