"""Approvals: what persistence costs per request, measured side by side in one run.

    .venv/bin/python bench/approvals.py [--n 2000] [--rounds 3]

For each path the same work runs on a HoldRegistry without a store and with the SQLite store
(WAL, synchronous=NORMAL, in a temporary directory), and the ratio store/memory is printed:
- hold + decide: open a new request (a held flow), approve it once (release the waiter);
- grant.use: a flow answered by a live grant (what a held agent pays while a grant covers it);
- repeat: an identical flow joining a pending request.
The audit hook is a no-op here, so the numbers are the registry's and the store's own cost.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "daemon"))

from egressguard.approvals.holds import HoldRegistry  # noqa: E402
from egressguard.approvals.peercred import Identity  # noqa: E402
from egressguard.approvals.store import ApprovalStore  # noqa: E402
from egressguard.model import (Action, Destination, Detection, FlowInfo, Process,  # noqa: E402
                               Verdict)

VERDICT = Verdict(Action.HOLD, "hold-secrets", "bench")
ALICE = Identity(uid=1000, gid=1000, pid=1, user="alice")


def flow(i: int) -> FlowInfo:
    return FlowInfo(f"f-{i}", Process(pid=i, uid=4000, exe="/usr/bin/python3", user="agent"),
                    Destination("127.40.0.1", 443, "api.example.test"), time.time())


def det(i: int) -> list[Detection]:
    return [Detection("secret.aws_access_key_id", "secret", 0, 20, "AKIA****", f"fp:{i}")]


async def hold_decide(reg: HoldRegistry, n: int) -> None:
    for i in range(n):
        w = reg.open(flow(i), VERDICT, det(i))
        reg.decide(w.id, ALICE, True, "bench")
        await w.wait()


async def grant_use(reg: HoldRegistry, n: int) -> None:
    w = reg.open(flow(0), VERDICT, det(0))
    reg.decide(w.id, ALICE, True, "bench", scope="process-destination", ttl_s=3600)
    for i in range(n):
        await reg.open(flow(i), VERDICT, det(i + 1)).wait()


async def repeat(reg: HoldRegistry, n: int) -> None:
    for i in range(n):
        reg.open(flow(i), VERDICT, det(0))


def measure(kind: str, n: int, with_store: bool) -> float:
    async def run() -> float:
        with tempfile.TemporaryDirectory() as d:
            store = ApprovalStore(str(Path(d) / "approvals.db")) if with_store else None
            reg = HoldRegistry(["alice"], 60.0, "deny", lambda name, fields: None,
                               request_ttl_s=3600.0, store=store)
            t0 = time.perf_counter()
            await {"hold + decide": hold_decide, "grant.use": grant_use, "repeat": repeat}[kind](
                reg, n)
            elapsed = time.perf_counter() - t0
            reg.close()
            return n / elapsed
    return asyncio.run(run())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print(f"{'path':<14} {'memory /s':>10} {'store /s':>10} {'ratio':>6}   (median of "
          f"{args.rounds} x {args.n})")
    for kind in ("hold + decide", "grant.use", "repeat"):
        mem, db = [], []
        for _ in range(args.rounds):
            mem.append(measure(kind, args.n, False))
            db.append(measure(kind, args.n, True))
        m, s = statistics.median(mem), statistics.median(db)
        print(f"{kind:<14} {m:>10,.0f} {s:>10,.0f} {s / m:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
