"""egressctl: see and decide held flows, list flows, verify the audit log.

    egressctl [--socket PATH] pending [--json]
    egressctl [--socket PATH] approve HOLD_ID --reason TEXT [--scope once|process-destination|process]
                                      [--ttl 15m] [--break-glass]
    egressctl [--socket PATH] deny HOLD_ID --reason TEXT
    egressctl [--socket PATH] watch [--json]
    egressctl [--socket PATH] flows [--since 1h] [--provider ID] [--host NAME] [--json]
    egressctl [--socket PATH] usage [--by process|destination|provider|class|user] [--since 24h]
                                    [--json]
    egressctl [--socket PATH] status [--json]
    egressctl [--socket PATH] reload
    egressctl [--socket PATH] grants [--json]
    egressctl [--socket PATH] revoke GRANT_ID --reason TEXT
    egressctl --server HOST:PORT --cert FILE --key FILE --ca FILE ...   (remote, mutual TLS)
    egressctl audit verify FILE        (FILE and its rotated segments FILE.<seq>)

The daemon knows who you are from the socket's peer credentials, or, with --server, from
your client certificate (mapped by approvals.identities); nothing here sends a user name.
Errors are one line on stderr. Exit codes: 0 ok; 1 refused by the daemon (decision refused,
not found, not allowed) or audit log tampered; 2 usage or local error; 3 the daemon cannot be
reached (not running, socket missing, no permission on the socket).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

from egressguard.cli.termsafe import printable

DEFAULT_SOCKET = "/run/egressguard/approvals.sock"
RPC_TIMEOUT_S = 10.0

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


class CtlError(Exception):
    """A one-line message for stderr and the exit code that goes with it."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


# -- connection --------------------------------------------------------------------------------

