"""Bad input and a bad environment: one clear `error:` line and exit 2, never a traceback.

Every case runs the real CLI as a subprocess (`python -m egressguard ...`). `run` cases that get
past the preflight use a child cgroup the test creates (never the root) and prove afterwards
that nothing was left behind: no programs attached (bpftool as the witness), no approval
socket file, the proxy port free again.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml

from egressguard.harness import base_config, free_port
from egressguard.kernel import preflight

PY = sys.executable
NOBODY = 65534
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def tmp() -> Iterator[Path]:
    """A scratch directory nobody (uid 65534) can read too (the run-as-nobody case)."""
    d = Path(tempfile.mkdtemp(prefix="eg-cli-"))
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def write_policy(tmp: Path, cgroup_rel: str = "/egressguard-cli-test-missing",
                 **over: Any) -> Path:
    cfg = base_config(tmp)
    cfg["scope"]["cgroup"] = cgroup_rel
    cfg["proxy"]["listen"] = f"127.0.0.1:{free_port()}"
    for key, value in over.items():
        cfg[key] = value
    path = tmp / "policy.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    os.chmod(path, 0o644)
    return path


def cli(*args: str, preexec: Callable[[], None] | None = None, env: dict[str, str] | None = None,
        wrap: list[str] | None = None, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*(wrap or []), PY, "-m", "egressguard", *args], capture_output=True,
                          text=True, timeout=timeout, preexec_fn=preexec,
                          env={**os.environ, **(env or {})})


def error_lines(res: subprocess.CompletedProcess[str], code: int = 2) -> list[str]:
    """Assert the one-clear-line contract and return the error lines. The daemon's own log
    lines (key=value, `time=...`) may precede the error: they are its journal, not output."""
    assert res.returncode == code, (res.returncode, res.stderr[-3000:])
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.strip() and not ln.startswith("time=")]
    assert lines, res.stderr
    assert all(ln.startswith("error:") for ln in lines), lines
    assert len(lines) <= 3, lines
    return lines


# ----------------------------------------------------------------------------- check
def test_check_malformed_yaml_names_file_and_line(tmp: Path) -> None:
    path = tmp / "bad.yaml"
    path.write_text("scope: {cgroup: /x}\nproxy:\n  listen: \"127.0.0.1:1\"\n   bad: [\n")
    (line,) = error_lines(cli("check", "--config", str(path)))
    assert f"{path}:4:" in line and "YAML" in line


def test_check_unknown_key_names_field_and_suggests(tmp: Path) -> None:
    path = write_policy(tmp)
    path.write_text(path.read_text() + "rulez: []\n")
    (line,) = error_lines(cli("check", "--config", str(path)))
    assert "rulez" in line and "did you mean 'rules'" in line
    assert f"{path}:" in line


def test_check_unknown_detector_in_rule(tmp: Path) -> None:
    path = write_policy(tmp, rules=[{"name": "r", "detected": ["secret.nope"],
                                     "action": "hold"}])
    (line,) = error_lines(cli("check", "--config", str(path)))
    assert "rules[0].detected[0]" in line and "secret.nope" in line and "did you mean" in line


def test_check_warns_when_other_users_cannot_reach_the_approvals_socket(tmp: Path) -> None:
    """A socket inside state_dir (created 0700) or any folder closed to others: check still
    says OK (root-only approvals may be intended) but warns, naming the folder."""
    state = tmp / "state"
    cases = [(state / "approvals.sock", str(state), "0700 (as the daemon will create it: "
                                                    "state_dir)")]
    closed = tmp / "closed"
    closed.mkdir(mode=0o700)
    os.chmod(closed, 0o700)
    cases.append((closed / "sub" / "approvals.sock", str(closed), "0700,"))
    for sock, folder, mode in cases:
        path = write_policy(tmp, state_dir=str(state),
                            approvals={"socket": str(sock), "approvers": ["uid:0"]})
        res = cli("check", "--config", str(path))
        assert res.returncode == 0 and ": OK (" in res.stdout, res.stderr
        (warning,) = [ln for ln in res.stderr.splitlines() if ln.startswith("warning:")]
        assert f"the folder {folder} is {mode}" in warning and "permission denied" in warning
    open_dir = tmp / "open"
    open_dir.mkdir()
    os.chmod(open_dir, 0o755)
    path = write_policy(tmp, state_dir=str(state),
                        approvals={"socket": str(open_dir / "approvals.sock"),
                                   "approvers": ["uid:0"]})
    res = cli("check", "--config", str(path))
    assert res.returncode == 0 and "warning:" not in res.stderr, res.stderr


CUSTOM_CASES = {
    # pattern -> what the one line must say
    "(abc": "invalid regular expression",
    "(?>abc)def": "Hyperscan rejects it",
    # Python accepts this alone, but not once the scanner wraps it: found by this test.
    r"(?i)abc\w{3}": "(?i:...)",
}


@pytest.mark.parametrize("pattern", list(CUSTOM_CASES))
def test_check_bad_custom_regex(tmp: Path, pattern: str) -> None:
    path = write_policy(tmp, detectors={"custom": [
        {"id": "custom.thing", "class": "secret", "pattern": pattern}]})
    (line,) = error_lines(cli("check", "--config", str(path)))
    assert "detectors.custom[0].pattern" in line, line
    assert CUSTOM_CASES[pattern] in line, line
    assert f"{path}:" in line


def test_check_several_problems_are_all_listed(tmp: Path) -> None:
    path = write_policy(tmp, default_action="maybe", rules=[
        {"name": "r", "detected": ["secret.nope"], "action": "hold"}])
    lines = error_lines(cli("check", "--config", str(path)))
    assert len(lines) == 3 and lines[-1].endswith("2 problems"), lines


# ----------------------------------------------------------------------------- run
def test_run_scope_cgroup_missing_names_path_and_fix(tmp: Path) -> None:
    path = write_policy(tmp, cgroup_rel="/egressguard-cli-test-missing")
    (line,) = error_lines(cli("run", "--config", str(path)))
    from egressguard.kernel.cgroup import cgroup2_mount
    full = cgroup2_mount() + "/egressguard-cli-test-missing"
    assert f"scope cgroup {full} does not exist" in line
    assert f"mkdir -p {full}" in line


def test_run_as_nobody_names_missing_privilege(tmp: Path) -> None:
    path = write_policy(tmp)

    def drop() -> None:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)

    (line,) = error_lines(cli("run", "--config", str(path), preexec=drop))
    assert "must run as root" in line and "CAP_BPF" in line


def test_run_as_root_without_cap_bpf_says_which_capability_and_where(tmp: Path) -> None:
    # Root in a container started without --cap-add, or under a unit that bounds its
    # capabilities: "run as root" would be the wrong advice.
    path = write_policy(tmp)
    res = cli("run", "--config", str(path), wrap=["setpriv", "--bounding-set", "-bpf", "--"])
    (line,) = error_lines(res)
    assert "runs as root but without CAP_BPF" in line and "--cap-add" in line
    assert "must run as root" not in line


def test_run_without_kernel_headers_says_how_to_install(tmp: Path) -> None:
    """Simulated for real: a private mount namespace hides /lib/modules/<release> behind an
    empty directory (nothing outside this one process sees it)."""
    if not shutil.which("unshare"):
        pytest.skip("unshare(1) not installed")
    empty = tmp / "empty"
    empty.mkdir()
    path = write_policy(tmp)
    release = os.uname().release
    res = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         f'mount --bind "{empty}" "/lib/modules/{release}" && exec "$@"', "sh",
         PY, "-m", "egressguard", "run", "--config", str(path)],
        capture_output=True, text=True, timeout=90)
    (line,) = error_lines(res)
    assert f"kernel headers not found at /lib/modules/{release}/build" in line
    assert f"linux-headers-{release}" in line


def test_run_without_cgroup2_says_how_to_mount_it(tmp: Path) -> None:
    """Simulated for real: in a private mount namespace every cgroup2 mount is unmounted
    (nothing outside this one process sees it)."""
    path = write_policy(tmp)
    res = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         "for m in $(awk '$3==\"cgroup2\"{print $2}' /proc/mounts); do umount -l \"$m\" || "
         "exit 9; done; exec \"$@\"", "sh", PY, "-m", "egressguard", "run", "--config",
         str(path)], capture_output=True, text=True, timeout=90)
    (line,) = error_lines(res)
    assert "no cgroup v2 hierarchy is mounted" in line and "mount -t cgroup2" in line


def test_preflight_headers_check_with_a_temporary_modules_dir(tmp: Path) -> None:
    with pytest.raises(preflight.EnvironmentProblem, match="kernel headers not found"):
        preflight._check_headers(modules_dir=str(tmp))
    (tmp / os.uname().release / "build").mkdir(parents=True)
    preflight._check_headers(modules_dir=str(tmp))


@pytest.fixture
def child_cgroup(cgroup_mount: str) -> Iterator[tuple[str, str]]:
    from tests.conftest import make_guard_cgroup
    with make_guard_cgroup(cgroup_mount) as cg:
        yield cg.rel, cg.path


def assert_nothing_left(cg_path: str, policy: Path) -> None:
    from egressguard.kernel.probes import attached_programs
    cfg = yaml.safe_load(policy.read_text())
    assert attached_programs(cg_path) == []
    tree = subprocess.run(["bpftool", "cgroup", "tree", os.path.dirname(cg_path)],
                          capture_output=True, text=True, timeout=10).stdout
    assert cg_path not in tree
    assert not os.path.exists(cfg["approvals"]["socket"])
    host, port = cfg["proxy"]["listen"].rsplit(":", 1)
    with socket.socket() as s:                      # the proxy port is free again
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, int(port)))


def test_run_proxy_port_in_use_names_proxy_listen(tmp: Path,
                                                  child_cgroup: tuple[str, str]) -> None:
    rel, cg_path = child_cgroup
    path = write_policy(tmp, cgroup_rel=rel)
    host, port = yaml.safe_load(path.read_text())["proxy"]["listen"].rsplit(":", 1)
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind((host, int(port)))
        busy.listen()
        (line,) = error_lines(cli("run", "--config", str(path)))
    assert f"{host}:{port}" in line and "proxy.listen" in line and "in use" in line
    assert_nothing_left(cg_path, path)


def test_run_audit_path_under_a_file(tmp: Path, child_cgroup: tuple[str, str]) -> None:
    rel, cg_path = child_cgroup
    (tmp / "plainfile").write_text("x")
    path = write_policy(tmp, cgroup_rel=rel,
                        audit={"path": str(tmp / "plainfile" / "audit.jsonl")})
    (line,) = error_lines(cli("run", "--config", str(path)))
    assert "audit.path" in line and str(tmp / "plainfile") in line
    assert_nothing_left(cg_path, path)


def test_run_state_dir_under_a_file(tmp: Path, child_cgroup: tuple[str, str]) -> None:
    rel, cg_path = child_cgroup
    (tmp / "plainfile").write_text("x")
    path = write_policy(tmp, cgroup_rel=rel, state_dir=str(tmp / "plainfile" / "state"))
    (line,) = error_lines(cli("run", "--config", str(path)))
    assert "state_dir" in line
    assert_nothing_left(cg_path, path)


@pytest.mark.kernel
def test_run_probe_compile_failure_after_sockets_cleans_up(
        tmp: Path, child_cgroup: tuple[str, str]) -> None:
    """The approval socket and the proxy listeners exist when the probes fail to compile:
    both must be gone afterwards, and nothing attached."""
    rel, cg_path = child_cgroup
    probes = tmp / "probes"
    shutil.copytree(REPO / "probes", probes)
    (probes / "udp.c").write_text((probes / "udp.c").read_text() + "\nthis is not C;\n")
    path = write_policy(tmp, cgroup_rel=rel)
    res = cli("run", "--config", str(path), env={"EGRESSGUARD_PROBES_DIR": str(probes)})
    # clang's own diagnostics go to stderr too (the error line points at them).
    assert res.returncode == 2, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "compiling the eBPF probes failed" in errors[0]
    assert_nothing_left(cg_path, path)


FAIL_AFTER_ATTACH = textwrap.dedent("""
    # Fault injection: the first audit flush (right after the probes are attached, before
    # "ready") fails. run must detach the probes and remove its sockets, and say so in one line.
    import sys
    from egressguard.audit.writer import AuditLog
    async def broken_flush(self):
        raise OSError(5, "Input/output error (injected)")
    AuditLog.flush = broken_flush
    from egressguard.cli.main import main
    sys.exit(main(["run", "--config", sys.argv[1]]))
