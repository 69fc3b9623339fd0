"""`egressguard scan`: the proxy's scanner over files or stdin.

    egressguard scan [--config FILE] [--pack PATH]... [--json] [FILE|-]...

People try a policy's detectors on sample data, and pipelines use the scanner as a filter. It is
the same engine as in the proxy: the file is fed in 64 KiB writes to one stream (so findings,
hold-back and validators are exactly the proxy's), then the stream is closed.

One finding per line: file, detector id, class, severity, confidence, start and end byte
offsets and the masked preview; never the raw value (nor a fingerprint: the key is random per
run). Exit 0 when nothing is found, 1 when something is, 2 on error, as gitleaks does.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Iterator, Sequence
from typing import IO, BinaryIO

from egressguard.config import DetectorsConfig
from egressguard.errors import ConfigError
from egressguard.model import Detection
from egressguard.scan.engine import ScanEngine
from egressguard.scan.pack import enabled_detectors, pack_warnings

EXIT_CLEAN, EXIT_FOUND, EXIT_ERROR = 0, 1, 2
CHUNK = 64 * 1024


def add_arguments(parser) -> None:
    parser.add_argument("--config", help="policy file whose detectors to use (packs, custom, "
                                         "disable, phone_region)")
    parser.add_argument("--pack", action="append", default=[], metavar="PATH",
                        help="extra detector pack: YAML, or a gitleaks config (*.toml)")
    parser.add_argument("--json", action="store_true", help="one JSON object per finding")
    parser.add_argument("files", nargs="*", metavar="FILE", help="files to scan; - is stdin "
                                                                   "(the default)")


def run(config: str | None, packs: Sequence[str], as_json: bool, files: Sequence[str],
        out: IO[str] = sys.stdout, err: IO[str] = sys.stderr) -> int:
    try:
        engine, warnings = build_engine(config, packs)
    except ConfigError as exc:
        for issue in exc.issues:
            print(f"error: {issue}", file=err)
        return EXIT_ERROR
    for warning in warnings:
        print(f"warning: {warning}", file=err)
    found_any = False
    status = EXIT_CLEAN
    try:
        for name in files or ["-"]:
            try:
                with _open(name) as stream:
                    for det in scan_stream(engine, stream):
                        found_any = True
                        print(_format(name, det, as_json), file=out)
            except BrokenPipeError:
                raise
            except OSError as exc:
                print(f"error: {name}: {exc.strerror or exc}", file=err)
                status = EXIT_ERROR
        out.flush()
    except BrokenPipeError:         # `scan ... | head`: the reader has what it wanted
        _discard_output(out)
        return EXIT_FOUND if found_any else EXIT_CLEAN
    if status == EXIT_ERROR:
        return EXIT_ERROR
    return EXIT_FOUND if found_any else EXIT_CLEAN


def _discard_output(out: IO[str]) -> None:
    """After EPIPE: point stdout at /dev/null so the interpreter's final flush of what is still
    buffered does not fail again and print "Exception ignored ... BrokenPipeError"."""
    try:
        fd = out.fileno()
    except (OSError, ValueError):      # not a real file (tests pass a StringIO)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def build_engine(config: str | None, packs: Sequence[str]) -> tuple[ScanEngine, list[str]]:
    """The engine a policy would run (or the built-in pack), plus `packs`. Raises ConfigError."""
    if config:
        from egressguard.daemon import parse_config
        detectors_cfg = parse_config(config).detectors
    else:
        detectors_cfg = DetectorsConfig(source="<command line>")
    extra = []
    for path in packs:
        full = os.path.abspath(path)
        if not os.path.isfile(full):
            from egressguard.errors import ConfigIssue
            raise ConfigError([ConfigIssue(path, None, "--pack", f"no such file: {full}")])
        extra.append(full)
    detectors_cfg = dataclasses.replace(detectors_cfg, packs=detectors_cfg.packs + tuple(extra))
    detectors = enabled_detectors(detectors_cfg)
    skipped = pack_warnings(detectors_cfg)
    by_file: dict[str, int] = {}
    for issue in skipped:
        by_file[issue.file] = by_file.get(issue.file, 0) + 1
    warnings = [f"{f}: {n} gitleaks rules not imported (`egressguard check` lists them)"
                for f, n in by_file.items()]
    engine = ScanEngine(detectors, os.urandom(32), phone_region=detectors_cfg.phone_region)
    return engine, warnings


def scan_stream(engine: ScanEngine, source: BinaryIO) -> Iterator[Detection]:
    """Feed `source` in CHUNK writes, as the proxy would, yielding findings in order."""
    stream = engine.open_stream()
    try:
        while True:
            chunk = source.read(CHUNK)
            if not chunk:
                break
            yield from stream.feed(chunk)
    finally:
        tail = stream.close()
    yield from tail


def _open(name: str) -> BinaryIO:
    if name == "-":
        return os.fdopen(os.dup(sys.stdin.fileno()), "rb")
    return open(name, "rb")


def _format(name: str, d: Detection, as_json: bool) -> str:
    if as_json:
        return json.dumps({"file": name, "detector": d.detector, "class": d.cls,
                           "severity": d.severity, "confidence": d.confidence,
                           "start": d.start, "end": d.end, "preview": d.preview},
                          sort_keys=True)
    return (f"{name}:{d.start}-{d.end}: {d.detector} class={d.cls} severity={d.severity} "
            f"confidence={d.confidence} preview={d.preview}")
