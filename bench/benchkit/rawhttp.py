"""A minimal HTTP/1.1 client over asyncio streams, for the load the benchmarks send themselves.

httpx spent ~8 ms of CPU per request at 200 connections (its pool scans every queued request on
every event), which made the client the bottleneck it was meant to measure, and it cannot put many
requests on the wire within the same millisecond. This client does only what the agent's endpoints
need: plain-http GET on loopback, a Content-Length body, keep-alive.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Mapping
from typing import BinaryIO
from urllib.parse import urlencode, urlsplit

from benchkit.harness import assert_loopback

MAX_BODY = 1 << 20
Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def get_request(url: str, params: Mapping[str, str], headers: Mapping[str, str]) -> bytes:
    parts = urlsplit(url)
    lines = [f"GET {parts.path or '/'}?{urlencode(params)} HTTP/1.1", f"Host: {parts.netloc}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def connect(url: str) -> Connection:
    assert_loopback(url)
    parts = urlsplit(url)
    return await asyncio.open_connection(parts.hostname, parts.port)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Status and body of one response (Content-Length framing, which every agent answer uses)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    if length > MAX_BODY:
        raise ValueError(f"response body of {length} bytes")
    return status, await reader.readexactly(length)


async def simultaneous(url: str, requests: list[bytes], timeout_s: float) -> list[tuple[int, bytes]]:
    """Open one connection per request first, then write every request in one tight loop, so all of
    them reach the server within about a millisecond: the way to race a cache's first miss."""
    connections = await asyncio.gather(*(connect(url) for _ in requests))
    try:
        for (_, writer), request in zip(connections, requests, strict=True):
            writer.write(request)
        return await asyncio.wait_for(asyncio.gather(*(read_response(reader) for reader, _ in connections)), timeout_s)
    finally:
        for _, writer in connections:
            writer.close()


def timed_get(url: str, request: bytes, timeout_s: float = 5.0) -> tuple[int, float]:
    """One request on a new connection, blocking: (status, seconds from connect to the full answer).
    A new connection each time, as the SDKs' IMDS probe opens one; a blocking socket keeps the
    client's own overhead to a few microseconds."""
    assert_loopback(url)
    parts = urlsplit(url)
    start = time.perf_counter()
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout_s) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(request)
        with sock.makefile("rb") as stream:
            status = _read_sync(stream)
        return status, time.perf_counter() - start


def _read_sync(stream: BinaryIO) -> int:
    status_line = stream.readline()
    status = int(status_line.split(b" ", 2)[1])
    length = 0
    while (line := stream.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    stream.read(min(length, MAX_BODY))
    return status
