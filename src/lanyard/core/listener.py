"""Bounds on every HTTP listener (docs/security.md, "Limits"): header size, read deadlines, keep-alive
idle time, open connections and requests in flight.

uvicorn's httptools protocol buffers a request head without limit (64 MB heads were accepted), never
times out a connection that has not finished its head (slowloris), and its `limit_concurrency` counts
idle keep-alive connections and answers a bare-text 503. `BoundedHttpToolsProtocol` adds the bounds
while leaving the common case alone: a head that arrives in one read costs no timer and no counting
beyond one addition. `bounded_config()` is how the platform, its workers and the agent build every
listener; `BoundedServer` bounds the TLS handshake, which happens before any protocol code runs.

Subclasses (the agent's caller attestation) may override `connection_made`; call super first.
"""

from __future__ import annotations

import asyncio
import sys
from asyncio import TimerHandle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httptools
import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

_HEAD, _BODY, _SERVING = 0, 1, 2
# After a refusal, keep reading (and dropping) this long so the peer reads our answer instead of
# a reset caused by its own unread bytes; then close whatever it is doing.
REFUSAL_LINGER = 1.0
REFUSAL_DRAIN_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class ListenerLimits:
    """Per listening process. Defaults sit far above any legitimate client and far below harm."""

    max_head_bytes: int = 64 * 1024  # request line + headers; beyond: 431 and close
    head_timeout: float = 10.0  # connection open (or first byte of a next request) -> end of head
    body_timeout: float = 30.0  # end of head -> end of body
    keep_alive: int = 30  # idle seconds between requests on one connection (uvicorn wants an int)
    max_connections: int = 4096  # open per process; beyond: 503 and close at once
    max_in_flight: int = 1024  # requests being served per process; beyond: 503 + Retry-After
    tls_handshake_timeout: float = 10.0

    def __post_init__(self) -> None:
        if min(self.max_head_bytes, self.keep_alive, self.max_connections, self.max_in_flight) < 1:
            raise ValueError("listener limits must be positive")
        if min(self.head_timeout, self.body_timeout, self.tls_handshake_timeout) <= 0:
            raise ValueError("listener timeouts must be positive")


def _json_error(error: str, description: str) -> bytes:
    # The OAuth/IMDS error shape: the most common one among our listeners, and plain JSON for the rest.
    return orjson.dumps({"error": error, "error_description": description})


_REFUSALS: dict[int, bytes] = {
    408: _json_error("request_timeout", "The request head or body was not received in time."),
    431: _json_error("request_header_fields_too_large", "The request line and headers are too large."),
    503: _json_error("temporarily_unavailable", "The server is busy; retry shortly."),
}
_OVERLOAD_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(_REFUSALS[503])).encode()),
    (b"retry-after", b"1"),
    (b"connection", b"close"),
]


async def overloaded(scope: Any, receive: Any, send: Any) -> None:
    """The answer past `max_in_flight`: cheap, retryable, and it frees the connection."""
    await send({"type": "http.response.start", "status": 503, "headers": _OVERLOAD_HEADERS})
    await send({"type": "http.response.body", "body": _REFUSALS[503]})


