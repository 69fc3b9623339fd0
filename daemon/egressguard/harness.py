"""Run a real guard around real processes: shared by the demo, the end-to-end tests and bench/.

Nothing here fakes a part of egressguard: `GuardedHost` creates a child cgroup (never the root),
writes a policy file, starts `egressguard run` as a subprocess, waits for its `egressguard ready`
line, runs "agent" commands inside the cgroup as an unprivileged user, and on exit stops the
daemon (SIGTERM, then SIGKILL after a bound), removes what a `failure_mode: closed` daemon
leaves attached on purpose (`egressguard detach`'s function), and removes the cgroup. Every
wait is bounded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from egressguard.kernel.cgroup import cgroup2_mount


@dataclass
class GuardedHost:
    """A demo/test/bench host: one guarded cgroup + one egressguard daemon."""

    workdir: Path
    config: dict[str, Any]
    name: str = field(default_factory=lambda: f"egressguard-{uuid.uuid4().hex[:8]}")
    python: str = sys.executable
    ready_timeout: float = 60.0
    env: dict[str, str] | None = None        # extra environment for the daemon (NOTIFY_SOCKET)
    proc: subprocess.Popen[str] | None = None
    log_lines: list[str] = field(default_factory=list)
    _reader: threading.Thread | None = None

    # ------------------------------------------------------------------ paths
    @property
    def cgroup_rel(self) -> str:
        return "/" + self.name

    @property
    def cgroup_path(self) -> str:
        return cgroup2_mount() + self.cgroup_rel

    @property
    def config_path(self) -> Path:
        return self.workdir / "policy.yaml"

    @property
    def socket_path(self) -> str:
        return self.config["approvals"]["socket"]

    @property
    def audit_path(self) -> str:
        return self.config["audit"]["path"]

    # ------------------------------------------------------------------ life cycle
    def __enter__(self) -> "GuardedHost":
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o755)
        self.config.setdefault("scope", {})["cgroup"] = self.cgroup_rel
        os.mkdir(self.cgroup_path)
        try:
            self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
            self.start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def start(self) -> None:
        """Start the daemon and wait (bounded) for it to say it is enforcing."""
        self.log_lines = []
        self.proc = subprocess.Popen(
            [self.python, "-m", "egressguard", "run", "--config", str(self.config_path)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
            env={**os.environ, **self.env} if self.env else None)
        ready = threading.Event()

        def pump(proc: subprocess.Popen[str]) -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                self.log_lines.append(line.rstrip("\n"))
                if line.strip() == "egressguard ready":
                    ready.set()
            ready.set()

        self._reader = threading.Thread(target=pump, args=(self.proc,), daemon=True)
        self._reader.start()
        if not ready.wait(self.ready_timeout) or self.proc.poll() is not None:
            out = "\n".join(self.log_lines[-30:])
            self.stop()
            raise RuntimeError(f"egressguard did not become ready:\n{out}")

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, wait, SIGKILL if needed. Returns the exit code."""
        if self.proc is None:
            return None
        terminate(self.proc, timeout)
        if self._reader is not None:
            self._reader.join(5)
        code = self.proc.returncode
        self.proc = None
        return code

    def kill(self) -> None:
        """SIGKILL the daemon: no clean-up of any kind (failure-mode tests)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            if self._reader is not None:
                self._reader.join(5)
            self.proc = None

    def detach(self) -> list[str]:
        """What `egressguard detach` does: remove the probes a stopped daemon left attached."""
        from egressguard.kernel.probes import remove_guard
        return remove_guard(self.cgroup_path) if os.path.isdir(self.cgroup_path) else []

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
            self.detach()
        finally:
            self._remove_cgroup()

    def _remove_cgroup(self) -> None:
        path = self.cgroup_path
        if not os.path.isdir(path):
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                pids = Path(path, "cgroup.procs").read_text().split()
            except OSError:
                pids = []
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            try:
                os.rmdir(path)
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"could not remove cgroup {path}")

    # ------------------------------------------------------------------ agents
    def agent(self, argv: list[str], uid: int = 65534, gid: int = 65534,
              **popen: Any) -> subprocess.Popen[Any]:
        """Start `argv` inside the guarded cgroup as `uid` (the "AI agent")."""
        procs = os.path.join(self.cgroup_path, "cgroup.procs")

        def enter() -> None:
            with open(procs, "w") as fh:
                fh.write(str(os.getpid()))
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)

        return subprocess.Popen(argv, preexec_fn=enter, **popen)

    def egressctl(self, *args: str, uid: int = 0, timeout: float = 30.0,
                  check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run egressctl against this daemon's socket as `uid`."""
        def become() -> None:
            if uid != 0:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)

        return subprocess.run(
            [self.python, "-m", "egressguard.cli.ctl", "--socket", self.socket_path, *args],
            capture_output=True, text=True, timeout=timeout, check=check,
            preexec_fn=become if uid != 0 else None)


def base_config(workdir: Path, **overrides: Any) -> dict[str, Any]:
    """A policy for demos and tests: everything under `workdir`, loopback only."""
    cfg: dict[str, Any] = {
        "scope": {"cgroup": "/placeholder"},
        "proxy": {"listen": "127.0.0.1:15001", "bypass": []},
        "approvals": {"socket": str(workdir / "approvals.sock"), "approvers": ["uid:0"],
                      "timeout": "120s", "on_timeout": "deny"},
        "audit": {"path": str(workdir / "audit.jsonl")},
        "state_dir": str(workdir / "state"),
        "default_action": "allow",
        "rules": [],
    }
    cfg.update(overrides)
    return cfg


def terminate(proc: subprocess.Popen[Any], timeout: float, kill_wait: float = 10.0) -> None:
    """SIGTERM, wait up to `timeout`, then SIGKILL: a process we started never outlives us."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(kill_wait)


def free_port(host: str = "127.0.0.1") -> int:
    import socket
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def scratch_dir(prefix: str = "egressguard-") -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
