"""An "AI agent" speaking HTTPS with http.client, run inside the guarded cgroup.

    tls_agent.py SPEC.json

SPEC: {"ip", "port", "sni", "cafile", "requests": [{"method", "path", "headers",
"body_b64" | "chunks_b64": [...]}], "timeout"}. It connects to ip:port (a 127.x stand-in) with
TLS SNI and Host `sni`, trusting only `cafile`, sends each request on one keep-alive connection,
and prints one JSON line: {"responses": [{"status", "body"}], "error"}.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
import sys


def main() -> None:
    spec = json.load(open(sys.argv[1]))
    ctx = ssl.create_default_context(cafile=spec["cafile"])
    ip, port = spec["ip"], spec["port"]
    timeout = spec.get("timeout", 60)

    class Conn(http.client.HTTPSConnection):
        def connect(self) -> None:
            sock = socket.create_connection((ip, port), timeout)
            self.sock = ctx.wrap_socket(sock, server_hostname=spec["sni"])

    out: dict = {"responses": [], "error": ""}
    if "raw_b64" in spec:              # hostile mode: bytes that are not HTTP, over TLS
        try:
            sock = ctx.wrap_socket(socket.create_connection((ip, port), timeout),
                                   server_hostname=spec["sni"])
            sock.sendall(base64.b64decode(spec["raw_b64"]))
            out["reply"] = base64.b64encode(sock.recv(65536)).decode()
        except (OSError, ssl.SSLError) as exc:
            out["error"] = f"{type(exc).__name__}: {exc}"[:300]
        print(json.dumps(out), flush=True)
        return
    if spec.get("corrupt_after_handshake"):   # a valid handshake, then a record that fails
        try:
            raw = socket.create_connection((ip, port), timeout)
            inc, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            tls = ctx.wrap_bio(inc, outgoing, server_hostname=spec["sni"])
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    raw.sendall(outgoing.read())
                    data = raw.recv(65536)
                    if not data:
                        raise ConnectionError("closed during the handshake")
                    inc.write(data)
            raw.sendall(outgoing.read() + b"\x17\x03\x03\x00\x20" + b"\x00" * 32)
            out["handshake"] = True
            raw.settimeout(10)
            while raw.recv(65536):
                pass
        except (OSError, ssl.SSLError) as exc:
            out["error"] = f"{type(exc).__name__}: {exc}"[:300]
        print(json.dumps(out), flush=True)
        return
    conn = Conn(spec["sni"], port, context=ctx, timeout=timeout)
    try:
        for r in spec["requests"]:
            headers = dict(r.get("headers", {}))
            if "chunks_b64" in r:
                body = iter([base64.b64decode(c) for c in r["chunks_b64"]])
                conn.request(r["method"], r["path"], body=body, headers=headers,
                             encode_chunked=True)
            else:
                conn.request(r["method"], r["path"], body=base64.b64decode(r["body_b64"]),
                             headers=headers)
            resp = conn.getresponse()
            out["responses"].append({"status": resp.status,
                                     "body": resp.read().decode("utf-8", "replace")})
    except (OSError, http.client.HTTPException) as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"[:300]
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
