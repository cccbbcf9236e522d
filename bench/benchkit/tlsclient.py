"""A blocking keep-alive HTTPS client for one loopback port: what the cluster benchmark's trials
send (a vault read, an ARM PUT, a token request), at a few tens of microseconds of client CPU per
request instead of httpx's few hundred, so a poll every millisecond stays cheap on a 2-core machine.

HTTP/1.1 only, Content-Length or chunked framing, one request at a time per connection. A
connection the server closed while idle is reopened once, before any byte of the answer was read.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

import orjson

from benchkit.harness import assert_loopback

MAX_BODY = 1 << 22


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)

    def object(self) -> dict[str, Any]:
        """The body as a JSON object, or {} when it is not one."""
        try:
            value = orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return {}
        return value if isinstance(value, dict) else {}


class Https:
    """One keep-alive connection to https://127.0.0.1:port, certificate checked against `ca`."""

    def __init__(self, port: int, ca: str, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
        assert_loopback(f"https://{host}:{port}/")
        self.address = (host, port)
        self.timeout = timeout
        self.context = ssl.create_default_context(cafile=ca)
        self._sock: ssl.SSLSocket | None = None
        self._stream: BinaryIO | None = None

    def _connect(self) -> BinaryIO:
        raw = socket.create_connection(self.address, timeout=self.timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = self.context.wrap_socket(raw, server_hostname=self.address[0])
        self._stream = self._sock.makefile("rb")
        return self._stream

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
        if self._sock is not None:
            self._sock.close()
        self._sock = self._stream = None

    def __enter__(self) -> Https:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        host: str | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
    ) -> Reply:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host or f'{self.address[0]}:{self.address[1]}'}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if body or method in ("PUT", "POST", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        wire = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        for attempt in (1, 2):
            reused = self._sock is not None
            stream = self._stream if self._stream is not None else self._connect()
            try:
                assert self._sock is not None
                self._sock.sendall(wire)
                status_line = stream.readline()
                if not status_line:
                    raise ConnectionResetError("connection closed before the answer")
            except (ConnectionError, ssl.SSLError, OSError):
                self.close()
                if attempt == 2 or not reused:
                    raise
                continue
            return self._read(stream, status_line)
        raise AssertionError("unreachable")

    def _read(self, stream: BinaryIO, status_line: bytes) -> Reply:
        status = int(status_line.split(b" ", 2)[1])
        length: int | None = None
        chunked = close = False
        while (line := stream.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                close = True
        if chunked:
            parts = []
            while (size := int(stream.readline().split(b";")[0], 16)) > 0:
                parts.append(stream.read(size))
                stream.readline()
            stream.readline()
            body = b"".join(parts)
        else:
            body = stream.read(min(length or 0, MAX_BODY))
        if close:
            self.close()
        return Reply(status, body)
