"""Shared fixtures for kernel and end-to-end tests.

Safety rules these fixtures enforce (platform.md): probes are only ever attached to a child
cgroup the test creates under the cgroup2 mount, never to the root; every process a test starts
in that cgroup is killed and reaped at teardown, then the cgroup is removed, even when the test
failed. Tests send traffic to loopback only.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import pytest

from egressguard.kernel import cgroup

# Tests host gRPC servers in this process and start egressctl as other users. A fork() (which
# subprocess uses instead of vfork once it must change the uid) runs gRPC's fork handlers, and
# while the server's threads are busy (a Watch stream) the child crashed with SIGSEGV before it
# could exec (measured: 7 of 25 runs). The children exec at once and need no gRPC state, so
# fork support is off here; it must be set before grpc is first imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

NOBODY = 65534
_TEARDOWN_TIMEOUT_S = 5.0
_names = itertools.count()


@dataclass
class GuardCgroup:
    """A throw-away child cgroup. `path` is absolute, `rel` relative to the cgroup2 mount
    (what the daemon's scope.cgroup setting holds), `id` the kernel's cgroup id."""

    mount: str
    rel: str
    path: str
    id: int
    procs: list[subprocess.Popen] = field(default_factory=list)

    def spawn(self, argv: Sequence[str], uid: int | None = NOBODY, gid: int | None = NOBODY,
              **popen_kwargs) -> subprocess.Popen:
        """Start argv inside this cgroup, as uid/gid (None: stay root). The child joins the
        cgroup before exec, so every socket it creates is guarded from the start (a socket
        belongs to the cgroup its creator was in at socket() time)."""
        procs_file = os.path.join(self.path, "cgroup.procs")

        def enter() -> None:
            with open(procs_file, "w") as f:
                f.write(str(os.getpid()))
            if gid is not None:
                os.setgroups([])
                os.setgid(gid)
            if uid is not None:
                os.setuid(uid)

        proc = subprocess.Popen(list(argv), preexec_fn=enter, **popen_kwargs)
        self.procs.append(proc)
        return proc

    def pids(self) -> list[int]:
        with open(os.path.join(self.path, "cgroup.procs")) as f:
            return [int(line) for line in f if line.strip()]

    def kill_all(self) -> None:
        """SIGKILL everything in the cgroup (our children and anything they started), reap our
        children, and wait (bounded) until the cgroup is empty."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        kill_file = os.path.join(self.path, "cgroup.kill")
        if os.path.exists(kill_file):  # kernel 5.14+
            with open(kill_file, "w") as f:
                f.write("1")
        else:
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=_TEARDOWN_TIMEOUT_S)
        for proc in self.procs:
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        deadline = time.monotonic() + _TEARDOWN_TIMEOUT_S
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.02)

    def remove(self) -> None:
        self.kill_all()
        deadline = time.monotonic() + _TEARDOWN_TIMEOUT_S
        while True:
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError:  # EBUSY while the last processes exit
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


@contextlib.contextmanager
def make_guard_cgroup(mount: str) -> Iterator[GuardCgroup]:
    """Create a uniquely named child cgroup of the cgroup2 root; always remove it."""
    rel = f"/egtest-{os.getpid()}-{next(_names)}-{uuid.uuid4().hex[:6]}"
    path = cgroup.resolve(rel, mount)
    os.mkdir(path)
    cg = GuardCgroup(mount=mount, rel=rel, path=path, id=cgroup.cgroup_id(path))
    try:
        yield cg
    finally:
        cg.remove()


def _remove_leftovers(mount: str) -> None:
    """Remove test cgroups of earlier runs that were killed before their teardown (the pid in
    the name is gone). Their processes are killed; attached programs go with the cgroup."""
    for name in os.listdir(mount):
        m = re.fullmatch(r"egtest-(\d+)-.+", name)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            path = os.path.join(mount, name)
            GuardCgroup(mount=mount, rel="/" + name, path=path, id=0).remove()


@pytest.fixture(scope="session")
def cgroup_mount() -> str:
    mount = cgroup.cgroup2_mount()
    _remove_leftovers(mount)
    return mount


@pytest.fixture
def guard_cgroup(cgroup_mount: str) -> Iterator[GuardCgroup]:
    """A fresh child cgroup for one test."""
    with make_guard_cgroup(cgroup_mount) as cg:
        yield cg


@pytest.fixture(scope="module")
def guard_cgroup_module(cgroup_mount: str) -> Iterator[GuardCgroup]:
    """A child cgroup shared by a test module, so probes are compiled and attached once."""
    with make_guard_cgroup(cgroup_mount) as cg:
        yield cg


@pytest.fixture(scope="session")
def unprivileged_uid() -> int:
    """The uid agents run as in tests (nobody): the probes must not depend on privileges."""
    return NOBODY


@pytest.fixture(scope="session")
def cgroup_attachments(cgroup_mount: str) -> Callable[[str], list[str]]:
    """f(path) -> the `bpftool cgroup tree <mount>` lines of programs attached to `path`
    (empty: nothing attached). bpftool is the independent witness that clean-up happened."""

    def attached(path: str) -> list[str]:
        tree = subprocess.run(["bpftool", "cgroup", "tree", cgroup_mount], capture_output=True,
                              text=True, timeout=10, check=True).stdout
        lines, inside = [], False
        for line in tree.splitlines():
            if line.startswith("/"):
                inside = line.strip() == path
            elif inside and line.strip():
                lines.append(line.strip())
        return lines

    return attached
