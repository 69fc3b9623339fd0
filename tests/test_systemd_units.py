"""The shipped systemd units pass `systemd-analyze verify` (systemd is not PID 1 here, so the
units are verified offline, with ExecStart pointing at this checkout's venv), and they say
what the daemon relies on: Type=notify, a watchdog, reload by SIGHUP, restart always."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNITS = ("egressguard.service", "ai-agents.slice", "example-agent.service")


def verify(tmp_path: Path, edit: dict[str, tuple[str, str]] | None = None
           ) -> subprocess.CompletedProcess[str]:
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing: scripts/install.sh installs Debian's systemd")
    for name in UNITS:
        text = (ROOT / "systemd" / name).read_text()
        text = text.replace("/opt/egressguard/.venv", str(ROOT / ".venv"))
        if edit and name in edit:
            text = text.replace(*edit[name])
        (tmp_path / name).write_text(text)
    return subprocess.run(["systemd-analyze", "verify", "--man=no",
                           *(str(tmp_path / n) for n in UNITS)],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)


def test_units_verify_cleanly(tmp_path: Path) -> None:
    res = verify(tmp_path)
    assert res.returncode == 0 and res.stderr.strip() == "", res.stderr


def test_verify_does_catch_a_broken_unit(tmp_path: Path) -> None:
    res = verify(tmp_path, {"egressguard.service": ("Type=notify", "Type=notifyy")})
    assert "Failed to parse service type" in res.stderr or res.returncode != 0, res.stderr
    res = verify(tmp_path, {"egressguard.service": (str(ROOT / ".venv") + "/bin/egressguard run",
                                                    "/nonexistent/egressguard run")})
    assert res.returncode != 0 and "/nonexistent/egressguard" in res.stderr


def test_service_settings_the_daemon_relies_on() -> None:
    text = (ROOT / "systemd" / "egressguard.service").read_text()
    lines = {ln.strip() for ln in text.splitlines()}
    for want in ("Type=notify", "NotifyAccess=main", "Restart=always", "WatchdogSec=30s",
                 "ExecReload=/bin/kill -HUP $MAINPID", "LimitMEMLOCK=infinity",
                 "MemoryDenyWriteExecute=yes"):   # measured in test_hardening.py
        assert want in lines
    # Settings that break BCC or the daemon (README, "Running as a service") stay out.
    for never in ("ProtectKernelModules=yes", "ProtectKernelTunables=yes",
                  "ProtectSystem=strict", "PrivateNetwork=yes"):
        assert never not in lines
    agent = (ROOT / "systemd" / "example-agent.service").read_text()
    assert "Slice=ai-agents.slice" in agent and "After=egressguard.service" in agent
