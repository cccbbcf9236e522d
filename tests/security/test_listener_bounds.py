"""Listener bounds (docs/security.md, "Limits"), over real sockets: a real `lanyard up` (its HTTPS
listener) and its host agent (the App Service listener), plus an in-process bounded listener for the
cases a platform cannot be made to show on demand (requests in flight, the exact header boundary).

Every bound here is lowered through the same LANYARD_* settings an operator would use."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from lanyard.core.listener import BoundedServer, ListenerLimits, bounded_config
from lanyard.core.loop import event_loop_runner
from tests.conftest import RunningPlatform, start_platform

HEAD_TIMEOUT = 1.0
KEEP_ALIVE = 1
MAX_CONNECTIONS = 48
SLACK = 4.0  # a loaded CI machine; the unbounded behaviour held connections > 95 s


@pytest.fixture(scope="module")
def bounded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    env = {
        "LANYARD_HEAD_TIMEOUT": str(HEAD_TIMEOUT),
        "LANYARD_KEEPALIVE_TIMEOUT": str(KEEP_ALIVE),
        "LANYARD_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
    }
    running = start_platform(tmp_path_factory.mktemp("bounded"), env=env)
    yield running
    running.stop()


def _platform_port(p: RunningPlatform) -> int:
    return int(p.authority.rsplit(":", 1)[1])


def _agent_port(p: RunningPlatform) -> int:
    return int(p.endpoints["agent"]["url"].split(":")[2].split("/")[0])


def connect(p: RunningPlatform, target: str) -> socket.socket:
    """A raw connection to the platform (TLS) or to its agent's App Service listener (plain HTTP)."""
    if target == "agent":
        sock = socket.create_connection(("127.0.0.1", _agent_port(p)), timeout=10)
    else:
        raw = socket.create_connection(("127.0.0.1", _platform_port(p)), timeout=10)
        sock = ssl.create_default_context(cafile=p.ca_cert).wrap_socket(raw, server_hostname="localhost")
    sock.settimeout(10 + SLACK)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes (a reset counts as closed)."""
    out = b""
    with contextlib.suppress(ConnectionResetError, ssl.SSLError, BrokenPipeError):
        while chunk := sock.recv(65536):
            out += chunk
    return out


def host_of(target: str) -> bytes:
    return b"127.0.0.1" if target == "agent" else b"localhost"


@pytest.mark.parametrize("target", ["platform", "agent"])
def test_a_one_megabyte_header_is_refused_never_served(bounded: RunningPlatform, target: str) -> None:
    sock = connect(bounded, target)
    request = b"GET /msi/token HTTP/1.1\r\nHost: " + host_of(target) + b"\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n"
    with contextlib.suppress(ConnectionResetError, BrokenPipeError, ssl.SSLError):
        sock.sendall(request)
    answer = read_all(sock)
    sock.close()
    # 431 and closed, or (when our unread bytes reset the connection first) just closed.
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    if answer:
        assert b"connection: close" in answer.lower()
        assert b"request_header_fields_too_large" in answer


@pytest.mark.parametrize("target", ["platform", "agent"])
def test_half_a_request_head_is_closed_within_the_timeout(bounded: RunningPlatform, target: str) -> None:
    sock = connect(bounded, target)
    sock.sendall(b"GET /msi/token HTTP/1.1\r\nHost: " + host_of(target) + b"\r\nX-Slow: ")
    started = time.monotonic()
    answer = read_all(sock)
    waited = time.monotonic() - started
    sock.close()
    assert waited < HEAD_TIMEOUT + SLACK, waited
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408 "), answer[:200]


@pytest.mark.parametrize("target", ["platform", "agent"])
def test_a_connection_that_never_speaks_is_closed(bounded: RunningPlatform, target: str) -> None:
    sock = connect(bounded, target)
    started = time.monotonic()
    assert read_all(sock) == b""
    assert time.monotonic() - started < HEAD_TIMEOUT + SLACK
    sock.close()


@pytest.mark.parametrize("target", ["platform", "agent"])
def test_an_idle_keep_alive_connection_is_closed(bounded: RunningPlatform, target: str) -> None:
    sock = connect(bounded, target)
    path = b"/msi/token" if target == "agent" else b"/common/discovery/instance"
    sock.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: " + host_of(target) + b"\r\n\r\n")
    first = sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 "), first[:100]
    assert not first.startswith(b"HTTP/1.1 408")
    started = time.monotonic()
    read_all(sock)  # the rest of the answer, then the close
    assert time.monotonic() - started < KEEP_ALIVE + SLACK
    sock.close()


def test_connections_beyond_the_limit_get_503_at_once_not_a_hang(bounded: RunningPlatform) -> None:
    opened = [connect(bounded, "platform") for _ in range(MAX_CONNECTIONS + 16)]
    try:
        answers = []
        for sock in opened:
            sock.settimeout(SLACK)
            with contextlib.suppress(OSError):
                sock.sendall(b"GET /common/discovery/instance HTTP/1.1\r\nHost: localhost\r\n\r\n")
            try:
                answers.append(sock.recv(200))
            except (TimeoutError, OSError) as exc:  # a hang would surface here
                answers.append(repr(exc).encode())
        shed = [a for a in answers if a.startswith(b"HTTP/1.1 503 ")]
        served = [a for a in answers if a.startswith(b"HTTP/1.1 200 ")]
        assert len(shed) >= 16, answers
        assert served, answers
        assert len(shed) + len(served) == len(answers), answers  # each answered, none left hanging
        assert all(b"retry-after: 1" in a.lower() for a in shed)
    finally:
        for sock in opened:
            sock.close()
    # Once they are gone the platform serves again.
    deadline = time.monotonic() + 10
    while True:
        sock = connect(bounded, "platform")
        sock.sendall(b"GET /common/discovery/instance HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        answer = read_all(sock)
        sock.close()
        if answer.startswith(b"HTTP/1.1 200 ") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:100]


# -- in-process: a bounded listener on a real socket ---------------------------------------------


@pytest.fixture
def listener() -> Iterator[tuple[int, ListenerLimits]]:
    limits = ListenerLimits(max_head_bytes=8192, max_in_flight=4, head_timeout=5, body_timeout=5)
    release = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/slow":
            await release.wait()
        if scope["path"] == "/read":
            while (await receive()).get("more_body"):
                pass
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = BoundedServer(bounded_config(app, limits=limits))
    runner = event_loop_runner()
    thread = threading.Thread(target=lambda: runner.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    yield sock.getsockname()[1], limits
    runner.get_loop().call_soon_threadsafe(release.set)
    server.should_exit = True
    thread.join(10)


def _get(port: int, path: bytes, extra: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n")
    return sock


def test_requests_beyond_the_in_flight_limit_get_503_with_retry_after(listener: tuple[int, ListenerLimits]) -> None:
    port, limits = listener
    busy = [_get(port, b"/slow") for _ in range(limits.max_in_flight)]
    time.sleep(0.3)  # let them start (an ordering aid, not an assertion)
    extra = [_get(port, b"/fast") for _ in range(3)]
    for sock in extra:
        answer = read_all(sock)
        assert answer.startswith(b"HTTP/1.1 503 "), answer[:100]
        assert b"retry-after: 1" in answer.lower() and b"temporarily_unavailable" in answer
    for sock in busy + extra:
        sock.close()


def test_the_header_limit_is_the_head_size(listener: tuple[int, ListenerLimits]) -> None:
    port, limits = listener
    fits = b"X-A: " + b"a" * (limits.max_head_bytes - 200) + b"\r\n"
    sock = _get(port, b"/fast", fits)
    assert sock.recv(100).startswith(b"HTTP/1.1 200 ")
    sock.close()
    over = b"X-A: " + b"a" * limits.max_head_bytes + b"\r\n"
    sock = _get(port, b"/fast", over)
    assert read_all(sock).startswith(b"HTTP/1.1 431 ")
    sock.close()
    # Split over many small writes it is still counted.
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"GET /fast HTTP/1.1\r\nHost: x\r\n")
    with contextlib.suppress(OSError):
        for _ in range(limits.max_head_bytes // 1000 + 2):
            sock.sendall(b"X-B: " + b"b" * 1000 + b"\r\n")
            time.sleep(0.001)
    assert read_all(sock).startswith(b"HTTP/1.1 431 ")
    sock.close()


def test_a_body_that_never_comes_is_timed_out(listener: tuple[int, ListenerLimits]) -> None:
    port, _ = listener
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)
    sock.sendall(b"POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
    answer = read_all(sock)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]


def test_limits_validate() -> None:
    with pytest.raises(ValueError):
        ListenerLimits(max_head_bytes=0)
    with pytest.raises(ValueError):
        ListenerLimits(head_timeout=0)
