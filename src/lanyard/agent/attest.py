"""Who is calling a local token endpoint: the process behind a connection, found from the kernel.

Loopback TCP: the connection's row in /proc/<pid>/net/tcp{,6} (read through a process in the
workload's network namespace, so a VM's own namespace works too) gives the socket's inode and the
uid that made it; the processes holding `socket:[inode]` among /proc/*/fd are the callers.
Unix sockets: SO_PEERCRED. A connection is attested once, on its first request, and before every
answer the caller is re-checked (still alive, same start time), so a pid that exited and was reused
identifies nothing (docs/security.md, caller attestation).

A caller is served only when every process holding the socket belongs to the workload the identity
is bound to: its process tree (the workload's session; the agent is the session leader's parent, so
that pid cannot be reused while the workload is registered) and, when workloads run under their own
uids, that uid. A socket shared with any other process (fd inheritance, SCM_RIGHTS) is refused.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
from dataclasses import dataclass, field

PROC = "/proc"
# The full /proc/*/fd scan is O(every fd on the host): cap it so a host with huge fd tables cannot
# turn each new connection into an unbounded walk; beyond the cap the caller is unattestable.
MAX_FDS_SCANNED = 500_000


class Unattested(Exception):
    """The caller could not be tied to the workload; the message says why (never a secret).
    `final`: the connection itself is disqualified (its socket is another's, or shared with an
    outsider), so later requests on it are refused without a new look; otherwise (a caller that
    exited, a scan over its cap) the next request looks again."""

    def __init__(self, message: str, *, final: bool = False) -> None:
        super().__init__(message)
        self.final = final


@dataclass(frozen=True)
class Caller:
    """The process on the other end of a connection, as the kernel reports it."""

    pid: int
    uid: int
    start_time: int  # /proc/PID/stat field 22: tells a live process from a reused pid
    exe: str  # /proc/PID/exe, resolved ("" when it cannot be read)

    def audit_fields(self) -> dict[str, object]:
        return {"pid": self.pid, "uid": self.uid, "exe": self.exe}

    def alive(self) -> bool:
        """Still the same process: a caller that exited (or whose pid was reused) is not."""
        stat = read_stat(self.pid)
        return stat is not None and stat.start_time == self.start_time


@dataclass(frozen=True)
class ProcessStat:
    pid: int
    ppid: int
    session: int
    start_time: int


@dataclass
class WorkloadScope:
    """What a caller must match to speak for one running workload."""

    root_pid: int
    root_start: int
    uid: int | None  # the workload's own uid when it runs isolated; None: any uid in the tree
    net_pid: int = 0  # a process in the workload's network namespace (its root, normally)

    def __post_init__(self) -> None:
        if not self.net_pid:
            self.net_pid = self.root_pid


class ProcessHandle:
    """A pidfd: names one process, never a later holder of its pid, so `alive` needs no /proc read.
    Reading /proc/PID/stat costs ~30 us in the kernel; bench/agent.py measured the per-request
    re-check made of three such reads at 0.72x of header-only serving (G14)."""

    def __init__(self, pid: int) -> None:
        self.fd = os.pidfd_open(pid)
        self._poll = select.poll()
        self._poll.register(self.fd, select.POLLIN)  # readable once the process has exited

    def alive(self) -> bool:
        return self.fd >= 0 and not self._poll.poll(0)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _child_running(pid: int) -> bool | None:
    """Whether our own child `pid` has not exited (without reaping it); None if it is not our child."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
    except ChildProcessError:
        return None
    except OSError:
        return False


