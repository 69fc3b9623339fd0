"""`egressguard`: run the daemon, or check a policy file.

    egressguard run --config FILE     foreground daemon; prints `egressguard ready` when enforcing
    egressguard check --config FILE   validate; exit 0, or 2 with every problem listed
    egressguard detach --config FILE  remove the probes a stopped daemon left attached
    egressguard scan [--config FILE] [--pack PATH]... [--json] [FILE|-]...
                                      the proxy's scanner over files; exit 1 if it finds anything
    egressguard ca export --config FILE   print the host CA certificate (PEM) agents trust

Every operator-facing failure (bad policy, missing privilege, kernel feature, headers, a port in
use) is one clear line on stderr and exit 2: never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import traceback
import warnings

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
    run.add_argument("--log-format", default="kv", choices=["kv", "json"],
                     help="key=value lines (default) or one JSON object per line")
    check = sub.add_parser("check", help="validate a policy file and its detectors")
    check.add_argument("--config", required=True, help="policy file (YAML)")
    detach = sub.add_parser("detach", help="remove the probes (and their pins) that a stopped "
                                           "daemon left attached (failure_mode: closed)")
    detach.add_argument("--config", required=True, help="policy file (YAML)")
    from egressguard.cli import scan
    scan.add_arguments(sub.add_parser("scan", help="scan files or stdin with the detectors"))
    ca = sub.add_parser("ca", help="the host CA used for TLS interception")
    ca_sub = ca.add_subparsers(dest="ca_command", required=True)
    export = ca_sub.add_parser("export", help="print the CA certificate (PEM); creates the CA "
                                              "under state_dir on first use")
    export.add_argument("--config", required=True, help="policy file (YAML)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # Python's re warns (FutureWarning "Possible nested set") about patterns such as
    # [[:alpha:]] while validating them; the validator already reports those as one "error:"
    # line, and a warning with a source line in between only confuses the output.
    warnings.filterwarnings("ignore", category=FutureWarning, message="Possible nested set")
    if args.command == "check":
        return _check(args.config)
    if args.command == "scan":
        from egressguard.cli import scan
        try:
            return scan.run(args.config, args.pack, args.json, args.files)
        except Exception as exc:  # noqa: BLE001
            return _unexpected(exc)
    if args.command == "ca":
        return _ca_export(args.config)
    if args.command == "detach":
        from egressguard.cli.detach import detach
        return detach(args.config)
    return _run(args.config, args.log_level, args.log_format)


def _check(path: str) -> int:
    from egressguard.daemon import load_everything
    try:
        loaded = load_everything(path)
    except ConfigError as exc:
        for issue in exc.issues:
            print(f"error: {issue}", file=sys.stderr)
        if len(exc.issues) > 1:
            # Every stderr line starts with "error:" so scripts can grep them.
            print(f"error: {path}: {len(exc.issues)} problems", file=sys.stderr)
        return EXIT_USAGE
    except EgressGuardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001
        return _unexpected(exc)
    from egressguard.approvals.sockreach import socket_reach_warning
    from egressguard.scan.pack import pack_warnings
    reach = socket_reach_warning(loaded.config.approvals.socket, loaded.config.state_dir)
    if reach:
        print(f"warning: {path}: {reach}", file=sys.stderr)
    for warning in pack_warnings(loaded.config.detectors):
        # gitleaks rules that could not be imported: the pack works without them.
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{path}: OK ({len(loaded.config.rules)} rules, "
          f"{len(loaded.engine.detector_ids)} detectors, hold-back {loaded.engine.hold_back} bytes)")
    return EXIT_OK


def _ca_export(path: str) -> int:
    from egressguard.daemon import parse_config
    from egressguard.tls.ca import HostCA
    try:
        config = parse_config(path)
        ca = HostCA(config.state_dir)
    except EgressGuardError as exc:
        return _print_error(exc)
    except OSError as exc:
        print(f"error: cannot create or read the host CA in the state directory (state_dir): "
              f"{exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    sys.stdout.write(ca.cert_pem.decode())
    return EXIT_OK


def _run(path: str, level: str, fmt: str = "kv") -> int:
    from egressguard.daemon import run_daemon
    from egressguard.logfmt import setup_logging
    setup_logging(level, fmt)
    try:
        return asyncio.run(run_daemon(path))
    except EgressGuardError as exc:
        return _print_error(exc)
    except KeyboardInterrupt:
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001
        return _unexpected(exc)


def _print_error(exc: EgressGuardError) -> int:
    """A configuration problem (every issue, one line each) or an environment problem."""
    if isinstance(exc, ConfigError):
        for issue in exc.issues:
            print(f"error: {issue}", file=sys.stderr)
    else:
        print(f"error: {exc}", file=sys.stderr)
    return EXIT_USAGE


def _unexpected(exc: Exception) -> int:
    """A failure no check anticipated is a bug, but it still gets one line, not a traceback:
    exception messages can quote input (policy text, bytes), and operators need the one line.
    The class and the place it was raised are enough to report it (as in logfmt)."""
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno}" if tb else ""
    print(f"error: unexpected {exc.__class__.__name__}{where}: {exc} (a bug in egressguard: "
          "please report it)", file=sys.stderr)
    return EXIT_FAIL
