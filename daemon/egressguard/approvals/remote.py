"""Remote approvers: the same Approvals gRPC service on TCP with mutual TLS.

The approver is whoever holds a client certificate signed by `approvals.remote.ca`, and *who*
they are is the certificate's subject alternative names, then its common name, looked up in
`approvals.identities` (`{cert: NAME, user: LOCAL_USER}`). The local user's uid is what every
rule checks, exactly as for the Unix socket: the owner of a flow cannot decide on it, a quorum
counts uids. A valid certificate whose names map to nobody is refused (UNAUTHENTICATED, and
audited), and so is one whose names map to two different users.

grpcio verifies the chain and the client's possession of the key (require_client_auth=True)
before any call; `context.auth_context()` then holds the verified peer's names.

The data usage ledger (`Usage`, `ListLedgerFlows`) is served here too, with the same rule as
on the Unix socket, applied to the certificate's mapped uid: an approver sees every flow, any
other mapped user only flows their own uid opened. The ledger holds labels and counts, never
payloads, and an approver here already sees the same processes and destinations in pending
holds, so a remote channel reveals nothing the local one would not show the same person.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from egressguard.approvals._proto import approvals_pb2_grpc as pb_grpc
from egressguard.approvals.holds import HoldRegistry
from egressguard.approvals.peercred import Identity, user_name
from egressguard.approvals.service import (SERVICE_NAME, ApprovalsServicer, Identify,
                                           _HealthServicer)
from egressguard.approvals.settings import RemoteConfig
from egressguard.errors import EnvironmentProblem
from egressguard.model import FlowInfo
from egressguard.policy.rules import UserRef

log = logging.getLogger(__name__)

_NO_CERT = "no verified client certificate on this connection"


def certificate_names(auth: Mapping[str, list[bytes]]) -> list[str]:
    """The verified peer's SAN entries, then its CN (grpc auth_context keys)."""
    names = [v.decode(errors="replace") for v in auth.get("x509_subject_alternative_name", [])]
    names += [v.decode(errors="replace") for v in auth.get("x509_common_name", [])]
    return list(dict.fromkeys(names))


def certificate_identify(certs: Mapping[str, UserRef],
                         on_refused: Callable[[dict[str, object]], None]) -> Identify:
    """context -> Identity for the certificate's mapped user, or a refusal message."""

    def identify(context: grpc.aio.ServicerContext) -> Identity | str:
        names = certificate_names(context.auth_context())
        if not names:
            return _NO_CERT
        users = {certs[n].uid: (n, certs[n]) for n in names if n in certs}
        if len(users) != 1:
            why = ("maps to no approver: add it to approvals.identities" if not users else
                   "maps to more than one user in approvals.identities")
            message = f"client certificate {', '.join(names)} {why}"
            try:
                on_refused({"who": {"channel": "mtls", "principal": ", ".join(names)},
                            "attempted": "connect", "code": "unknown_identity",
                            "message": message})
            except Exception:   # noqa: BLE001 - the refusal stands even if it cannot be audited
                log.exception("cannot audit an mTLS refusal")
            return message
        uid, (principal, ref) = next(iter(users.items()))
        return Identity(uid=uid, gid=-1, pid=0, user=ref.name or user_name(uid),
                        channel="mtls", principal=principal)
    return identify


class RemoteServer:
    def __init__(self, server: grpc.aio.Server, port: int, health: _HealthServicer) -> None:
        self.server, self.port, self._health = server, port, health

    async def stop(self, grace: float = 1.0) -> None:
        await self._health.enter_graceful_shutdown()
        await self.server.stop(grace)


def _read(path: str, key: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise EnvironmentProblem(f"cannot read {path} (approvals.remote.{key}): "
                                 f"{exc.strerror or exc}") from None


async def start_remote_server(cfg: RemoteConfig, certs: Mapping[str, UserRef],
                              registry: HoldRegistry,
                              flows_provider: Callable[[], list[FlowInfo]],
                              ledger_path: str | None = None) -> RemoteServer:
    """Serve egressguard.v1.Approvals over mTLS on cfg.listen (port 0: any free port), the
    ledger RPCs included when `ledger_path` is given."""
    creds = grpc.ssl_server_credentials(
        [(_read(cfg.key, "key"), _read(cfg.cert, "cert"))],
        root_certificates=_read(cfg.ca, "ca"), require_client_auth=True)
    identify = certificate_identify(certs, registry.record_refusal)
    server = grpc.aio.server()
    pb_grpc.add_ApprovalsServicer_to_server(
        ApprovalsServicer(registry, flows_provider, identify, _NO_CERT, ledger_path=ledger_path),
        server)
    health = _HealthServicer(identify, _NO_CERT)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    host, port = cfg.listen
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_secure_port(target, creds)
    except RuntimeError as exc:
        raise EnvironmentProblem(f"cannot listen on {target} (approvals.remote.listen): {exc}")
    if not bound:
        raise EnvironmentProblem(f"cannot listen on {target} (approvals.remote.listen): "
                                 "address in use or not local")
    await server.start()
    await health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    log.info("approvals (mTLS) listening on %s", target)
    return RemoteServer(server, bound, health)
