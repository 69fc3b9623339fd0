"""systemd/egressguard.service: systemd accepts it, and its capabilities are enough.

The unit keeps only some capabilities (AmbientCapabilities, CapabilityBoundingSet). Here the
daemon is started the way systemd would leave it, with setpriv limiting the bounding, inheritable
and ambient sets to the unit's, and it must still attach its probes, hold a secret, take an
approval over the socket and deliver the bytes. (This VM's own bounding set lacks
CAP_SYS_RESOURCE, so the daemon gets the unit's set minus what we do not have: fewer
capabilities than the unit grants, which proves the unit's set sufficient.)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from egressguard.harness import GuardedHost, base_config, free_port
from tests.tools.servers import RecordingServer

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "egressguard.service"
KEY = "AKIA" + "UNITQ7XZ3MPLK2VB"


def unit_setting(name: str) -> list[str]:
    values = re.findall(rf"^{name}=(.*)$", UNIT.read_text(), re.MULTILINE)
    assert len(values) == 1, f"{name} appears {len(values)} times in {UNIT.name}"
    return values[0].split()


# linux/capability.h, for the capabilities a unit may name here.
CAP_NUMBERS = {"cap_dac_read_search": 2, "cap_net_bind_service": 10, "cap_net_admin": 12,
               "cap_sys_ptrace": 19, "cap_sys_admin": 21, "cap_sys_resource": 24,
               "cap_perfmon": 38, "cap_bpf": 39}


def cap_number(name: str) -> int:
    assert name.lower() in CAP_NUMBERS, f"add {name} to CAP_NUMBERS"
    return CAP_NUMBERS[name.lower()]


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    # Point the unit at this checkout (it names /opt/egressguard) and let systemd check it:
    # directives, capability names, that the executables exist.
    text = UNIT.read_text().replace("/opt/egressguard", str(ROOT)).replace(
        "/etc/egressguard/policy.yaml", str(ROOT / "docs" / "examples" / "policy.yaml"))
    unit = tmp_path / "egressguard.service"
    unit.write_text(text)
    res = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0 and res.stderr.strip() == "", res.stderr


def test_the_units_capabilities_are_enough_to_enforce(tmp_path: Path) -> None:
    ambient = {c.lower() for c in unit_setting("AmbientCapabilities")}
    assert ambient <= {c.lower() for c in unit_setting("CapabilityBoundingSet")}
    ours = int(re.search(r"CapBnd:\s*([0-9a-f]+)", Path("/proc/self/status").read_text())[1], 16)
    granted = sorted(c for c in ambient if ours >> cap_number(c) & 1)
    assert {"cap_bpf", "cap_net_admin", "cap_sys_admin"} <= set(granted)
    caps = ",".join("+" + c.removeprefix("cap_") for c in granted)
    wrapper = tmp_path / "python-with-unit-caps"
    wrapper.write_text(f"#!/bin/sh\nexec setpriv --bounding-set -all,{caps} --inh-caps -all,{caps}"
                       f" --ambient-caps -all,{caps} -- {sys.executable} \"$@\"\n")
    wrapper.chmod(0o755)
    os.chmod(tmp_path, 0o755)
    cfg = base_config(tmp_path, rules=[
        {"name": "hold-secrets", "detected": ["secret"], "action": "hold"}])
    cfg["proxy"]["listen"] = f"127.0.0.1:{free_port()}"
    body = f"POST /v1 HTTP/1.1\r\nHost: api.test\r\n\r\nkey={KEY}\n".encode()
    client = ("import socket, sys\ns = socket.create_connection(('127.20.3.1', int(sys.argv[1])),"
              " timeout=30)\ns.sendall(sys.stdin.buffer.read())\ns.shutdown(socket.SHUT_WR)\n"
              "s.recv(1)\n")
    with GuardedHost(tmp_path, cfg, python=str(wrapper)) as host, \
            RecordingServer("127.20.3.1") as server:
        assert host.proc is not None
        status = Path(f"/proc/{host.proc.pid}/status").read_text()
        expected = sum(1 << cap_number(c) for c in granted)
        assert int(re.search(r"CapEff:\s*([0-9a-f]+)", status)[1], 16) == expected
        agent = host.agent([sys.executable, "-c", client, str(server.port)],
                           stdin=subprocess.PIPE)
        assert agent.stdin is not None
        agent.stdin.write(body)
        agent.stdin.close()
        hold = None
        deadline = time.monotonic() + 20
        while hold is None and time.monotonic() < deadline:
            lines = host.egressctl("pending", "--json").stdout.splitlines()
            hold = json.loads(lines[0]) if lines else None
            time.sleep(0.1)
        assert hold is not None, "\n".join(host.log_lines[-20:])
        assert server.total_bytes == 0
        res = host.egressctl("approve", hold["id"], "--reason", "unit capability test")
        assert res.returncode == 0, res.stderr
        agent.wait(30)
        deadline = time.monotonic() + 10
        while server.all_data() != body and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.all_data() == body, "the approved request did not arrive byte-exact"