def _unreachable(path: str, detail: str = "") -> CtlError:
    """Why the socket cannot be used, found by trying it directly (errno is precise, gRPC's
    UNAVAILABLE is not)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        probe.connect(path)
    except FileNotFoundError:
        return CtlError(f"is egressguard running? socket {path} not found", EXIT_UNREACHABLE)
    except PermissionError:
        return CtlError(f"permission denied on {path} (or a directory above it); ask an "
                        "administrator, or use --socket", EXIT_UNREACHABLE)
    except ConnectionRefusedError:
        return CtlError(f"is egressguard running? nothing listens on {path} (stale socket)",
                        EXIT_UNREACHABLE)
    except OSError as e:
        if e.errno == errno.ENOTSOCK:
            return CtlError(f"{path} is not a socket", EXIT_UNREACHABLE)
        return CtlError(f"cannot connect to {path}: {e.strerror or e}", EXIT_UNREACHABLE)
    finally:
        probe.close()
    return CtlError(f"cannot talk to egressguard on {path}: {detail or 'unavailable'}",
                    EXIT_UNREACHABLE)


class Client:
    """A thin wrapper over the generated stub that turns gRPC errors into CtlError."""

    def __init__(self, path: str, tls: tuple[str, bytes, bytes, bytes] | None = None) -> None:
        import grpc  # imported here so `egressctl audit verify` works without a daemon

        from egressguard.approvals._proto import approvals_pb2 as pb
        from egressguard.approvals._proto import approvals_pb2_grpc as pb_grpc

        self.grpc = grpc
        self.pb = pb
        self.path = path
        self.remote = tls is not None
        if tls is not None:
            server, cert, key, ca = tls
            self.path = server
            creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key,
                                                 certificate_chain=cert)
            self.channel = grpc.secure_channel(server, creds)
        else:
            self.channel = grpc.insecure_channel("unix:" + os.path.abspath(path))
        self.stub = pb_grpc.ApprovalsStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def error(self, e: Any) -> CtlError:
        """Map a grpc.RpcError to a one-line message."""
        code = e.code() if hasattr(e, "code") else None
        details = (e.details() if hasattr(e, "details") else "") or str(code)
        sc = self.grpc.StatusCode
        if code == sc.UNAVAILABLE:
            if self.remote:
                return CtlError(f"cannot reach egressguard at {self.path} over mutual TLS: "
                                f"{details}", EXIT_UNREACHABLE)
            return _unreachable(self.path, details)
        if code == sc.UNAUTHENTICATED:
            return CtlError(details, EXIT_REFUSED)
        if code == sc.DEADLINE_EXCEEDED:
            return CtlError(f"egressguard did not answer within {RPC_TIMEOUT_S:g}s on {self.path}",
                            EXIT_UNREACHABLE)
        if code == sc.UNIMPLEMENTED:
            return CtlError(f"the daemon on {self.path} does not serve this call (version mismatch?)",
                            EXIT_REFUSED)
        return CtlError(details, EXIT_REFUSED)

    def call(self, method: Callable[..., Any], request: Any) -> Any:
        try:
            return method(request, timeout=RPC_TIMEOUT_S)
        except self.grpc.RpcError as e:
            raise self.error(e) from None


# -- rendering ---------------------------------------------------------------------------------

def process_json(p: Any) -> dict[str, Any]:
    return {"pid": p.pid, "exe": p.exe, "uid": p.uid, "user": p.user, "gid": p.gid,
            "comm": p.comm, "cmdline": list(p.cmdline), "unit": p.unit, "container": p.container}


def destination_json(d: Any) -> dict[str, Any]:
    return {"ip": d.ip, "port": d.port, "host": d.host, "transport": d.transport}


def detection_json(d: Any) -> dict[str, Any]:
    """Masked preview and fingerprint only; the daemon never sends a raw value."""
    return {"detector": d.detector, "class": d.data_class, "preview": d.preview,
            "fingerprint": d.fingerprint, "severity": d.severity, "confidence": d.confidence}


def hold_json(h: Any) -> dict[str, Any]:
    return {
        "id": h.id,
        "flow_id": h.flow_id,
        "process": process_json(h.process),
        "destination": destination_json(h.destination),
        "detections": [detection_json(d) for d in h.detections],
        "rule": h.rule,
        "reason": h.reason,
        "age_s": round(h.age_s, 3),
        "expires_in_s": round(h.expires_in_s, 3),
        "on_timeout": h.on_timeout,
        "opened_at": h.opened_at,
        "count": h.count,
        "required": h.required,
        "votes": [vote_json(v) for v in h.votes],
        "state": h.state,
        "waiting": h.waiting,
    }


def vote_json(v: Any) -> dict[str, Any]:
    return {"uid": v.uid, "user": v.user, "channel": v.channel, "principal": v.principal,
            "reason": v.reason, "scope": v.scope, "at": v.at}


def grant_json(g: Any) -> dict[str, Any]:
    return {"id": g.id, "scope": g.scope, "rule": g.rule,
            "process": {"uid": g.uid, "exe": g.exe, "unit": g.unit, "container": g.container},
            "destination": destination_json(g.destination) if g.HasField("destination") else None,
            "request_id": g.request_id, "approvers": [vote_json(v) for v in g.approvers],
            "reason": g.reason, "created_at": g.created_at,
            "expires_in_s": round(g.expires_in_s, 3), "uses": g.uses}


_OUTCOME_NAMES = {1: "approved", 2: "denied", 3: "expired", 4: "aborted", 5: "voted"}
_KIND_NAMES = {1: "opened", 2: "decided", 3: "expired", 4: "aborted", 5: "voted"}


def decision_json(d: Any) -> dict[str, Any]:
    return {"hold_id": d.hold_id, "flow_id": d.flow_id,
            "outcome": _OUTCOME_NAMES.get(d.outcome, "unknown"), "approved": d.approved,
            "by_uid": d.by_uid, "by_user": d.by_user, "by_pid": d.by_pid, "reason": d.reason,
            "decided_at": d.decided_at, "scope": d.scope, "grant_id": d.grant_id,
            "votes": d.votes, "required": d.required}


def event_json(e: Any) -> dict[str, Any]:
    return {"event": _KIND_NAMES.get(e.kind, "unknown"), "time": e.time, "hold": hold_json(e.hold),
            "decision": decision_json(e.decision) if e.HasField("decision") else None}


def flow_json(f: Any) -> dict[str, Any]:
    return {"flow_id": f.flow_id, "state": f.state, "process": process_json(f.process),
            "destination": destination_json(f.destination),
            "verdict": ({"action": f.verdict.action, "rule": f.verdict.rule,
                         "reason": f.verdict.reason} if f.HasField("verdict") else None),
            "detections": [detection_json(d) for d in f.detections],
            "bytes_up": f.bytes_up, "bytes_down": f.bytes_down, "opened_at": f.opened_at}


def _duration(s: float) -> str:
    s = int(max(0.0, s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _who(p: Any) -> str:
    return f"{p.user or '?'} (uid {p.uid})"


def _proc(p: Any) -> str:
    cmd = " ".join(p.cmdline) if p.cmdline else (p.exe or p.comm or "?")
    if len(cmd) > 80:
        cmd = cmd[:77] + "..."
    where = [f"unit {p.unit}"] if p.unit else []
    if p.container:
        where.append(f"container {p.container[:12]}")
    return f"pid {p.pid} {cmd}" + (f" [{', '.join(where)}]" if where else "")


def _dest(d: Any) -> str:
    from egressguard.model import host_port
    return f"{d.host}:{d.port} ({d.ip})" if d.host else host_port(d.ip, d.port)


def _rating(d: Any) -> str:
    """Like `(severity high, confidence medium)`: what an approver weighs first. Empty when the
    daemon sent neither (an older daemon)."""
    parts = [f"{k} {v}" for k, v in (("severity", d.severity), ("confidence", d.confidence)) if v]
    return f" ({', '.join(parts)})" if parts else ""


def _data(dets: Iterable[Any], rule: str = "", reason: str = "") -> str:
    """The findings; with none, the rule that held the flow without content (a destination
    or a request rule such as `request.class: dataset_export`) and its reason."""
    parts = [f"{d.detector} {d.preview}{_rating(d)}" for d in dets]
    if parts:
        return "; ".join(parts)
    return f"(no detections: {_why(rule, reason)})" if rule else "(no detections)"


def _why(rule: str, reason: str) -> str:
    """The verdict's reason, naming the rule once (policy reasons usually name it already)."""
    if not reason:
        return f"rule {rule}"
    return reason if f'"{rule}"' in reason else f"rule {rule}: {reason}"


