"""What an intercepted HTTP client is told when its request is not let through (yet).

Today the proxy sees TLS only as bytes, so a refused held flow is reset (fast and clean: the
client sees ECONNRESET at once, not a hung socket). Once TLS interception lands (issue 3) and
the relay knows it is in the middle of an HTTP/1.1 request, it should answer with
`http_refusal(decision)` instead of the reset: a `403` whose JSON body names the approval
request, so the agent (or the person reading its log) knows what to ask for and can retry once
it is approved. The hook is `Relay.decided()` for a decision that is not approved; the relay
only needs to send these bytes to the client before closing.
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
    head = (b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n"
            b"X-Egressguard-Approval: " + decision.request_id.encode() + b"\r\n\r\n")
    return head + body
