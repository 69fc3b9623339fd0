"""SinkRunner: ships the written audit log to every configured sink, each on its own.

Why this shape:
- The runner has its own thread and event loop. Enforcement (the proxy, approvals, the audit
  writer) runs on the daemon's loop and never waits for a sink: a SIEM that hangs, a slow TLS
  handshake or a blocking HTTP call cannot delay a flow.
- Each sink is its own task with its own reader and cursor, so a sink that is down never holds
  up another one.
- A sink reads the log from disk (audit/reader.py), from its durable cursor (sinks/cursor.py):
  a restart resumes where the receiver stopped acknowledging; at-least-once, and every message
  carries seq and hash so the receiver can drop the duplicates.
- A failed batch is retried, unchanged, after a capped exponential backoff with jitter (from
  `retry_initial` doubling to `retry_max`); the cursor only moves when a batch is delivered, so
  nothing is skipped however long the outage.
- `status()` (thread-safe) reports per sink: acknowledged seq, lag in events behind the log's
  head, the last error, the last success.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from egressguard.audit import segments
from egressguard.audit.chain import rfc3339
from egressguard.audit.formats import FormatContext, Rendered, render
from egressguard.audit.reader import ChainMoved, Cursor, LogCorrupt, LogReader
from egressguard.audit.sinks.base import Sink, build_sink
from egressguard.audit.sinks.cursor import CursorStore

log = logging.getLogger("egressguard.sinks")

POLL_S = 0.2          # how often an idle sink looks for new events in the log


@dataclass
class SinkState:
    """What status() reports about one sink (written by its task, read by anyone)."""

    name: str
    kind: str
    format: str
    acked: Cursor = field(default_factory=Cursor)
    last_error: str | None = None
    last_error_at: float | None = None
    last_success: float | None = None
    delivered: int = 0
    failures: int = 0


class SinkRunner:
    def __init__(self, audit_path: str, specs: Sequence[Any], state_dir: str, *,
                 ctx: FormatContext | None = None, poll_s: float = POLL_S,
                 sink_factory: Callable[[Any, FormatContext], Sink] = build_sink):
        self.audit_path = audit_path
        self.specs = list(specs)
        self.ctx = ctx or FormatContext()
        self.poll_s = poll_s
        self.store = CursorStore(state_dir)
        self._factory = sink_factory
        self.states = {s.name: SinkState(s.name, s.type, s.format) for s in self.specs}
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()

    # -- life cycle (called from any thread) ------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("SinkRunner already started")
        self._thread = threading.Thread(target=self._main, name="egressguard-sinks",
                                        daemon=True)
        self._thread.start()
        self._started.wait(10)

    def stop(self, timeout: float = 10.0, drain_s: float = 0.0) -> None:
        """Stop every sink (a batch in flight is abandoned: it is sent again next start).

        With `drain_s`, first give healthy sinks up to that long to ship what is written (the
        daemon's last events, on a clean stop); a sink that is failing is not waited for."""
        if self._thread is None:
            return
        deadline = time.monotonic() + drain_s
        while time.monotonic() < deadline and any(
                s["lag_events"] and s["last_error"] is None for s in self.status()):
            time.sleep(0.05)
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("sink runner did not stop within %.0fs", timeout)
        self._thread = None

    def status(self) -> list[dict[str, Any]]:
        """Per sink: name, kind, format, acked_seq, lag_events, last_error, last_success
        (RFC 3339 or None), plus head_seq, delivered, failures."""
        head = segments.head_seq(self.audit_path)
        out = []
        for st in list(self.states.values()):
            acked = st.acked.seq
            out.append({
                "name": st.name, "kind": st.kind, "format": st.format,
                "acked_seq": acked, "head_seq": head, "lag_events": max(0, head - acked),
                "last_error": st.last_error,
                "last_error_at": rfc3339(st.last_error_at) if st.last_error_at else None,
                "last_success": rfc3339(st.last_success) if st.last_success else None,
                "delivered": st.delivered, "failures": st.failures,
            })
        return out

    # -- the runner's own loop ------------------------------------------------------------

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except Exception:  # noqa: BLE001 - never take the daemon down; say so loudly
            log.exception("sink runner stopped")

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        for spec in self.specs:
            self.states[spec.name].acked = self.store.load(spec.name)
        self._started.set()
        tasks = [asyncio.create_task(self._ship(spec), name=f"sink-{spec.name}")
                 for spec in self.specs]
        await self._stop.wait()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless stopped; True when the runner is stopping."""
        assert self._stop is not None
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
            return True
        except asyncio.TimeoutError:
            return False

    async def _ship(self, spec: Any) -> None:
        state = self.states[spec.name]
        sink = self._factory(spec, self.ctx)
        reader = LogReader(self.audit_path)
        delay = spec.retry_initial
        try:
            while True:
                try:
                    batch = await asyncio.to_thread(reader.read_after, state.acked, spec.batch)
                except ChainMoved as moved:
                    log.warning("sink %s: %s; shipping the current chain from its start",
                                spec.name, moved)
                    state.acked = Cursor()
                    continue
                except (LogCorrupt, OSError) as exc:
                    self._failed(state, f"reading the audit log: {exc}")
                    if await self._sleep(delay):
                        return
                    delay = min(delay * 2, spec.retry_max)
                    continue
                if not batch:
                    if await self._sleep(self.poll_s):
                        return
                    continue
                events = [e.event for e in batch]
                rendered = [self._render(spec, e) for e in batch]
                try:
                    await sink.send(rendered, events)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - every failure is retried
                    self._failed(state, str(exc) or exc.__class__.__name__)
                    await sink.close()
                    wait = delay * (0.5 + random.random() / 2)
                    if await self._sleep(wait):
                        return
                    delay = min(delay * 2, spec.retry_max)
                    continue
                state.acked = Cursor(batch[-1].seq, batch[-1].hash)
                state.delivered += len(batch)
                state.last_success = time.time()
                if state.last_error is not None:
                    log.info("sink %s: delivering again (acked seq %d)", spec.name,
                             state.acked.seq)
                state.last_error = None
                delay = spec.retry_initial
                try:
                    await asyncio.to_thread(self.store.save, spec.name, state.acked)
                except OSError as exc:     # shipping goes on; a restart re-sends (duplicates)
                    self._failed(state, f"cannot save the cursor: {exc.strerror or exc}")
        finally:
            reader.close()
            await sink.close()

    def _render(self, spec: Any, entry: Any) -> Rendered:
        try:
            return render(spec.format, entry, self.ctx)
        except Exception:  # noqa: BLE001 - formatters are total; if one is not, ship native
            log.exception("sink %s: cannot render seq %d as %s; sending it as json",
                          spec.name, entry.seq, spec.format)
            return render("json", entry, self.ctx)

    def _failed(self, state: SinkState, message: str) -> None:
        first = state.last_error is None
        state.last_error = message
        state.last_error_at = time.time()
        state.failures += 1
        if first:
            log.error("sink %s: %s; retrying with backoff", state.name, message)


def start_sinks(config: Any) -> SinkRunner | None:
    """The daemon's sinks (None when `audit.sinks` is empty), started."""
    if not config.audit.sinks:
        return None
    runner = SinkRunner(config.audit.path, config.audit.sinks, config.state_dir)
    runner.start()
    return runner
