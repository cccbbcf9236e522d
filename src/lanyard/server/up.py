"""`lanyard up`: bootstrap, bind, serve over TLS, and announce readiness through endpoints.json."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import uvicorn

from lanyard.agent.main import AGENT_FILE, wait_for_agent
from lanyard.config import Settings
from lanyard.core.clock import Clock, SystemClock
from lanyard.core.errors import ConfigError
from lanyard.core.files import secure_tree, write_atomically
from lanyard.core.listener import BoundedServer, bounded_config
from lanyard.core.loop import event_loop_runner
from lanyard.fleet.service import Fleet
from lanyard.observe import multiproc
from lanyard.server.agent_launch import SERVER_URL_FILE, agent_argv
from lanyard.server.app import Urls, build_app, urls_for
from lanyard.server.banner import progress, show_banner
from lanyard.server.bootstrap import Platform, bootstrap
from lanyard.server.homelock import HomeLock

log = logging.getLogger("lanyard.up")
ENDPOINTS_FILE = "endpoints.json"


def _bind(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # Protocol IPPROTO_TCP (not 0) so asyncio sets TCP_NODELAY on accepted sockets; without it
    # every small response waits ~40 ms on Nagle + delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        # Workers of one platform each listen on the same port; the kernel spreads connections.
        # Only then: otherwise another platform on this port would silently share our traffic.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def bind_all(hosts: list[str], port: int, attempts: int = 20, reuse_port: bool = False) -> list[socket.socket]:
    """Bind every host on one port. With port 0 the first bind picks it and the rest must follow;
    if another process holds that port on the second stack, start over with a new one."""
    for _ in range(attempts):
        socks: list[socket.socket] = []
        try:
            first = _bind(hosts[0], port, reuse_port)
            socks.append(first)
            chosen = first.getsockname()[1]
            for host in hosts[1:]:
                try:
                    socks.append(_bind(host, chosen, reuse_port))
                except OSError as exc:
                    if exc.errno in (socket.EAI_ADDRFAMILY, 99, 97):  # no such address here (no IPv6)
                        log.warning("not listening on %s: %s", host, exc.strerror)
                        continue
                    raise
            return socks
        except OSError as exc:
            for s in socks:
                s.close()
            if port != 0:
                raise ConfigError(f"cannot listen on port {port}: {exc.strerror}") from exc
    raise ConfigError("could not find a free port on every loopback address")


def warn_if_vault_names_do_not_resolve(zone: str) -> None:
    try:
        socket.getaddrinfo(f"probe.vault.{zone}", 443)
    except OSError:
        log.warning(
            "vault host names (*.vault.%s) do not resolve here, so apps cannot reach vaults by URL: run "
            "scripts/ensure-dns as root (installs libnss-myhostname) or add a wildcard DNS record",
            zone,
        )


def endpoints_document(platform: Platform, urls: Urls) -> dict[str, Any]:
    ident = platform.identity
    return {
        "tenant_id": ident.tenant_id,
        "subscription_id": ident.subscription_id,
        "authority": urls.authority,
        "token_endpoint": f"{urls.authority}/{ident.tenant_id}/oauth2/v2.0/token",
        "arm": urls.authority,
        "graph": urls.graph,
        "ca_cert": str(platform.tls.ca_cert),
        "ca_bundle": str(platform.tls.ca_bundle),
        "dns_zone": platform.settings.dns_zone,
        "vault_suffix": urls.vault_suffix,
        "vault_audience": urls.vault_audience,
        "admin": {
            "client_id": ident.admin_app_id,
            "client_secret": ident.admin_secret,
            "object_id": ident.admin_object_id,
        },
        "pid": os.getpid(),
    }


def write_endpoints(home: Path, document: dict[str, Any]) -> Path:
    """Atomic and private: readers see the whole file or none, and only its owner can read it."""
    path = home / ENDPOINTS_FILE
    write_atomically(path, json.dumps(document, indent=2).encode())
    return path


class _Server(BoundedServer):
    """uvicorn's server (TLS handshake bounded), plus a hook that runs once every socket is listening."""

    def __init__(self, config: uvicorn.Config, on_ready: Any, on_shutdown: Any = None) -> None:
        super().__init__(config)
        self._on_ready = on_ready
        self._on_shutdown = on_shutdown

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._on_shutdown is not None:
            # Let agents and long polls finish first, while the server still answers them.
            await asyncio.get_running_loop().run_in_executor(None, self._on_shutdown)
        await super().shutdown(sockets)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._on_ready()

    async def _wait_tasks_to_complete(self) -> None:
        # A closed TLS connection waits up to 30 s for the peer's close_notify; an idle keep-alive
        # client never sends it. Abort connections already closing so shutdown is prompt.
        while self.server_state.connections and not self.force_exit:
            for connection in list(self.server_state.connections):
                transport = getattr(connection, "transport", None)
                if transport is not None and transport.is_closing():
                    transport.abort()
            await asyncio.sleep(0.05)
        await super()._wait_tasks_to_complete()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """SIGINT/SIGTERM ask for a graceful stop; unlike uvicorn's, the signal is not re-raised
        afterwards, so a clean shutdown exits 0."""
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def _uvicorn_config(app: Any, platform: Platform) -> uvicorn.Config:
    # Header size, head/body deadlines, keep-alive, connection and in-flight caps (docs/security.md).
    return bounded_config(
        app,
        limits=platform.settings.limits.listener(),
        ssl_certfile=str(platform.tls.server_cert),
        ssl_keyfile=str(platform.tls.server_key),
        ssl_keyfile_password=platform.tls.server_key_password,
        timeout_graceful_shutdown=3,
        date_header=True,
    )


