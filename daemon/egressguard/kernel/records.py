"""Python mirror of probes/egressguard.h, and the records the rest of the daemon sees.

The ctypes structures must match the C structs byte for byte (a kernel test compares them with
the layout BCC derives from the compiled probes). Everything above this module works with the
frozen dataclasses (`ConnRecord`, `UdpRefusal`, `EventsLost`), never with ctypes.
"""

from __future__ import annotations

import ctypes as ct
import ipaddress
import socket
from dataclasses import asdict, dataclass

# struct eg_record.hook
HOOK_CONNECT4 = 1
HOOK_CONNECT6 = 2
HOOK_SENDMSG4 = 3
HOOK_SENDMSG6 = 4
_HOOK_NAMES = {
    HOOK_CONNECT4: "connect4",
    HOOK_CONNECT6: "connect6",
    HOOK_SENDMSG4: "sendmsg4",
    HOOK_SENDMSG6: "sendmsg6",
}

# EG_UDP_MODE
UDP_MODES = {"allow": 0, "dns-only": 1, "block": 2}

_V4_MAPPED_PREFIX = b"\x00" * 10 + b"\xff\xff"


class EgTuple(ct.Structure):
    """struct eg_tuple: address (16 bytes, network order; IPv4 v4-mapped) + port (host order)."""

    _fields_ = [("addr", ct.c_uint8 * 16), ("port", ct.c_uint32)]


class EgRecord(ct.Structure):
    """struct eg_record: who connected (or tried to send UDP) where."""

    _fields_ = [
        ("dst", EgTuple),
        ("pid", ct.c_uint32),
        ("tgid", ct.c_uint32),
        ("uid", ct.c_uint32),
        ("gid", ct.c_uint32),
        ("hook", ct.c_uint32),
        ("cgroup_id", ct.c_uint64),
        ("cookie", ct.c_uint64),
        ("comm", ct.c_char * 16),
    ]


def make_tuple(ip: str, port: int) -> EgTuple:
    """Key for eg_origins / eg_bypass. IPv4 (and v4-mapped IPv6) is stored as ::ffff:a.b.c.d,
    so "127.0.0.1" and "::ffff:127.0.0.1" name the same client, as they do on the wire."""
    addr = ipaddress.ip_address(ip)
    raw = (_V4_MAPPED_PREFIX + addr.packed) if addr.version == 4 else addr.packed
    t = EgTuple()
    ct.memmove(t.addr, raw, 16)
    t.port = port
    return t


def tuple_ip(t: EgTuple) -> tuple[int, str]:
    """(family, address text) of a tuple; a v4-mapped address is reported as plain IPv4."""
    raw = bytes(t.addr)
    if raw.startswith(_V4_MAPPED_PREFIX):
        return int(socket.AF_INET), str(ipaddress.IPv4Address(raw[12:]))
    return int(socket.AF_INET6), str(ipaddress.IPv6Address(raw))


@dataclass(frozen=True)
class ConnRecord:
    """A redirected TCP connect, as recorded by the connect hook in the agent's own context.

    `dst_ip`/`dst_port` are the original destination (before the redirect); a v4-mapped
    destination (``::ffff:a.b.c.d``) is reported as IPv4 with family AF_INET. `pid` is the
    kernel thread id and `tgid` the process id (what ps calls PID); `cookie` equals
    getsockopt(SO_COOKIE) on the agent's socket."""

    family: int
    dst_ip: str
    dst_port: int
    pid: int
    tgid: int
    uid: int
    gid: int
    comm: str
    cgroup_id: int
    cookie: int

    @classmethod
    def from_c(cls, r: EgRecord) -> ConnRecord:
        family, ip = tuple_ip(r.dst)
        return cls(family=family, dst_ip=ip, dst_port=r.dst.port, pid=r.pid, tgid=r.tgid,
                   uid=r.uid, gid=r.gid, comm=r.comm.decode(errors="replace"),
                   cgroup_id=r.cgroup_id, cookie=r.cookie)


@dataclass(frozen=True)
class UdpRefusal:
    """A UDP send or connect the probes refused with EPERM (udp_mode), for the audit log.
    Same fields as ConnRecord (flat, so it serialises as one JSON object), plus `hook`:
    "connect4", "connect6", "sendmsg4" or "sendmsg6"."""

    family: int
    dst_ip: str
    dst_port: int
    pid: int
    tgid: int
    uid: int
    gid: int
    comm: str
    cgroup_id: int
    cookie: int
    hook: str

    @classmethod
    def from_c(cls, r: EgRecord) -> UdpRefusal:
        return cls(**asdict(ConnRecord.from_c(r)), hook=_HOOK_NAMES.get(r.hook, str(r.hook)))


@dataclass(frozen=True)
class EventsLost:
    """The kernel could not queue `count` events (ring buffer full): the audit log must say
    that refusals happened which it cannot itemise."""

    count: int


KernelEvent = UdpRefusal | EventsLost
