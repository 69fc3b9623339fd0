"""The service keys: failure_mode, metrics.listen, proxy.max_held_total (opsconfig.py), with
the same file:line: field: message errors as the rest of the policy."""

from __future__ import annotations

from pathlib import Path

from egressguard.config import load_config
from tests.test_config import MINIMAL, USERS, find, issues_of, write


def test_defaults_are_closed_no_metrics_and_a_total_cap(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MINIMAL), resolve_user=USERS)
    assert cfg.failure_mode == "closed"
    assert cfg.metrics.listen is None
    assert cfg.proxy.max_held_total == 256 * 1024 * 1024


def test_values_are_parsed(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MINIMAL + "failure_mode: open\n"
                            "metrics: {listen: '[::1]:9464'}\n"
                            "proxy: {max_held_bytes: 1MiB, max_held_total: 64MiB}\n"),
                      resolve_user=USERS)
    assert cfg.failure_mode == "open"
    assert cfg.metrics.listen == ("::1", 9464)
    assert (cfg.proxy.max_held_bytes, cfg.proxy.max_held_total) == (1 << 20, 64 << 20)
    cfg = load_config(write(tmp_path, MINIMAL + "metrics: {listen: 127.0.0.9:9100}\n"),
                      resolve_user=USERS)
    assert cfg.metrics.listen == ("127.0.0.9", 9100)


def test_bad_values_name_line_and_field(tmp_path: Path) -> None:
    issues = issues_of(tmp_path, MINIMAL + "failure_mode: fail-open\n"
                       "metrics: {listen: '0.0.0.0:9464', port: 1}\n"
                       "proxy: {max_held_bytes: 32MiB, max_held_total: 16MiB}\n")
    fm = find(issues, "failure_mode")
    assert fm.line == 2 and "write open" in fm.message
    ml = find(issues, "metrics.listen")
    assert ml.line == 3 and "metrics must listen on a loopback address" in ml.message
    assert find(issues, "metrics.port").message.startswith("unknown key")
    total = find(issues, "proxy.max_held_total")
    assert total.line == 4 and "less than proxy.max_held_bytes" in total.message
    assert "closed" in find(issues_of(tmp_path, MINIMAL + "failure_mode: maybe\n"),
                            "failure_mode").message
    bad = find(issues_of(tmp_path, MINIMAL + "metrics: {listen: nope}\n"), "metrics.listen")
    # the example is not the proxy's default port, which metrics could never use as well
    assert "not an IPv4" in bad.message and "'127.0.0.1:9464'" in bad.message
    assert "15001" not in bad.message
