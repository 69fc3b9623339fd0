"""File and stdout sinks: one rendered event per line.

The file sink is for log shippers that tail a file (Filebeat, Fluent Bit, Vector): each batch
is appended and fsynced before it counts as delivered. The stdout sink is for journald (a
systemd unit's stdout goes to the journal); it is delivered once written to the pipe.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from egressguard.audit.formats import Rendered
from egressguard.audit.sinks.base import SinkError


class FileSink:
    def __init__(self, spec: Any):
        self.spec = spec
        self._fd: int | None = None

    async def send(self, batch: list[Rendered], events: list[dict[str, Any]]) -> None:
        data = "".join(item.text + "\n" for item in batch).encode("utf-8", "replace")
        try:
            await asyncio.to_thread(self._write, data)
        except OSError as exc:
            await self.close()
            where = self.spec.path or "stdout"
            raise SinkError(f"cannot write {where}: {exc.strerror or exc}") from None

    def _write(self, data: bytes) -> None:
        if self.spec.type == "stdout":
            fd = 1
        else:
            if self._fd is None:
                folder = os.path.dirname(os.path.abspath(self.spec.path))
                os.makedirs(folder, mode=0o750, exist_ok=True)
                self._fd = os.open(self.spec.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT
                                   | os.O_CLOEXEC, 0o640)
            fd = self._fd
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        if self.spec.type != "stdout":
            os.fsync(fd)

    async def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
