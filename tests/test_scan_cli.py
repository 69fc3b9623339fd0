"""`egressguard scan`: the real CLI in a subprocess, on files and stdin.

Values are generated at run time; the tests assert that they never appear in the output.
"""

from __future__ import annotations

import json
import random
import string
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RULES = Path(__file__).parent / "data" / "gitleaks" / "rules.toml"


def run(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "egressguard", "scan", *args], input=stdin,
                          capture_output=True, timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(),
                                       proc.stderr.decode())


def key(rng: random.Random) -> str:
    return "AK" + "IA" + "".join(rng.choice(string.ascii_uppercase + "234567") for _ in range(16))


def test_file_with_findings_exits_1_and_never_prints_values(tmp_path: Path) -> None:
    rng = random.Random(1)
    aws = key(rng)
    f = tmp_path / "sample.txt"
    f.write_bytes(f"hello {aws}\nmail jane.doe@example.org now\n".encode())
    r = run(str(f))
    assert r.returncode == 1, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{f}:6-26: secret.aws_access_key_id class=secret "
                               "severity=critical confidence=high preview=AKIA")
    assert "pii.email" in lines[1] and "@example.org" in lines[1]
    assert aws not in r.stdout + r.stderr and aws[4:] not in r.stdout + r.stderr
    assert "jane.doe" not in r.stdout


def test_clean_stdin_exits_0() -> None:
    r = run(stdin=b"nothing to see here, version 1.2.3\n")
    assert (r.returncode, r.stdout) == (0, "")


def test_json_from_stdin_and_dash(tmp_path: Path) -> None:
    rng = random.Random(2)
    data = f"x {key(rng)} y".encode()
    r = run("--json", "-", stdin=data)
    assert r.returncode == 1
    (obj,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert obj == {"file": "-", "detector": "secret.aws_access_key_id", "class": "secret",
                   "severity": "critical", "confidence": "high", "start": 2, "end": 22,
                   "preview": obj["preview"]}
    assert "fingerprint" not in obj


def test_large_file_is_streamed_with_the_proxy_engine(tmp_path: Path) -> None:
    """A finding that straddles the CLI's 64 KiB write boundary is found once."""
    rng = random.Random(3)
    aws = key(rng)
    at = 64 * 1024 - 10
    f = tmp_path / "big.txt"
    f.write_bytes(b"a " * (at // 2) + aws.encode() + b"\n" + b"b " * 50000)
    r = run("--json", str(f))
    assert r.returncode == 1
    found = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(d["detector"], d["start"], d["end"]) for d in found] == [
        ("secret.aws_access_key_id", at, at + 20)]


def test_pack_option_adds_gitleaks_rules(tmp_path: Path) -> None:
    rng = random.Random(4)
    token = "acme_" + "".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(32))
    f = tmp_path / "t.txt"
    f.write_text(f'T="{token}"\n')
    r = run("--pack", str(RULES), str(f))
    assert r.returncode == 1
    assert "secret.gitleaks.acme-token" in r.stdout
    assert "3 gitleaks rules not imported" in r.stderr
    assert token not in r.stdout


def test_config_option_uses_the_policy_detectors(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "scope: {cgroup: /ai-agents}\n"
        "detectors:\n"
        "  disable: [pii.email]\n"
        "  phone_region: GB\n"
        "  custom:\n"
        "    - {id: custom.order_ref, class: pii, pattern: 'ORD-[0-9]{8}', keywords: [order],"
        " severity: low}\n")
    f = tmp_path / "x.txt"
    f.write_text("order ORD-12345678 for jane@example.org, call 020 7946 0958\n")
    r = run("--config", str(policy), "--json", str(f))
    assert r.returncode == 1, r.stderr
    got = {json.loads(line)["detector"] for line in r.stdout.splitlines()}
    assert got == {"custom.order_ref", "pii.phone"}        # GB national format; no e-mail
    r = run("--config", str(policy), stdin=b"ref ORD-12345678 without the keyword\n")
    assert r.returncode == 0


def test_errors_exit_2(tmp_path: Path) -> None:
    r = run(str(tmp_path / "missing.txt"))
    assert r.returncode == 2 and "missing.txt" in r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\ndetectors:\n  - {id: custom.x, class: pii, pattern: '(a'}\n")
    r = run("--pack", str(bad), stdin=b"x")
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and "bad.yaml:3" in r.stderr
    r = run("--pack", str(tmp_path / "nope.toml"), stdin=b"x")
    assert r.returncode == 2 and "no such file" in r.stderr


def test_a_closed_pipe_ends_the_scan_quietly(tmp_path: Path) -> None:
    """`egressguard scan big.txt | head -1`: EPIPE is the reader being done, not an error."""
    f = tmp_path / "many.txt"
    f.write_bytes(b"".join(f"mail user{i}@example.org now\n".encode() for i in range(20000)))
    proc = subprocess.Popen([sys.executable, "-m", "egressguard", "scan", str(f)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline()   # like head -1
        proc.stdout.close()
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 1            # it did find something before the reader left
    assert err.decode() == ""              # no "error: -: Broken pipe", no traceback