def hold_text(h: Any) -> str:
    """A few lines per hold, readable at a glance: who, what process, where, which data, age.
    Each line is `printable()`: the held process chose much of what it shows."""
    extra = []
    if h.required > 1 or h.votes:
        extra.append(f"  votes: {len(h.votes)} of {h.required}"
                     + "".join(f"; {v.user} ({v.reason})" for v in h.votes))
    return "\n".join(printable(line) for line in [
        f"{h.id}  held {_duration(h.age_s)}, expires in {_duration(h.expires_in_s)}"
        + (f", seen {h.count}x" if h.count > 1 else "")
        + (f", {h.waiting} connection(s) waiting" if h.waiting else ", no connection waiting"),
        f"  why:   {_why(h.rule, h.reason)}",
        f"  who:   {_who(h.process)}, {_proc(h.process)}",
        f"  where: {_dest(h.destination)}",
        f"  data:  {_data(h.detections, h.rule, h.reason)}",
        f"  flow:  {h.flow_id}",
    ] + extra)


def event_text(e: Any) -> str:
    return printable(_event_line(e))


def _event_line(e: Any) -> str:
    when = time.strftime("%H:%M:%S", time.localtime(e.time))
    kind = _KIND_NAMES.get(e.kind, "unknown")
    h = e.hold
    if kind == "opened":
        return (f"{when} opened  {h.id}  {_who(h.process)} pid {h.process.pid} "
                f"{h.process.exe or h.process.comm} -> {_dest(h.destination)}  "
                f"{_data(h.detections, h.rule, h.reason)}  (rule {h.rule}, expires in {_duration(h.expires_in_s)})")
    d = e.decision
    outcome = _OUTCOME_NAMES.get(d.outcome, "unknown")
    if kind == "decided":
        return f"{when} {outcome:<7} {h.id}  by {d.by_user} (uid {d.by_uid}): {d.reason}"
    if kind == "voted":
        return (f"{when} voted   {h.id}  by {d.by_user} (uid {d.by_uid}): {d.reason} "
                f"({d.votes} of {d.required})")
    if kind == "expired":
        return (f"{when} expired {h.id}  no decision in time; "
                f"{'allowed' if d.approved else 'denied'} (on_timeout={h.on_timeout})")
    return f"{when} aborted {h.id}  {d.reason}"


