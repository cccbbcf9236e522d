"""Boot-storm client (G5): many distinct token requests at once, timed from first connect to last answer.

Run as its own process pinned to the load core (`taskset -c 1 python -m benchkit.storm SPEC_JSON`) so
its CPU never lands on the agent's core. It prints one JSON line: elapsed seconds, status counts, how
many answers carried the token that was asked for, and its own CPU time (if that approaches the
elapsed time, the client, not the agent, was the bottleneck).

The client is raw asyncio HTTP/1.1, not httpx: httpx spent ~8 ms of CPU per request at 200
connections (its pool scans every queued request on every event), which made the client the
bottleneck it was meant to measure. Each worker owns one keep-alive connection, as that many
separate workloads booting at once would.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

MAX_BODY = 1 << 20


@dataclass(frozen=True)
class StormSpec:
    url: str  # the token endpoint, without a query (http on loopback: the agent's listeners)
    params: dict[str, str]  # the fixed query (api-version and the like)
    headers: dict[str, str]
    resource_prefix: str  # request i asks for f"{prefix}{i}": a cold (identity, resource) pair
    count: int
    concurrency: int
    timeout_s: float

    @classmethod
    def from_json(cls, text: str) -> StormSpec:
        return cls(**json.loads(text))

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    def request(self, resource: str) -> bytes:
        parts = urlsplit(self.url)
        query = urlencode({**self.params, "resource": resource})
        lines = [f"GET {parts.path}?{query} HTTP/1.1", f"Host: {parts.netloc}"]
        lines += [f"{name}: {value}" for name, value in self.headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass(frozen=True)
class StormResult:
    elapsed_s: float
    statuses: dict[str, int]  # "200": n, ...; "error:TimeoutError": n for transport failures
    tokens: int  # 200 answers carrying a token for exactly the resource asked for
    client_cpu_s: float

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> StormResult:
        return cls(**json.loads(text))


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
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


async def _worker(spec: StormSpec, todo: Iterator[int], answers: dict[int, tuple[str, bytes]]) -> None:
    """Take the next request index until none are left; one connection, reopened after a failure."""
    parts = urlsplit(spec.url)
    connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    for index in todo:  # a shared iterator: asyncio is single-threaded, so each index goes to one worker
        try:
            if connection is None:
                connection = await asyncio.open_connection(parts.hostname, parts.port)
            reader, writer = connection
            writer.write(spec.request(f"{spec.resource_prefix}{index}"))
            status, body = await asyncio.wait_for(_read_response(reader), spec.timeout_s)
            answers[index] = (str(status), body)
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.TimeoutError) as exc:
            answers[index] = (f"error:{type(exc).__name__}", b"")
            if connection is not None:
                connection[1].close()
            connection = None
    if connection is not None:
        connection[1].close()


def _carries_token_for(body: bytes, resource: str) -> bool:
    """The answer names the resource asked for and its JWT's audience is that resource."""
    try:
        doc: dict[str, Any] = json.loads(body)
        claims_b64 = str(doc["access_token"]).split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(claims_b64 + "=" * (-len(claims_b64) % 4)))
    except (ValueError, KeyError, IndexError, TypeError):
        return False
    return bool(doc.get("resource") == resource and claims.get("aud") == resource)


async def storm(spec: StormSpec) -> StormResult:
    answers: dict[int, tuple[str, bytes]] = {}
    todo = iter(range(spec.count))
    cpu0, start = time.process_time(), time.perf_counter()
    await asyncio.gather(*(_worker(spec, todo, answers) for _ in range(min(spec.concurrency, spec.count))))
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu0
    # Checked after the clock stops, so checking costs the measurement nothing.
    statuses = Counter(status for status, _ in answers.values())
    tokens = sum(
        status == "200" and _carries_token_for(body, f"{spec.resource_prefix}{index}")
        for index, (status, body) in answers.items()
    )
    return StormResult(elapsed, dict(statuses), tokens, cpu)


def main(argv: list[str]) -> int:
    result = asyncio.run(storm(StormSpec.from_json(argv[0])))
    print(result.to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
