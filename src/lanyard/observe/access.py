"""The access log: one JSON line per HTTP request, for the platform's port and the agent's listeners.

A line has the time, method, path, the query with every value that might carry a secret replaced,
the status, the latency, the peer address, the Host header and, on the agent, the attested caller
(the `lanyard.caller` scope key, when attestation ran). Bodies are never read: the token endpoints'
forms carry client secrets and assertions, their answers the tokens.

The request only appends a tuple of references to a deque (no formatting, no syscall, no lock on
the event loop); a background thread wakes every FLUSH_INTERVAL, renders what piled up and writes it
in one append. If the disk stalls the deque stops growing at MAX_PENDING and lines are counted as
dropped rather than holding memory or requests.
"""

from __future__ import annotations

import collections
import datetime as dt
import functools
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

import orjson
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lanyard.core.clock import Clock, SystemClock
from lanyard.observe.files import SharedRotatingFileHandler

log = logging.getLogger("lanyard.observe")
FLUSH_INTERVAL = 0.2
MAX_PENDING = 100_000
MAX_PATH = 1024
MAX_QUERY_FIELDS = 64
# Query parameters whose values are identifiers, versions or switches, never credentials. Any other
# value is written as REDACTED: a client may put anything in a query (a secret, a token, a code).
SHOWN_QUERY_KEYS = frozenset(
    {
        "api-version",
        "resource",
        "client_id",
        "object_id",
        "principal_id",
        "mi_res_id",
        "msi_res_id",
        "resourceId",
        "$top",
        "$filter",
        "$skiptoken",
        "immediate",
        "wait",
        "etag",
        "maxresults",
        "bypass_cache",
        "authorization_endpoint",
    }
)
REDACTED = "REDACTED"
Entry = tuple[float, str, str, bytes, int, float, Any, Any, Any, str]


@functools.lru_cache(maxsize=4096)  # clients repeat the same few queries; rendering is the writer's cost
def redact_query(raw: bytes) -> str:
    if not raw:
        return ""
    try:
        pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True, max_num_fields=MAX_QUERY_FIELDS)
    except ValueError:
        return REDACTED  # more fields than any client sends: nothing of it is shown
    shown = []
    for key, value in pairs:
        kept = value if key in SHOWN_QUERY_KEYS else REDACTED
        shown.append(f"{quote(key[:64], safe='$-_.')}={quote(kept[:512], safe='/:.-_$ ')}")
    return "&".join(shown)


def _host(headers: Any) -> str | None:
    for name, value in headers or ():
        if name == b"host":
            return str(value[:255].decode("latin-1"))
    return None


@functools.lru_cache(maxsize=4)
def _second(at: int) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


def render(entry: Entry) -> bytes:
    at, method, path, query, status, elapsed, client, caller, headers, family = entry
    whole = int(at)
    line: dict[str, Any] = {
        "time": f"{_second(whole)}.{int((at - whole) * 1000):03d}Z",
        "family": family,
        "method": method[:16],
        "path": path[:MAX_PATH],
        "status": status,
        "ms": round(elapsed * 1000, 3),
    }
    if query:
        line["query"] = redact_query(query)
    if client:
        line["peer"] = f"{client[0]}:{client[1]}" if len(client) > 1 else str(client[0])
    host = _host(headers)
    if host:
        line["host"] = host
    if caller is not None:
        fields = caller.audit_fields() if hasattr(caller, "audit_fields") else {}
        line["caller"] = {k: fields.get(k, getattr(caller, k, None)) for k in ("pid", "uid", "exe")}
    return orjson.dumps(line) + b"\n"


class AccessLog:
    """The writer: entries in, JSON lines out to a shared, rotated, 0600 file."""

    def __init__(self, path: Path, clock: Clock | None = None, dropped: Counter | None = None) -> None:
        self.path = path
        self.clock = clock or SystemClock()
        self.dropped = dropped
        self._handler = SharedRotatingFileHandler(path)
        self._pending: collections.deque[Entry] = collections.deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self, entry: Entry) -> None:
        if len(self._pending) >= MAX_PENDING:
            if self.dropped is not None:
                self.dropped.inc()
            return
        self._pending.append(entry)

    def start(self) -> AccessLog:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="access-log", daemon=True)
            self._thread.start()
        return self

    def flush(self) -> None:
        pending = self._pending
        if not pending:
            return
        chunks = []
        try:
            while True:
                chunks.append(render(pending.popleft()))
        except IndexError:
            pass
        try:
            self._handler.write_text(b"".join(chunks).decode())
        except OSError as exc:
            log.warning("access log: %d line(s) not written (%s)", len(chunks), type(exc).__name__)

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_INTERVAL):
            self.flush()
        self.flush()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.flush()
        self._handler.close()


class AccessLogMiddleware:
    """Wraps an ASGI app: records each request in the access log and in the request metrics."""

    def __init__(
        self,
        app: ASGIApp,
        access: AccessLog | None,
        family_of: Callable[[Scope], str],
        responses: Counter,
        latency: Histogram,
        on_response: Callable[[str, int], None] | None = None,
    ) -> None:
        self.app = app
        self.access = access
        self.family_of = family_of
        self.responses = responses
        self.latency = latency
        self.on_response = on_response
        self._children: dict[tuple[str, int], Any] = {}
        self._histograms: dict[str, Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        at = self.access.clock.now() if self.access is not None else 0.0
        status = 0

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            elapsed = time.perf_counter() - started
            family = self.family_of(scope)
            self._count(family, status or 500, elapsed)
            if self.access is not None:
                self.access.record(
                    (
                        at,
                        scope["method"],
                        scope["path"],
                        scope["query_string"],
                        status or 500,
                        elapsed,
                        scope.get("client"),
                        scope.get("lanyard.caller"),
                        scope["headers"],
                        family,
                    )
                )

    def _count(self, family: str, status: int, elapsed: float) -> None:
        # Children looked up once per (family, status): .labels() takes a lock and builds a key.
        child = self._children.get((family, status))
        if child is None:
            child = self._children[(family, status)] = self.responses.labels(family, str(status))
        child.inc()
        histogram = self._histograms.get(family)
        if histogram is None:
            histogram = self._histograms[family] = self.latency.labels(family)
        histogram.observe(elapsed)
        if self.on_response is not None and status in (401, 403):
            self.on_response(family, status)
