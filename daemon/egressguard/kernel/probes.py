"""GuardProbes: compile the eBPF probes once, attach them to the guarded cgroup, read their maps.

What the probes do (probes/*.c): every TCP connect from the guarded cgroup is recorded (original
destination and the process, read in the caller's own context, so exact) and redirected to the
daemon's proxy; sockops re-keys the record by the client's (address, port), which the proxy sees
as its peer, so `lookup_origin(peer)` gives back the original destination. UDP sends and UDP
connects follow `udp_mode`; each refusal is reported through `poll_events`.

Attachment uses the legacy BPF_PROG_ATTACH with BPF_F_ALLOW_MULTI: we coexist with other programs
on the cgroup (e.g. systemd's), and the attachment outlives the daemon. That is deliberate: if
the daemon dies, the guarded agents' TCP connects still go to the (now closed) proxy port and
fail, instead of leaving unguarded. The price is that a daemon killed with SIGKILL leaves its
programs attached, so `attach()` removes stale egressguard programs (named with PROG_PREFIX) from
the cgroup, after attaching the new set so there is no unguarded gap. Consequently only one
daemon may guard a given cgroup at a time.

Kernel object handling (query, get-fd-by-id, info, attach, detach, lookup-and-delete) goes
through libbpf's C API via ctypes, resolved through libbcc's handle (libbcc either bundles
libbpf or links libbpf.so.1, as Debian's does), so neither bpftool nor a second BPF library is
needed at run time. BCC is used for compiling and loading only.
"""

from __future__ import annotations

import ctypes as ct
import ipaddress
import logging
import os
import socket
import struct
from collections.abc import Callable, Iterable
from pathlib import Path

from egressguard.errors import EnvironmentProblem
from egressguard.kernel import cgroup
from egressguard.kernel.records import (
    UDP_MODES,
    ConnRecord,
    EgRecord,
    EventsLost,
    KernelEvent,
    UdpRefusal,
    make_tuple,
)

log = logging.getLogger(__name__)

PROG_PREFIX = "eg_"
"""Every program we attach is named eg_*: that is how stale ones are recognised."""

# Stable kernel ABI numbers (uapi/linux/bpf.h), so this module imports without BCC.
_PROG_SOCK_OPS = 13
_PROG_CGROUP_SOCK_ADDR = 18
_ATTACH_SOCK_OPS = 3
_ATTACH_INET4_CONNECT = 10
_ATTACH_INET6_CONNECT = 11
_ATTACH_UDP4_SENDMSG = 14
_ATTACH_UDP6_SENDMSG = 15
_BPF_F_ALLOW_MULTI = 1 << 1
_BPF_CGROUP_MAX_PROGS = 64  # per attach type and cgroup

PROGRAMS: tuple[tuple[str, int, int], ...] = (
    # (program name, program type, attach type); the attach type is also needed at load time.
    ("eg_connect4", _PROG_CGROUP_SOCK_ADDR, _ATTACH_INET4_CONNECT),
    ("eg_connect6", _PROG_CGROUP_SOCK_ADDR, _ATTACH_INET6_CONNECT),
    ("eg_sendmsg4", _PROG_CGROUP_SOCK_ADDR, _ATTACH_UDP4_SENDMSG),
    ("eg_sendmsg6", _PROG_CGROUP_SOCK_ADDR, _ATTACH_UDP6_SENDMSG),
    ("eg_sockops", _PROG_SOCK_OPS, _ATTACH_SOCK_OPS),
)
ATTACH_TYPES: tuple[int, ...] = tuple(a for _, _, a in PROGRAMS)

_SOURCES = ("egressguard.h", "connect.c", "sockops.c", "udp.c")
_MAX_BYPASS = 64      # eg_bypass map size (egressguard.h)
_MAX_DNS_PORTS = 16   # eg_dns_ports map size


