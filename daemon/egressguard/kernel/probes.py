"""GuardProbes: compile the eBPF probes once, attach them to the guarded cgroup, read their maps.

What the probes do (probes/*.c): every TCP connect from the guarded cgroup is recorded (original
destination and the process, read in the caller's own context, so exact) and redirected to the
daemon's proxy; sockops re-keys the record by the client's (address, port), which the proxy sees
as its peer, so `lookup_origin(peer)` gives back the original destination. UDP sends and UDP
connects follow `udp_mode`; each refusal is reported through `poll_events`.

Attachment follows `failure_mode` and uses cgroup bpf_links (multi-attach: we coexist with
other programs on the cgroup, e.g. systemd's):
- closed (default): each link is pinned in bpffs (kernel/pins.py), so the attachment outlives
  the daemon, however it ends. Guarded connects then still go to the (closed) proxy port and are
  refused instead of leaving unguarded. The next daemon adopts the pinned links and swaps its
  freshly loaded programs in with BPF_LINK_UPDATE: atomic, no gap, no duplicate, and the old
  programs and maps are freed with their last reference (no stale state).
- open: the links are not pinned; they belong to the daemon's file descriptors, so the kernel
  detaches them when the process dies, even by SIGKILL, and guarded processes reach the network
  directly (availability over confidentiality).
Either way `attach()` then removes any other egressguard program (named with PROG_PREFIX) from
the cgroup, however it was attached, so exactly one set stays. Consequently only one daemon may
guard a given cgroup at a time. On kernels without cgroup links (before 5.7) closed mode falls
back to BPF_PROG_ATTACH (which also survives the daemon) and open mode refuses to start.

Kernel object handling (query, get-fd-by-id, info, attach, detach, lookup-and-delete) goes
through libbpf's C API via ctypes, resolved through libbcc's handle (libbcc either bundles
libbpf or links libbpf.so.1, as Debian's does), so neither bpftool nor a second BPF library is
needed at run time. BCC is used for compiling and loading only.
"""

from __future__ import annotations

import ctypes as ct
import errno
import ipaddress
import logging
import os
import socket
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from egressguard.errors import EnvironmentProblem
from egressguard.kernel import cgroup, pins
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
_LINK_TYPE_CGROUP = 3       # BPF_LINK_TYPE_CGROUP
FAILURE_MODES = ("closed", "open")

