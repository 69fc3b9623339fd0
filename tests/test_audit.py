"""audit/: hash chain, single writer (order, no loss, resume, set-aside), verify, host key."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path

import pytest

from egressguard.audit.chain import (GENESIS, ChainState, canonical_json, event_hash,
                                     rfc3339)
from egressguard.audit.keys import load_or_create_key
from egressguard.audit.verify import verify
from egressguard.audit.writer import AuditLog, AuditLogError
from egressguard.errors import EnvironmentProblem
from egressguard.model import Action, Destination, Detection, Process, Verdict


def run(coro):
    return asyncio.run(coro)


def flow_event(i: int) -> dict:
    return {
        "event": "flow.detect", "flow_id": f"f{i}",
        "process": Process(pid=i, uid=1000, comm="python3"),
        "destination": Destination("192.0.2.1", 443, "api.example.com"),
        "detections": [Detection("pii.email", "pii", 0, 10, "a***@x.com", "fp")],
        "action": Action.MASK, "rule": "no-emails-out", "reason": "r\u00e9sum\u00e9",
        "decision": None, "n": i,
    }


async def write_events(path: Path, n: int, start: int = 0) -> None:
    log = AuditLog(path)
    await log.start()
    for i in range(start, start + n):
        log.append(flow_event(i))
    await log.close()


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


@pytest.fixture
def log1000(tmp_path) -> Path:
    path = tmp_path / "audit" / "audit.jsonl"
    run(write_events(path, 1000))
    return path


# -- chain (pure) ---------------------------------------------------------------------------

def test_chain_definition_is_reproducible_by_hand():
    st = ChainState()
    ev = st.seal({"event": "daemon.start", "extra": [1, 2]}, time="2026-01-01T00:00:00.000000Z")
    assert ev["seq"] == 1 and ev["prev_hash"] == GENESIS
    body = {k: v for k, v in ev.items() if k != "hash"}
    import hashlib
    want = hashlib.sha256(GENESIS.encode() + json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()
    assert ev["hash"] == want == event_hash(GENESIS, ev)
    ev2 = st.seal({"event": "daemon.stop", "seq": 99, "hash": "forged"})
    assert ev2["seq"] == 2 and ev2["prev_hash"] == ev["hash"]


def test_canonical_json_and_time_format():
    assert canonical_json({"b": 1, "a": "é"}) == '{"a":"é","b":1}'.encode()
    t = rfc3339(0.5)
    assert t == "1970-01-01T00:00:00.500000Z"


def test_values_are_normalized_not_dropped():
    st = ChainState()
    ev = st.seal({"event": "x", "action": Action.BLOCK, "verdict": Verdict(Action.HOLD, "r", "w"),
                  "nan": float("nan"), "raw": b"secret bytes", "surrogate": "\udcff", "t": (1,),
                  "obj": object()})
    assert ev["action"] == "block" and ev["verdict"]["action"] == "hold"
    assert ev["nan"] == "nan" and ev["raw"] == "<12 bytes>" and ev["t"] == [1]
    canonical_json(ev)          # encodable


# -- writer + verify ------------------------------------------------------------------------

def test_1000_events_verify(log1000):
    r = verify(log1000)
    assert r.ok and r.events == 1000 and r.line is None and r.last_seq == 1000
    first = json.loads(lines(log1000)[0])
    assert first["seq"] == 1 and first["prev_hash"] == GENESIS
    assert first["time"].endswith("Z") and len(first["time"]) == 27
    assert first["process"]["comm"] == "python3" and first["action"] == "mask"
    assert "truncated tail" in r.message


def test_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = tmp_path / "new" / "audit.jsonl"
        run(write_events(path, 1))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o750


def _rewrite(path: Path, new_lines: list[bytes]) -> None:
    path.write_bytes(b"".join(new_lines))


def test_edited_field_is_named(log1000):
    ls = lines(log1000)
    ev = json.loads(ls[499])
    ev["action"] = "allow"
    ls[499] = canonical_json(ev) + b"\n"
    _rewrite(log1000, ls)
    r = verify(log1000)
    assert not r.ok and r.line == 500 and "edited" in r.message and r.events == 499


def test_edit_with_recomputed_hash_breaks_the_next_line(log1000):
    ls = lines(log1000)
    ev = json.loads(ls[499])
    ev["action"] = "allow"
    ev["hash"] = event_hash(ev["prev_hash"], ev)
    ls[499] = canonical_json(ev) + b"\n"
    _rewrite(log1000, ls)
    r = verify(log1000)
    assert not r.ok and r.line == 501 and "prev_hash" in r.message


def test_deleted_line_is_named(log1000):
    ls = lines(log1000)
    del ls[299]
    _rewrite(log1000, ls)
    r = verify(log1000)
    assert not r.ok and r.line == 300 and "seq 301 follows seq 299" in r.message


def test_inserted_copy_is_named(log1000):
    ls = lines(log1000)
    ls.insert(700, ls[10])
    _rewrite(log1000, ls)
    r = verify(log1000)
    assert not r.ok and r.line == 701


def test_inserted_forged_line_is_named(log1000):
    ls = lines(log1000)
    prev = json.loads(ls[699])
    forged = {"event": "flow.close", "seq": 700, "prev_hash": prev["hash"], "time": prev["time"]}
    forged["hash"] = event_hash(forged["prev_hash"], forged)
    ls.insert(700, canonical_json(forged) + b"\n")    # a perfectly chained line 701 ...
    _rewrite(log1000, ls)
    r = verify(log1000)
    assert not r.ok and r.line == 701 and "seq 700 follows seq 700" in r.message
    forged["seq"] = 701
    forged["hash"] = event_hash(forged["prev_hash"], forged)
    ls[700] = canonical_json(forged) + b"\n"          # ... even with the right seq
    _rewrite(log1000, ls)
    r = verify(log1000)
    assert not r.ok and r.line == 702                 # the original 701 no longer links


def test_swapped_lines_are_named(log1000):
    ls = lines(log1000)
    ls[41], ls[42] = ls[42], ls[41]
    _rewrite(log1000, ls)
    r = verify(log1000)
    assert not r.ok and r.line == 42


@pytest.mark.parametrize("garbage,msg", [(b"{not json\n", "not valid JSON"),
                                         (b"\n", "empty line"), (b"[1]\n", "not a JSON object"),
                                         (b"\xff\xfe\n", "UTF-8")])
def test_invalid_lines_are_named(log1000, garbage, msg):
    ls = lines(log1000)
    ls[9] = garbage
    _rewrite(log1000, ls)
    r = verify(log1000)
    assert not r.ok and r.line == 10 and msg in r.message


def test_non_canonical_line_is_refused(log1000):
    ls = lines(log1000)
    ev = json.loads(ls[3])
    ls[3] = (b'{"action":"block",' + canonical_json(ev)[1:] + b"\n")   # duplicate key
    _rewrite(log1000, ls)
    r = verify(log1000)
    assert not r.ok and r.line == 4 and "canonical" in r.message


def test_torn_tail_and_truncation(log1000):
    data = log1000.read_bytes()
    log1000.write_bytes(data[:-10])
    r = verify(log1000)
    assert not r.ok and r.line == 1000 and "incomplete" in r.message
    # whole lines cut off the end: NOT detectable (documented)
    log1000.write_bytes(b"".join(lines(log1000)[:900]))
    assert verify(log1000).ok


def test_verify_missing_and_empty(tmp_path):
    r = verify(tmp_path / "nope")
    assert not r.ok and r.line is None
    (tmp_path / "empty").write_bytes(b"")
    assert verify(tmp_path / "empty").ok


# -- resume, set aside, concurrency, shutdown ------------------------------------------------

def test_resume_after_restart_continues_seq(tmp_path):
    path = tmp_path / "audit.jsonl"
    run(write_events(path, 10))
    run(write_events(path, 5, start=10))
    r = verify(path)
    assert r.ok and r.events == 15
    seqs = [json.loads(x)["seq"] for x in lines(path)]
    assert seqs == list(range(1, 16))
    assert [json.loads(x)["n"] for x in lines(path)] == list(range(15))


def test_broken_file_is_set_aside_and_a_new_chain_records_it(tmp_path):
    path = tmp_path / "audit.jsonl"
    run(write_events(path, 20))
    ls = lines(path)
    del ls[5]
    _rewrite(path, ls)
    tampered = path.read_bytes()

    async def restart() -> AuditLog:
        log = AuditLog(path)
        log.append({"event": "daemon.start"})      # appended before start(): still after reset
        await log.start()
        log.append({"event": "flow.open", "flow_id": "x"})
        await log.close()
        return log

    log = run(restart())
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("audit.jsonl.broken-")]
    assert len(aside) == 1 and aside[0].read_bytes() == tampered      # evidence kept as is
    r = verify(path)
    assert r.ok and r.events == 3
    first, second, third = (json.loads(x) for x in lines(path))
    assert first["event"] == "audit.chain_reset" and first["seq"] == 1
    assert first["previous_file"] == aside[0].name
    assert first["bad_line"] == 6 and "line 6" in first["reason"]
    assert first["previous_valid_events"] == 5
    assert (second["event"], third["event"]) == ("daemon.start", "flow.open")
    assert log.chain_reset is not None


def test_torn_tail_after_crash_is_set_aside(tmp_path):
    path = tmp_path / "audit.jsonl"
    run(write_events(path, 3))
    path.write_bytes(path.read_bytes()[:-5])
    run(write_events(path, 1))
    assert verify(path).ok
    assert json.loads(lines(path)[0])["event"] == "audit.chain_reset"


def test_concurrent_appends_keep_order_and_lose_nothing(tmp_path):
    path = tmp_path / "audit.jsonl"
    tasks_n, per_task = 50, 200

    async def main() -> None:
        log = AuditLog(path)
        await log.start()
        order: list[tuple[int, int]] = []

        async def producer(t: int) -> None:
            for i in range(per_task):
                log.append({"event": "flow.detect", "task": t, "i": i})
                order.append((t, i))
                if i % 7 == 0:
                    await asyncio.sleep(0)
            if t % 10 == 0:
                await log.flush()       # flush while others keep appending

        await asyncio.gather(*(producer(t) for t in range(tasks_n)))
        await log.close()
        got = [(e["task"], e["i"]) for e in map(json.loads, lines(path))]
        assert got == order             # exactly the append order, nothing lost

    run(main())
    r = verify(path)
    assert r.ok and r.events == tasks_n * per_task


def test_flush_makes_everything_so_far_durable(tmp_path):
    path = tmp_path / "audit.jsonl"

    async def main() -> None:
        log = AuditLog(path)
        await log.start()
        for i in range(100):
            log.append({"event": "x", "i": i})
        await log.flush()
        assert len(lines(path)) == 100 and log.pending == 0
        await log.close()

    run(main())


def test_append_after_close_is_loud(tmp_path):
    async def main() -> None:
        log = AuditLog(tmp_path / "a.jsonl")
        await log.start()
        await log.close()
        with pytest.raises(RuntimeError):
            log.append({"event": "late"})

    run(main())


def test_second_writer_is_refused(tmp_path):
    path = tmp_path / "audit.jsonl"

    async def main() -> None:
        a = AuditLog(path)
        await a.start()
        b = AuditLog(path)
        with pytest.raises(AuditLogError, match="locked"):
            await b.start()
        await a.close()

    run(main())


def test_write_errors_are_retried_not_dropped(tmp_path, monkeypatch):
    path = tmp_path / "audit.jsonl"
    real_write = os.write
    fails = {"n": 3}

    def flaky_write(fd, data):
        if fails["n"] > 0:
            fails["n"] -= 1
            if fails["n"] == 1:     # a partial write first, then errors
                return real_write(fd, bytes(data[:7]))
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    async def main() -> None:
        log = AuditLog(path)
        await log.start()
        monkeypatch.setattr(os, "write", flaky_write)
        for i in range(10):
            log.append({"event": "x", "i": i})
        await asyncio.wait_for(log.flush(), 10)
        monkeypatch.setattr(os, "write", real_write)
        await log.close()

    run(main())
    r = verify(path)
    assert r.ok and r.events == 10


# -- host key -------------------------------------------------------------------------------

def test_key_is_created_private_and_stable(tmp_path):
    state = tmp_path / "state"
    k1 = load_or_create_key(state)
    assert len(k1) == 32
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "fingerprint.key").stat().st_mode) == 0o600
    assert load_or_create_key(state) == k1
    assert [p.name for p in state.iterdir()] == ["fingerprint.key"]   # no temp files left


def test_key_readable_by_others_is_refused(tmp_path):
    load_or_create_key(tmp_path)
    os.chmod(tmp_path / "fingerprint.key", 0o644)
    with pytest.raises(EnvironmentProblem, match="chmod 600"):
        load_or_create_key(tmp_path)


def test_key_wrong_size_or_symlink_is_refused(tmp_path):
    key = tmp_path / "fingerprint.key"
    key.write_bytes(b"short")
    os.chmod(key, 0o600)
    with pytest.raises(EnvironmentProblem, match="5 bytes"):
        load_or_create_key(tmp_path)
    key.unlink()
    (tmp_path / "elsewhere").write_bytes(os.urandom(32))
    os.chmod(tmp_path / "elsewhere", 0o600)
    key.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(EnvironmentProblem, match="symlink"):
        load_or_create_key(tmp_path)