def flows_table(flows: list[Any]) -> str:
    rows = [("FLOW", "STATE", "USER", "PID", "PROCESS", "DESTINATION", "ACTION", "DATA", "UP/DOWN")]
    for f in flows:
        rows.append(tuple(printable(cell) for cell in (
            f.flow_id, f.state, _who(f.process), str(f.process.pid),
            (f.process.exe or f.process.comm or "?")[-30:], _dest(f.destination),
            f"{f.verdict.action} ({f.verdict.rule})" if f.HasField("verdict") else "-",
            ",".join(sorted({d.detector for d in f.detections})) or "-",
            f"{f.bytes_up}/{f.bytes_down}",
        )))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _print_json(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, sort_keys=True), flush=True)


# -- commands ----------------------------------------------------------------------------------

def _show(items: list[Any], as_json: bool, to_json: Callable[[Any], dict[str, Any]],
          none: str, render: Callable[[list[Any]], str]) -> int:
    """One JSON object per line, or text (`none` when there is nothing)."""
    if as_json:
        for item in items:
            _print_json(to_json(item))
    else:
        print(render(items) if items else none)
    return EXIT_OK


def cmd_pending(args: argparse.Namespace, client: Client) -> int:
    holds = list(client.call(client.stub.ListPending, client.pb.ListPendingRequest()).holds)
    return _show(holds, args.json, hold_json, "no pending holds",
                 lambda hs: "\n\n".join(hold_text(h) for h in hs))


def _decide(args: argparse.Namespace, client: Client, approve: bool) -> int:
    if not args.reason.strip():
        raise CtlError("--reason must not be empty: say why (it goes to the audit log)", EXIT_USAGE)
    request = client.pb.DecideRequest(hold_id=args.hold_id, reason=args.reason)
    if approve:
        request.scope = args.scope
        request.ttl_s = args.ttl or 0.0
        request.break_glass = args.break_glass
    method = client.stub.Approve if approve else client.stub.Deny
    d = client.call(method, request).decision
    if d.outcome == 5:
        print(printable(f"approval recorded for {d.hold_id} as {d.by_user} (uid {d.by_uid}): "
                        f"{d.votes} of {d.required}; it needs another approver"))
        return EXIT_OK
    verb = "approved" if approve else "denied"
    if approve and args.break_glass:
        verb = "approved by break-glass (quorum bypassed, audited as critical)"
    print(printable(f"{verb} {d.hold_id} (flow {d.flow_id}) as {d.by_user} (uid {d.by_uid}): "
                    f"{d.reason}"))
    if d.grant_id:
        capped = " (capped by approvals.max_grant_ttl)" if d.grant_ttl_capped else ""
        print(printable(f"grant {d.grant_id}: scope {d.scope} for {_duration(d.grant_ttl_s)}"
                        f"{capped}; egressctl revoke {d.grant_id} --reason TEXT ends it"))
    return EXIT_OK


