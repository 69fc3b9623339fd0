"""The interface every sink implements, and the factory that builds one from its settings."""

from __future__ import annotations

from typing import Any, Protocol

from egressguard.audit.formats import FormatContext, Rendered


class Sink(Protocol):
    """Delivers batches. `send` returns only when the receiver has the whole batch (as far as
    the transport can tell: see each sink), and raises otherwise; the runner then closes the
    sink, waits, and sends the same batch again. `close` never raises."""

    async def send(self, batch: list[Rendered], events: list[dict[str, Any]]) -> None: ...

    async def close(self) -> None: ...


class SinkError(Exception):
    """A delivery failure, with a message fit for `status()` (never event contents)."""


def build_sink(spec: Any, ctx: FormatContext) -> Sink:
    if spec.type == "syslog":
        from egressguard.audit.sinks.syslog import SyslogSink
        return SyslogSink(spec, ctx)
    if spec.type == "hec":
        from egressguard.audit.sinks.hec import HecSink
        return HecSink(spec, ctx)
    if spec.type in ("file", "stdout"):
        from egressguard.audit.sinks.file import FileSink
        return FileSink(spec)
    raise ValueError(f"unknown sink type {spec.type!r}")
