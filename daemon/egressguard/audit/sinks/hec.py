"""Splunk HTTP Event Collector sink: POST /services/collector/event, batched.

A batch is one request whose body is the events' JSON objects one after another (HEC's batch
format), each with `time` (epoch seconds), `host`, `source`, `sourcetype`, `index` (when set),
`event` (the event in the sink's format: an object, or the CEF line as a string) and
`fields.seq` / `fields.hash` (indexed fields, for de-duplication). The request carries
`Authorization: Splunk <token>`. The batch is delivered when HEC answers 2xx; anything else
(an HTTP error, a timeout, a refused connection) is a failure and the batch is sent again.
The token is never logged and never appears in errors.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import ssl
import urllib.parse
from typing import Any

from egressguard.audit.formats import FormatContext, Rendered
from egressguard.audit.formats.common import epoch_s
from egressguard.audit.sinks.base import SinkError

TIMEOUT = 15.0


class HecSink:
    def __init__(self, spec: Any, ctx: FormatContext):
        self.spec = spec
        self.ctx = ctx
        url = urllib.parse.urlsplit(spec.url)
        self._https = url.scheme == "https"
        self._host = url.hostname or ""
        self._port = url.port or (443 if self._https else 80)
        self._path = url.path or "/services/collector/event"
        self._conn: http.client.HTTPConnection | None = None

    def body(self, batch: list[Rendered], events: list[dict[str, Any]]) -> bytes:
        parts = []
        for item, ev in zip(batch, events):
            obj: dict[str, Any] = {"time": round(epoch_s(ev), 6),
                                   "host": self.spec.hec_host or self.ctx.hostname,
                                   "source": self.spec.source,
                                   "sourcetype": self.spec.sourcetype or _sourcetype(self.spec),
                                   "event": item.obj,
                                   "fields": {"seq": item.seq, "hash": item.hash}}
            if self.spec.index:
                obj["index"] = self.spec.index
            parts.append(json.dumps(obj, separators=(",", ":"), ensure_ascii=False))
        return "\n".join(parts).encode("utf-8", "replace")

    async def send(self, batch: list[Rendered], events: list[dict[str, Any]]) -> None:
        data = self.body(batch, events)
        await asyncio.to_thread(self._post, data)

    def _post(self, data: bytes) -> None:
        if self._conn is None:
            if self._https:
                ctx = ssl.create_default_context(cafile=self.spec.tls.ca if self.spec.tls
                                                 else None)
                if self.spec.tls is not None and not self.spec.tls.verify:
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
                self._conn = http.client.HTTPSConnection(self._host, self._port,
                                                         timeout=TIMEOUT, context=ctx)
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=TIMEOUT)
        try:
            self._conn.request("POST", self._path, body=data, headers={
                "Authorization": f"Splunk {self.spec.token}",
                "Content-Type": "application/json"})
            resp = self._conn.getresponse()
            text = resp.read(4096)
        except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
            self._drop()
            why = getattr(exc, "strerror", None) or str(exc) or exc.__class__.__name__
            raise SinkError(f"HEC {self._host}:{self._port}: {why}") from None
        if not 200 <= resp.status < 300:
            self._drop()
            raise SinkError(f"HEC answered {resp.status} {resp.reason}: "
                            f"{_hec_text(text)}")
        if resp.getheader("Connection", "").lower() == "close":
            self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def close(self) -> None:
        await asyncio.to_thread(self._drop)


def _sourcetype(spec: Any) -> str:
    return {"cef": "cef", "ecs": "_json", "ocsf": "ocsf", "json": "_json"}[spec.format]


def _hec_text(raw: bytes) -> str:
    try:
        return str(json.loads(raw).get("text", ""))[:200]
    except (ValueError, AttributeError):
        return raw[:200].decode("utf-8", "replace")
