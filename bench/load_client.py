"""The load generator for bench/load.py: one asyncio process, run by Debian's python3 inside
(guarded) or outside (direct) the guarded cgroup. Prints one JSON line with its measurements.

    load_client.py concurrent HOST PORT N ROUNDS   N connections open at once, ROUNDS
                                                   request/responses each; waits on stdin
                                                   between "all open" and the round trips
    load_client.py soak HOST PORT SECONDS RATE KIB steady RATE flows/s of KIB KiB each

A request is one line (JSON-ish text, no secrets; 1 in 100 carries an e-mail address that the
policy masks); the server answers "ok\\n".
"""

from __future__ import annotations

import asyncio
import json
import random
import resource
import sys
import time

WORDS = ("the model agent request summarise plan quarter revenue customer support ticket "
         "reply draft code review function test deploy status report").split()


def request(kib: int, rng: random.Random, email: bool) -> bytes:
    parts, size = [], 0
    while size < kib * 1024:
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 40)))
        line = f'{{"role": "user", "id": {rng.randint(1, 10**6)}, "content": "{text}"}} '
        parts.append(line)
        size += len(line)
    if email:
        parts.insert(len(parts) // 2, "contact jane.doe" + "@" + "corp-example.org ")
    return "".join(parts).encode()[: kib * 1024 - 1] + b"\n"


async def round_trip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     data: bytes) -> float:
    t = time.perf_counter()
    writer.write(data)
    await writer.drain()
    await reader.readuntil(b"\n")
    return time.perf_counter() - t


async def concurrent(host: str, port: int, n: int, rounds: int) -> dict:
    errors: dict[str, int] = {}
    rng = random.Random(1)
    small = request(1, rng, False)

    async def open_one():
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(host, port), 30)
            await asyncio.wait_for(round_trip(r, w, small), 30)
            return r, w
        except Exception as exc:  # noqa: BLE001 - counted and reported
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            return None

    conns = [c for c in await asyncio.gather(*(open_one() for _ in range(n))) if c]
    print(json.dumps({"open": len(conns), "errors": errors}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    lat: list[float] = []

    async def rounds_on(r, w):
        for _ in range(rounds):
            try:
                lat.append(await asyncio.wait_for(round_trip(r, w, small), 30))
            except Exception as exc:  # noqa: BLE001
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                return

    await asyncio.gather(*(rounds_on(r, w) for r, w in conns))
    for _, w in conns:
        w.close()
    return {"open": len(conns), "lat": lat, "errors": errors}


async def soak(host: str, port: int, seconds: float, rate: float, kib: int) -> dict:
    rng = random.Random(2)
    bodies = [request(kib, rng, i % 100 == 0) for i in range(200)]
    lat: list[float] = []
    errors: dict[str, int] = {}
    sent = 0
    tasks: set[asyncio.Task] = set()

    async def flow(i: int) -> None:
        nonlocal sent
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(host, port), 30)
            t = time.perf_counter()
            data = bodies[i % len(bodies)]
            await asyncio.wait_for(round_trip(r, w, data), 60)
            lat.append(time.perf_counter() - t)
            sent += len(data)
            w.close()
        except Exception as exc:  # noqa: BLE001
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1

    start = time.monotonic()
    i = 0
    while time.monotonic() - start < seconds:
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(flow(i))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        i += 1
    if tasks:
        await asyncio.wait(tasks, timeout=120)
    return {"flows": i, "lat": lat, "bytes": sent, "errors": errors,
            "seconds": time.monotonic() - start}


def main() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "concurrent":
        out = asyncio.run(concurrent(host, port, int(sys.argv[4]), int(sys.argv[5])))
    else:
        out = asyncio.run(soak(host, port, float(sys.argv[4]), float(sys.argv[5]),
                               int(sys.argv[6])))
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
