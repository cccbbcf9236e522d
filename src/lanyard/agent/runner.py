"""The agent's control socket: `lanyard webapp run` / `vm run` ask the agent to start a workload.

The CLI passes its stdin/stdout/stderr over the unix socket (SCM_RIGHTS), so the workload is the
agent's own child, writes straight to the user's terminal, and its environment is the platform's.
The socket is 0600 and the peer's uid comes from the kernel (SO_PEERCRED): only the agent's own
user, or root, may start workloads. A root agent runs each workload under a uid of its own
(agent/isolation.py); an unprivileged one runs them as itself and says what that cannot protect.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lanyard.agent import sources
from lanyard.agent.attest import WorkloadScope, read_stat
from lanyard.agent.bindings import BindingsState, Identity
from lanyard.agent.isolation import (
    IsolationError,
    RunAs,
    RunFolder,
    WorkloadUsers,
    limitations,
    named_user,
    unusable,
)
from lanyard.agent.projected import ProjectedToken
from lanyard.agent.references import ReferenceResolver
from lanyard.agent.workloads import RunningWorkload, WorkloadRegistry
from lanyard.core.clock import Clock

log = logging.getLogger("lanyard.agent.runner")
MAX_REQUEST = 1024 * 1024
CLONE_NEWNET = 0x40000000
# Variables the platform owns: a caller's shell cannot smuggle its own values in.
PLATFORM_VARIABLES = frozenset(
    {
        "IDENTITY_ENDPOINT",
        "IDENTITY_HEADER",
        "IDENTITY_SERVER_THUMBPRINT",
        "MSI_ENDPOINT",
        "MSI_SECRET",
        "IMDS_ENDPOINT",
        "AZURE_POD_IDENTITY_AUTHORITY_HOST",
        "DEFAULT_IDENTITY_CLIENT_ID",
        "IDENTITY_API_VERSION",
        "AZURE_FEDERATED_TOKEN_FILE",
        "AZURE_AUTHORITY_HOST",
    }
)
# The platform's own configuration (its KEK among it) never reaches a workload from the caller's shell.
PLATFORM_PREFIXES = ("LANYARD_",)
# The tools root runs on a workload's behalf come from the system's folders, never from the PATH of
# the shell that asked (a folder there may be writable by the workload's user).
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def system_tool(name: str) -> str | None:
    return shutil.which(name, path=SYSTEM_PATH)


def kill_session(leader: int, uid: int) -> int:
    """SIGKILL what is left of a workload's session (its processes under `uid`) once its leader
    exited: a daemonized child would otherwise outlive the run, holding the caller's terminal. A
    child that left the session with setsid escapes this (docs/isolation.md). Returns the count."""
    killed = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = read_stat(int(entry))
        if stat is None or stat.session != leader or stat.pid == leader:
            continue
        with contextlib.suppress(OSError):
            if os.stat(f"/proc/{entry}").st_uid != uid:
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(stat.pid, signal.SIGKILL)
                killed += 1
    return killed


@dataclass
class RunContext:
    """What the runner needs from the agent process."""

    state: BindingsState
    workloads: WorkloadRegistry
    appservice_url: str
    ca_bundle: str
    ca_cert: str
    # (resource_id, netns, registration) -> awaitable (url, closer)
    open_imds: Callable[[str, str | None, RunningWorkload], Any]
    # (resource_id, key owner, registration) -> awaitable (url, closer)
    open_arc: Callable[[str, tuple[int, int] | None, RunningWorkload], Any]
    users: WorkloadUsers | None = None  # a root agent's uid allocation; None: workloads run as the agent
    # (resource_id, registration) -> awaitable (url, closer): a Cloud Shell run's own listener
    open_cloudshell: Callable[[str, RunningWorkload], Any] | None = None
    # (HTTPS endpoint, certificate thumbprint, node's trust file: the platform CA plus that certificate)
    servicefabric: tuple[str, str, str] | None = None
    references: ReferenceResolver | None = None  # Key Vault references in app settings, resolved at start
    aks: AksContext | None = None  # AKS-style runs: projected tokens from the platform's workload issuer


@dataclass(frozen=True)
class AksContext:
    tenant_id: str
    authority: str
    # resource_id -> the platform's answer {token, expiresOn, issuer, subject}
    workload_token: Callable[[str], Awaitable[dict[str, Any]]]
    clock: Clock


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes")


def run_in_netns(netns: str, fn: Callable[[], Any]) -> Any:
    """Run `fn` on a thread that has entered a network namespace; sockets it makes stay there."""
    libc = ctypes.CDLL(None, use_errno=True)
    result: list[Any] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            fd = os.open(f"/var/run/netns/{netns}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns failed")
            finally:
                os.close(fd)
            result.append(fn())
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


CAP_NET_ADMIN, CAP_SYS_ADMIN = 12, 21
NETNS_NEEDS_ROOT = (
    "--netns needs root or CAP_NET_ADMIN (with CAP_SYS_ADMIN, for `ip netns add`), and this host agent runs as "
    "uid {uid} without them: start the platform as root (sudo lanyard up), or drop --netns (the VM then finds "
    "its metadata service through AZURE_POD_IDENTITY_AUTHORITY_HOST)"
)


def may_make_netns() -> bool:
    """Root, or the capabilities `ip netns add` uses (in the effective set: what this process may do now)."""
    if os.geteuid() == 0:
        return True
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            effective = int(line.split()[1], 16)
            return all(effective >> cap & 1 for cap in (CAP_NET_ADMIN, CAP_SYS_ADMIN))
    return False


def create_netns() -> str:
    name = f"lanyard-{secrets.token_hex(4)}"
    ip = system_tool("ip") or "ip"
    for argv in (
        [ip, "netns", "add", name],
        [ip, "netns", "exec", name, ip, "link", "set", "lo", "up"],
        [ip, "netns", "exec", name, ip, "addr", "add", "169.254.169.254/32", "dev", "lo"],
    ):
        subprocess.run(argv, check=True, capture_output=True, timeout=30)
    return name


def delete_netns(name: str) -> None:
    subprocess.run([system_tool("ip") or "ip", "netns", "del", name], capture_output=True, timeout=30, check=False)


class ControlServer:
    def __init__(self, path: Path, ctx: RunContext) -> None:
        self.path = path
        self.ctx = ctx
        self._sock: socket.socket | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._processes: set[asyncio.subprocess.Process] = set()

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old)
        sock.listen(64)
        sock.setblocking(False)
        self._sock = sock
        task = asyncio.get_running_loop().create_task(self._accept_loop())
        self._tasks.add(task)

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._sock is not None
        while True:
            conn, _ = await loop.sock_accept(self._sock)
            task = loop.create_task(self._serve(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Workloads do not outlive their agent: SIGTERM, a grace period, then SIGKILL."""
        running = [p for p in self._processes if p.returncode is None]
        for process in running:
            self._signal(process, signal.SIGTERM)
        if running:
            await asyncio.wait([asyncio.ensure_future(p.wait()) for p in running], timeout=5.0)
            for process in running:
                self._signal(process, signal.SIGKILL)
        for task in list(self._tasks):
            task.cancel()
        if self._sock is not None:
            self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    @staticmethod
    def _send(conn: socket.socket, message: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            conn.sendall(json.dumps(message).encode() + b"\n")

    async def _serve(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        fds: list[int] = []
        try:
            conn.setblocking(True)
            _pid, uid, gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
            if uid not in (0, os.getuid()):
                self._send(conn, {"error": "only the agent's user or root may start workloads"})
                return
            raw, fds, _flags, _addr = await loop.run_in_executor(None, socket.recv_fds, conn, MAX_REQUEST, 3)
            request = json.loads(raw.decode())
            if len(fds) != 3:
                raise ValueError("expected stdin, stdout and stderr")
            await self._run(conn, request, fds, uid, gid)
        except (ValueError, KeyError, OSError) as exc:
            self._send(conn, {"error": f"bad run request: {exc}"})
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            conn.close()

    def _environment(
        self,
        request: dict[str, Any],
        header: str | None,
        imds_url: str | None,
        folder: RunFolder | None,
        run_as: RunAs | None,
        identities: tuple[Identity, ...] = (),
    ) -> dict[str, str]:
        def allowed(name: object, value: object) -> bool:
            return (
                isinstance(name, str)
                and isinstance(value, str)
                and name not in PLATFORM_VARIABLES
                and not name.startswith(PLATFORM_PREFIXES)
            )

        env = {k: v for k, v in dict(request.get("env") or {}).items() if allowed(k, v)}
        settings = {k: v for k, v in dict(request.get("appSettings") or {}).items() if allowed(k, v)}
        env.update(settings)
        if folder is not None and run_as is not None:
            env.update({"HOME": str(folder.path), "USER": run_as.name, "LOGNAME": run_as.name})
        # Sync Python trusts REQUESTS_CA_BUNDLE, async Python SSL_CERT_FILE, node adds NODE_EXTRA_CA_CERTS
        # to its own roots: each gets the public roots plus the platform CA (docs/protocols.md §4.4).
        bundle = folder.ca_bundle if folder is not None else self.ctx.ca_bundle
        cert = folder.ca_cert if folder is not None else self.ctx.ca_cert
        env.update({"REQUESTS_CA_BUNDLE": bundle, "SSL_CERT_FILE": bundle, "NODE_EXTRA_CA_CERTS": cert})
        if request.get("kind") == "appservice":
            # The platform chooses the variables (agent/sources.py); a Cloud Shell run has its own listener.
            platform = str(request.get("platform") or "appservice")
            url = imds_url if platform == "cloudshell" else self.ctx.appservice_url if header else None
            thumbprint = None
            if platform == "servicefabric" and self.ctx.servicefabric is not None:
                url, thumbprint, node_trust = self.ctx.servicefabric
                url = url if header else None
                env["NODE_EXTRA_CA_CERTS"] = folder.copy_in(node_trust) if folder is not None else node_trust
            env.update(sources.environment(platform, request, url, header, identities, thumbprint))
        elif request.get("kind") == "arc" and imds_url is not None:
            env.update({"IDENTITY_ENDPOINT": f"{imds_url}/metadata/identity/oauth2/token", "IMDS_ENDPOINT": imds_url})
        elif imds_url is not None:
            env["AZURE_POD_IDENTITY_AUTHORITY_HOST"] = imds_url
        return env

    async def _aks(
        self, resource_id: str, identities: tuple[Identity, ...], folder: RunFolder | None, run_as: RunAs | None
    ) -> tuple[str | None, ProjectedToken | None, dict[str, str]]:
        """An AKS-style run's projected token file and variables, or why there are none."""
        aks = self.ctx.aks
        if aks is None:
            return "this agent does not serve AKS-style runs", None, {}
        client_id = sources.aks_client_id(identities)
        if client_id is None:
            return (
                "--platform aks needs a user-assigned identity on the workload: federated credentials exist on "
                "user-assigned identities only",
                None,
                {},
            )
        # The token lives in the run's folder (the workload's uid owns it), or in a private one of the
        # agent's when workloads run as the agent itself.
        where = folder.path if folder is not None else Path(tempfile.mkdtemp(prefix="lanyard-aks-"))
        owner = (run_as.uid, run_as.gid) if run_as is not None else None
        projected = ProjectedToken(where, lambda: aks.workload_token(resource_id), owner, aks.clock)
        try:
            await projected.start()
        except Exception as exc:
            if folder is None:
                shutil.rmtree(where, ignore_errors=True)
            return f"cannot get a projected token from the platform: {exc}", None, {}
        env = sources.aks_environment(client_id, aks.tenant_id, aks.authority, str(projected.path))
        return None, projected, env

    def _run_as(self, request: dict[str, Any], resource_id: str) -> RunAs | None:
        """Whom the workload runs as: None for an unprivileged agent (itself, with a warning)."""
        user = request.get("user")
        if self.ctx.users is None:
            if user:
                raise IsolationError("--user needs a root agent: this agent cannot change uid")
            return None
        return named_user(str(user)) if user else self.ctx.users.for_resource(resource_id)

    async def _run(self, conn: socket.socket, request: dict[str, Any], fds: list[int], uid: int, gid: int) -> None:
        loop = asyncio.get_running_loop()
        resource_id = str(request["resourceId"])
        kind = request.get("kind")
        argv = request.get("argv")
        if kind not in ("appservice", "imds", "arc") or not isinstance(argv, list) or not argv:
            raise ValueError("kind must be appservice, imds or arc, and argv a non-empty list")
        platform = str(request.get("platform") or "appservice")
        if kind != "appservice" and request.get("platform") not in (None, "", "aks"):
            raise ValueError("a platform applies to app runs only (and aks to VM runs)")
        if kind == "arc" and platform == "aks":
            raise ValueError("--arc and --platform aks cannot be combined")
        if platform not in sources.PLATFORMS:
            raise ValueError(f"platform must be one of {', '.join(sources.PLATFORMS)}")
        bound = self.ctx.state.workload(resource_id)
        if bound is None:
            self._send(conn, {"error": f"{resource_id} is not placed on this host"})
            return
        command = [str(a) for a in argv]
        cwd = str(request.get("cwd") or "/")
        try:
            run_as = self._run_as(request, bound.resource_id)
        except IsolationError as exc:
            self._send(conn, {"error": str(exc)})
            return
        if run_as is None:
            for line in limitations():
                self._send(conn, {"warning": f"not isolated: {line}"})
        else:
            path_variable = str(dict(request.get("env") or {}).get("PATH") or os.defpath)
            problem = await loop.run_in_executor(None, unusable, command, cwd, path_variable, run_as)
            if problem:
                self._send(conn, {"error": problem})
                return
            if system_tool("setpriv") is None:
                self._send(conn, {"error": "workload isolation needs setpriv (util-linux) on this host"})
                return
        registration: RunningWorkload | None = None
        closer: Callable[[], Any] | None = None
        netns: str | None = None
        imds_url: str | None = None
        header: str | None = None
        folder: RunFolder | None = None
        projected: ProjectedToken | None = None
        aks_env: dict[str, str] = {}
        try:
            if run_as is not None:
                folder = RunFolder(run_as, self.ctx.ca_bundle, self.ctx.ca_cert)
            registration = self.ctx.workloads.start(
                resource_id, platform if kind == "appservice" or platform == "aks" else kind
            )
            if platform == "aks":
                problem, projected, aks_env = await self._aks(resource_id, bound.identities, folder, run_as)
                if problem:
                    self._send(conn, {"error": problem})
                    return
            elif kind == "appservice":
                disabled = _truthy(dict(request.get("appSettings") or {}).get("WEBSITE_DISABLE_MSI"))
                if bound.identities and not disabled:
                    header = registration.header
                    if platform == "cloudshell":
                        if self.ctx.open_cloudshell is None:
                            self._send(conn, {"error": "this agent does not serve Cloud Shell"})
                            return
                        imds_url, closer = await self.ctx.open_cloudshell(resource_id, registration)
                    elif platform == "servicefabric" and self.ctx.servicefabric is None:
                        self._send(conn, {"error": "this agent does not serve Service Fabric"})
                        return
            elif kind == "arc":
                if os.getuid() != 0:
                    self._send(
                        conn, {"error": "Arc mode needs a root agent: its key files live in /var/opt/azcmagent/tokens"}
                    )
                    return
                # The key file is readable by the workload's uid alone: that is Arc's proof of locality.
                owner = (run_as.uid, run_as.gid) if run_as is not None else (uid, gid) if uid != 0 else None
                imds_url, closer = await self.ctx.open_arc(resource_id, owner, registration)
            else:
                if request.get("netns"):
                    if not may_make_netns():
                        self._send(conn, {"error": NETNS_NEEDS_ROOT.format(uid=os.geteuid())})
                        return
                    try:
                        netns = await loop.run_in_executor(None, create_netns)
                    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
                        why = (getattr(exc, "stderr", b"") or b"").decode(errors="replace").strip().splitlines()
                        reason = why[-1] if why else str(exc)
                        self._send(conn, {"error": f"--netns: cannot make a network namespace: {reason}"})
                        return
                imds_url, closer = await self.ctx.open_imds(resource_id, netns, registration)
            if kind == "appservice" and self.ctx.references is not None:
                resolution = await self.ctx.references.resolve(
                    resource_id,
                    {k: v for k, v in dict(request.get("appSettings") or {}).items() if isinstance(v, str)},
                    str(request.get("keyVaultReferenceIdentity") or "") or None,
                )
                for note in resolution.notes:
                    self._send(conn, {"warning": note})
                request = {**request, "appSettings": resolution.settings}
            env = self._environment(request, header, None if netns else imds_url, folder, run_as, bound.identities)
            env.update(aks_env)
            # setpriv drops to the workload's uid and then execs in place: the pid we supervise and
            # attest is the workload's own (the event loop's subprocess support cannot change uid).
            drop: list[str] = []
            if run_as is not None:
                setpriv = system_tool("setpriv") or "setpriv"
                drop = [setpriv, f"--reuid={run_as.uid}", f"--regid={run_as.gid}", "--clear-groups", "--"]
            command = [*drop, *command]
            if netns:
                command = [system_tool("ip") or "ip", "netns", "exec", netns, *command]
            try:
                process = await asyncio.create_subprocess_exec(
                    *command,
                    stdin=fds[0],
                    stdout=fds[1],
                    stderr=fds[2],
                    env=env,
                    cwd=cwd,
                    start_new_session=True,
                )
            except PermissionError as exc:
                who = f" as {run_as.name} (uid {run_as.uid})" if run_as else ""
                self._send(conn, {"error": f"cannot start {argv[0]}{who}: {exc.strerror} ({exc.filename or argv[0]})"})
                return
            stat = read_stat(process.pid)
            registration.pid = process.pid
            registration.scope = WorkloadScope(
                process.pid, stat.start_time if stat else -1, run_as.uid if run_as is not None else None
            )
            self._processes.add(process)
            try:
                started: dict[str, Any] = {"pid": process.pid}
                if run_as is not None:
                    started["uid"] = run_as.uid
                self._send(conn, started)
                code = await self._supervise(conn, process)
            finally:
                self._processes.discard(process)
                session_uid = run_as.uid if run_as is not None else os.geteuid()
                await loop.run_in_executor(None, kill_session, process.pid, session_uid)
            self._send(conn, {"exit": code})
        except FileNotFoundError as exc:
            self._send(conn, {"error": f"cannot start {argv[0]}: {exc.strerror}"})
        finally:
            # The header dies with the process: a copy of it identifies nothing from here on.
            if registration is not None:
                self.ctx.workloads.stop(registration)
            if projected is not None:
                await projected.close()
                if folder is None:
                    shutil.rmtree(projected.path.parent, ignore_errors=True)
            if closer is not None:
                await closer()
            if netns:
                await loop.run_in_executor(None, delete_netns, netns)
            if folder is not None:
                folder.remove()

    async def _supervise(self, conn: socket.socket, process: asyncio.subprocess.Process) -> int:
        """Relay signals from the CLI; if the CLI goes away, the workload is stopped too."""
        loop = asyncio.get_running_loop()

        def read_signals() -> None:
            buffer = b""
            while True:
                try:
                    chunk = conn.recv(4096)
                except OSError:
                    chunk = b""
                if not chunk:
                    loop.call_soon_threadsafe(self._terminate, process)
                    return
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    try:
                        number = int(json.loads(line).get("signal", 0))
                    except (ValueError, AttributeError):
                        continue
                    if number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
                        loop.call_soon_threadsafe(self._signal, process, number)

        reader = threading.Thread(target=read_signals, daemon=True)
        reader.start()
        code = await process.wait()
        return 128 - code if code < 0 else code

    @staticmethod
    def _signal(process: asyncio.subprocess.Process, number: int) -> None:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, number)

    def _terminate(self, process: asyncio.subprocess.Process) -> None:
        if process.returncode is not None:
            return
        self._signal(process, signal.SIGTERM)

        def kill() -> None:
            self._signal(process, signal.SIGKILL)

        asyncio.get_running_loop().call_later(5.0, kill)