@dataclass
class PeerConnection:
    """One accepted TCP connection: its two addresses, and the caller once attested."""

    local: tuple[str, int]  # the listener's end (our sockname)
    remote: tuple[str, int]  # the caller's end (our peername)
    caller: Caller | None = None
    scope: WorkloadScope | None = None  # the very workload run the caller was attested for
    refused: str | None = field(default=None)
    handle: ProcessHandle | None = None  # the attested caller's pidfd (None: re-check through /proc)

    def pin(self, caller: Caller, scope: WorkloadScope) -> None:
        """Remember `caller` for `scope`, holding its pidfd when the kernel gives one."""
        self.release()
        self.caller, self.scope = caller, scope
        try:
            handle = ProcessHandle(caller.pid)
        except (OSError, AttributeError):  # no pidfd_open (kernel < 5.3), or out of descriptors
            return
        # Opened after attestation: the pid still names the attested process (same start time).
        stat = read_stat(caller.pid)
        if stat is None or stat.start_time != caller.start_time:
            handle.close()
            return
        self.handle = handle

    def release(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None
        self.caller = None

    def still_in(self, scope: WorkloadScope) -> bool:
        """`in_workload` for the pinned caller, from syscalls instead of /proc reads where it can:
        the session from getsid, the uid from one stat, the workload root from waitid (it is our
        child), and, last, the pidfd proving every answer was about this very process."""
        caller, handle = self.caller, self.handle
        if caller is None:
            return False
        root = _child_running(scope.root_pid) if handle is not None else None
        if handle is None or root is None:
            return in_workload(caller.pid, scope, caller.start_time)
        try:
            session = os.getsid(caller.pid)
            owner = _uid_of(caller.pid) if scope.uid is not None else None
        except OSError:
            return False
        if session != scope.root_pid and caller.pid != scope.root_pid:
            return False
        if scope.uid is not None and owner != scope.uid:
            return False
        return root and handle.alive()


def read_stat(pid: int) -> ProcessStat | None:
    try:
        with open(f"{PROC}/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    # comm (field 2) may hold spaces and parentheses: split after the last ')'.
    tail = raw[raw.rfind(b")") + 2 :].split()
    try:
        return ProcessStat(pid, int(tail[1]), int(tail[3]), int(tail[19]))
    except (IndexError, ValueError):
        return None


def _uid_of(pid: int) -> int | None:
    try:
        return os.stat(f"{PROC}/{pid}").st_uid
    except OSError:
        return None


def _exe_of(pid: int) -> str:
    try:
        return os.readlink(f"{PROC}/{pid}/exe")
    except OSError:
        return ""


def _hex_address(host: str, port: int) -> tuple[str, str]:
    """The /proc/net/tcp spelling of an address: the 32-bit words of the address in host byte order."""
    if ":" in host:
        packed = socket.inet_pton(socket.AF_INET6, host)
        return "".join(f"{w:08X}" for w in struct.unpack("=4I", packed)), f"{port:04X}"
    packed = socket.inet_pton(socket.AF_INET, host)
    return f"{struct.unpack('=I', packed)[0]:08X}", f"{port:04X}"


def _v4_mapped(host: str) -> str:
    return "::ffff:" + host


def _connection_table(net_pid: int) -> list[list[str]]:
    rows: list[list[str]] = []
    for table in ("tcp", "tcp6"):
        try:
            with open(f"{PROC}/{net_pid}/net/{table}", "rb") as fh:
                lines = fh.read().decode("ascii", "replace").splitlines()[1:]
        except OSError:
            continue
        rows.extend(fields for fields in (line.split() for line in lines) if len(fields) >= 10)
    return rows


def find_socket(
    net_pid: int,
    caller_end: tuple[str, int],
    listener_end: tuple[str, int],
    tables: dict[int, list[list[str]]] | None = None,
) -> tuple[int, int]:
    """(uid, inode) of the caller's socket, from the connection table of `net_pid`'s namespace
    (`tables` caches each namespace's table for one batch of connections)."""
    host, port = caller_end
    lhost, lport = listener_end
    wanted = {(":".join(_hex_address(host, port)), ":".join(_hex_address(lhost, lport)))}
    if ":" not in host:  # an IPv4 caller of a dual-stack listener shows up v4-mapped in tcp6
        wanted.add((":".join(_hex_address(_v4_mapped(host), port)), ":".join(_hex_address(_v4_mapped(lhost), lport))))
    if tables is None:
        tables = {}
    if net_pid not in tables:
        tables[net_pid] = _connection_table(net_pid)
    for fields in tables[net_pid]:
        if (fields[1], fields[2]) in wanted:
            inode = int(fields[9])
            if inode == 0:
                continue  # a TIME_WAIT row of an earlier connection with the same addresses
            return int(fields[7]), inode
    raise Unattested("no process holds the calling socket any more (the caller exited)")


def socket_holders(inodes: set[int], skip: int | None = None) -> dict[int, list[int]]:
    """The pids with each `socket:[inode]` open: one readlink per fd on the host, so once per batch
    of new connections (all the connections waiting share one walk) and capped."""
    targets = {f"socket:[{inode}]": inode for inode in inodes}
    holders: dict[int, list[int]] = {inode: [] for inode in inodes}
    scanned = 0
    with os.scandir(PROC) as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            if pid == skip:
                continue
            fd_dir = f"{PROC}/{pid}/fd"
            try:
                names = os.listdir(fd_dir)
            except OSError:
                continue
            seen: set[int] = set()
            for name in names:
                scanned += 1
                with contextlib.suppress(OSError):
                    inode = targets.get(os.readlink(f"{fd_dir}/{name}"))
                    if inode is not None and inode not in seen:
                        seen.add(inode)
                        holders[inode].append(pid)
            if scanned > MAX_FDS_SCANNED:
                raise Unattested("too many open files on this host to find the caller")
    return holders


def in_workload(pid: int, scope: WorkloadScope, start_time: int | None = None) -> bool:
    """In the workload's session (a process that left it with setsid is out: fail closed) and, when
    the workload runs isolated, under its uid; with `start_time`, still that very process."""
    stat = read_stat(pid)
    if stat is None or (start_time is not None and stat.start_time != start_time):
        return False
    root = read_stat(scope.root_pid)
    if root is None or root.start_time != scope.root_start:
        return False
    if stat.session != scope.root_pid and pid != scope.root_pid:
        return False
    return scope.uid is None or _uid_of(pid) == scope.uid


def attest(conn: PeerConnection, scope: WorkloadScope) -> Caller:
    """The caller of `conn`, if every holder of its socket is part of `scope`; else Unattested."""
    (result,) = attest_many([(conn, scope)])
    if isinstance(result, Unattested):
        raise result
    return result


def attest_many(items: list[tuple[PeerConnection, WorkloadScope]]) -> list[Caller | Unattested]:
    """Attest several connections with one walk of /proc: a burst of new connections (a pool of 32
    opening at once) costs one scan, not 32 in a row."""
    tables: dict[int, list[list[str]]] = {}
    sockets: list[tuple[int, int] | Unattested] = []
    me = os.geteuid()
    for conn, scope in items:
        try:
            uid, inode = find_socket(scope.net_pid, conn.remote, conn.local, tables)
        except Unattested as exc:
            sockets.append(exc)
            continue
        # The cheap refusals first, so a stranger's connection never costs a walk of /proc.
        if scope.uid is not None and uid != scope.uid:
            sockets.append(Unattested("the calling socket belongs to another user", final=True))
        elif me != 0 and uid != me:
            sockets.append(Unattested("the calling socket belongs to a user this agent cannot see", final=True))
        else:
            sockets.append((uid, inode))
    inodes = {found[1] for found in sockets if not isinstance(found, Unattested)}
    try:
        holders = socket_holders(inodes, skip=os.getpid()) if inodes else {}
    except Unattested as exc:
        return [exc for _ in items]
    return [
        found if isinstance(found, Unattested) else _decide(scope, found[0], holders.get(found[1], []))
        for (_conn, scope), found in zip(items, sockets, strict=True)
    ]


def _decide(scope: WorkloadScope, uid: int, holders: list[int]) -> Caller | Unattested:
    if not holders:
        return Unattested("no process holds the calling socket (the caller exited, or is not visible to the agent)")
    pid = min(holders)
    stat = read_stat(pid)  # read before the membership check, which then pins this very process
    owner = _uid_of(pid)
    if stat is None or owner is None:
        return Unattested("the caller exited during attestation")
    # the caller pinned to the start time read above; every other holder merely in the workload
    if not in_workload(pid, scope, stat.start_time) or any(not in_workload(p, scope) for p in holders if p != pid):
        return Unattested("the calling socket is held by a process outside the workload", final=True)
    caller = Caller(pid, owner, stat.start_time, _exe_of(pid))
    # After the decision: still the same process (a pid reused mid-way fails here).
    if not caller.alive():
        return Unattested("the caller exited during attestation")
    return caller


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of a unix-socket peer, from the kernel."""
    pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    return pid, uid, gid
