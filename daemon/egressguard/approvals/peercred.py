"""Who is calling: the OS-established identity of each approvals client (SO_PEERCRED).

The problem
-----------
An approval is only worth something if we know who gave it, and the rule "the uid that owns a
held flow can never decide on it" needs the caller's uid from the kernel, not from the client.
On a Unix socket the kernel records the connecting process's (pid, uid, gid) at connect() time,
readable with SO_PEERCRED. But grpcio (checked with 1.85) gives a servicer no access to the
socket: on a Unix socket `context.peer()` is just "unix:/path", and `auth_context()` holds only
the transport security type.

The front door
--------------
So the daemon listens on the Unix socket itself (`PeerCredFrontDoor`), reads SO_PEERCRED of each
accepted connection, opens one TCP connection to the real grpc.aio server on
127.0.0.1:<ephemeral>, and records  internal connection's local (ip, port) -> Identity  in a
`PeerTable` *before relaying a single byte*. It then copies bytes both ways. The servicer maps
`context.peer()` -- verified with grpcio 1.85.3 to be "ipv4:127.0.0.1:<client port>" for a TCP
peer -- back to the Identity; a call whose peer is not in the table (someone who connected to the
internal port directly) is refused with UNAUTHENTICATED. The entry is removed *before* the
internal socket is closed.

Why the mapping cannot be spoofed
---------------------------------
* A TCP connection is unique by its 4-tuple. While our relay socket is open, the tuple
  (127.0.0.1:P -> 127.0.0.1:S) is ours: no other socket can be connected with the same tuple,
  and we never set SO_REUSEADDR/SO_REUSEPORT on it (SO_REUSEPORT would also require the same
  effective uid). So a peer string "ipv4:127.0.0.1:P" seen by the server while the entry exists
  is our relay connection.
* The entry exists only while that socket is open (registered after connect(), removed before
  close()), so a port reused later by another process is never in the table.
* The table is keyed by address *and* port: 127.0.0.2:P (also loopback) does not match.
* gRPC needs the HTTP/2 preface before any call, and the relay forwards no bytes until the
  entry is registered, so no call can arrive before its identity is known.
* Connection-level identity is right for gRPC: one HTTP/2 connection belongs to the process
  that opened the Unix connection (SO_PEERCRED is fixed at connect()). A process that passes
  its connected fd to another process lends it its identity -- the same as for any Unix-socket
  credential check, and only a process with that uid could do so.
The client never sends a user name that we trust; `Identity.user` is resolved here, from the uid.

The Unix socket is 0666 in a 0755 directory: any local user may connect, and authorization is
by uid (approvers list, self-approval rule) in `holds.py`/`service.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import pwd
import socket
import stat
import struct
from collections import Counter
from dataclasses import dataclass

from egressguard.errors import EnvironmentProblem

log = logging.getLogger(__name__)

_UCRED = struct.Struct("3i")          # struct ucred { pid_t pid; uid_t uid; gid_t gid; }
RELAY_CHUNK = 64 * 1024
MAX_CONNECTIONS = 256                 # the front door is open to every local user
# ... so one uid (a held agent, say) must not be able to take every slot and lock the
# approvers out: each uid gets at most this many connections at a time.
MAX_CONNECTIONS_PER_UID = 32


@dataclass(frozen=True)
class Identity:
    """A caller as the kernel saw it at connect() time. `user` is resolved by the daemon from
    `uid` (the passwd name, or "uid:N" when the uid has no name); it is never client-supplied."""

    uid: int
    gid: int
    pid: int
    user: str
    # How the caller reached us: "unix" (SO_PEERCRED), "mtls" (client certificate) or "slack"
    # (a signed interactive callback); `principal` is the certificate name or the Slack user
    # id that `approvals.identities` mapped to this uid. The uid is what every rule checks.
    channel: str = "unix"
    principal: str = ""

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {"uid": self.uid, "user": self.user, "pid": self.pid}
        if self.channel != "unix":
            d["channel"] = self.channel
            d["principal"] = self.principal
        return d

    def __str__(self) -> str:
        if self.channel != "unix":
            return f"{self.user} (uid {self.uid}, {self.channel} {self.principal})"
        return f"{self.user} (uid {self.uid}, pid {self.pid})"


def user_name(uid: int) -> str:
    """passwd name for `uid`, or "uid:N" when there is none."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid:{uid}"


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process that connected `sock` (a connected AF_UNIX socket)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return pid, uid, gid


def parse_peer(peer: str) -> tuple[str, int] | None:
    """'ipv4:127.0.0.1:PORT' -> ('127.0.0.1', PORT); anything else (ipv6, unix, junk) -> None."""
    if not peer.startswith("ipv4:"):
        return None
    host, _, port = peer[len("ipv4:"):].rpartition(":")
    if not host or not port.isdigit():
        return None
    return host, int(port)


