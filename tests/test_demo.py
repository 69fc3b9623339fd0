"""The README's demo command works: run it non-interactively and read what it printed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
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


def test_demo_waits_and_the_deny_command_it_prints_works_as_printed(tmp_path: Path) -> None:
    # The interactive demo: copy the printed command into a second shell, as the README says.
    # As root without sudo (a minimal Debian has none), the command must work as printed.
    env = {k: v for k, v in os.environ.items() if k != "SUDO_USER"}
    demo = subprocess.Popen([sys.executable, "-m", "egressguard.demo", "--timeout", "90",
                             "--workdir", str(tmp_path / "demo")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    try:
        assert demo.stdout is not None
        deadline = time.monotonic() + 180
        command = None
        while command is None and time.monotonic() < deadline:
            line = demo.stdout.readline()
            if not line:
                break
            lines.append(line)
            if " deny h-" in line:
                command = line.strip()
        assert command is not None, "".join(lines)[-3000:]
        assert not command.startswith("sudo ")
        res = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=30)
        assert res.returncode == 0, res.stdout + res.stderr
        assert res.stdout.startswith("denied h-")
        rest, _ = demo.communicate(timeout=120)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(10)
    out = "".join(lines) + rest
    assert demo.returncode == 0, out[-3000:]
    assert "the API received nothing of the held request" in out
    assert "flow.decision  denied  by root" in out
    assert "OK: " in out and "chain intact" in out
    assert "AKIA" + "DEMO7Q2MXV5LKJ3H" not in out
