"""FeedCache with a frozen clock: LRU bound, TTL, per-key invalidation, and stale fills dropped."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lanyard.core.cache import FeedCache
from lanyard.core.clock import FrozenClock

TTL = 60.0


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(1_800_000_000.0)


def test_lru_eviction_at_maxsize(clock: FrozenClock) -> None:
    cache: FeedCache[str, int] = FeedCache(maxsize=3, ttl=TTL, clock=clock)
    for i, key in enumerate("abc"):
        assert cache.put(key, i, cache.epoch())
    assert cache.get("a") == 0  # touch a: b is now the least recently used
    assert cache.put("d", 3, cache.epoch())
    assert len(cache) == 3
    assert "b" not in cache
    assert [cache.get(k) for k in "acd"] == [0, 2, 3]
    # Bounded by eviction one entry at a time, never emptied wholesale.
    for i in range(10):
        cache.put(f"n{i}", i, cache.epoch())
        assert len(cache) == 3
    assert [cache.get(f"n{i}") for i in (7, 8, 9)] == [7, 8, 9]


def test_ttl_expiry_when_the_clock_advances(clock: FrozenClock) -> None:
    cache: FeedCache[str, str] = FeedCache(maxsize=10, ttl=TTL, clock=clock)
    cache.put("a", "old", cache.epoch())
    clock.advance(TTL / 2)
    cache.put("b", "newer", cache.epoch())
    clock.advance(TTL / 2 - 1)  # a: 1 s left
    assert cache.get("a") == "old"
    assert "a" in cache
    clock.advance(2)  # a: expired; b: TTL/2 - 1 s left
    assert cache.get("a") is None
    assert "a" not in cache
    assert cache.get("b") == "newer"
    clock.advance(TTL)
    assert cache.get("b") is None
    assert len(cache) == 0


def test_a_frozen_clock_never_expires_anything(clock: FrozenClock) -> None:
    cache: FeedCache[str, str] = FeedCache(maxsize=10, ttl=TTL, clock=clock)
    cache.put("a", "v", cache.epoch())
    for _ in range(100):
        assert cache.get("a") == "v"


def test_invalidate_removes_only_that_key(clock: FrozenClock) -> None:
    cache: FeedCache[str, int] = FeedCache(maxsize=10, ttl=TTL, clock=clock)
    for i, key in enumerate("abc"):
        cache.put(key, i, cache.epoch())
    cache.invalidate("b")
    assert "b" not in cache
    assert cache.get("b") is None
    assert cache.get("a") == 0 and cache.get("c") == 2
    assert len(cache) == 2
    cache.invalidate("never-there")  # harmless
    assert len(cache) == 2


def test_invalidate_where_removes_the_matching_keys(clock: FrozenClock) -> None:
    cache: FeedCache[tuple[str, str], int] = FeedCache(maxsize=10, ttl=TTL, clock=clock)
    for i, key in enumerate([("v1", "a"), ("v1", "b"), ("v2", "a")]):
        cache.put(key, i, cache.epoch())
    epoch = cache.epoch()
    cache.invalidate_where(lambda k: k[0] == "v1")
    assert (("v1", "a") in cache, ("v1", "b") in cache, ("v2", "a") in cache) == (False, False, True)
    assert not cache.put(("v1", "a"), 9, epoch)  # a fill begun before it is stale too


def test_a_stale_fill_is_dropped(clock: FrozenClock) -> None:
    cache: FeedCache[str, str] = FeedCache(maxsize=10, ttl=TTL, clock=clock)
    epoch = cache.epoch()  # a reader takes its snapshot, then reads the source ...
    cache.invalidate("k")  # ... a writer commits and the feed invalidates k ...
    assert cache.put("k", "read before the write", epoch) is False  # ... and the reader's fill is dropped
    assert "k" not in cache
    assert cache.get("k") is None
    # A fill that began after the invalidation is kept.
    assert cache.put("k", "fresh", cache.epoch()) is True
    assert cache.get("k") == "fresh"


def test_load_calls_the_loader_once_and_caches(clock: FrozenClock) -> None:
    cache: FeedCache[str, str] = FeedCache(maxsize=10, ttl=TTL, clock=clock)
    calls: list[str] = []

    def loader() -> str:
        calls.append("k")
        return f"value-{len(calls)}"

    assert cache.load("k", loader) == "value-1"
    assert cache.load("k", loader) == "value-1"
    assert calls == ["k"]
    assert cache.get("k") == "value-1"
    # After an invalidation the loader runs again; after the TTL too.
    cache.invalidate("k")
    assert cache.load("k", loader) == "value-2"
    clock.advance(TTL + 1)
    assert cache.load("k", loader) == "value-3"
    assert cache.load("k", loader) == "value-3"
    assert len(calls) == 3


def test_load_does_not_cache_what_an_invalidation_during_the_load_made_stale(clock: FrozenClock) -> None:
    cache: FeedCache[str, str] = FeedCache(maxsize=10, ttl=TTL, clock=clock)

    def racing_loader() -> str:
        cache.invalidate("k")  # a change to k is applied while the loader reads the source
        return "stale"

    assert cache.load("k", racing_loader) == "stale"  # the caller still gets what it read ...
    assert "k" not in cache  # ... but it is not served to the next one
    assert cache.load("k", lambda: "fresh") == "fresh"
    assert cache.get("k") == "fresh"


def test_a_loader_that_fails_caches_nothing(clock: FrozenClock) -> None:
    cache: FeedCache[str, str] = FeedCache(maxsize=10, ttl=TTL, clock=clock)

    def failing() -> str:
        raise LookupError("source down")

    with pytest.raises(LookupError):
        cache.load("k", failing)
    assert "k" not in cache
    assert cache.load("k", lambda: "v") == "v"


def test_clear(clock: FrozenClock) -> None:
    cache: FeedCache[str, int] = FeedCache(maxsize=10, ttl=TTL, clock=clock)
    for i, key in enumerate("abc"):
        cache.put(key, i, cache.epoch())
    epoch = cache.epoch()
    cache.clear()
    assert len(cache) == 0
    assert all(cache.get(k) is None for k in "abc")
    assert cache.put("a", 1, epoch) is False  # a fill begun before the clear is stale
    assert cache.put("a", 1, cache.epoch()) is True
    assert cache.get("a") == 1


# -- property: never a value invalidated after it was stored ---------------------------------------

KEYS = ("a", "b", "c", "d")


@dataclass(frozen=True)
class Snapshot:
    """A reader: takes the epoch (before reading the source) and later fills with what it read."""


@dataclass(frozen=True)
class Fill:
    key: str
    reader: int  # which snapshot (index, modulo the snapshots taken so far); none taken: a fresh epoch


@dataclass(frozen=True)
class Invalidate:
    key: str


@dataclass(frozen=True)
class Clear:
    pass


@dataclass(frozen=True)
class Get:
    key: str


operations = st.lists(
    st.one_of(
        st.builds(Snapshot),
        st.builds(Fill, st.sampled_from(KEYS), st.integers(0, 20)),
        st.builds(Invalidate, st.sampled_from(KEYS)),
        st.builds(Clear),
        st.builds(Get, st.sampled_from(KEYS)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(operations, st.integers(1, len(KEYS) + 1))
def test_never_serves_a_value_invalidated_after_it_was_stored(
    ops: list[Snapshot | Fill | Invalidate | Clear | Get], maxsize: int
) -> None:
    cache: FeedCache[str, int] = FeedCache(maxsize=maxsize, ttl=TTL, clock=FrozenClock())
    model: dict[str, int] = {}  # what a cache that forgot nothing (no eviction) would hold
    snapshots: list[tuple[int, int]] = []  # (cache epoch, step) per reader
    invalidated_at: dict[str, int] = {}  # key -> the step of its newest invalidation (or clear)
    read_at: dict[int, int] = {}  # stored value -> the step its reader took its snapshot
    evicting = maxsize < len(KEYS)
    for step, op in enumerate(ops):
        if isinstance(op, Snapshot):
            snapshots.append((cache.epoch(), step))
        elif isinstance(op, Fill):
            epoch, taken = snapshots[op.reader % len(snapshots)] if snapshots else (cache.epoch(), step)
            value = step  # unique: tells which fill a later get returns
            # Kept exactly when nothing was invalidated (any key) since the reader's snapshot.
            fresh = all(when < taken for when in invalidated_at.values())
            assert cache.put(op.key, value, epoch) is fresh
            if fresh:
                model[op.key] = value
                read_at[value] = taken
        elif isinstance(op, Invalidate):
            cache.invalidate(op.key)
            model.pop(op.key, None)
            invalidated_at[op.key] = step
        elif isinstance(op, Clear):
            cache.clear()
            model.clear()
            invalidated_at.update(dict.fromkeys(KEYS, step))
        else:
            got = cache.get(op.key)
            if got is not None:
                # The property: what is served was read after the key's last invalidation.
                assert read_at[got] > invalidated_at.get(op.key, -1), (op.key, got)
                assert got == model.get(op.key)
            elif not evicting:
                assert op.key not in model  # with room for every key nothing may go missing either
        assert len(cache) <= maxsize