""")


def _fail_after_attach(tmp: Path, path: Path) -> None:
    script = tmp / "fail_after_attach.py"
    script.write_text(FAIL_AFTER_ATTACH)
    res = subprocess.run([PY, str(script), str(path)], capture_output=True, text=True,
                         timeout=90)
    (line,) = error_lines(res, code=1)
    assert "OSError" in line and "injected" in line
    assert "egressguard ready" not in res.stdout
    assert "event=daemon.start" in res.stderr       # it failed after the probes were attached


@pytest.mark.kernel
def test_run_failure_after_attach_open_mode_detaches_everything(
        tmp: Path, child_cgroup: tuple[str, str]) -> None:
    rel, cg_path = child_cgroup
    path = write_policy(tmp, cgroup_rel=rel, failure_mode="open")
    _fail_after_attach(tmp, path)
    assert_nothing_left(cg_path, path)


@pytest.mark.kernel
def test_run_failure_after_attach_closed_mode_stays_closed_until_detach(
        tmp: Path, child_cgroup: tuple[str, str]) -> None:
    """closed: a daemon that fails after attaching leaves the cgroup refusing (not unguarded),
    and `egressguard detach` is the explicit way to remove it."""
    from egressguard.kernel.probes import PROGRAMS, attached_programs
    rel, cg_path = child_cgroup
    path = write_policy(tmp, cgroup_rel=rel)
    _fail_after_attach(tmp, path)
    assert len(attached_programs(cg_path)) == len(PROGRAMS)
    res = cli("detach", "--config", str(path))
    assert res.returncode == 0, res.stderr
    assert f"detached {len(PROGRAMS)} egressguard program(s) from {cg_path}" in res.stdout
    assert_nothing_left(cg_path, path)
    again = cli("detach", "--config", str(path))
    assert again.returncode == 0 and "nothing of egressguard was attached" in again.stdout


# ----------------------------------------------------------------------------- egressctl
def test_egressctl_missing_socket_exit_3_one_line(tmp: Path) -> None:
    res = subprocess.run([PY, "-m", "egressguard.cli.ctl", "--socket", str(tmp / "none.sock"),
                          "pending"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 3
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(tmp / "none.sock") in lines[0]