def cmd_grants(args: argparse.Namespace, client: Client) -> int:
    grants = list(client.call(client.stub.ListGrants, client.pb.ListGrantsRequest()).grants)
    return _show(grants, args.json, grant_json, "no grants",
                 lambda gs: "\n".join(grant_text(g) for g in gs))


def grant_text(g: Any) -> str:
    where = _dest(g.destination) if g.HasField("destination") else "anywhere"
    by = ", ".join(v.user for v in g.approvers)
    return printable(f"{g.id}  {g.scope}  uid {g.uid} {g.exe or '?'} -> {where}  rule {g.rule}  "
                     f"expires in {_duration(g.expires_in_s)}  used {g.uses}x  by {by}: {g.reason}")


def cmd_revoke(args: argparse.Namespace, client: Client) -> int:
    if not args.reason.strip():
        raise CtlError("--reason must not be empty: say why (it goes to the audit log)", EXIT_USAGE)
    g = client.call(client.stub.Revoke, client.pb.RevokeRequest(grant_id=args.grant_id,
                                                                reason=args.reason)).grant
    print(printable(f"revoked {g.id} ({g.scope}, used {g.uses}x)"))
    return EXIT_OK


def _ttl(text: str) -> float:
    """argparse type for --ttl: 90s, 15m, 2h, or seconds."""
    import re
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*", text)
    if not m or float(m.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 90s, 15m, 2h)")
    return float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def cmd_approve(args: argparse.Namespace, client: Client) -> int:
    return _decide(args, client, approve=True)


def cmd_deny(args: argparse.Namespace, client: Client) -> int:
    return _decide(args, client, approve=False)


def cmd_watch(args: argparse.Namespace, client: Client) -> int:
    stream = client.stub.Watch(client.pb.WatchRequest(include_pending=True))
    try:
        for e in stream:
            if args.json:
                _print_json(event_json(e))
            else:
                print(event_text(e), flush=True)
    except client.grpc.RpcError as e:
        if e.code() in (client.grpc.StatusCode.CANCELLED, client.grpc.StatusCode.UNAVAILABLE):
            # Only the daemon ends a watch (Ctrl-C is KeyboardInterrupt): it stopped or restarted.
            raise CtlError(f"egressguard ended the watch stream ({e.details() or e.code().name})",
                           EXIT_UNREACHABLE) from None
        raise client.error(e) from None
    finally:
        stream.cancel()
    raise CtlError("egressguard ended the watch stream", EXIT_UNREACHABLE)


def cmd_flows(args: argparse.Namespace, client: Client) -> int:
    if args.since or args.provider or args.host:
        from egressguard.cli.usage import cmd_ledger_flows
        return cmd_ledger_flows(args, client)      # closed flows, from the ledger
    flows = list(client.call(client.stub.ListFlows, client.pb.ListFlowsRequest()).flows)
    return _show(flows, args.json, flow_json, "no flows", flows_table)


def cmd_status(args: argparse.Namespace, client: Client) -> int:
    from egressguard.cli.ctl_status import status_json, status_text
    status = client.call(client.stub.Status, client.pb.StatusRequest())
    if args.json:
        _print_json(status_json(status))
    else:
        print(status_text(status))
    return EXIT_OK


def cmd_reload(args: argparse.Namespace, client: Client) -> int:
    result = client.call(client.stub.Reload, client.pb.ReloadRequest())
    if result.outcome == "rejected":
        for line in result.errors:
            print(f"error: {printable(line)}", file=sys.stderr)
        raise CtlError(f"reload rejected: {len(result.errors)} problem(s); the running policy "
                       f"{result.previous_hash[:12]} stays in force", EXIT_REFUSED)
    if result.outcome == "unchanged":
        print(f"policy unchanged ({result.policy_hash[:12]}); nothing to reload")
    else:
        print(f"reloaded: policy {result.previous_hash[:12]} -> {result.policy_hash[:12]}")
    return EXIT_OK


