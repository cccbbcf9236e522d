"""Keyed token buckets and in-flight caps: bounded memory, an injectable clock.

Callers turn a refusal into their own protocol's 429 (IMDS, App Service, OAuth); this module only
counts. Memory is bounded by an LRU of buckets: evicting a bucket forgets it (the key starts full
again), which can only ever make a limit more lenient, never lock anyone out.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar

from cachetools import LRUCache

from lanyard.core.clock import Clock, SystemClock

K = TypeVar("K", bound=Hashable)
DEFAULT_MAX_KEYS = 65_536


@dataclass(frozen=True)
class Rate:
    """`per_second` tokens refill a bucket holding at most `burst`. A rate of 0 means unlimited."""

    per_second: float
    burst: float

    def __post_init__(self) -> None:
        if not (self.per_second >= 0 and self.burst >= 0) or math.isinf(self.per_second):
            raise ValueError("a rate and its burst must be finite and not negative")
        if self.per_second > 0 and self.burst < 1:
            raise ValueError("a limited rate needs a burst of at least 1")

    @property
    def limited(self) -> bool:
        return self.per_second > 0

    @classmethod
    def unlimited(cls) -> Rate:
        return cls(0.0, 0.0)

    @classmethod
    def of(cls, per_second: float, burst: float) -> Rate:
        """From settings: 0 is no limit; a burst below one request is one request."""
        return cls(per_second, max(1.0, burst)) if per_second > 0 else cls.unlimited()


def retry_after_header(seconds: float) -> str:
    """Whole seconds, at least 1: what clients parse (azure-core reads an int or an HTTP date)."""
    return str(max(1, math.ceil(seconds)))


class TokenBuckets(Generic[K]):
    """One bucket per key. `take` spends, `wait` only looks: both answer 0.0 when a token is there,
    else the seconds until one will be."""

    def __init__(self, rate: Rate, clock: Clock | None = None, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        self.rate = rate
        self.clock = clock or SystemClock()
        self._buckets: LRUCache[K, list[float]] = LRUCache(maxsize=max_keys)
        # The directory authenticates some clients on a worker thread; the buckets stay consistent.
        self._lock = threading.Lock()

    def _refill(self, key: K, now: float) -> list[float]:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = [self.rate.burst, now]
            self._buckets[key] = bucket
            return bucket
        # A wall clock stepped backwards must not drain anyone: no time passed, that's all.
        elapsed = max(0.0, now - bucket[1])
        bucket[0] = min(self.rate.burst, bucket[0] + elapsed * self.rate.per_second)
        bucket[1] = max(bucket[1], now)
        return bucket

    def take(self, key: K, cost: float = 1.0) -> float:
        if not self.rate.limited:
            return 0.0
        with self._lock:
            bucket = self._refill(key, self.clock.now())
            if bucket[0] >= cost:
                bucket[0] -= cost
                return 0.0
            return (cost - bucket[0]) / self.rate.per_second

    def wait(self, key: K, cost: float = 1.0) -> float:
        if not self.rate.limited:
            return 0.0
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                return 0.0
            bucket = self._refill(key, self.clock.now())
            return 0.0 if bucket[0] >= cost else (cost - bucket[0]) / self.rate.per_second

    def spend(self, key: K, cost: float = 1.0) -> None:
        """Spend whether or not there is enough (a failure already happened); never below empty."""
        if not self.rate.limited:
            return
        with self._lock:
            bucket = self._refill(key, self.clock.now())
            bucket[0] = max(0.0, bucket[0] - cost)

    def __len__(self) -> int:
        return len(self._buckets)


class InFlight(Generic[K]):
    """At most `limit` requests per key at once; 0 means unlimited. Keys with nothing in flight are
    dropped, so memory follows the requests actually running."""

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError("an in-flight limit cannot be negative")
        self.limit = limit
        self._running: dict[K, int] = {}

    @contextmanager
    def hold(self, key: K) -> Iterator[bool]:
        """Yields False (and holds nothing) when `key` is already at its limit."""
        if not self.limit:
            yield True
            return
        count = self._running.get(key, 0)
        if count >= self.limit:
            yield False
            return
        self._running[key] = count + 1
        try:
            yield True
        finally:
            left = self._running[key] - 1
            if left:
                self._running[key] = left
            else:
                del self._running[key]

    def running(self, key: K) -> int:
        return self._running.get(key, 0)
