"""AuditLog: the only writer of the audit file. One task, batches, fsync per batch, no drops.

Why this shape:
- `append()` is synchronous and never blocks or fails for load: the data path (proxy, approvals)
  must not wait on a disk, and the audit log must never lose an event (design.md: unlike
  OpenSnitch's loggers, no queue that drops when full). The queue is unbounded; under a disk
  stall memory grows instead of events vanishing, and `flush()` lets callers wait for
  durability where it matters (shutdown, before answering an approval).
- One writer task owns the chain state and the file, so ordering is exactly the order of
  `append()` calls and seq numbers are contiguous. Sealing (hashing) and the write + fsync run in
  a worker thread so the event loop never blocks on the disk.
- On start the chain RESUMES from the existing file: the file is verified end to end; seq and
  prev_hash continue from its last line. If the file does not verify (edited, truncated
  mid-line after a crash, garbage), we do not append to it: it is renamed aside to
  `<name>.broken-<UTC timestamp>` (kept as evidence, never deleted) and a new chain starts
  whose first event is `audit.chain_reset`, naming the old file and the verification failure.
  Appending to a broken file would make every later event unverifiable and hide the tampering.
- An exclusive flock on the file stops two daemons from interleaving two chains in one file.
- Rotation by size (`rotate_bytes`): after a batch leaves the active file at or above the size,
  it is renamed to `<name>.<seq of its first event>` (audit/segments.py) and a new active file
  starts; the chain simply continues, so the new file's first event links to the segment's
  last. Rotation happens only between batches, so a file may exceed the size by one batch.
  Segments are never deleted here: sinks may still be reading them, and removing them is the
  operator's retention decision.
- A write error (disk full, EIO) is logged and retried with backoff, forever: the events stay
  queued in memory and nothing is skipped in the chain.
"""

from __future__ import annotations

import asyncio
import collections
import fcntl
import logging
import os
import time
from typing import Any, Callable, Mapping

from egressguard.audit import segments
from egressguard.audit.chain import ChainState, encode_line, normalize, rfc3339
from egressguard.audit.verify import verify
from egressguard.errors import EgressGuardError

log = logging.getLogger("egressguard.audit")

MAX_BATCH = 2048          # events per write+fsync; bounds one worker-thread call
RETRY_MAX_DELAY = 5.0     # seconds between retries of a failed write


class AuditLogError(EgressGuardError):
    """The audit log cannot be opened (locked by another process, unreadable, ...)."""


class _PartialWrite(Exception):
    def __init__(self, written: int, error: OSError):
        super().__init__(str(error))
        self.written, self.error = written, error


