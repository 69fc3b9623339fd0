"""What an intercepted HTTP client is told when its held request is not let through (yet).

A refused held flow is reset (fast and clean: the client sees ECONNRESET at once, not a hung
socket), except for an intercepted HTTP/1.1 request: there `Relay.decided()` answers with
`http_refusal(decision)` on the TLS session, then closes. A `403` whose JSON body names the
approval request, so the agent (or the person reading its log) knows what to ask for and can
retry once it is approved. See relay.py for when a 403 is safe to send.
"""

from __future__ import annotations

import json

from egressguard.model import Decision


def refusal_body(decision: Decision) -> dict[str, object]:
    """The JSON body: the request id and whether a retry can still pass."""
    if decision.pending:
        status, hint = "pending", (f"approval request {decision.request_id} is waiting for a "
                                   "person; retry after it is approved")
    elif decision.aborted:
        status, hint = "aborted", "egressguard stopped waiting for this connection"
    else:
        status, hint = "denied", f"denied by {decision.by_user}: {decision.reason}"
    return {"error": "egressguard_approval_required" if decision.pending else
            "egressguard_denied", "approval_id": decision.request_id, "status": status,
            "message": hint}


def http_refusal(decision: Decision) -> bytes:
    """A complete HTTP/1.1 403 response for `decision` (connection: close)."""
    body = json.dumps(refusal_body(decision), sort_keys=True).encode()
    approval = (b"X-Egressguard-Approval: " + decision.request_id.encode() + b"\r\n"
                if decision.request_id else b"")    # none: refused before a request existed
    head = (b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n"
            + approval + b"\r\n")
    return head + body