_AS_READER = "; nothing was verified: run as a user who may read the audit log (e.g. root)"


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """Check the hash chain of an audit log (no daemon needed)."""
    try:
        from egressguard.audit.verify import verify_set
    except ImportError as e:
        raise CtlError(f"audit verify is not available in this installation: {e}", EXIT_USAGE)
    try:
        os.stat(args.file)
    except FileNotFoundError:
        raise CtlError(f"no such file: {args.file}", EXIT_USAGE) from None
    except OSError as e:    # e.g. a folder on the way that this user may not enter
        raise CtlError(f"cannot read {args.file}: {e.strerror or e}{_AS_READER}",
                       EXIT_USAGE) from None
    result = verify_set(args.file)         # the file and its rotated segments, one chain
    if getattr(result, "unreadable", False):   # a read error is not evidence of tampering
        raise CtlError(f"{result.message}{_AS_READER}", EXIT_USAGE)
    set_of = getattr(result, "set_of", None)
    if set_of:
        print(printable(f"note: {args.file} is a rotated segment: checked as part of the "
                        f"set of {set_of}"))
    if result.ok:
        if result.message.startswith(f"{result.events} events in "):
            print(f"OK: {result.message.split(';')[0]}")
        else:
            print(f"OK: {result.events} events, chain intact"
                  + (" (the file is empty)" if result.events == 0 else ""))
        return EXIT_OK
    message = result.message
    prefix = f"line {result.line}: "
    if message.startswith(prefix):          # verify() names the line itself; say it once
        message = message[len(prefix):]
    file = getattr(result, "file", None)
    where = f"{file}: " if file and file != args.file else ""
    line = f"line {result.line}: " if result.line is not None else ""
    print(printable(f"TAMPERED: {where}{line}{message}"))
    return EXIT_REFUSED