class BoundedConfig(uvicorn.Config):
    """A uvicorn Config that carries the limits its protocol enforces."""

    def __init__(self, app: Any, *, limits: ListenerLimits, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.limits = limits


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: uvicorn.Config,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits: ListenerLimits = getattr(config, "limits", None) or ListenerLimits()
        self._state = _HEAD
        self._head_bytes = 0
        self._chunk = 0
        self._head_timer: TimerHandle | None = None
        self._body_timer: TimerHandle | None = None
        self._refused = False
        self._drained = 0

    # -- connection ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        over = len(self.connections) >= self.limits.max_connections
        super().connection_made(transport)
        if over:
            self.refuse(503)
            return
        # Covers a connection that never sends a byte as well as one that sends its head slowly.
        self._head_timer = self.loop.call_later(self.limits.head_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            self._drained += len(data)
            if self._drained > REFUSAL_DRAIN_BYTES:
                self.transport.close()
            return
        self._unset_keepalive_if_required()
        self._chunk = len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            if not self._refused:  # our own callbacks raise to stop the parser after refusing
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response("Invalid HTTP request received.")
            return
        if self._state == _HEAD:
            # Still inside a head after this read: count it all (a read that also finished an earlier
            # pipelined request over-counts, which only errs towards refusing sooner).
            self._head_bytes += self._chunk
            if self._head_bytes > self.limits.max_head_bytes:
                self.refuse(431)
            elif self._head_timer is None:
                self._head_timer = self.loop.call_later(self.limits.head_timeout, self._head_timed_out)
        elif self._state == _BODY and self._body_timer is None:
            self._body_timer = self.loop.call_later(self.limits.body_timeout, self._body_timed_out)

    # -- parser callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._state = _HEAD
        self._head_bytes = 0

    def on_headers_complete(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        limit = self.limits.max_head_bytes
        if self._head_bytes + self._chunk > limit and self._exact_head_bytes() > limit:
            self.refuse(431)
            raise _Refused
        self._state = _BODY
        if len(self.tasks) >= self.limits.max_in_flight:
            # uvicorn reads `self.app` once here to start the request; swap it for this request only.
            app, self.app = self.app, overloaded
            try:
                super().on_headers_complete()
            finally:
                self.app = app
            return
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._state = _SERVING
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    # -- refusals -----------------------------------------------------------------------------

    def _exact_head_bytes(self) -> int:
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._head_bytes:
            self.refuse(408)
        else:
            self.transport.close()  # nothing asked, nothing to answer

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_started:
            self.cycle.disconnected = True  # the app's receive() now sees http.disconnect
            self.cycle.message_event.set()
            self.refuse(408)
        else:
            self.transport.close()

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None

    def refuse(self, status: int) -> None:
        """Answer `status` with a JSON error, then close: at once if the peer is quiet, else after a
        short drain so it reads the answer."""
        if self._refused or self.transport.is_closing():
            return
        self._refused = True
        self._cancel_timers()
        self._unset_keepalive_if_required()
        body = _REFUSALS[status]
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head.extend([name, b": ", value, b"\r\n"])
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body))
        if status == 503:
            head.append(b"retry-after: 1\r\n")
        head.append(b"connection: close\r\n\r\n")
        self.transport.write(b"".join(head) + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(REFUSAL_LINGER, self.transport.close)


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request already refused."""


def bounded_config(
    app: Any,
    limits: ListenerLimits | None = None,
    protocol: type[BoundedHttpToolsProtocol] = BoundedHttpToolsProtocol,
    **kwargs: Any,
) -> BoundedConfig:
    """A uvicorn Config for one of our listeners: bounded protocol, no websockets, no access log,
    no proxy headers, no server header (each overridable through kwargs)."""
    limits = limits or ListenerLimits()
    options: dict[str, Any] = {
        "lifespan": "off",
        "log_level": "warning",
        # No dictConfig of uvicorn's own: its records go through the process's handlers
        # (observe/logs.py), so they reach the log file too.
        "log_config": None,
        "access_log": False,
        "server_header": False,
        "proxy_headers": False,  # a balancer in front is TCP-mode; never trust X-Forwarded-For
        **kwargs,
    }
    return BoundedConfig(
        app,
        limits=limits,
        http=protocol,
        ws="none",
        timeout_keep_alive=limits.keep_alive,
        limit_concurrency=None,  # ours counts requests in flight, not idle connections
        **options,
    )


class BoundedServer(uvicorn.Server):
    """uvicorn's Server, with the TLS handshake bounded (asyncio's default is 60 s, before any
    protocol code can see the connection) and a way to add listeners that share its limits."""

    def protocol_factory(self, config: uvicorn.Config) -> Callable[..., asyncio.Protocol]:
        if not config.loaded:
            config.load()

        def factory(_loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state={}, _loop=_loop
            )

        return factory

    def _handshake_timeout(self) -> float:
        limits = getattr(self.config, "limits", None)
        return limits.tls_handshake_timeout if isinstance(limits, ListenerLimits) else 10.0

    async def startup(self, sockets: list[Any] | None = None) -> None:
        if sockets is None or not isinstance(self.config, BoundedConfig):
            await super().startup(sockets)
            return
        config = self.config
        await self.lifespan.startup()
        if self.lifespan.should_exit:
            sys.exit(3)  # uvicorn's STARTUP_FAILURE
        loop = asyncio.get_running_loop()
        factory = self.protocol_factory(config)
        self.servers = []
        for sock in sockets:
            kwargs: dict[str, Any] = {"sock": sock, "ssl": config.ssl, "backlog": config.backlog}
            if config.ssl is not None:
                kwargs["ssl_handshake_timeout"] = self._handshake_timeout()
            self.servers.append(await loop.create_server(factory, **kwargs))
        self.started = True