class PeerTable:
    """Live relay connections: internal (ip, port) -> Identity. Owned by the event loop thread."""

    def __init__(self) -> None:
        self._by_addr: dict[tuple[str, int], Identity] = {}

    def add(self, addr: tuple[str, int], who: Identity) -> None:
        self._by_addr[addr] = who

    def remove(self, addr: tuple[str, int]) -> None:
        self._by_addr.pop(addr, None)

    def lookup(self, peer: str) -> Identity | None:
        """Identity for a gRPC `context.peer()` string, or None when it is not one of ours."""
        addr = parse_peer(peer)
        return self._by_addr.get(addr) if addr else None

    def __len__(self) -> int:
        return len(self._by_addr)


def _prepare_path(path: str) -> None:
    """Create the parent directory (0755) if missing and clear a stale socket file.

    A socket file nobody answers on is left over from a crash: unlink it. If something answers,
    another daemon is running: refuse rather than steal its socket (asyncio's own
    create_unix_server would silently unlink it). A non-socket file is never removed."""
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        os.makedirs(parent, mode=0o755, exist_ok=True)
        os.chmod(parent, 0o755)       # makedirs honours the umask
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise EnvironmentProblem(
            f"approvals socket {path} exists and is not a socket; move it away or set "
            "approvals.socket to another path")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        log.info("removing stale approvals socket %s", path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    except OSError as e:
        raise EnvironmentProblem(f"approvals socket {path}: cannot check whether it is in use: "
                                 f"{e.strerror or e}") from e
    finally:
        probe.close()
    raise EnvironmentProblem(
        f"another process (another egressguard?) is already listening on {path}; stop it first "
        "or set approvals.socket to another path")


class PeerCredFrontDoor:
    """The Unix-socket listener that labels each connection with its SO_PEERCRED identity and
    relays it to the internal gRPC port (see the module docstring for why this is safe)."""

    def __init__(self, path: str, upstream: tuple[str, int], table: PeerTable,
                 max_connections: int = MAX_CONNECTIONS,
                 max_per_uid: int = MAX_CONNECTIONS_PER_UID, mark: int = 0) -> None:
        self.path = path
        self.upstream = upstream
        self.mark = mark
        self.table = table
        self.max_connections = max_connections
        self.max_per_uid = max_per_uid
        self._per_uid: Counter[int] = Counter()
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._inode: tuple[int, int] | None = None

    async def start(self) -> None:
        """Bind the socket (0666), after clearing a stale one; raises EnvironmentProblem."""
        _prepare_path(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(self.path)
        except OSError as e:
            sock.close()
            if e.errno == errno.EADDRINUSE:
                raise EnvironmentProblem(
                    f"approvals socket {self.path} was created by someone else while starting; "
                    "is another egressguard starting?") from e
            raise EnvironmentProblem(f"cannot create approvals socket {self.path}: "
                                     f"{e.strerror or e}") from e
        os.chmod(self.path, 0o666)
        st = os.stat(self.path)
        self._inode = (st.st_dev, st.st_ino)
        sock.listen(64)
        sock.setblocking(False)
        self._server = await asyncio.start_unix_server(self._on_client, sock=sock)

    async def stop(self) -> None:
        """Stop accepting, cut every relay, and remove the socket file if it is still ours."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(FileNotFoundError):
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) == self._inode:
                os.unlink(self.path)

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            pass
        except Exception:  # one bad connection must never take the door down
            log.exception("approvals relay failed")
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._tasks) > self.max_connections:
            log.warning("approvals: too many connections (%d), refusing one", len(self._tasks))
            return
        pid, uid, gid = peer_credentials(writer.get_extra_info("socket"))
        if self._per_uid[uid] >= self.max_per_uid:
            log.warning("approvals: uid %d has %d connections open, refusing one", uid,
                        self._per_uid[uid])
            return
        self._per_uid[uid] += 1
        try:
            await self._relay(reader, writer, pid, uid, gid)
        finally:
            self._per_uid[uid] -= 1
            if not self._per_uid[uid]:
                del self._per_uid[uid]

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     pid: int, uid: int, gid: int) -> None:
        who = Identity(uid=uid, gid=gid, pid=pid, user=await asyncio.to_thread(user_name, uid))
        up_reader, up_writer = await self._open_upstream()
        local = up_writer.get_extra_info("sockname")
        addr = (local[0], local[1])
        self.table.add(addr, who)      # before any byte goes upstream
        try:
            pumps = [asyncio.create_task(_pump(reader, up_writer)),
                     asyncio.create_task(_pump(up_reader, writer))]
            try:
                # HTTP/2 has no use for a half-open connection: the first side to end ends both.
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for p in pumps:
                    p.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            self.table.remove(addr)    # before the port can be released by close()
            up_writer.close()
            with contextlib.suppress(Exception):
                await up_writer.wait_closed()


    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The internal connection, with the daemon's SO_MARK: when egressguard runs inside
        the cgroup it guards (or below it), an unmarked connect would be redirected to its
        own proxy, reach the gRPC server from an unknown peer and be refused."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if self.mark:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, self.mark)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, self.upstream)
        except BaseException:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock)


async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    """Copy until EOF or error; backpressure through drain()."""
    with contextlib.suppress(ConnectionError, OSError):
        while data := await src.read(RELAY_CHUNK):
            dst.write(data)
            await dst.drain()
