"""`lanyard agent`: join (first start), follow the bindings, serve the local token endpoints, run workloads."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import logging
import os
import signal
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from lanyard.agent.attesting import AttestingProtocol, CallerCheck
from lanyard.agent.audit import AgentAudit
from lanyard.agent.bindings import BindingsState
from lanyard.agent.cache import TokenCache
from lanyard.agent.credential import DEFAULT_LIFETIME, HostCredentialRenewal, new_host_certificate
from lanyard.agent.endpoints import APP_SERVICE_PATH, AppServiceEndpoint, ArcEndpoint, ImdsEndpoint, TokenService
from lanyard.agent.guards import allowed_hosts_for
from lanyard.agent.isolation import DEFAULT_UID_RANGE, IsolationError, WorkloadUsers, limitations
from lanyard.agent.limits import WorkloadLimits
from lanyard.agent.references import ReferenceResolver
from lanyard.agent.runner import AksContext, ControlServer, RunContext, run_in_netns
from lanyard.agent.servicefabric import FABRIC_PATH, ServiceFabricEndpoint, make_certificate
from lanyard.agent.sources import CLOUD_SHELL_PATH, CloudShellEndpoint
from lanyard.agent.upstream import HostIdentity, Upstream, UpstreamError
from lanyard.agent.workloads import RunningWorkload, WorkloadRegistry
from lanyard.client.assertion import CertificateKey
from lanyard.config import AuditSettings, LimitSettings
from lanyard.core.clock import SystemClock
from lanyard.core.files import secure_tree, write_atomically
from lanyard.core.listener import BoundedConfig, BoundedServer, bounded_config
from lanyard.core.loop import event_loop_runner
from lanyard.core.ratelimit import Rate
from lanyard.observe.agent import AgentObservability

log = logging.getLogger("lanyard.agent")
AGENT_FILE = "agent.json"
POLL_WAIT = 25.0


class AgentError(Exception):
    """Start-up failed; the message says why and what to do."""


@dataclass(frozen=True)
class AgentOptions:
    home: Path
    server: str | None  # authority URL; overrides the one recorded at join
    ca_file: str
    ca_bundle: str
    join_token: str | None
    port: int
    name: str
    host_cert_lifetime: float = DEFAULT_LIFETIME
    workload_uids: tuple[int, int] = DEFAULT_UID_RANGE
    limits: LimitSettings = field(default_factory=LimitSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)


def load_or_join(options: AgentOptions) -> HostIdentity:
    """The host credential: made here (the private key never leaves this machine) and registered once
    with a one-time join token."""
    options.home.mkdir(parents=True, exist_ok=True, mode=0o700)
    secure_tree(options.home)  # host key and identity keys: the agent's user alone, whatever was there
    host_file, key_file, cert_file = (options.home / n for n in ("host.json", "host-key.pem", "host.pem"))
    if host_file.exists():
        record = json.loads(host_file.read_text())
        authority = (options.server or record["authority"]).rstrip("/")
        key = CertificateKey.from_pem(cert_file.read_bytes(), key_file.read_bytes())
        return HostIdentity(record["hostId"], record["clientId"], record["tenantId"], authority, key)
    if not options.join_token or not options.server:
        raise AgentError("this agent has not joined a platform yet: pass --join TOKEN and --server URL")
    cert_pem_bytes, key_pem_bytes = new_host_certificate(options.name, time.time(), options.host_cert_lifetime)
    der = x509.load_pem_x509_certificate(cert_pem_bytes).public_bytes(serialization.Encoding.DER)
    authority = options.server.rstrip("/")
    response = httpx.post(
        f"{authority}/lanyard/v1/join",
        json={"token": options.join_token, "name": options.name, "certificate": base64.b64encode(der).decode()},
        verify=ssl.create_default_context(cafile=options.ca_file),
        timeout=30,
    )
    if response.status_code != 200:
        raise AgentError(f"joining failed ({response.status_code}): {response.text[:300]}")
    joined = response.json()
    write_atomically(key_file, key_pem_bytes)
    write_atomically(cert_file, cert_pem_bytes)
    write_atomically(
        host_file,
        json.dumps(
            {
                "hostId": joined["hostId"],
                "clientId": joined["clientId"],
                "tenantId": joined["tenantId"],
                "authority": authority,
            }
        ).encode(),
    )
    key = CertificateKey.from_pem(cert_pem_bytes, key_pem_bytes)
    return HostIdentity(joined["hostId"], joined["clientId"], joined["tenantId"], authority, key)


def _tcp_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class _Server(BoundedServer):
    """uvicorn that can add listeners with their own app after start (one per VM's metadata service),
    each bounded like the first (docs/security.md, "Limits")."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield  # the agent installs its own handlers

    async def add_listener(
        self, sock: socket.socket, app: Any, tls: ssl.SSLContext | None = None
    ) -> asyncio.base_events.Server:
        limits = self.config.limits if isinstance(self.config, BoundedConfig) else None
        config = bounded_config(app, limits=limits, protocol=AttestingProtocol)
        factory = self.protocol_factory(config)
        server = await asyncio.get_running_loop().create_server(factory, sock=sock, backlog=1024, ssl=tls)
        self.servers.append(server)
        return server


class Agent:
    def __init__(self, options: AgentOptions) -> None:
        self.options = options
        self.state = BindingsState()
        self.cache = TokenCache(SystemClock())
        self.workloads = WorkloadRegistry()
        self._stop = asyncio.Event()

    async def _follow_bindings(self, upstream: Upstream) -> None:
        delay = 0.5
        while not self._stop.is_set():
            try:
                doc = await upstream.bindings(self.state.etag, POLL_WAIT)
                delay = 0.5
            except UpstreamError as exc:
                log.warning("bindings: %s; retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            if doc is not None:
                removed = self.state.apply(doc)
                if removed:
                    self.cache.forget(removed)
                published = doc.get("signingKeys")
                if isinstance(published, list):
                    self.cache.forget_signed_by_others(frozenset(str(k) for k in published))

    async def run(self) -> int:
        identity = await asyncio.get_running_loop().run_in_executor(None, load_or_join, self.options)
        upstream = Upstream(identity, self.options.ca_file, self.cache.clock)
        first = await upstream.bindings(None, 0)
        if first is not None:
            self.state.apply(first)
        follow = asyncio.get_running_loop().create_task(self._follow_bindings(upstream))
        renewal = HostCredentialRenewal(
            self.options.home, self.options.name, upstream, self.options.ca_file, self.options.host_cert_lifetime
        )
        renewing = asyncio.get_running_loop().create_task(
            renewal.run(tick=min(60.0, self.options.host_cert_lifetime / 20))
        )

        audit = None
        if self.options.audit.enabled:  # LANYARD_AUDIT=off: benchmarks compare both
            audit = AgentAudit(self.options.home, identity.host_id, self.options.audit)
        if audit is not None:
            await audit.start(upstream)
        limits = self.options.limits
        service = TokenService(
            self.state,
            self.cache,
            upstream,
            WorkloadLimits(
                Rate.of(limits.workload_rate, limits.workload_burst),
                azure_imds=limits.azure_imds,
            ),
            audit,
        )
        observe = AgentObservability(self.options.home, self.cache)
        check = CallerCheck(audit.attestation_refused if audit is not None else None)
        sock = _tcp_socket("127.0.0.1", self.options.port)
        port = sock.getsockname()[1]
        appservice_url = f"http://127.0.0.1:{port}{APP_SERVICE_PATH}"
        config = bounded_config(
            observe.wrap(AppServiceEndpoint(service, self.workloads, allowed_hosts_for(port), check), "appservice"),
            limits=limits.listener(),
            protocol=AttestingProtocol,
            timeout_graceful_shutdown=2,
        )
        server = _Server(config)
        server_task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
        while not server.started:
            if server_task.done():
                raise AgentError("the token endpoint failed to start")
            await asyncio.sleep(0.01)

        async def open_imds(
            resource_id: str, netns: str | None, registration: RunningWorkload
        ) -> tuple[str, Callable[[], Awaitable[None]]]:
            if netns:
                imds_sock = run_in_netns(netns, functools.partial(_tcp_socket, "169.254.169.254", 80))
                extra = ["169.254.169.254"]
            else:
                imds_sock = _tcp_socket("127.0.0.1", 0)
                extra = []
            imds_port = imds_sock.getsockname()[1]
            listener = await server.add_listener(
                imds_sock,
                observe.wrap(
                    ImdsEndpoint(service, resource_id, allowed_hosts_for(imds_port, extra), check, registration), "imds"
                ),
            )

            async def close() -> None:
                listener.close()
                with contextlib.suppress(ValueError):
                    server.servers.remove(listener)

            return f"http://127.0.0.1:{imds_port}", close

        async def open_arc(
            resource_id: str, owner: tuple[int, int] | None, registration: RunningWorkload
        ) -> tuple[str, Callable[[], Awaitable[None]]]:
            arc_sock = _tcp_socket("127.0.0.1", 0)
            arc_port = arc_sock.getsockname()[1]
            endpoint = ArcEndpoint(service, resource_id, allowed_hosts_for(arc_port), owner, check, registration)
            listener = await server.add_listener(arc_sock, observe.wrap(endpoint, "arc"))

            async def close() -> None:
                listener.close()
                endpoint.close()
                with contextlib.suppress(ValueError):
                    server.servers.remove(listener)

            return f"http://127.0.0.1:{arc_port}", close

        # Service Fabric: one HTTPS listener for every such workload, its certificate new at each start.
        fabric = make_certificate(self.options.home, time.time())
        fabric_sock = _tcp_socket("127.0.0.1", 0)
        fabric_port = fabric_sock.getsockname()[1]
        await server.add_listener(
            fabric_sock,
            observe.wrap(
                ServiceFabricEndpoint(service, self.workloads, allowed_hosts_for(fabric_port), check), "servicefabric"
            ),
            fabric.server_context(),
        )

        async def open_cloudshell(
            resource_id: str, registration: RunningWorkload
        ) -> tuple[str, Callable[[], Awaitable[None]]]:
            shell_sock = _tcp_socket("127.0.0.1", 0)
            shell_port = shell_sock.getsockname()[1]
            endpoint = CloudShellEndpoint(service, resource_id, allowed_hosts_for(shell_port), check, registration)
            listener = await server.add_listener(shell_sock, observe.wrap(endpoint, "cloudshell"))

            async def close() -> None:
                listener.close()
                with contextlib.suppress(ValueError):
                    server.servers.remove(listener)

            return f"http://127.0.0.1:{shell_port}{CLOUD_SHELL_PATH}", close

        references = ReferenceResolver(service, identity.authority, self.options.ca_file)
        control = ControlServer(
            self.options.home / "control.sock",
            RunContext(
                self.state,
                self.workloads,
                appservice_url,
                self.options.ca_bundle,
                self.options.ca_file,
                open_imds,
                open_arc,
                WorkloadUsers(self.options.home, self.options.workload_uids) if os.geteuid() == 0 else None,
                open_cloudshell=open_cloudshell,
                servicefabric=(
                    f"https://127.0.0.1:{fabric_port}{FABRIC_PATH}",
                    fabric.thumbprint,
                    str(fabric.node_trust(self.options.ca_file)),
                ),
                references=references,
                aks=AksContext(identity.tenant_id, identity.authority, upstream.workload_token, self.cache.clock),
            ),
        )
        await control.start()
        metrics_socket = await observe.serve_metrics(server.add_listener)
        missing = limitations()
        for line in missing:
            log.warning("not isolated (the agent is not root): %s", line)
        info = {
            "url": appservice_url,
            "socket": str(self.options.home / "control.sock"),
            "hostId": identity.host_id,
            "pid": os.getpid(),
            "metrics": str(metrics_socket),
            "isolation": {"workloadUids": not missing, "callerAttestation": True, "limitations": missing},
        }
        write_atomically(self.options.home / AGENT_FILE, json.dumps(info).encode())
        log.info("agent ready at %s (host %s)", appservice_url, identity.host_id)

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stop.set)
        await self._stop.wait()
        with contextlib.suppress(FileNotFoundError):
            (self.options.home / AGENT_FILE).unlink()
        await control.close()
        check.close()
        server.should_exit = True
        follow.cancel()
        renewing.cancel()
        await asyncio.gather(server_task, follow, renewing, return_exceptions=True)
        if audit is not None:
            await audit.close()  # ships what it can first
        await references.aclose()
        await upstream.aclose()
        observe.close()
        return 0


def run_agent(options: AgentOptions) -> int:
    os.umask(0o077)  # everything the agent writes is its user's alone
    with contextlib.suppress(FileNotFoundError):
        (options.home / AGENT_FILE).unlink()
    try:
        with event_loop_runner() as runner:
            return runner.run(Agent(options).run())
    except (AgentError, UpstreamError, IsolationError) as exc:
        raise SystemExit(f"ERROR: {exc}") from exc


def read_server_file(path: Path, timeout: float = 60.0) -> str:
    """Wait for the server that started us to say where it listens; give up if it is gone."""
    parent = os.getppid()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and os.getppid() == parent:
        with contextlib.suppress(OSError):
            url = path.read_text().strip()
            if url:
                return url
        time.sleep(0.01)
    raise SystemExit("ERROR: the server never said where it listens")


def wait_for_agent(home: Path, pid: int, timeout: float = 60.0) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    path = home / AGENT_FILE
    while time.monotonic() < deadline:
        if path.exists():
            with contextlib.suppress(ValueError, OSError):
                info = json.loads(path.read_text())
                if info.get("pid") == pid:
                    return dict(info)
        time.sleep(0.05)
    return None
