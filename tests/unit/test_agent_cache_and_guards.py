"""The agent's token cache (G4: no signing on a hit, one upstream call per concurrent miss) and guards."""

from __future__ import annotations

import asyncio

import pytest

from lanyard.agent.cache import REFRESH_MARGIN, TokenCache
from lanyard.agent.guards import allowed_hosts_for, headers_of, refusal
from lanyard.agent.workloads import WorkloadRegistry
from lanyard.core.clock import FrozenClock
from lanyard.protocol.msi import IssuedToken, MsiError, parse_app_service, parse_imds


def test_concurrent_misses_coalesce_and_hits_do_not_fetch() -> None:
    clock = FrozenClock(1_000_000.0)
    cache = TokenCache(clock)
    calls = 0
    started = asyncio.Event()
    release = asyncio.Event()

    async def fetch() -> IssuedToken:
        nonlocal calls
        calls += 1
        started.set()
        await release.wait()
        return IssuedToken(f"token-{calls}", int(clock.now()) + 3600, int(clock.now()), "client")

    async def open_gate() -> None:
        # The fetch task is scheduled after every getter task, so once it runs all 100 are waiting.
        await started.wait()
        release.set()

    async def scenario() -> list[IssuedToken]:
        first = await asyncio.gather(*(cache.get("oid", "res", fetch) for _ in range(100)), open_gate())
        second = await asyncio.gather(*(cache.get("oid", "res", fetch) for _ in range(100)))
        return [*(t for t in first if t is not None), *second]

    tokens = asyncio.run(scenario())
    assert calls == 1 and cache.upstream_calls == 1
    assert len(tokens) == 200 and {t.access_token for t in tokens} == {"token-1"}
    assert cache.hits == 100


def test_distinct_keys_fetch_separately_and_failures_are_shared() -> None:
    cache = TokenCache(FrozenClock(1_000_000.0))
    calls: list[str] = []
    started = asyncio.Event()
    release = asyncio.Event()

    async def failing() -> IssuedToken:
        calls.append("x")
        started.set()
        await release.wait()
        raise RuntimeError("directory down")

    async def open_gate() -> None:
        await started.wait()
        release.set()

    async def scenario() -> list[object]:
        getters = (cache.get("oid", "res", failing) for _ in range(10))
        return await asyncio.gather(*getters, open_gate(), return_exceptions=True)

    results = asyncio.run(scenario())[:10]
    assert len(calls) == 1 and all(isinstance(r, RuntimeError) for r in results)


def test_refresh_ahead_and_expiry() -> None:
    clock = FrozenClock(1_000_000.0)
    cache = TokenCache(clock)
    minted: list[int] = []

    async def fetch() -> IssuedToken:
        minted.append(1)
        return IssuedToken(f"t{len(minted)}", int(clock.now()) + 3600, int(clock.now()), "c")

    async def scenario() -> None:
        assert (await cache.get("o", "r", fetch)).access_token == "t1"
        clock.advance(1900)  # past half life: served from cache while a refresh runs
        assert (await cache.get("o", "r", fetch)).access_token == "t1"
        await cache.settle()
        assert (await cache.get("o", "r", fetch)).access_token == "t2"
        clock.advance(3600 - REFRESH_MARGIN + 1)  # too close to expiry to hand out: fetch
        assert (await cache.get("o", "r", fetch)).access_token == "t3"

    asyncio.run(scenario())
    assert len(minted) == 3


def test_forget_drops_tokens_of_removed_identities() -> None:
    clock = FrozenClock(1_000_000.0)
    cache = TokenCache(clock)

    async def fetch() -> IssuedToken:
        return IssuedToken("t", int(clock.now()) + 3600, int(clock.now()), "c")

    async def scenario() -> None:
        await cache.get("gone", "r", fetch)
        await cache.get("kept", "r", fetch)
        cache.forget({"gone"})

    asyncio.run(scenario())
    assert len(cache) == 1


@pytest.mark.parametrize(
    ("headers", "refused"),
    [
        ({b"host": b"127.0.0.1:5000"}, False),
        ({b"host": b"localhost:5000"}, False),
        ({b"host": b"evil.example:5000"}, True),
        ({b"host": b"127.0.0.1:5000", b"x-forwarded-for": b"1.2.3.4"}, True),
        ({b"host": b"127.0.0.1:5000", b"forwarded": b"for=1.2.3.4"}, True),
        ({b"host": b"127.0.0.1:5000", b"x-real-ip": b"1.2.3.4"}, True),
        ({b"host": b"127.0.0.1:5000", b"origin": b"https://evil"}, True),
        ({b"host": b"127.0.0.1:5000", b"sec-fetch-mode": b"cors"}, True),
        ({}, True),
    ],
)
def test_guards(headers: dict[bytes, bytes], refused: bool) -> None:
    assert (refusal(headers_of(headers.items()), allowed_hosts_for(5000)) is not None) == refused


def test_header_registry_forgets_stopped_workloads() -> None:
    registry = WorkloadRegistry()
    workload = registry.start("/subscriptions/x", "appservice")
    assert registry.by_header(workload.header) is workload
    assert registry.by_header(workload.header + "x") is None and registry.by_header("") is None
    registry.stop(workload)
    assert registry.by_header(workload.header) is None


@pytest.mark.parametrize(
    "query",
    [
        {"api-version": "2019-08-01"},
        {"api-version": "2019-08-02", "resource": "https://x"},
        {"api-version": "2019-08-01", "resource": "https://x", "client_id": "a", "mi_res_id": "b"},
        {"api-version": "2019-08-01", "resource": "has space"},
    ],
)
def test_app_service_request_refusals(query: dict[str, str]) -> None:
    with pytest.raises(MsiError) as caught:
        parse_app_service(query)
    assert caught.value.status == 400


def test_selector_spellings() -> None:
    for name, kind in [
        ("client_id", "client_id"),
        ("clientid", "client_id"),
        ("object_id", "object_id"),
        ("principal_id", "object_id"),
        ("mi_res_id", "resource_id"),
        ("msi_res_id", "resource_id"),
        ("resource_id", "resource_id"),
    ]:
        request = parse_imds({"api-version": "2018-02-01", "resource": "https://x", name: "v"})
        assert request.selector == (kind, "v")