def serve(
    settings: Settings,
    clock: Clock | None = None,
    early_agent: subprocess.Popen[bytes] | None = None,
    home_lock: HomeLock | None = None,
    banner: bool = True,
) -> int:
    lock = home_lock or HomeLock.acquire(settings.home)
    # The home holds the KEK, the database and the TLS keys: its user's alone, whatever state it was in.
    os.umask(0o077)
    secure_tree(settings.home)
    clock = clock or SystemClock()
    endpoints_path = settings.home / ENDPOINTS_FILE
    with contextlib.suppress(FileNotFoundError):
        endpoints_path.unlink()  # a stale file must never look like readiness (the home is ours now)
    # A new home takes seconds to set up: say what is happening (warm starts stay quiet).
    fresh = not (settings.home / "tls" / "ca.pem").exists()
    say = progress if fresh else None
    try:
        platform = bootstrap(settings, clock, say)
    except BaseException:
        if early_agent is not None and early_agent.poll() is None:
            early_agent.terminate()
            early_agent.wait(timeout=10)
        lock.release()
        raise
    warn_if_vault_names_do_not_resolve(settings.dns_zone)
    socks = bind_all(settings.listen_hosts, settings.port, reuse_port=settings.workers > 1)
    port = socks[0].getsockname()[1]
    urls = urls_for(settings.advertised_host(), port, settings.dns_zone, settings.public_url)
    if say is not None:
        say(f"listening on {urls.authority}")
    # An agent started early (warm home) is waiting to learn where we listen.
    write_atomically(settings.home / SERVER_URL_FILE, urls.authority.encode())
    served = build_app(platform, urls, clock)
    served.follower.start(node_url=f"https://{settings.advertised_host()}:{port}")
    workers = WorkerPool(settings, port)
    workers.start()

    agent: LocalAgent | None = None

    def announce(agent_info: dict[str, Any] | None) -> None:
        if not workers.wait_ready():
            log.error("a worker process did not start; stopping")
            server.should_exit = True
            return
        document = endpoints_document(platform, urls)
        document["workers"] = settings.workers
        if agent_info is not None:
            document["agent"] = agent_info
            if say is not None:
                say(f"the host agent for this machine joined (host {agent_info.get('hostId')})")
        write_endpoints(settings.home, document)
        # The person at the terminal gets the banner; the log file keeps a record for `lanyard logs`.
        log.warning(
            "lanyard is up at %s (tenant %s); endpoints in %s",
            urls.authority,
            platform.identity.tenant_id,
            endpoints_path,
            extra={"console": False},
        )
        if banner:  # detached, the `lanyard up --detach` that started us prints it
            show_banner(document, settings.home)

    def ready() -> None:
        nonlocal agent
        served.hub.bind(asyncio.get_running_loop())
        served.audit.bind(asyncio.get_running_loop())
        for job in served.jobs:
            job.start()
        if not settings.agent:
            threading.Thread(target=announce, args=(None,), name="announce", daemon=True).start()
            return
        agent = LocalAgent(settings, platform, served.fleet, urls, early_agent)
        if say is not None and not (agent.home / "host.json").exists():
            say("starting the host agent for this machine: it joins the platform with a one-time token")
        agent.start(on_ready=announce, on_failure=lambda: setattr(server, "should_exit", True))

    def stopping() -> None:
        for job in served.jobs:
            job.stop()
        served.hub.close()
        if agent is not None:
            agent.stop()
        workers.stop()

    server = _Server(_uvicorn_config(served.app, platform), ready, stopping)
    try:
        with event_loop_runner() as runner:
            runner.run(server.serve(sockets=socks))
    finally:
        for done in (endpoints_path, settings.home / SERVER_URL_FILE):
            with contextlib.suppress(FileNotFoundError):
                done.unlink()
        if agent is not None:
            agent.stop()
        elif early_agent is not None and early_agent.poll() is None:
            early_agent.terminate()
            early_agent.wait(timeout=10)
        workers.stop()
        served.follower.stop()
        if served.access is not None:
            served.access.close()
        served.audit.close()
        platform.store.close()
        lock.release()
    return 0


