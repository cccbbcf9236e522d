"""Boot-storm client (G5): many distinct token requests at once, timed from first connect to last answer.

Run as its own process pinned to the load core (`taskset -c 1 python -m benchkit.storm SPEC_JSON`) so
its CPU never lands on the agent's core. It prints one JSON line: elapsed seconds, status counts, how
many answers carried the token that was asked for, and its own CPU time (if that approaches the
elapsed time, the client, not the agent, was the bottleneck). Each worker owns one keep-alive
connection, as that many separate workloads booting at once would.
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

from benchkit.rawhttp import Connection, connect, get_request, read_response


@dataclass(frozen=True)
class StormSpec:
    url: str  # the token endpoint, without a query (plain http on loopback: the agent's listeners)
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

    def resource(self, index: int) -> str:
        return f"{self.resource_prefix}{index}"


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


async def _worker(spec: StormSpec, todo: Iterator[int], answers: dict[int, tuple[str, bytes]]) -> None:
    """Take the next request index until none are left; one connection, reopened after a failure."""
    connection: Connection | None = None
    for index in todo:  # a shared iterator: asyncio is single-threaded, so each index goes to one worker
        try:
            if connection is None:
                connection = await connect(spec.url)
            reader, writer = connection
            writer.write(get_request(spec.url, {**spec.params, "resource": spec.resource(index)}, spec.headers))
            status, body = await asyncio.wait_for(read_response(reader), spec.timeout_s)
            answers[index] = (str(status), body)
        except (TimeoutError, OSError, ValueError, asyncio.IncompleteReadError) as exc:
            answers[index] = (f"error:{type(exc).__name__}", b"")
            if connection is not None:
                connection[1].close()
            connection = None
    if connection is not None:
        connection[1].close()


def carries_token_for(body: bytes, resource: str) -> bool:
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
        status == "200" and carries_token_for(body, spec.resource(index)) for index, (status, body) in answers.items()
    )
    return StormResult(elapsed, dict(statuses), tokens, cpu)


def main(argv: list[str]) -> int:
    result = asyncio.run(storm(StormSpec.from_json(argv[0])))
    print(result.to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
