"""The agent's token cache is bounded (LRU), coalesces misses, and backs off after a failed upstream call."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from lanyard.agent.cache import BACKOFF_CAP, BACKOFF_START, Fetch, TokenCache
from lanyard.agent.upstream import UpstreamError
from lanyard.core.clock import FrozenClock
from lanyard.protocol.msi import IssuedToken

LIFETIME = 3600
HALF_LIFE = LIFETIME // 2


class Directory:
    """A stand-in for the upstream call: counts calls per key, fails while told to, can hold calls."""

    def __init__(self, clock: FrozenClock) -> None:
        self.clock = clock
        self.calls: dict[str, int] = {}
        self.failing = False
        self.gate: asyncio.Event | None = None
        self.started = asyncio.Event()

    def total(self) -> int:
        return sum(self.calls.values())

    def fetch(self, object_id: str) -> Fetch:
        async def run() -> IssuedToken:
            self.calls[object_id] = self.calls.get(object_id, 0) + 1
            self.started.set()
            if self.gate is not None:
                await self.gate.wait()
            if self.failing:
                raise UpstreamError("the directory is unreachable (ConnectError)", 503)
            now = int(self.clock.now())
            return IssuedToken(f"{object_id}-{self.calls[object_id]}", now + LIFETIME, now, "client")

        return run

    async def get(self, cache: TokenCache, object_id: str) -> IssuedToken:
        return await cache.get(object_id, "https://vault.example", self.fetch(object_id))


def run(scenario: Coroutine[Any, Any, None]) -> None:
    asyncio.run(scenario)


def test_bounded_and_least_recently_used_goes_first() -> None:
    async def scenario() -> None:
        clock = FrozenClock()
        cache = TokenCache(clock, maxsize=2)
        directory = Directory(clock)
        await directory.get(cache, "a")
        await directory.get(cache, "b")
        await directory.get(cache, "a")  # a hit: b is now the least recently used
        await directory.get(cache, "c")
        assert len(cache) == 2
        await directory.get(cache, "a")
        await directory.get(cache, "c")
        assert directory.calls == {"a": 1, "b": 1, "c": 1}
        await directory.get(cache, "b")  # evicted, so fetched again; a goes out in its place
        assert directory.calls["b"] == 2 and len(cache) == 2
        await directory.get(cache, "c")
        await directory.get(cache, "a")
        assert directory.calls == {"a": 2, "b": 2, "c": 1}

    run(scenario())


def test_concurrent_getters_make_one_upstream_call() -> None:
    async def scenario() -> None:
        clock = FrozenClock()
        cache = TokenCache(clock)
        directory = Directory(clock)
        directory.gate = asyncio.Event()
        getters = [asyncio.create_task(directory.get(cache, "a")) for _ in range(50)]
        # The one fetch task is queued behind all 50 getters: once it runs, every getter is waiting.
        await directory.started.wait()
        directory.gate.set()
        tokens = await asyncio.gather(*getters)
        assert directory.calls == {"a": 1} and cache.upstream_calls == 1
        assert {t.access_token for t in tokens} == {"a-1"}

    run(scenario())


def test_failed_refresh_backs_off_and_serves_the_cached_token() -> None:
    async def scenario() -> None:
        clock = FrozenClock()
        cache = TokenCache(clock)
        directory = Directory(clock)
        await directory.get(cache, "a")
        clock.advance(HALF_LIFE + 1)
        directory.failing = True
        assert (await directory.get(cache, "a")).access_token == "a-1"  # starts a refresh, which fails
        await cache.settle()
        assert directory.total() == 2

        for _ in range(20):  # within the backoff window: cached token, no upstream call
            assert (await directory.get(cache, "a")).access_token == "a-1"
        clock.advance(BACKOFF_START - 0.01)
        assert (await directory.get(cache, "a")).access_token == "a-1"
        await cache.settle()
        assert directory.total() == 2

        clock.advance(0.01)  # the backoff has passed: exactly one more refresh
        for _ in range(20):
            assert (await directory.get(cache, "a")).access_token == "a-1"
        await cache.settle()
        assert directory.total() == 3

        clock.advance(BACKOFF_START)  # the delay doubled: still backing off
        assert (await directory.get(cache, "a")).access_token == "a-1"
        await cache.settle()
        assert directory.total() == 3
        clock.advance(BACKOFF_START)
        directory.failing = False
        assert (await directory.get(cache, "a")).access_token == "a-1"
        await cache.settle()
        assert (await directory.get(cache, "a")).access_token == "a-4"

    run(scenario())


def test_failing_miss_backs_off_and_reraises() -> None:
    async def scenario() -> None:
        clock = FrozenClock()
        cache = TokenCache(clock)
        directory = Directory(clock)
        directory.failing = True
        with pytest.raises(UpstreamError):
            await directory.get(cache, "a")
        delays: list[float] = []
        for _ in range(8):
            calls = directory.total()
            waited = 0.0
            while True:  # fail fast with the same kind of error, without calling upstream, until the delay passes
                with pytest.raises(UpstreamError) as caught:
                    await directory.get(cache, "a")
                assert caught.value.status == 503
                if directory.total() > calls:
                    break
                clock.advance(0.5)
                waited += 0.5
            delays.append(waited)
            assert directory.total() == calls + 1
        assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, BACKOFF_CAP, BACKOFF_CAP, BACKOFF_CAP]

    run(scenario())


def test_success_resets_the_backoff() -> None:
    async def scenario() -> None:
        clock = FrozenClock()
        cache = TokenCache(clock)
        directory = Directory(clock)
        directory.failing = True
        for _ in range(3):
            with pytest.raises(UpstreamError):
                await directory.get(cache, "a")
            clock.advance(BACKOFF_CAP)
        directory.failing = False
        assert (await directory.get(cache, "a")).access_token == "a-4"

        clock.advance(LIFETIME)  # expired: a miss, which fails once
        directory.failing = True
        with pytest.raises(UpstreamError):
            await directory.get(cache, "a")
        clock.advance(BACKOFF_START)  # back to the first delay, not the fourth
        with pytest.raises(UpstreamError):
            await directory.get(cache, "a")
        assert directory.total() == 6

    run(scenario())


def test_forget_drops_tokens_and_backoff() -> None:
    async def scenario() -> None:
        clock = FrozenClock()
        cache = TokenCache(clock)
        directory = Directory(clock)
        await directory.get(cache, "kept")
        await directory.get(cache, "gone")
        clock.advance(LIFETIME)
        directory.failing = True
        with pytest.raises(UpstreamError):
            await directory.get(cache, "gone")
        cache.forget({"gone"})
        assert len(cache) == 1
        with pytest.raises(UpstreamError):
            await directory.get(cache, "gone")  # no backoff left: this one reaches upstream
        assert directory.calls["gone"] == 3

    run(scenario())


def test_forget_during_a_call_keeps_nothing_of_it() -> None:
    async def scenario() -> None:
        clock = FrozenClock()
        cache = TokenCache(clock)
        directory = Directory(clock)
        directory.gate = asyncio.Event()
        getter = asyncio.create_task(directory.get(cache, "gone"))
        await directory.started.wait()
        cache.forget({"gone"})
        directory.gate.set()
        assert (await getter).access_token == "gone-1"  # the waiter is still answered
        assert len(cache) == 0

    run(scenario())


def test_wall_clock_stepped_back_ends_the_backoff() -> None:
    async def scenario() -> None:
        clock = FrozenClock()
        cache = TokenCache(clock)
        directory = Directory(clock)
        directory.failing = True
        with pytest.raises(UpstreamError):
            await directory.get(cache, "a")
        clock.advance(-3600)
        with pytest.raises(UpstreamError):
            await directory.get(cache, "a")
        assert directory.total() == 2

    run(scenario())
