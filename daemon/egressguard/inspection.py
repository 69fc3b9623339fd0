"""Builds the TLS interception, endpoint catalog and data usage ledger parts from the
configuration, for daemon.py to wire (kept here so the daemon stays wiring only)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

from egressguard.catalog import Catalog
from egressguard.errors import EnvironmentProblem
from egressguard.ledger.listener import LedgerListener
from egressguard.ledger.store import LedgerStore
from egressguard.tls.ca import HostCA, upstream_context
from egressguard.tls.select import InterceptSelector


@dataclass
class Inspection:
    ca: HostCA
    upstream_tls: ssl.SSLContext
    selector: InterceptSelector
    catalog: Catalog
    ledger: LedgerStore
    max_decoded: int

    def proxy_kwargs(self) -> dict[str, Any]:
        return {"ca": self.ca, "upstream_tls": self.upstream_tls, "interceptor": self.selector,
                "catalog": self.catalog, "max_decoded": self.max_decoded}

    def listener(self) -> LedgerListener:
        return LedgerListener(self.ledger)

    def close(self) -> None:
        self.ledger.flush(10)
        self.ledger.close()


def build_inspection(config: Any) -> Inspection:
    """The host CA is created on first run (under state_dir) whether or not interception is
    on, so `egressguard ca export` has something to export before the policy opens a host."""
    try:
        ca = HostCA(config.state_dir)
    except OSError as exc:
        raise EnvironmentProblem(f"cannot create or read the host CA in {config.state_dir} "
                                 f"(state_dir): {exc.strerror or exc}") from None
    try:
        upstream = upstream_context(config.tls.upstream_ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise EnvironmentProblem(f"cannot load {config.tls.upstream_ca_file} "
                                 f"(tls.upstream_ca_file): {exc}") from None
    path = config.ledger.db_path(config.state_dir)
    try:
        ledger = LedgerStore(path, config.ledger.retention)
    except Exception as exc:  # noqa: BLE001 - sqlite3.Error or OSError: one clear line
        raise EnvironmentProblem(f"cannot open the ledger {path} (ledger.path): {exc}") from None
    ledger.start()
    selector = InterceptSelector(config.tls.hosts, config.tls.processes,
                                 config.tls.on_intercept_failure,
                                 config.tls.intercept_failure_ttl)
    return Inspection(ca, upstream, selector, Catalog.builtin(), ledger,
                      config.tls.max_decoded_body)
