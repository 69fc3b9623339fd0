"""Audit log rotation by size: the chain runs across files, verify checks the set, the writer
resumes across segments, and a reader follows rotation without skipping or repeating."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import shutil
import tempfile
import threading
from pathlib import Path

from egressguard.audit import segments
from egressguard.audit.reader import ChainMoved, Cursor, LogCorrupt, LogReader
from egressguard.audit.verify import verify, verify_set
from egressguard.audit.writer import AuditLog

from tests.test_audit import flow_event


async def write_rotating(path: Path, n: int, rotate: int = 20_000, batch: int = 25) -> None:
    log = AuditLog(path, rotate_bytes=rotate)
    await log.start()
    for i in range(n):
        log.append(flow_event(i))
        if i % batch == batch - 1:
            await log.flush()          # small batches, so files rotate often
    await log.close()


def all_events(path: Path) -> list[dict]:
    out = []
    for seg in segments.log_set(str(path)):
        if os.path.exists(seg.path):
            out += [json.loads(ln) for ln in Path(seg.path).read_bytes().splitlines()]
    return out


def test_rotation_keeps_one_chain_across_files(tmp_path):
    path = tmp_path / "audit.jsonl"
    asyncio.run(write_rotating(path, 1000))
    files = segments.log_set(str(path))
    assert len(files) > 5
    for seg in files[:-1]:
        assert os.path.getsize(seg.path) < 20_000 + 25 * 1000     # at most one batch over
        assert seg.path == segments.segment_path(str(path), seg.first_seq)
    events = all_events(path)
    assert [e["seq"] for e in events] == list(range(1, 1001))
    for prev, cur in zip(events, events[1:]):
        assert cur["prev_hash"] == prev["hash"]          # across file boundaries too
    result = verify_set(path)
    assert result.ok, result.message
    assert result.events == 1000 and f"in {len(files)} files" in result.message
    # each segment alone is not a genesis chain, but verifies from its predecessor's end
    assert not verify(files[1].path).ok


def test_writer_resumes_across_segments(tmp_path):
    path = tmp_path / "audit.jsonl"
    asyncio.run(write_rotating(path, 300))
    os.unlink(path)                       # a crash between the rename and the new file
    asyncio.run(write_rotating(path, 300))
    events = all_events(path)
    assert [e["seq"] for e in events] == list(range(1, 601))
    assert verify_set(path).ok
    assert not any(e["event"] == "audit.chain_reset" for e in events)


def test_verify_names_the_tampered_segment_and_a_missing_one(tmp_path):
    path = tmp_path / "audit.jsonl"
    asyncio.run(write_rotating(path, 600))
    files = segments.log_set(str(path))
    victim = Path(files[2].path)
    data = victim.read_bytes().splitlines(keepends=True)
    data[3] = data[3].replace(b'"n":', b'"n":9', 1)
    victim.write_bytes(b"".join(data))
    result = verify_set(path)
    assert not result.ok and result.file == str(victim) and result.line == 4
    cli = subprocess.run([sys.executable, "-m", "egressguard.cli.ctl", "audit", "verify",
                          str(path)], capture_output=True, text=True, timeout=60)
    assert cli.returncode == 1
    assert cli.stdout.startswith(f"TAMPERED: {victim}: line 4:")

    asyncio.run(write_rotating(tmp_path / "b.jsonl", 600))
    files = segments.log_set(str(tmp_path / "b.jsonl"))
    os.unlink(files[3].path)                                 # a whole segment removed
    result = verify_set(tmp_path / "b.jsonl")
    assert not result.ok and result.file == files[4].path and result.line == 1
    assert "follows seq" in result.message


def test_cli_verifies_a_rotated_set(tmp_path):
    path = tmp_path / "audit.jsonl"
    asyncio.run(write_rotating(path, 400))
    cli = subprocess.run([sys.executable, "-m", "egressguard.cli.ctl", "audit", "verify",
                          str(path)], capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert cli.stdout.startswith("OK: 400 events in ")


def test_broken_active_file_sets_its_segments_aside_too(tmp_path):
    path = tmp_path / "audit.jsonl"
    asyncio.run(write_rotating(path, 300))
    old = len(segments.rotated(str(path)))
    with open(path, "ab") as f:
        f.write(b"garbage\n")
    asyncio.run(write_rotating(path, 10))
    events = all_events(path)
    assert events[0]["event"] == "audit.chain_reset" and events[0]["seq"] == 1
    assert events[0]["previous_segments"] == old
    assert verify_set(path).ok
    aside = [n for n in os.listdir(tmp_path) if ".broken-" in n]
    assert len(aside) == old + 1


def test_reader_follows_rotation_while_the_writer_writes(tmp_path):
    """A reader racing the writer sees every seq once, in order, across ~30 rotations."""
    path = tmp_path / "audit.jsonl"
    seen: list[int] = []
    done = threading.Event()
    errors: list[BaseException] = []

    def read() -> None:
        reader = LogReader(str(path))
        cursor = Cursor()
        try:
            while True:
                batch = reader.read_after(cursor, 37)
                for e in batch:
                    seen.append(e.seq)
                if batch:
                    cursor = Cursor(batch[-1].seq, batch[-1].hash)
                elif done.is_set() and cursor.seq >= 2000:
                    return
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    t = threading.Thread(target=read)
    t.start()
    asyncio.run(write_rotating(path, 2000, rotate=12_000, batch=7))
    done.set()
    t.join(60)
    assert not t.is_alive() and not errors
    assert seen == list(range(1, 2001))
    assert len(segments.rotated(str(path))) > 20


def test_reader_resumes_from_a_cursor_in_any_file_and_detects_a_reset(tmp_path):
    path = tmp_path / "audit.jsonl"
    asyncio.run(write_rotating(path, 500))
    events = all_events(path)
    for at in (0, 1, 137, 250, 499, 500):
        cursor = Cursor(at, events[at - 1]["hash"]) if at else Cursor()
        got: list[int] = []
        reader = LogReader(str(path))
        while batch := reader.read_after(cursor, 64):
            got += [e.seq for e in batch]
            cursor = Cursor(batch[-1].seq, batch[-1].hash)
        assert got == list(range(at + 1, 501))
    try:
        LogReader(str(path)).read_after(Cursor(250, "0" * 64))
    except ChainMoved as moved:
        assert "another hash" in str(moved)
    else:
        raise AssertionError("a cursor with another hash must be refused")
    try:
        LogReader(str(path)).read_after(Cursor(900, "x"))
    except ChainMoved:
        pass
    else:
        raise AssertionError("a cursor past the end of the log must be refused")


def test_reader_after_an_error_resumes_from_the_cursor_not_past_it(tmp_path):
    """A bad line mid-batch: the events read before it are not returned, so the next call must
    position from the cursor again rather than continue behind them."""
    path = tmp_path / "audit.jsonl"
    asyncio.run(write_rotating(path, 50, rotate=10**9))
    data = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(data[:30]) + b"not json\n" + b"".join(data[30:]))
    reader = LogReader(str(path))
    try:
        reader.read_after(Cursor(), 100)
    except LogCorrupt as exc:
        assert "not a JSON line" in str(exc)
    else:
        raise AssertionError("a bad line must be an error")
    path.write_bytes(b"".join(data))              # repaired
    assert [e.seq for e in reader.read_after(Cursor(), 100)] == list(range(1, 51))


def _ctl_verify(path: Path, as_nobody: bool = False) -> subprocess.CompletedProcess[str]:
    def nobody() -> None:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
    return subprocess.run([sys.executable, "-m", "egressguard.cli.ctl", "audit", "verify",
                           str(path)], capture_output=True, text=True, timeout=60,
                          preexec_fn=nobody if as_nobody else None)


def test_cli_a_read_error_is_not_tampering():
    """Run as nobody: an unreadable file and an unreadable folder are exit 2 with the reason,
    never TAMPERED (exit 1), never "no such file", and no "None" line number."""
    d = Path(tempfile.mkdtemp(prefix="eg-verify-"))
    try:
        os.chmod(d, 0o755)
        path = d / "audit.jsonl"
        asyncio.run(write_rotating(path, 30, rotate=1 << 30))      # one file
        os.chmod(path, 0o600)
        res = _ctl_verify(path, as_nobody=True)
        assert res.returncode == 2, res.stdout + res.stderr
        assert f"cannot read {path}: Permission denied" in res.stderr
        assert "TAMPERED" not in res.stdout + res.stderr and "None" not in res.stderr
        assert "nothing was verified" in res.stderr
        for f in d.iterdir():
            os.chmod(f, 0o644)
        assert _ctl_verify(path, as_nobody=True).returncode == 0    # the same log, readable
        os.chmod(d, 0o700)                                          # now the folder is closed
        res = _ctl_verify(path, as_nobody=True)
        assert res.returncode == 2, res.stdout + res.stderr
        assert "Permission denied" in res.stderr and "no such file" not in res.stderr
        assert "TAMPERED" not in res.stdout + res.stderr
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_cli_a_rotated_segment_is_verified_with_its_set(tmp_path):
    path = tmp_path / "audit.jsonl"
    asyncio.run(write_rotating(path, 400))
    files = segments.log_set(str(path))
    middle = files[2].path
    assert segments.active_of(middle) == str(path) and segments.active_of(str(path)) is None
    res = _ctl_verify(Path(middle))
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"note: {middle} is a rotated segment: checked as part of the set of {path}" \
        in res.stdout
    assert "OK: 400 events in " in res.stdout and "follows seq" not in res.stdout
    # tampering inside the given segment is still found and named
    data = Path(middle).read_bytes().splitlines(keepends=True)
    data[1] = data[1].replace(b'"n":', b'"n":9', 1)
    Path(middle).write_bytes(b"".join(data))
    res = _ctl_verify(Path(middle))
    assert res.returncode == 1 and "TAMPERED:" in res.stdout and "line 2:" in res.stdout
