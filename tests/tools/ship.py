"""Run a SinkRunner in its own process until killed (or until every event is acknowledged with
--until-acked): lets tests kill -9 the shipper and start it again.

    python tests/tools/ship.py AUDIT_LOG STATE_DIR SPEC_JSON [--until-acked N]
SPEC_JSON holds SinkSpec fields; "address" is a [host, port] list.
"""

from __future__ import annotations

import argparse
import json
import time

from egressguard.audit.sinkconfig import SinkSpec
from egressguard.audit.sinks.runner import SinkRunner


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("log")
    ap.add_argument("state")
    ap.add_argument("spec")
    ap.add_argument("--until-acked", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args()
    fields = json.loads(args.spec)
    if "address" in fields:
        fields["address"] = tuple(fields["address"])
    runner = SinkRunner(args.log, [SinkSpec(**fields)], args.state, poll_s=0.05)
    runner.start()
    deadline = time.monotonic() + args.timeout
    try:
        while time.monotonic() < deadline:
            if args.until_acked and runner.status()[0]["acked_seq"] >= args.until_acked:
                return 0
            time.sleep(0.05)
        return 1
    finally:
        runner.stop()


if __name__ == "__main__":
    raise SystemExit(main())
