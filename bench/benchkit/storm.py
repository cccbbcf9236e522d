"""Boot-storm client (G5): many distinct token requests at once, timed from first send to last answer.

Run as its own process pinned to the load core (`taskset -c 1 python -m benchkit.storm SPEC_JSON`) so
its CPU never lands on the agent's core and never competes with the orchestrating script. It prints
one JSON line: elapsed seconds, status counts, how many answers carried a token, and its own CPU
time (if that approaches the elapsed time, the client, not the agent, was the bottleneck).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class StormSpec:
    url: str  # the token endpoint, without a query
    params: dict[str, str]  # the fixed query (api-version and the like)
    headers: dict[str, str]
    resource_prefix: str  # request i asks for resource f"{prefix}{i}": a cold (identity, resource) pair
    count: int
    concurrency: int
    timeout_s: float

    @classmethod
    def from_json(cls, text: str) -> StormSpec:
        raw = json.loads(text)
        return cls(
            raw["url"], raw["params"], raw["headers"], raw["resource_prefix"], raw["count"], raw["concurrency"],
            raw["timeout_s"],
        )

    def to_json(self) -> str:
        return json.dumps(self.__dict__)


@dataclass(frozen=True)
class StormResult:
    elapsed_s: float
    statuses: dict[str, int]  # "200": n, ...; "error:ReadTimeout": n for transport failures
    tokens: int  # 200 answers whose body carried an access_token
    client_cpu_s: float

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> StormResult:
        raw: dict[str, Any] = json.loads(text)
        return cls(raw["elapsed_s"], raw["statuses"], raw["tokens"], raw["client_cpu_s"])


async def _one(client: httpx.AsyncClient, spec: StormSpec, resource: str, gate: asyncio.Semaphore) -> tuple[str, bool]:
    async with gate:
        try:
            response = await client.get(spec.url, params={**spec.params, "resource": resource}, headers=spec.headers)
        except httpx.HTTPError as exc:
            return f"error:{type(exc).__name__}", False
    has_token = response.status_code == 200 and "access_token" in response.json()
    return str(response.status_code), has_token


async def storm(spec: StormSpec) -> StormResult:
    # The pool is as wide as the concurrency so every request in flight has its own connection, as
    # that many separate workloads booting at once would.
    limits = httpx.Limits(max_connections=spec.concurrency, max_keepalive_connections=spec.concurrency)
    gate = asyncio.Semaphore(spec.concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=spec.timeout_s) as client:
        resources = [f"{spec.resource_prefix}{i}" for i in range(spec.count)]
        cpu0, start = time.process_time(), time.perf_counter()
        outcomes = await asyncio.gather(*(_one(client, spec, r, gate) for r in resources))
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu0
    statuses = Counter(status for status, _ in outcomes)
    return StormResult(elapsed, dict(statuses), sum(ok for _, ok in outcomes), cpu)


def main(argv: list[str]) -> int:
    result = asyncio.run(storm(StormSpec.from_json(argv[0])))
    print(result.to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
