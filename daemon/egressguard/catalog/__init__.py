"""The AI endpoint catalog (`endpoints.yaml`, data): which destination is which AI provider,
which request path is which endpoint kind, and where a request names its model.

Used by the relay to label flows (`destination.provider`, for rules and the ledger) and, on
intercepted HTTP flows, each request (endpoint kind, action class, model). Pure lookups.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

INFERENCE = "inference"
DATASET_EXPORT = "dataset_export"


@dataclass(frozen=True)
class Provider:
    id: str
    name: str
    hosts: tuple[str, ...]
    ports: tuple[int, ...] = ()
    local: bool = False
    model_from_path: re.Pattern[str] | None = None


@dataclass(frozen=True)
class Endpoint:
    path: str
    kind: str
    methods: tuple[str, ...] = ()
    cls: str = INFERENCE


@dataclass(frozen=True)
class RequestInfo:
    """What a request is, for rules (`request.kind`, `request.class`) and the ledger."""

    provider: str
    kind: str
    cls: str
    model: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"provider": self.provider, "kind": self.kind, "class": self.cls,
                "model": self.model}


class Catalog:
    def __init__(self, providers: list[Provider], endpoints: list[Endpoint]):
        self.providers = providers
        self.endpoints = endpoints
        self.ids = frozenset(p.id for p in providers)

    @classmethod
    def builtin(cls) -> "Catalog":
        text = resources.files("egressguard.catalog").joinpath("endpoints.yaml").read_text()
        return cls.from_yaml(text)

    @classmethod
    def from_yaml(cls, text: str) -> "Catalog":
        data = yaml.safe_load(text)
        providers = []
        for i, p in enumerate(data["providers"]):
            try:
                rx = p.get("model_from_path")
                providers.append(Provider(
                    p["id"], p.get("name", p["id"]), tuple(h.lower() for h in p["hosts"]),
                    tuple(int(x) for x in p.get("ports", ())), bool(p.get("local", False)),
                    re.compile(rx) if rx else None))
            except (KeyError, TypeError, ValueError, re.error) as exc:
                raise ValueError(f"endpoint catalog: providers[{i}]: {exc}") from None
        endpoints = []
        for i, e in enumerate(data["endpoints"]):
            try:
                endpoints.append(Endpoint(e["path"], e["kind"],
                                          tuple(m.upper() for m in e.get("methods", ())),
                                          e.get("class", INFERENCE)))
            except (KeyError, TypeError) as exc:
                raise ValueError(f"endpoint catalog: endpoints[{i}]: {exc}") from None
        return cls(providers, endpoints)

    # ------------------------------------------------------------------ lookups
    def provider_for(self, host: str, ip: str, port: int) -> Provider | None:
        host = host.lower().rstrip(".")
        for p in self.providers:
            if p.ports and port not in p.ports:
                continue
            if host and any(fnmatch.fnmatchcase(host, g) for g in p.hosts):
                return p
            if p.local and _is_loopback(ip):
                return p
        return None

    def describe(self, provider: Provider | None, method: str, path: str,
                 body: bytes, content_type: str) -> RequestInfo:
        """Endpoint kind, class and model of one request (body: decoded, maybe truncated)."""
        kind, cls = "other", "other"
        for e in self.endpoints:
            if e.methods and method.upper() not in e.methods:
                continue
            if fnmatch.fnmatchcase(path, e.path):
                kind, cls = e.kind, e.cls
                break
        model = ""
        if provider is not None and provider.model_from_path is not None:
            m = provider.model_from_path.search(path)
            if m:
                model = m.group(1)
        if not model and body[:1] in (b"{", b" ", b"\n", b"\r", b"\t") \
                and ("json" in content_type or not content_type):
            model = _json_model(body)
        return RequestInfo(provider.id if provider else "", kind, cls, model[:200])


def _is_loopback(ip: str) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def _json_model(body: bytes) -> str:
    try:
        doc: Any = json.loads(body)
    except (ValueError, RecursionError):
        m = re.search(rb'"model"\s*:\s*"([^"\\]{1,200})"', body[:64 * 1024])
        return m.group(1).decode("utf-8", "replace") if m else ""
    if isinstance(doc, dict) and isinstance(doc.get("model"), str):
        return doc["model"]
    return ""
