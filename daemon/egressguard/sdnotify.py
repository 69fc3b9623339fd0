"""The systemd notify protocol (sd_notify(3)): READY=1, STATUS=, RELOADING=1, STOPPING=1 and
WATCHDOG=1 as datagrams on $NOTIFY_SOCKET.

A few lines of socket code rather than a dependency (libsystemd's Python binding needs
compiling against it; the PyPI `sdnotify` is unmaintained and has no watchdog helper). Nothing
here ever raises into the daemon: a notify socket that went away is logged once, and the guard
keeps enforcing.

The watchdog ping is sent from a task on the daemon's event loop, so a loop that is stuck (a
blocking call, a runaway flow) stops the pings and systemd restarts the service, which is the
point: pinging from a thread would keep a wedged daemon "healthy".
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger("egressguard.sdnotify")


class Notifier:
    """Talks to systemd when started by it (NOTIFY_SOCKET set); a no-op otherwise."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        addr = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + addr[1:] if addr.startswith("@") else addr  # abstract namespace
        self.watchdog_interval = _watchdog_interval(env)
        self._sock: socket.socket | None = None
        self._failed = False
        if self.address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, *assignments: str) -> bool:
        """Send `KEY=value` lines in one datagram. False when not sent (not under systemd, or
        the socket is gone)."""
        if self._sock is None:
            return False
        msg = "\n".join(a.replace("\n", " ") for a in assignments).encode()
        try:
            self._sock.sendto(msg, self.address)
            return True
        except OSError as exc:
            if not self._failed:
                log.warning("cannot notify systemd on %s: %s", self.address.lstrip("\0"),
                            exc.strerror or exc)
                self._failed = True
            return False

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> bool:
        return self.send(f"STATUS={status}")

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets systemd 253+ (Type=notify-reload) match the reload; older ones
        # ignore it.
        return self.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Seconds between pings: half of WATCHDOG_USEC (as sd_watchdog_enabled(3) advises), or
    None when the watchdog is off or meant for another process (WATCHDOG_PID)."""
    try:
        usec = int(env.get("WATCHDOG_USEC", "0"))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 2e6