# -- main --------------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """Usage errors as one line (plus the usage line argparse prints), exit 2."""
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"egressctl: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="egressctl", description="Approve or deny flows held by egressguard.",
                epilog="exit codes: 0 ok, 1 refused or tampered, 2 usage, 3 daemon unreachable")
    p.add_argument("--socket", default=os.environ.get("EGRESSCTL_SOCKET", DEFAULT_SOCKET),
                   help="approvals socket (default: $EGRESSCTL_SOCKET or %(default)s)")
    p.add_argument("--server", metavar="HOST:PORT",
                   help="a remote egressguard's mTLS listener (approvals.remote) instead of the "
                        "socket; needs --cert, --key and --ca")
    p.add_argument("--cert", metavar="FILE", help="your client certificate (PEM)")
    p.add_argument("--key", metavar="FILE", help="its private key (PEM)")
    p.add_argument("--ca", metavar="FILE", help="the CA that signed the daemon's certificate")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           parser_class=_Parser)

    sp = sub.add_parser("pending", help="list held flows waiting for a decision")
    sp.add_argument("--json", action="store_true", help="one JSON object per line")
    sp.set_defaults(func=cmd_pending)

    for name, func, verb in (("approve", cmd_approve, "let the held flow's bytes go out"),
                             ("deny", cmd_deny, "reset the held flow; the destination gets nothing")):
        sp = sub.add_parser(name, help=verb)
        sp.add_argument("hold_id", metavar="HOLD_ID")
        sp.add_argument("--reason", required=True, help="why (required; goes to the audit log)")
        if name == "approve":
            sp.add_argument("--scope", default="once",
                            choices=("once", "process-destination", "process"),
                            help="once (default): this request only; wider scopes create a grant")
            sp.add_argument("--ttl", type=_ttl, default=None,
                            help="grant lifetime (default approvals.grant_ttl; capped by "
                                 "approvals.max_grant_ttl)")
            sp.add_argument("--break-glass", action="store_true",
                            help="bypass the quorum (only if approvals.break_glass is true; "
                                 "audited as critical)")
        sp.set_defaults(func=func)

    sp = sub.add_parser("grants", help="list live grants")
    sp.add_argument("--json", action="store_true", help="one JSON object per line")
    sp.set_defaults(func=cmd_grants)

    sp = sub.add_parser("revoke", help="end a grant now")
    sp.add_argument("grant_id", metavar="GRANT_ID")
    sp.add_argument("--reason", required=True, help="why (required; goes to the audit log)")
    sp.set_defaults(func=cmd_revoke)

    sp = sub.add_parser("watch", help="stream hold events (pending ones first) until interrupted")
    sp.add_argument("--json", action="store_true", help="one JSON object per line")
    sp.set_defaults(func=cmd_watch)

    from egressguard.cli.usage import cmd_usage, parse_since
    sp = sub.add_parser("flows", help="list the flows the proxy knows about; with --since, "
                                      "--provider or --host: closed flows from the ledger")
    sp.add_argument("--json", action="store_true", help="one JSON object per line")
    sp.add_argument("--since", type=parse_since, help="closed in this period (e.g. 1h, 7d)")
    sp.add_argument("--provider", help="AI provider id from the endpoint catalog (e.g. openai)")
    sp.add_argument("--host", help="destination host name (SNI / Host)")
    sp.set_defaults(func=cmd_flows)

    sp = sub.add_parser("usage", help="data usage ledger aggregates")
    sp.add_argument("--by", default="process",
                    choices=["process", "destination", "provider", "class", "user"])
    sp.add_argument("--since", type=parse_since, default=86400.0,
                    help="period (default 24h; e.g. 30m, 7d)")
    sp.add_argument("--json", action="store_true", help="one JSON object per line")
    sp.set_defaults(func=cmd_usage)

    sp = sub.add_parser("status", help="the daemon's state: probes, policy, counters, holds")
    sp.add_argument("--json", action="store_true", help="one JSON object")
    sp.set_defaults(func=cmd_status)

    sp = sub.add_parser("reload", help="re-read the policy; keep the running one if invalid")
    sp.set_defaults(func=cmd_reload)

    sp = sub.add_parser("audit", help="audit log tools")
    asub = sp.add_subparsers(dest="audit_command", required=True, metavar="SUBCOMMAND",
                             parser_class=_Parser)
    vp = asub.add_parser("verify", help="check the hash chain of an audit log file")
    vp.add_argument("file", metavar="FILE")
    vp.set_defaults(func=cmd_audit_verify, local=True)
    return p


def _tls(args: argparse.Namespace) -> tuple[str, bytes, bytes, bytes] | None:
    """--server and its three files, read now so a missing file is a clear local error."""
    given = [n for n in ("cert", "key", "ca") if getattr(args, n)]
    if not args.server:
        if given:
            raise CtlError(f"--{given[0]} needs --server HOST:PORT", EXIT_USAGE)
        return None
    files = []
    for name in ("cert", "key", "ca"):
        path = getattr(args, name)
        if not path:
            raise CtlError(f"--server needs --{name} FILE", EXIT_USAGE)
        try:
            with open(path, "rb") as f:
                files.append(f.read())
        except OSError as e:
            raise CtlError(f"cannot read --{name} {path}: {e.strerror or e}", EXIT_USAGE) from None
    return args.server, files[0], files[1], files[2]


def _check_usage(args: argparse.Namespace) -> None:
    """Option combinations argparse cannot express, refused before anything is sent."""
    if getattr(args, "ttl", None) is not None and getattr(args, "scope", None) == "once":
        raise CtlError("--ttl sets the lifetime of a grant: it needs --scope "
                       "process-destination or process (--scope once creates no grant)",
                       EXIT_USAGE)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _check_usage(args)
        if getattr(args, "local", False):
            return args.func(args)
        client = Client(args.socket, _tls(args))
        try:
            return args.func(args, client)
        finally:
            client.close()
    except CtlError as e:
        print(printable(f"egressctl: {e}"), file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:            # `egressctl watch | head`
        sys.stderr.close()
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
