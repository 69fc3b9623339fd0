"""A hostile agent speaking raw bytes over TLS, run inside the guarded cgroup (as nobody).

    raw_tls_agent.py SPEC.json

SPEC: {"ip", "port", "sni", "cafile", "timeout", "alpn"?, "steps": [{"send_b64"} |
{"recv": secs, "once"?} | {"sleep": secs} | {"close_notify": true}]}. Unlike tls_agent.py
(http.client) it sends exactly the bytes given: malformed heads, bare LFs, chunk extensions.
Prints one JSON line: {"recv": [b64 per recv step], "error"}.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import sys
import time


def main() -> None:
    spec = json.load(open(sys.argv[1]))
    ctx = ssl.create_default_context(cafile=spec["cafile"])
    if spec.get("alpn"):
        ctx.set_alpn_protocols(spec["alpn"])
    out: dict[str, object] = {"recv": [], "error": ""}
    received: list[str] = []
    out["recv"] = received
    try:
        raw = socket.create_connection((spec["ip"], spec["port"]), spec.get("timeout", 20))
        sock = ctx.wrap_socket(raw, server_hostname=spec["sni"])
        for st in spec["steps"]:
            got = b""
            if "send_b64" in st:
                sock.sendall(base64.b64decode(st["send_b64"]))
                continue
            if "sleep" in st:
                time.sleep(min(st["sleep"], 10))
                continue
            if "recv" in st:
                sock.settimeout(st["recv"])
                try:
                    while True:
                        data = sock.recv(65536)
                        if not data:
                            break
                        got += data
                        if st.get("once"):
                            break
                except (socket.timeout, ssl.SSLError, OSError):
                    pass
            elif st.get("close_notify"):
                plain = sock.unwrap()          # close_notify, keep the TCP connection
                plain.settimeout(5)
                try:
                    got = plain.recv(65536)
                except OSError:
                    got = b""
            received.append(base64.b64encode(got).decode())
    except (OSError, ssl.SSLError) as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"[:300]
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
