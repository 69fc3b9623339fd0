"""`egressguard`: run the daemon, or check a policy file.

    egressguard run --config FILE     foreground daemon; prints `egressguard ready` when enforcing
    egressguard check --config FILE   validate; exit 0, or 2 with every problem listed

Every operator-facing failure (bad policy, missing privilege, kernel feature, headers, a port in
use) is one clear line on stderr and exit 2: never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from egressguard import __version__
from egressguard.errors import ConfigError, EgressGuardError

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="egressguard", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="version", version=f"egressguard {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the guard in the foreground")
    run.add_argument("--config", required=True, help="policy file (YAML)")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    check = sub.add_parser("check", help="validate a policy file and its detectors")
    check.add_argument("--config", required=True, help="policy file (YAML)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check":
        return _check(args.config)
    return _run(args.config, args.log_level)


def _check(path: str) -> int:
    from egressguard.daemon import load_everything
    try:
        loaded = load_everything(path)
    except ConfigError as exc:
        for issue in exc.issues:
            print(f"error: {issue}", file=sys.stderr)
        print(f"{path}: {len(exc.issues)} problem(s)", file=sys.stderr)
        return EXIT_USAGE
    except EgressGuardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{path}: OK ({len(loaded.config.rules)} rules, "
          f"{len(loaded.engine.detector_ids)} detectors, hold-back {loaded.engine.hold_back} bytes)")
    return EXIT_OK


def _run(path: str, level: str) -> int:
    from egressguard.daemon import run_daemon
    from egressguard.logfmt import setup_logging
    setup_logging(level)
    try:
        return asyncio.run(run_daemon(path))
    except ConfigError as exc:
        for issue in exc.issues:
            print(f"error: {issue}", file=sys.stderr)
        return EXIT_USAGE
    except EgressGuardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_OK
