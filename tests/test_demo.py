"""The README's demo command works: run it non-interactively and read what it printed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.kernel


def test_demo_holds_then_approves(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "egressguard.demo", "--auto-approve",
                          "--workdir", str(tmp_path / "demo")],
                         capture_output=True, text=True, timeout=240)
    out = res.stdout
    assert res.returncode == 0, out[-3000:] + res.stderr[-2000:]
    assert "********@example.com" in out                         # masked in flight
    assert "connection reset by the guard" in out                 # paste site blocked
    assert "the request is HELD" in out
    assert "secret.aws_access_key_id" in out
    assert "the API received the held request once, byte-exact" in out
    assert "OK: " in out and "chain intact" in out
    assert "AKIA" + "DEMO7Q2MXV5LKJ3H" not in out + res.stderr   # never the raw key
