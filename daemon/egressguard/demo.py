"""`make demo`: watch the guard hold an agent's request that carries a secret.

What it does, all on this machine and all on loopback:
1. starts stand-in "external" services on 127.x addresses (an AI API, a paste site);
2. starts egressguard on a demo cgroup with a demo policy (hold secrets, mask e-mail
   addresses, block the paste site);
3. runs a demo "agent" inside that cgroup as user `nobody`, four times: a plain prompt
   (allowed), a prompt with an e-mail address (masked in flight), an upload to the paste site
   (blocked), and a prompt carrying an AWS access key (held);
4. shows the held request as `egressctl pending` shows it and prints the command to approve or
   deny it; waits for your decision (or, with --auto-approve, approves as root itself);
5. shows what the destination received, the audit trail, and `egressctl audit verify`.

Everything (the cgroup, the daemon, the servers) is stopped and removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from egressguard.harness import GuardedHost, base_config, free_port

AGENT = r'''
import socket, sys
host, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
body = sys.stdin.buffer.read()
req = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: " + name.encode() +
       b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() +
       b"\r\nConnection: close\r\n\r\n" + body)
try:
    s = socket.create_connection((host, port), timeout=300)
    s.sendall(req)
    answer = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        answer += chunk
    print("agent: got answer:", answer.split(b"\r\n\r\n", 1)[-1].decode(errors="replace"))
except (ConnectionResetError, BrokenPipeError):
    print("agent: connection reset by the guard (nothing was sent)")
'''


class StandIn:
    """A stand-in HTTP service on a loopback address that records what it receives."""

    def __init__(self, ip: str, name: str):
        self.name = name
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((ip, 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.ip, self.port = ip, self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self._stop = False
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(300)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = next((int(v) for k, _, v in (h.partition(b":") for h in head.split(b"\r\n"))
                           if k.strip().lower() == b"content-length"), 0)
            while len(body) < length:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                body += chunk
            self.received.append(head + b"\r\n\r\n" + body)
            answer = b'{"reply": "hello from ' + self.name.encode() + b'"}'
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: " + str(len(answer)).encode()
                         + b"\r\nConnection: close\r\n\r\n" + answer)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self._stop = True
        self.sock.close()


def _as_root_prefix() -> str:
    """"sudo " when the demo was started with sudo (the second terminal is likely a normal
    user's), "" when it runs as root itself: a minimal Debian has no sudo at all."""
    return "sudo " if os.environ.get("SUDO_USER") and shutil.which("sudo") else ""


def say(text: str = "") -> None:
    print(text, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="egressguard-demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--auto-approve", action="store_true",
                    help="approve the held request yourself after a few seconds (as root)")
    ap.add_argument("--workdir", default="demo-state", help="where the demo keeps its files")
    ap.add_argument("--timeout", type=int, default=300, help="how long the hold waits (s)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        say("the demo loads eBPF programs: run it as root (`make demo` as root, or "
            "`sudo make demo`)")
        return 2
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    for old in ("audit.jsonl", "approvals.sock"):
        (work / old).unlink(missing_ok=True)
    ai_api = StandIn("127.10.0.1", "api.openai.com (stand-in)")
    paste = StandIn("127.66.0.1", "pastebin.com (stand-in)")
    cfg = base_config(work, rules=[
        {"name": "no-paste-sites", "destination": {"cidr": ["127.66.0.0/16"]}, "action": "block",
         "reason": "paste sites are a classic exfiltration path"},
        {"name": "secrets-need-approval", "detected": ["secret"], "action": "hold",
         "reason": "a person confirms before a credential leaves the host"},
        {"name": "no-emails-out", "detected": ["pii.email"], "action": "mask"},
    ])
    cfg["proxy"]["listen"] = f"127.0.0.1:{free_port()}"
    cfg["approvals"]["timeout"] = f"{args.timeout}s"
    say("== egressguard demo ==")
    say(f"stand-ins: api.openai.com -> {ai_api.ip}:{ai_api.port}, "
        f"pastebin.com -> {paste.ip}:{paste.port} (loopback only)")
    try:
        with GuardedHost(work, cfg) as host:
            say(f"guard running: cgroup {host.cgroup_rel}, policy {host.config_path}")
            socket_arg = shlex.quote(host.socket_path)

            def agent(title: str, target: StandIn, name: str, body: bytes) -> subprocess.Popen:
                say(f"\n-- agent (uid nobody, in the guarded cgroup): {title}")
                proc = host.agent(["/usr/bin/python3", "-c", AGENT, target.ip, str(target.port),
                                   name], stdin=subprocess.PIPE)
                assert proc.stdin is not None
                proc.stdin.write(body)          # on stdin: no secret on a command line
                proc.stdin.close()
                return proc

            agent("a plain prompt to the AI API", ai_api, "api.openai.com",
                  b'{"messages": [{"role": "user", "content": "Summarise our Q3 plan"}]}').wait(60)
            email = "jane.doe" + "@" + "example.com"
            agent("a prompt with an e-mail address", ai_api, "api.openai.com",
                  b'{"messages": [{"role": "user", "content": "Write to ' + email.encode()
                  + b'"}]}').wait(60)
            say("   the API received: " + ai_api.received[-1].split(b"\r\n\r\n", 1)[-1].decode())
            agent("an upload to a paste site", paste, "pastebin.com", b"db dump ...").wait(60)
            key = "AKIA" + "DEMO7Q2MXV5LKJ3H"
            held_body = (b'{"messages": [{"role": "user", "content": "deploy with '
                         + key.encode() + b'"}]}')
            proc = agent("a prompt carrying an AWS access key", ai_api, "api.openai.com",
                         held_body)
            hold = None
            for _ in range(100):
                res = host.egressctl("pending", "--json")
                lines = [json.loads(x) for x in res.stdout.splitlines() if x.strip()]
                if lines:
                    hold = lines[0]
                    break
                time.sleep(0.1)
            if hold is None:
                say("!! the request was not held; see the daemon log:")
                say("\n".join(host.log_lines[-20:]))
                return 1
            say("\n   the request is HELD. `egressctl pending` shows:\n")
            say(host.egressctl("pending").stdout)
            egressctl = Path(sys.executable).parent / "egressctl"
            ctl = f"{_as_root_prefix()}{egressctl} --socket {socket_arg}"
            say("   decide in another terminal (the agent runs as nobody; root is the approver):")
            say(f"     {ctl} approve {hold['id']} --reason 'ticket OPS-42: demo key'")
            say(f"     {ctl} deny {hold['id']} --reason 'keys do not go to chat APIs'")
            if args.auto_approve:
                time.sleep(2)
                say(f"\n   (--auto-approve) approving {hold['id']} as root ...")
                res = host.egressctl("approve", hold["id"], "--reason", "demo auto-approve")
                say("   " + (res.stdout or res.stderr).strip())
            else:
                say(f"\n   waiting up to {args.timeout}s for your decision ...")
            proc.wait(args.timeout + 30)
            delivered = [r for r in ai_api.received if b"deploy with" in r]
            if not delivered:
                say("   the API received nothing of the held request")
            elif delivered[0].endswith(b"\r\n\r\n" + held_body):
                say("   the API received the held request once, byte-exact")
            else:
                say("   !! the API received something else than the held request")
            say("\n-- audit trail (" + host.audit_path + "):")
            for line in Path(host.audit_path).read_text().splitlines():
                ev = json.loads(line)
                if ev["event"] in ("flow.detect", "flow.hold", "flow.decision", "flow.block"):
                    bits = [ev["event"], ev.get("rule", ""), ev.get("reason", "")]
                    if "decision" in ev and isinstance(ev["decision"], dict):
                        d = ev["decision"]
                        bits = [ev["event"], d.get("outcome", ""), "by " + str(d.get("by")),
                                repr(d.get("reason", ""))]
                    say("   #" + str(ev["seq"]) + " " + "  ".join(b for b in bits if b))
            say("\n" + host.egressctl("audit", "verify", host.audit_path).stdout.strip())
    finally:
        ai_api.close()
        paste.close()
    say("\ndemo finished: the daemon stopped, the probes were detached and the demo cgroup "
        "removed.\nThe audit log of this run stays in " + str(work / "audit.jsonl")
        + " (the next demo run starts a new one)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
