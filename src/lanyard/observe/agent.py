"""The host agent's access log and metrics: one object the agent builds at start and closes at exit."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Scope

from lanyard.config import access_log_enabled
from lanyard.observe import metrics
from lanyard.observe.access import AccessLog, AccessLogMiddleware
from lanyard.observe.files import log_dir
from lanyard.observe.http import AgentMetricsApp
from lanyard.observe.logs import ACCESS_LOG

METRICS_SOCKET = "metrics.sock"
AddListener = Callable[[socket.socket, Any], Awaitable[Any]]


class AgentObservability:
    def __init__(self, home: Path, cache: Any, access_log: bool | None = None) -> None:
        self.home = home
        enabled = access_log_enabled() if access_log is None else access_log
        self.access = (
            AccessLog(log_dir(home) / ACCESS_LOG, cache.clock, metrics.AGENT_ACCESS_LOG_DROPPED).start()
            if enabled
            else None
        )
        metrics.watch_token_cache(cache)
        self.metrics_socket = home / METRICS_SOCKET

    def wrap(self, app: ASGIApp, protocol: str) -> ASGIApp:
        """`protocol` (appservice, imds, arc) labels the listener's lines and metrics."""

        def family(_scope: Scope) -> str:
            return protocol

        return AccessLogMiddleware(app, self.access, family, metrics.AGENT_RESPONSES, metrics.AGENT_LATENCY)

    async def serve_metrics(self, add_listener: AddListener) -> Path:
        """GET /metrics on a unix socket only the agent's user can open: workloads reach the
        loopback listeners, never this."""
        with contextlib.suppress(FileNotFoundError):
            self.metrics_socket.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        previous = os.umask(0o177)  # no moment when the socket exists with wider permissions
        try:
            sock.bind(str(self.metrics_socket))
        finally:
            os.umask(previous)
        os.chmod(self.metrics_socket, 0o600)
        sock.listen(16)
        sock.setblocking(False)
        await add_listener(sock, AgentMetricsApp())
        return self.metrics_socket

    def close(self) -> None:
        if self.access is not None:
            self.access.close()
        with contextlib.suppress(FileNotFoundError):
            self.metrics_socket.unlink()