PROGRAMS: tuple[tuple[str, int, int], ...] = (
    # (program name, program type, attach type); the attach type is also needed at load time.
    ("eg_connect4", _PROG_CGROUP_SOCK_ADDR, _ATTACH_INET4_CONNECT),
    ("eg_connect6", _PROG_CGROUP_SOCK_ADDR, _ATTACH_INET6_CONNECT),
    ("eg_sendmsg4", _PROG_CGROUP_SOCK_ADDR, _ATTACH_UDP4_SENDMSG),
    ("eg_sendmsg6", _PROG_CGROUP_SOCK_ADDR, _ATTACH_UDP6_SENDMSG),
    ("eg_sockops", _PROG_SOCK_OPS, _ATTACH_SOCK_OPS),
)
ATTACH_TYPES: tuple[int, ...] = tuple(a for _, _, a in PROGRAMS)
_HOOK_NAMES = {_ATTACH_SOCK_OPS: "sock_ops", _ATTACH_INET4_CONNECT: "connect4",
               _ATTACH_INET6_CONNECT: "connect6", _ATTACH_UDP4_SENDMSG: "sendmsg4",
               _ATTACH_UDP6_SENDMSG: "sendmsg6"}

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

    class LinkInfo(ct.Structure):
        """struct bpf_link_info with the cgroup member of its union (offset 16, 8-aligned)."""

        _fields_ = [
            ("type", ct.c_uint32), ("id", ct.c_uint32), ("prog_id", ct.c_uint32),
            ("_pad", ct.c_uint32), ("cgroup_id", ct.c_uint64), ("attach_type", ct.c_uint32),
            ("_rest", ct.c_uint8 * 44),
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
        # bpf_link (Linux 5.7+): an attachment owned by a file descriptor (or a bpffs pin).
        self._link_create = self._fn(lib.bpf_link_create, [ct.c_int, ct.c_int, ct.c_int, vp])
        self._link_update = self._fn(lib.bpf_link_update, [ct.c_int, ct.c_int, vp])
        self._link_detach = self._fn(lib.bpf_link_detach, [ct.c_int])
        self._link_next = self._fn(lib.bpf_link_get_next_id, [ct.c_uint32, u32p])
        self._link_fd = self._fn(lib.bpf_link_get_fd_by_id, [ct.c_uint32])
        self._obj_pin = self._fn(lib.bpf_obj_pin, [ct.c_int, ct.c_char_p])
        self._obj_get = self._fn(lib.bpf_obj_get, [ct.c_char_p])

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

    def _prog_info(self, prog_fd: int) -> "_Libbpf.ProgInfo":
        info = self.ProgInfo()
        size = ct.c_uint32(ct.sizeof(info))
        self._check(self._info(prog_fd, ct.byref(info), size), "BPF_OBJ_GET_INFO_BY_FD")
        return info

    def prog_name(self, prog_fd: int) -> str:
        return self._prog_info(prog_fd).name.decode(errors="replace")

    def prog_id(self, prog_fd: int) -> int:
        return int(self._prog_info(prog_fd).id)

    def attach(self, prog_fd: int, cgroup_fd: int, attach_type: int) -> None:
        self._check(self._attach(prog_fd, cgroup_fd, attach_type, _BPF_F_ALLOW_MULTI),
                    "BPF_PROG_ATTACH")

    def detach(self, prog_fd: int, cgroup_fd: int, attach_type: int) -> None:
        self._check(self._detach(prog_fd, cgroup_fd, attach_type), "BPF_PROG_DETACH")

    def link_create(self, prog_fd: int, cgroup_fd: int, attach_type: int) -> int:
        return self._check(self._link_create(prog_fd, cgroup_fd, attach_type, None),
                           "BPF_LINK_CREATE")

    def link_update(self, link_fd: int, prog_fd: int) -> None:
        """Atomically replace the program behind a link: no instant without a program."""
        self._check(self._link_update(link_fd, prog_fd, None), "BPF_LINK_UPDATE")

    def link_detach(self, link_fd: int) -> None:
        self._check(self._link_detach(link_fd), "BPF_LINK_DETACH")

    def link_info(self, link_fd: int) -> "_Libbpf.LinkInfo":
        info = self.LinkInfo()
        size = ct.c_uint32(ct.sizeof(info))
        self._check(self._info(link_fd, ct.byref(info), size), "BPF_OBJ_GET_INFO_BY_FD")
        return info

    def link_ids(self) -> list[int]:
        """Every bpf_link id on the host (for finding the link that holds a program)."""
        out, cur, nxt = [], 0, ct.c_uint32()
        while self._link_next(cur, ct.byref(nxt)) == 0:
            out.append(nxt.value)
            cur = nxt.value
        return out

    def link_fd_by_id(self, link_id: int) -> int:
        return self._check(self._link_fd(link_id), f"BPF_LINK_GET_FD_BY_ID {link_id}")

    def pin(self, fd: int, path: str) -> None:
        self._check(self._obj_pin(fd, path.encode()), f"BPF_OBJ_PIN {path}")

    def get_pinned(self, path: str) -> int:
        return self._check(self._obj_get(path.encode()), f"BPF_OBJ_GET {path}")

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


@dataclass
class _Link:
    """One of our cgroup links: its fd, and its bpffs pin when failure_mode is closed."""

    name: str
    fd: int
    attach_type: int
    pin: Path | None


def _link_holding(lib: _Libbpf, cgroup_id: int, prog_id: int) -> int | None:
    """An fd of the cgroup link that attaches `prog_id` to the cgroup, or None (the program is
    attached with BPF_PROG_ATTACH, or already gone)."""
    for link_id in lib.link_ids():
        try:
            fd = lib.link_fd_by_id(link_id)
        except OSError:
            continue
        try:
            info = lib.link_info(fd)
        except OSError:
            os.close(fd)
            continue
        if info.type == _LINK_TYPE_CGROUP and info.cgroup_id == cgroup_id \
                and info.prog_id == prog_id:
            return fd
        os.close(fd)
    return None


def _remove_programs(lib: _Libbpf, cgroup_fd: int, cgroup_id: int,
                     keep: set[int]) -> list[str]:
    """Detach every egressguard (eg_*) program on the cgroup whose id is not in `keep`, however
    it was attached: through a link (pinned by a closed-mode daemon, or held by a live one:
    BPF_LINK_DETACH works for any holder) or with BPF_PROG_ATTACH (a daemon before links, or
    the legacy fallback). Returns the names removed."""
    removed = []
    for prog_id, attach_type, name in _programs_on(lib, cgroup_fd):
        if not name.startswith(PROG_PREFIX) or prog_id in keep:
            continue
        link_fd = _link_holding(lib, cgroup_id, prog_id)
        try:
            if link_fd is not None:
                lib.link_detach(link_fd)
            else:
                pfd = lib.prog_fd(prog_id)
                try:
                    lib.detach(pfd, cgroup_fd, attach_type)
                finally:
                    os.close(pfd)
            removed.append(name)
        except OSError as e:
            log.warning("could not remove stale program %s (id %d): %s", name, prog_id, e)
        finally:
            if link_fd is not None:
                os.close(link_fd)
    return removed


def collect_defunct_pins(lib: _Libbpf, root: str = pins.PIN_ROOT) -> None:
    """Remove pins whose link no longer attaches anywhere (its cgroup was removed: the kernel
    auto-detaches such links but the pin file stays until someone unlinks it)."""
    for d in pins.all_pin_dirs(root):
        for path in list(d.iterdir()):
            try:
                fd = lib.get_pinned(str(path))
            except OSError:
                pins.remove_pin(path)
                continue
            try:
                defunct = lib.link_info(fd).cgroup_id == 0
            finally:
                os.close(fd)
            if defunct:
                pins.remove_pin(path)


def remove_guard(cgroup_path: str, pin_root: str = pins.PIN_ROOT) -> list[str]:
    """`egressguard detach`: remove every egressguard program and pin from the cgroup, for a
    daemon that is stopped in failure_mode: closed (its probes stay attached on purpose).
    Returns the names of the programs removed."""
    lib = _Libbpf()
    fd = os.open(cgroup_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        cg_id = cgroup.cgroup_id(cgroup_path)
        removed = _remove_programs(lib, fd, cg_id, keep=set())
    finally:
        os.close(fd)
    for path in pins.pinned_programs(cg_id, pin_root).values():
        pins.remove_pin(path)
    return removed


class GuardProbes:
    """The eBPF side of one guarded cgroup. Construct (validates), `attach()`, then the proxy
    calls `lookup_origin()` per accepted connection and the daemon calls `poll_events()`
    (or watches `events_fd`); `detach()` on shutdown. Also a context manager."""

    def __init__(self, cgroup_path: str, proxy4: tuple[str, int], proxy6: tuple[str, int],
                 bypass: list[str], udp_mode: str = "dns-only", exempt_mark: int = 0x4547,
                 dns_ports: tuple[int, ...] = (53,),
                 on_event: Callable[[KernelEvent], None] | None = None,
                 failure_mode: str = "closed", pin_root: str = pins.PIN_ROOT) -> None:
        if not os.path.isfile(os.path.join(cgroup_path, "cgroup.procs")):
            raise ValueError(f"{cgroup_path}: not a cgroup directory")
        if cgroup.is_root(cgroup_path):
            raise ValueError(f"{cgroup_path} is the root cgroup: refusing to redirect the whole "
                             "host; guard a child cgroup")
        if failure_mode not in FAILURE_MODES:
            raise ValueError(f"failure_mode {failure_mode!r}: expected closed or open")
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
        self.failure_mode = failure_mode
        self.pin_root = pin_root
        self.adopted: list[str] = []       # programs whose pinned link this instance took over
        self._bpf = None  # bcc.BPF while attached
        self._lib: _Libbpf | None = None
        self._cgroup_fd = -1
        self._attached: list[tuple[int, int]] = []  # legacy fallback: (prog fd, attach type)
        self._links: list[_Link] = []
        self._prog_ids: dict[str, int] = {}
        self._cgroup_id = 0
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
        egressguard programs left there by a previous daemon. On failure, open mode leaves
        nothing attached; closed mode keeps what is pinned (a predecessor's adopted links, or
        ours), so a failed start never opens the cgroup (unpinned links go with our fds).

        How each program is attached follows `failure_mode` (see the module docstring):
        closed adopts the pinned link (BPF_LINK_UPDATE swaps in the new program atomically)
        or creates and pins one; open creates an unpinned link owned by this process."""
        if self.attached:
            raise RuntimeError("GuardProbes.attach() called twice")
        self._lib = _Libbpf()
        self._bpf = self._compile()
        try:
            fns = []
            for name, prog_type, attach_type in PROGRAMS:
                try:
                    fns.append((name, self._bpf.load_func(name.encode(), prog_type,
                                                          attach_type=attach_type), attach_type))
                except Exception as e:  # verifier rejection; its log went to stderr
                    raise EnvironmentProblem(f"the kernel rejected eBPF program {name}: {e}") \
                        from None
            self._fill_maps()
            self._bpf[b"eg_events"].open_ring_buffer(self._on_ringbuf)

            self._cgroup_fd = os.open(self.cgroup_path, os.O_RDONLY | os.O_DIRECTORY)
            self._cgroup_id = cgroup.cgroup_id(self.cgroup_path)
            if self.failure_mode == "closed":
                pins.ensure_bpffs(os.path.dirname(self.pin_root))
                collect_defunct_pins(self._lib, self.pin_root)
            for name, fn, attach_type in fns:
                self._prog_ids[name] = self._lib.prog_id(fn.fd)
                self._attach_one(name, fn.fd, attach_type)
            removed = _remove_programs(self._lib, self._cgroup_fd, self._cgroup_id,
                                       keep=set(self._prog_ids.values()))
            for name in removed:
                log.warning("removed stale egressguard program %s from %s", name,
                            self.cgroup_path)
            if self.failure_mode == "open":
                for path in pins.pinned_programs(self._cgroup_id, self.pin_root).values():
                    pins.remove_pin(path)  # a closed-mode predecessor's (now detached) pins
        except BaseException:
            self.release()      # closed: pinned links stay (fail closed); open: detach()
            raise

    def _attach_one(self, name: str, prog_fd: int, attach_type: int) -> None:
        assert self._lib is not None
        path = pins.pin_path(self._cgroup_id, name, self.pin_root)
        if self.failure_mode == "closed":
            link_fd = self._adoptable_link(path, attach_type)
            if link_fd is not None:
                try:
                    self._lib.link_update(link_fd, prog_fd)
                except BaseException:
                    os.close(link_fd)
                    raise
                self._links.append(_Link(name, link_fd, attach_type, path))
                self.adopted.append(name)
                return
        try:
            link_fd = self._lib.link_create(prog_fd, self._cgroup_fd, attach_type)
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
                raise
            if self.failure_mode == "open":
                raise EnvironmentProblem(
                    f"failure_mode: open needs cgroup bpf_link attachments (Linux 5.7+), which "
                    f"this kernel refused ({e.strerror}); use failure_mode: closed") from None
            if not self._attached:
                log.warning("this kernel has no cgroup bpf_link (%s): attaching with "
                            "BPF_PROG_ATTACH, which also survives the daemon (fail closed)",
                            e.strerror)
            self._lib.attach(prog_fd, self._cgroup_fd, attach_type)
            self._attached.append((prog_fd, attach_type))
            return
        link = _Link(name, link_fd, attach_type, None)
        self._links.append(link)
        if self.failure_mode == "closed":
            try:
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                if path.exists():
                    path.unlink()  # a defunct pin (its link no longer attached here)
                self._lib.pin(link_fd, str(path))
            except OSError as e:
                raise EnvironmentProblem(
                    f"failure_mode: closed pins the probes under {self.pin_root}, which failed "
                    f"({e.strerror or e}); under systemd, ProtectKernelTunables=yes makes "
                    "/sys/fs/bpf read-only: leave it out (see systemd/egressguard.service), or "
                    "set failure_mode: open") from None
            link.pin = path

    def _adoptable_link(self, path: Path, attach_type: int) -> int | None:
        """An fd of the pinned link at `path` when it still attaches to this cgroup with this
        attach type; otherwise the pin is removed (it is defunct) and None returned."""
        assert self._lib is not None
        if not path.exists():
            return None
        try:
            fd = self._lib.get_pinned(str(path))
        except OSError:
            pins.remove_pin(path)
            return None
        info = self._lib.link_info(fd)
        if (info.type == _LINK_TYPE_CGROUP and info.cgroup_id == self._cgroup_id
                and info.attach_type == attach_type):
            return fd
        os.close(fd)
        path.unlink(missing_ok=True)
        return None

    def _fill_maps(self) -> None:
        bypass, one = self._bpf[b"eg_bypass"], ct.c_uint8(1)
        for ip, port in self.bypass:
            bypass[make_tuple(ip, port)] = one
        dns = self._bpf[b"eg_dns_ports"]
        for port in self.dns_ports:
            dns[ct.c_uint32(port)] = one

    def detach(self) -> None:
        """Detach our programs, remove our pins and free everything; idempotent. Maps (and any
        records the proxy has not looked up) go with the programs."""
        for link in self._links:
            try:
                self._lib.link_detach(link.fd)
            except OSError as e:  # already gone, e.g. the cgroup was removed
                if e.errno not in (errno.ENOENT, errno.ENOLINK, errno.EINVAL):
                    log.warning("detaching %s from %s: %s", link.name, self.cgroup_path, e)
            os.close(link.fd)
            if link.pin is not None:
                pins.remove_pin(link.pin)
        self._links.clear()
        for prog_fd, attach_type in self._attached:
            try:
                self._lib.detach(prog_fd, self._cgroup_fd, attach_type)
            except FileNotFoundError:  # already gone, e.g. the cgroup was removed
                pass
        self._attached.clear()
        self._free()

    def release(self) -> None:
        """Stop using the probes but leave the kernel side enforcing, for failure_mode: closed
        (pinned links and legacy attachments outlive our descriptors): guarded connects keep
        being redirected to the proxy port and are refused until a daemon listens again, which
        then adopts them. In open mode nothing can stay, so this is `detach()`."""
        if self.failure_mode != "closed":
            self.detach()
            return
        for link in self._links:
            os.close(link.fd)
        self._links.clear()
        self._attached.clear()
        self._free()

    def _free(self) -> None:
        if self._cgroup_fd >= 0:
            os.close(self._cgroup_fd)
            self._cgroup_fd = -1
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None

    def attachment_state(self) -> list[dict[str, object]]:
        """Per hook, whether our program is attached to the cgroup right now (asked from the
        kernel, not remembered), and how: for `egressctl status` and metrics."""
        if not self.attached or self._lib is None:
            return [{"program": n, "hook": _HOOK_NAMES[a], "attached": False, "via": ""}
                    for n, _, a in PROGRAMS]
        via = {link.name: "pinned link" if link.pin else "link" for link in self._links}
        out = []
        for name, _, attach_type in PROGRAMS:
            try:
                live = self._prog_ids.get(name) in self._lib.query(self._cgroup_fd, attach_type)
            except OSError:
                live = False
            out.append({"program": name, "hook": _HOOK_NAMES[attach_type], "attached": live,
                        "via": via.get(name, "prog attach")})
        return out

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
