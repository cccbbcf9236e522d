"""A bounded cache invalidated per key by the change feed, with a TTL as the safety net.

Bounded by LRU eviction (cachetools), never emptied wholesale at N entries. The TTL bounds how long
a value can outlive a change this process failed to hear of (a LISTEN connection that is down).

A fill races an invalidation: a reader queries, a writer commits and invalidates, then the reader
stores what it read before the commit. Each invalidation bumps an epoch; a fill is kept only if no
invalidation happened since the reader took its snapshot, so a stale fill is dropped, not served.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

from cachetools import TTLCache

from lanyard.core.clock import Clock

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
_MISSING = object()


class FeedCache(Generic[K, V]):
    def __init__(self, maxsize: int, ttl: float, clock: Clock, stats: tuple[Any, Any] | None = None) -> None:
        self._data: TTLCache[K, V] = TTLCache(maxsize=maxsize, ttl=ttl, timer=clock.now)
        self._lock = threading.Lock()
        self._epoch = 0
        # (hit, miss) counters (observe.metrics.cache_stats), or None: this module stays free of them.
        self._hit: Any = stats[0] if stats is not None else None
        self._miss: Any = stats[1] if stats is not None else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._data.get(key)
        if self._hit is not None:
            (self._miss if value is None else self._hit).inc()
        return value

    def peek(self, key: K) -> V | None:
        """The cached value without counting a hit or a miss (for "would this need a load?")."""
        with self._lock:
            return self._data.get(key)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._data

    def epoch(self) -> int:
        """Take before reading the source; pass to put()."""
        return self._epoch

    def put(self, key: K, value: V, epoch: int) -> bool:
        with self._lock:
            if epoch != self._epoch:
                return False
            self._data[key] = value
            return True

    def load(self, key: K, loader: Callable[[], V]) -> V:
        with self._lock:
            found = self._data.get(key, _MISSING)
            epoch = self._epoch
        if found is not _MISSING:
            if self._hit is not None:
                self._hit.inc()
            return found  # type: ignore[return-value]
        if self._miss is not None:
            self._miss.inc()
        value = loader()
        self.put(key, value, epoch)
        return value

    def invalidate(self, key: K) -> None:
        with self._lock:
            self._epoch += 1
            self._data.pop(key, None)

    def invalidate_where(self, predicate: Callable[[K], bool]) -> None:
        with self._lock:
            self._epoch += 1
            for key in [k for k in self._data if predicate(k)]:
                self._data.pop(key, None)

    def invalidate_entries(self, predicate: Callable[[K, V], bool]) -> None:
        """Drop every entry whose key and value satisfy `predicate` (a change its key cannot name)."""
        with self._lock:
            self._epoch += 1
            for key in [k for k, v in self._data.items() if predicate(k, v)]:
                self._data.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._epoch += 1
            self._data.clear()