def probes_dir() -> Path:
    """Directory of the BPF C sources: $EGRESSGUARD_PROBES_DIR, else <repo>/probes."""
    env = os.environ.get("EGRESSGUARD_PROBES_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "probes"


def parse_bypass(entries: Iterable[str]) -> list[tuple[str, int]]:
    """Parse bypass entries: "127.0.0.53", "::1", "127.0.0.53:53", "[::1]:53" -> (ip, port),
    port 0 meaning any. Only loopback is allowed: a bypassed connection leaves unscanned, so
    it must not be able to leave the host."""
    out = []
    for entry in entries:
        text, port = entry.strip(), 0
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            host, sep, port_text = text.rpartition(":")
            host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
            try:
                ip = ipaddress.ip_address(host)
                port = int(port_text)
            except ValueError:
                raise ValueError(f"bypass entry {entry!r}: expected IP or IP:PORT "
                                 "(IPv6 with a port as [::1]:53)") from None
            if not sep or not 0 < port < 65536:
                raise ValueError(f"bypass entry {entry!r}: port must be 1-65535")
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        if not ip.is_loopback:
            raise ValueError(f"bypass entry {entry!r}: only loopback addresses may bypass the "
                             "proxy (127.0.0.0/8, ::1)")
        out.append((str(ip), port))
    return out


def _check_endpoint(name: str, endpoint: tuple[str, int], version: int) -> tuple[str, int]:
    ip, port = endpoint
    addr = ipaddress.ip_address(ip)
    if addr.version != version or (version == 6 and addr.ipv4_mapped):
        raise ValueError(f"{name} {ip!r}: must be an IPv{version} address")
    if not 0 < port < 65536:
        raise ValueError(f"{name} port {port}: must be 1-65535")
    return str(addr), port


class _Libbpf:
    """The few libbpf calls we need, with errors as OSError. A private CDLL handle, so our
    argtypes never clash with BCC's declarations on its own handle."""

    class ProgInfo(ct.Structure):
        """Prefix of struct bpf_prog_info up to `name` (the kernel accepts a shorter buffer)."""

        _fields_ = [
            ("type", ct.c_uint32), ("id", ct.c_uint32), ("tag", ct.c_uint8 * 8),
            ("jited_prog_len", ct.c_uint32), ("xlated_prog_len", ct.c_uint32),
            ("jited_prog_insns", ct.c_uint64), ("xlated_prog_insns", ct.c_uint64),
            ("load_time", ct.c_uint64), ("created_by_uid", ct.c_uint32),
            ("nr_map_ids", ct.c_uint32), ("map_ids", ct.c_uint64), ("name", ct.c_char * 16),
        ]

    def __init__(self) -> None:
        from bcc.libbcc import lib as bcc_lib

        lib = ct.CDLL(bcc_lib._name, use_errno=True)
        u32p, vp = ct.POINTER(ct.c_uint32), ct.c_void_p
        self._query = self._fn(lib.bpf_prog_query,
                               [ct.c_int, ct.c_int, ct.c_uint32, u32p, u32p, u32p])
        self._get_fd = self._fn(lib.bpf_prog_get_fd_by_id, [ct.c_uint32])
        self._info = self._fn(lib.bpf_obj_get_info_by_fd, [ct.c_int, vp, u32p])
        self._attach = self._fn(lib.bpf_prog_attach, [ct.c_int, ct.c_int, ct.c_int, ct.c_uint])
        self._detach = self._fn(lib.bpf_prog_detach2, [ct.c_int, ct.c_int, ct.c_int])
        self._pop = self._fn(lib.bpf_map_lookup_and_delete_elem, [ct.c_int, vp, vp])
        self._epoll_fd = self._fn(lib.ring_buffer__epoll_fd, [vp])

    @staticmethod
    def _fn(f: ct._CFuncPtr, argtypes: list) -> ct._CFuncPtr:
        f.argtypes, f.restype = argtypes, ct.c_int
        return f

    @staticmethod
    def _check(ret: int, what: str) -> int:
        if ret < 0:  # libbpf 1.x returns -errno
            raise OSError(-ret, f"{what}: {os.strerror(-ret)}")
        return ret

    def query(self, cgroup_fd: int, attach_type: int) -> list[int]:
        """Ids of the programs attached directly to this cgroup for this attach type."""
        ids = (ct.c_uint32 * _BPF_CGROUP_MAX_PROGS)()
        cnt, flags = ct.c_uint32(len(ids)), ct.c_uint32()
        self._check(self._query(cgroup_fd, attach_type, 0, flags, ids, cnt), "BPF_PROG_QUERY")
        return list(ids[: cnt.value])

    def prog_fd(self, prog_id: int) -> int:
        return self._check(self._get_fd(prog_id), f"BPF_PROG_GET_FD_BY_ID {prog_id}")

    def prog_name(self, prog_fd: int) -> str:
        info = self.ProgInfo()
        size = ct.c_uint32(ct.sizeof(info))
        self._check(self._info(prog_fd, ct.byref(info), size), "BPF_OBJ_GET_INFO_BY_FD")
        return info.name.decode(errors="replace")

    def attach(self, prog_fd: int, cgroup_fd: int, attach_type: int) -> None:
        self._check(self._attach(prog_fd, cgroup_fd, attach_type, _BPF_F_ALLOW_MULTI),
                    "BPF_PROG_ATTACH")

    def detach(self, prog_fd: int, cgroup_fd: int, attach_type: int) -> None:
        self._check(self._detach(prog_fd, cgroup_fd, attach_type), "BPF_PROG_DETACH")

    def pop(self, map_fd: int, key: ct.Structure, value: ct.Structure) -> bool:
        """Atomic lookup-and-delete; False when the key is absent."""
        ret = self._pop(map_fd, ct.byref(key), ct.byref(value))
        if ret == -2:  # ENOENT
            return False
        self._check(ret, "BPF_MAP_LOOKUP_AND_DELETE_ELEM")
        return True

    def ringbuf_epoll_fd(self, ring_buffer: int) -> int:
        return self._check(self._epoll_fd(ring_buffer), "ring_buffer__epoll_fd")


def _programs_on(lib: _Libbpf, cgroup_fd: int) -> list[tuple[int, int, str]]:
    """(program id, attach type, name) of each program attached directly to the cgroup for an
    attach type egressguard uses."""
    out = []
    for attach_type in ATTACH_TYPES:
        for prog_id in lib.query(cgroup_fd, attach_type):
            try:
                pfd = lib.prog_fd(prog_id)
            except FileNotFoundError:  # detached and freed meanwhile
                continue
            try:
                out.append((prog_id, attach_type, lib.prog_name(pfd)))
            finally:
                os.close(pfd)
    return out


def attached_programs(cgroup_path: str) -> list[tuple[int, int, str]]:
    """(program id, attach type, name) of the programs attached to the cgroup for our attach
    types, ours or not: for operators (`egressguard check`) and tests."""
    fd = os.open(cgroup_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return _programs_on(_Libbpf(), fd)
    finally:
        os.close(fd)


class GuardProbes:
    """The eBPF side of one guarded cgroup. Construct (validates), `attach()`, then the proxy
    calls `lookup_origin()` per accepted connection and the daemon calls `poll_events()`
    (or watches `events_fd`); `detach()` on shutdown. Also a context manager."""

    def __init__(self, cgroup_path: str, proxy4: tuple[str, int], proxy6: tuple[str, int],
                 bypass: list[str], udp_mode: str = "dns-only", exempt_mark: int = 0x4547,
                 dns_ports: tuple[int, ...] = (53,),
                 on_event: Callable[[KernelEvent], None] | None = None) -> None:
        if not os.path.isfile(os.path.join(cgroup_path, "cgroup.procs")):
            raise ValueError(f"{cgroup_path}: not a cgroup directory")
        if cgroup.is_root(cgroup_path):
            raise ValueError(f"{cgroup_path} is the root cgroup: refusing to redirect the whole "
                             "host; guard a child cgroup")
        if udp_mode not in UDP_MODES:
            raise ValueError(f"udp_mode {udp_mode!r}: expected one of {', '.join(UDP_MODES)}")
        if not 0 < exempt_mark < 2**32:
            # 0 is every unmarked socket's mark: it would exempt everything.
            raise ValueError(f"exempt_mark {exempt_mark:#x}: must be 1..0xffffffff")
        if not 0 < len(dns_ports) <= _MAX_DNS_PORTS or not all(0 < p < 65536 for p in dns_ports):
            raise ValueError(f"dns_ports {dns_ports}: 1-{_MAX_DNS_PORTS} ports, each 1-65535")
        self.cgroup_path = cgroup_path
        self.proxy4 = _check_endpoint("proxy4", proxy4, 4)
        self.proxy6 = _check_endpoint("proxy6", proxy6, 6)
        # The proxy's own addresses are never redirected (no loop), like the bypass list.
        self.bypass = parse_bypass(bypass) + [self.proxy4, self.proxy6]
        if len(self.bypass) > _MAX_BYPASS:
            raise ValueError(f"bypass: at most {_MAX_BYPASS - 2} entries")
        self.udp_mode = udp_mode
        self.exempt_mark = exempt_mark
        self.dns_ports = tuple(dns_ports)
        self.on_event = on_event
        self._bpf = None  # bcc.BPF while attached
        self._lib: _Libbpf | None = None
        self._cgroup_fd = -1
        self._attached: list[tuple[int, int]] = []  # (prog fd, attach type)
        self._lost_reported = 0
        self._pending_events: list[KernelEvent] = []  # filled by _on_ringbuf during a poll

    def __enter__(self) -> GuardProbes:
        self.attach()
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    @property
    def attached(self) -> bool:
        return self._bpf is not None

    def cflags(self) -> list[str]:
        """The -D configuration the probes are compiled with (see probes/connect.c)."""
        ip4 = struct.unpack("=I", socket.inet_pton(socket.AF_INET, self.proxy4[0]))[0]
        ip6 = struct.unpack("=4I", socket.inet_pton(socket.AF_INET6, self.proxy6[0]))
        return [
            f"-I{probes_dir()}",
            f"-DEG_PROXY4_IP={ip4:#x}U",
            f"-DEG_PROXY4_PORT={self.proxy4[1]}",
            *(f"-DEG_PROXY6_IP{i}={w:#x}U" for i, w in enumerate(ip6)),
            f"-DEG_PROXY6_PORT={self.proxy6[1]}",
            f"-DEG_EXEMPT_MARK={self.exempt_mark:#x}U",
            f"-DEG_UDP_MODE={UDP_MODES[self.udp_mode]}",
        ]

    def _compile(self):  # -> bcc.BPF
        """One BCC compile of all probe files as one unit (they share maps). Files are
        concatenated, not #included, because BCC rewrites map calls in the main file only;
        #line keeps compiler messages pointing at the real file and line."""
        from bcc import BPF

        src = probes_dir()
        try:
            text = "\n".join(f'#line 1 "{src / name}"\n' + (src / name).read_text()
                             for name in _SOURCES)
        except OSError as e:
            raise EnvironmentProblem(f"eBPF probe sources not found ({e}); set "
                                     "EGRESSGUARD_PROBES_DIR to the probes/ directory") from None
        try:
            return BPF(text=text.encode(), cflags=self.cflags())
        except Exception as e:  # BCC raises bare Exception; clang's messages went to stderr
            raise EnvironmentProblem(
                f"compiling the eBPF probes failed ({e}); clang's messages are above. Check the "
                f"kernel headers under /lib/modules/{os.uname().release}/build") from None

    def attach(self) -> None:
        """Compile, load, fill the config maps, then attach to the cgroup and remove stale
        egressguard programs left there by a previous daemon. On failure nothing of this
        instance stays attached."""
        if self.attached:
            raise RuntimeError("GuardProbes.attach() called twice")
        self._lib = _Libbpf()
        self._bpf = self._compile()
        try:
            fns = []
            for name, prog_type, attach_type in PROGRAMS:
                try:
                    fns.append((self._bpf.load_func(name.encode(), prog_type,
                                                    attach_type=attach_type), attach_type))
                except Exception as e:  # verifier rejection; its log went to stderr
                    raise EnvironmentProblem(f"the kernel rejected eBPF program {name}: {e}") \
                        from None
            self._fill_maps()
            self._bpf[b"eg_events"].open_ring_buffer(self._on_ringbuf)

            self._cgroup_fd = os.open(self.cgroup_path, os.O_RDONLY | os.O_DIRECTORY)
            # Queried before ours are attached, so every eg_* program found here is stale.
            stale = [p for p in _programs_on(self._lib, self._cgroup_fd)
                     if p[2].startswith(PROG_PREFIX)]
            for fn, attach_type in fns:
                self._lib.attach(fn.fd, self._cgroup_fd, attach_type)
                self._attached.append((fn.fd, attach_type))
            for prog_id, attach_type, name in stale:
                self._detach_stale(prog_id, attach_type, name)
        except BaseException:
            self.detach()
            raise

    def _fill_maps(self) -> None:
        bypass, one = self._bpf[b"eg_bypass"], ct.c_uint8(1)
        for ip, port in self.bypass:
            bypass[make_tuple(ip, port)] = one
        dns = self._bpf[b"eg_dns_ports"]
        for port in self.dns_ports:
            dns[ct.c_uint32(port)] = one

    def _detach_stale(self, prog_id: int, attach_type: int, name: str) -> None:
        try:
            pfd = self._lib.prog_fd(prog_id)
        except FileNotFoundError:
            return
        try:
            self._lib.detach(pfd, self._cgroup_fd, attach_type)
            log.warning("removed stale egressguard program %s (id %d) from %s",
                        name, prog_id, self.cgroup_path)
        except OSError as e:  # e.g. attached through a bpf_link, which only its owner removes
            log.warning("could not remove stale program %s (id %d) from %s: %s",
                        name, prog_id, self.cgroup_path, e)
        finally:
            os.close(pfd)

    def detach(self) -> None:
        """Detach our programs and free everything; idempotent. Maps (and any records the proxy
        has not looked up) go with the programs."""
        for prog_fd, attach_type in self._attached:
            try:
                self._lib.detach(prog_fd, self._cgroup_fd, attach_type)
            except FileNotFoundError:  # already gone, e.g. the cgroup was removed
                pass
        self._attached.clear()
        if self._cgroup_fd >= 0:
            os.close(self._cgroup_fd)
            self._cgroup_fd = -1
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None

    def lookup_origin(self, peer_ip: str, peer_port: int) -> ConnRecord | None:
        """The connect record of the client the proxy just accepted from (peer_ip, peer_port),
        removed from the map (each connection is looked up once). None when unknown: the
        connection did not come through our redirect, or its record was evicted."""
        if not self.attached:
            raise RuntimeError("GuardProbes not attached")
        rec = EgRecord()
        if not self._lib.pop(self._bpf[b"eg_origins"].map_fd, make_tuple(peer_ip, peer_port),
                             rec):
            return None
        return ConnRecord.from_c(rec)

    @property
    def events_fd(self) -> int:
        """A file descriptor that becomes readable when events are queued, for
        `loop.add_reader(probes.events_fd, probes.poll_events)`. (BCC keeps libbpf's
        struct ring_buffer in a private attribute and has no accessor for its epoll fd.)"""
        if not self.attached:
            raise RuntimeError("GuardProbes not attached")
        return self._lib.ringbuf_epoll_fd(self._bpf._ringbuf_manager)

    def poll_events(self, timeout_ms: int = 0) -> None:
        """Deliver queued kernel events to `on_event`: a UdpRefusal per refused UDP send or
        connect, then EventsLost when the ring buffer overflowed since the last poll. Waits up
        to timeout_ms for the first event (0: do not wait). on_event runs here, not inside the
        ctypes callback, so its exceptions propagate to the caller."""
        if not self.attached:
            raise RuntimeError("GuardProbes not attached")
        self._pending_events = []
        self._bpf.ring_buffer_poll(timeout_ms)
        events = self._pending_events
        lost = self._bpf[b"eg_lost"].sum(ct.c_int(0)).value
        if lost > self._lost_reported:
            events.append(EventsLost(lost - self._lost_reported))
            self._lost_reported = lost
        if self.on_event is not None:
            for event in events:
                self.on_event(event)

    def _on_ringbuf(self, _ctx: int, data: int, size: int) -> int:
        if size >= ct.sizeof(EgRecord):
            self._pending_events.append(UdpRefusal.from_c(EgRecord.from_buffer_copy(
                ct.string_at(data, ct.sizeof(EgRecord)))))
        return 0