class AuditLog:
    """Append-only, hash-chained JSONL audit log. See the module docstring."""

    def __init__(self, path: str | os.PathLike[str], *, clock: Callable[[], str] = rfc3339,
                 rotate_bytes: int | None = None):
        self.path = os.fspath(path)
        self._clock = clock
        self.rotate_bytes = rotate_bytes
        self._file_first = 1          # seq of the first event of the active file
        self._file_bytes = 0          # size of the active file
        self._pending: collections.deque[dict[str, Any]] = collections.deque()
        self._appended = 0            # events accepted by append()
        self._durable = 0             # events written and fsynced
        self._state = ChainState()
        self._fd: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._closed = False
        self._failure: BaseException | None = None
        self.chain_reset: dict[str, Any] | None = None   # set by start() when a file was set aside

    # -- public API -----------------------------------------------------------------------

    async def start(self) -> None:
        """Open (or create) the file, verify it, resume or reset the chain, start the writer."""
        if self._task is not None:
            raise RuntimeError("AuditLog already started")
        self._wake = asyncio.Event()
        reset = await asyncio.to_thread(self._open)
        if reset is not None:
            # First event of the new chain, ahead of anything appended before start().
            self.chain_reset = reset
            self._pending.appendleft(normalize({**reset, "time": self._clock()}))
            self._appended += 1
        self._task = asyncio.create_task(self._run(), name="egressguard-audit-writer")
        if self._pending:
            self._wake.set()

    def append(self, event: Mapping[str, Any]) -> None:
        """Queue one event. Returns at once; never drops. The event is snapshotted now (later
        changes to the caller's objects are not recorded); `time` is taken now if absent.
        Raises RuntimeError after close(): an event that cannot be recorded must be loud."""
        if self._closed:
            raise RuntimeError("audit log is closed; event not recorded: "
                               f"{event.get('event', '?')}")
        ev = normalize(event)
        if not isinstance(ev.get("time"), str):
            ev["time"] = self._clock()
        self._pending.append(ev)
        self._appended += 1
        if self._wake is not None:
            self._wake.set()

    async def flush(self) -> None:
        """Wait until every event appended so far is written and fsynced."""
        target = self._appended
        if self._durable >= target:
            return
        if self._failure is not None:
            raise RuntimeError("audit writer failed") from self._failure
        if self._task is None:
            raise RuntimeError("AuditLog.flush() before start()")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((target, fut))
        await fut

    async def close(self) -> None:
        """Write everything queued, fsync, release the file. Further append() raises."""
        if self._closed:
            return
        self._closed = True
        if self._task is None:
            if self._pending:
                raise RuntimeError(f"AuditLog closed before start(): {len(self._pending)} "
                                   "events were never written")
            return
        assert self._wake is not None
        self._wake.set()
        try:
            await self._task
        finally:
            if self._fd is not None:
                fd, self._fd = self._fd, None
                os.close(fd)          # closing releases the flock

    @property
    def last_seq(self) -> int:
        """seq of the last event sealed by the writer (0: empty chain)."""
        return self._state.seq

    @property
    def pending(self) -> int:
        """Events accepted but not yet durable."""
        return self._appended - self._durable

    # -- writer task ----------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._wake is not None
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._pending:
                    n = min(len(self._pending), MAX_BATCH)
                    batch = [self._pending.popleft() for _ in range(n)]
                    data = await asyncio.to_thread(self._seal, batch)
                    await self._write_durably(data)
                    self._durable += n
                    self._file_bytes += len(data)
                    self._notify()
                    if self.rotate_bytes and self._file_bytes >= self.rotate_bytes:
                        await self._maybe_rotate()
                if self._closed:
                    return
        except BaseException as exc:
            self._failure = exc
            for _, fut in self._waiters:
                if not fut.done():
                    fut.set_exception(RuntimeError("audit writer failed"))
            self._waiters.clear()
            if not isinstance(exc, asyncio.CancelledError):
                log.critical("audit writer stopped: %s; %d events not written", exc,
                             self.pending)
            raise

    def _seal(self, batch: list[dict[str, Any]]) -> bytes:
        return b"".join(encode_line(self._state.seal(ev)) for ev in batch)

    async def _write_durably(self, data: bytes) -> None:
        view = memoryview(data)
        delay = 0.05
        while True:
            try:
                await asyncio.to_thread(self._write_fsync, view)
                return
            except _PartialWrite as pw:
                view = view[pw.written:]
                log.error("audit write failed (%s); %d bytes queued, retrying in %.2fs",
                          pw.error, len(view), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_DELAY)

    def _write_fsync(self, view: memoryview) -> None:
        assert self._fd is not None
        written = 0
        try:
            while written < len(view):
                written += os.write(self._fd, view[written:])
            os.fsync(self._fd)
        except OSError as exc:
            raise _PartialWrite(written, exc) from exc

    async def _maybe_rotate(self) -> None:
        """Rotate; a failure is logged and rotation is tried again after the next batch:
        writing events matters more than keeping files small."""
        try:
            await asyncio.to_thread(self._rotate)
        except (OSError, AuditLogError) as exc:
            log.error("audit rotation of %s failed (%s); still writing to it", self.path, exc)

    def _rotate(self) -> None:
        """Rename the full active file to its segment name and start a new one. Every event
        of the old file is already fsynced; the rename and the new file are made durable with
        a directory fsync. A crash in between leaves no active file, which start() handles
        (the chain resumes from the last segment)."""
        assert self._fd is not None
        target = segments.segment_path(self.path, self._file_first)
        if os.path.exists(target):
            raise OSError(f"segment {target} already exists")
        os.rename(self.path, target)
        try:
            new_fd = self._open_locked()
        except BaseException:
            os.rename(target, self.path)      # keep appending to the old file
            raise
        old, self._fd = self._fd, new_fd
        os.close(old)
        _fsync_dir(os.path.dirname(os.path.abspath(self.path)))
        log.info("audit log rotated: %s (seq %d..%d)", target, self._file_first, self._state.seq)
        self._file_first = self._state.seq + 1
        self._file_bytes = 0

    def _notify(self) -> None:
        keep = []
        for target, fut in self._waiters:
            if target <= self._durable:
                if not fut.done():
                    fut.set_result(None)
            else:
                keep.append((target, fut))
        self._waiters = keep

    # -- opening (worker thread) ------------------------------------------------------------

    def _open(self) -> dict[str, Any] | None:
        """Open + lock + verify. Returns the chain_reset event body when a broken file was
        set aside, else None (chain resumed or new)."""
        parent = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(parent):
            os.makedirs(parent, mode=0o750, exist_ok=True)
            os.chmod(parent, 0o750)      # makedirs' mode is filtered by the umask
        fd = self._open_locked()
        start = self._last_segment_state()
        result = verify(self.path, start)
        if result.ok:
            self._fd = fd
            self._state = ChainState(result.last_seq, result.last_hash)
            self._file_first = result.first_seq or result.last_seq + 1
            self._file_bytes = os.fstat(fd).st_size
            if result.last_seq:
                log.info("audit chain resumed at seq %d (%s)", result.last_seq, self.path)
            return None
        if result.line is None:          # could not read it at all: do not touch it
            os.close(fd)
            raise AuditLogError(f"audit log {self.path}: {result.message}")
        aside = self._aside_name()
        os.rename(self.path, aside)      # still holding the lock on the old inode
        os.close(fd)
        # Segments belong to the chain that broke: set them aside with it, so the new chain's
        # segment names (from seq 1 again) never collide with them.
        old_segments = segments.rotated(self.path)
        for seg in old_segments:
            os.rename(seg.path, f"{aside}.{seg.first_seq:0{segments.SEQ_DIGITS}d}")
        self._fd = self._open_locked()
        self._file_first, self._file_bytes = 1, 0
        _fsync_dir(parent)
        log.error("audit log %s failed verification (%s); set aside as %s, new chain started",
                  self.path, result.message, aside)
        return {
            "event": "audit.chain_reset",
            "reason": f"previous log failed verification: {result.message}",
            "previous_file": os.path.basename(aside),
            "previous_valid_events": result.events,
            "previous_last_hash": result.last_hash,
            "bad_line": result.line,
            "previous_segments": len(old_segments),
        }

    def _last_segment_state(self) -> ChainState | None:
        """Where the chain stands at the end of the newest rotated segment (None: no
        segments, the active file starts at the genesis). Segments were verified while they
        were the active file; only the link to the newest one is re-checked here (by verifying
        the active file from it)."""
        rotated = segments.rotated(self.path)
        if not rotated:
            return None
        last = segments.last_event(rotated[-1].path)
        if last is None or not isinstance(last.get("seq"), int) \
                or not isinstance(last.get("hash"), str):
            return None                  # the active file will then fail and be set aside
        return ChainState(last["seq"], last["hash"])

    def _open_locked(self) -> int:
        created = not os.path.exists(self.path)
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            fd = os.open(self.path, flags, 0o640)
        except OSError as exc:
            raise AuditLogError(f"cannot open audit log {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AuditLogError(f"audit log {self.path} is locked by another process "
                                "(is another egressguard running?)") from None
        if created:
            os.fchmod(fd, 0o640)         # the open() mode is filtered by the umask
            _fsync_dir(os.path.dirname(os.path.abspath(self.path)))
        return fd

    def _aside_name(self) -> str:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        name = f"{self.path}.broken-{stamp}"
        n = 1
        while os.path.exists(name):
            name = f"{self.path}.broken-{stamp}-{n}"
            n += 1
        return name


def _fsync_dir(path: str) -> None:
    """Make a created/renamed directory entry durable (the file's fsync does not)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