def serve_worker(settings: Settings, parent: int, clock: Clock | None = None) -> int:
    """One more server process of a platform started with --workers: same database, same port
    (SO_REUSEPORT), following the change feed like any other node. No agent, no endpoints file."""
    clock = clock or SystemClock()
    platform = bootstrap(settings, clock)
    socks = bind_all(settings.listen_hosts, settings.port, attempts=1, reuse_port=True)
    urls = urls_for(settings.advertised_host(), settings.port, settings.dns_zone, settings.public_url)
    served = build_app(platform, urls, clock)
    served.follower.start(node_url=f"https://{settings.advertised_host()}:{settings.port} (worker)")

    def watch_parent() -> None:
        # Orphaned (the platform was killed): stop rather than serve on alone.
        while os.getppid() == parent:
            time.sleep(0.5)
        server.should_exit = True

    def ready() -> None:
        served.hub.bind(asyncio.get_running_loop())
        served.audit.bind(asyncio.get_running_loop())
        for job in served.jobs:
            job.start()
        write_atomically(settings.home / f"worker-{os.getpid()}.ready", b"")
        threading.Thread(target=watch_parent, name="parent-watch", daemon=True).start()

    server = _Server(_uvicorn_config(served.app, platform), ready, served.hub.close)
    try:
        with event_loop_runner() as runner:
            runner.run(server.serve(sockets=socks))
    finally:
        with contextlib.suppress(FileNotFoundError):
            (settings.home / f"worker-{os.getpid()}.ready").unlink()
        served.follower.stop()
        if served.access is not None:
            served.access.close()
        served.audit.close()
        platform.store.close()
    return 0


class WorkerPool:
    """The extra server processes of `lanyard up --workers N` (this process is the first)."""

    def __init__(self, settings: Settings, port: int) -> None:
        self.settings = settings
        self.port = port
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        s = self.settings
        for _ in range(s.workers - 1):
            argv = [sys.executable, "-m", "lanyard", "up", "--home", str(s.home), "--host", s.host]
            argv += ["--port", str(self.port), "--token-lifetime", str(s.token_lifetime), "--no-agent"]
            argv += ["--worker-of", str(os.getpid())]
            if s.database_url:
                argv += ["--database", s.database_url]
            if s.public_url:
                argv += ["--public-url", s.public_url]
            if s.public_host:
                argv += ["--public-host", s.public_host]
            if s.audit.file is not None:
                argv += ["--audit-file", str(s.audit.file)]
            self.processes.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL))

    def wait_ready(self, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.processes):
                return False
            if all((self.settings.home / f"worker-{p.pid}.ready").exists() for p in self.processes):
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            multiproc.process_exited(process.pid)


class LocalAgent:
    """The host agent `lanyard up` runs for this machine: a child process that talks to the server
    over HTTPS like any other agent, joined with a token it never shows anyone."""

    def __init__(
        self,
        settings: Settings,
        platform: Platform,
        fleet: Fleet,
        urls: Urls,
        early: subprocess.Popen[bytes] | None = None,
    ) -> None:
        self.settings = settings
        self.platform = platform
        self.fleet = fleet
        self.urls = urls
        self.home = settings.home / "agent"
        self.process: subprocess.Popen[bytes] | None = early

    def start(self, on_ready: Callable[[dict[str, Any]], None], on_failure: Callable[[], None]) -> None:
        if self.process is None:
            self._spawn()
        process = self.process
        assert process is not None

        def wait() -> None:
            info = wait_for_agent(self.home, process.pid)
            if info is None:
                log.error("the local host agent did not start; see its output above")
                on_failure()
                return
            on_ready(info)

        threading.Thread(target=wait, name="agent-start", daemon=True).start()

    def _spawn(self) -> None:
        argv = [*agent_argv(self.settings.home, self.settings.agent_port), "--server", self.urls.authority]
        env = multiproc.disable_for_child(dict(os.environ))  # the agent keeps its own metrics
        if not (self.home / "host.json").exists():
            # One use, two minutes, passed only to our own child, in its environment (not argv: `ps` shows that).
            env["LANYARD_JOIN_TOKEN"] = self.fleet.create_join_token(None, "local", ttl=120)
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(FileNotFoundError):
            (self.home / AGENT_FILE).unlink()
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, env=env)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
