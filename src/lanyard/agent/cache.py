"""Tokens per (identity, resource): no signing on a hit, one upstream call per concurrent miss.

A token is served while it has more than REFRESH_MARGIN seconds left (clients treat less than five
minutes as expired, docs/protocols.md §1.8); past half its life a background refresh starts while the
cached one keeps being served.

After a failed upstream call a key backs off (BACKOFF_START doubling up to BACKOFF_CAP): while the
directory fails fast, every request past half-life would otherwise start another call, and a boot storm
against a down directory would become a retry storm. During backoff a usable cached token is still
served; without one the last failure is raised again without calling upstream.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson
from cachetools import LRUCache

from lanyard.core.clock import Clock, SystemClock
from lanyard.protocol.msi import IssuedToken

REFRESH_MARGIN = 600
BACKOFF_START = 1.0
BACKOFF_CAP = 30.0  # azure-identity itself refreshes a failing token at most every 30 s
Fetch = Callable[[], Awaitable[IssuedToken]]
Key = tuple[str, str]


@dataclass(frozen=True)
class _Failure:
    at: float
    delay: float
    error: Exception

    def backing_off(self, now: float) -> bool:
        # Bounded on both sides: a wall clock stepped backwards must end the backoff, not stretch it.
        return self.at <= now < self.at + self.delay


class TokenCache:
    def __init__(self, clock: Clock | None = None, maxsize: int = 100_000) -> None:
        self.clock: Clock = clock or SystemClock()
        self._tokens: LRUCache[Key, IssuedToken] = LRUCache(maxsize)
        self._failures: LRUCache[Key, _Failure] = LRUCache(maxsize)
        # Not bounded by maxsize: an entry lives only while its one upstream call runs.
        self._pending: dict[Key, asyncio.Future[IssuedToken]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.upstream_calls = 0
        self.hits = 0
        self.misses = 0  # requests that waited for an upstream call (metrics read these three)

    def __len__(self) -> int:
        return len(self._tokens)

    async def get(self, object_id: str, resource: str, fetch: Fetch) -> IssuedToken:
        key = (object_id, resource)
        now = self.clock.now()
        token = self._tokens.get(key)
        if token is not None and token.expires_on - now > REFRESH_MARGIN:
            self.hits += 1
            half_life = token.not_before + (token.expires_on - token.not_before) / 2
            if now > half_life and key not in self._pending and not self._backing_off(key, now):
                self._start(key, fetch)  # refresh ahead; this caller keeps the cached token
            return token
        self.misses += 1
        pending = self._pending.get(key)
        if pending is None:
            failure = self._failures.get(key)
            if failure is not None and failure.backing_off(now):
                # A fresh traceback each time: re-raising one instance would keep growing its traceback.
                raise failure.error.with_traceback(None)
            pending = self._start(key, fetch)
        return await asyncio.shield(pending)

    def _backing_off(self, key: Key, now: float) -> bool:
        failure = self._failures.get(key)
        return failure is not None and failure.backing_off(now)

    def _start(self, key: Key, fetch: Fetch) -> asyncio.Future[IssuedToken]:
        future: asyncio.Future[IssuedToken] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        self.upstream_calls += 1

        async def run() -> None:
            try:
                token = await fetch()
            except Exception as exc:  # every waiter gets the same failure
                if self._pending.get(key) is future:  # not forgotten meanwhile
                    self._record_failure(key, exc)
                if not future.done():
                    future.set_exception(exc)
            else:
                if self._pending.get(key) is future:
                    self._tokens[key] = token
                    self._failures.pop(key, None)
                if not future.done():
                    future.set_result(token)
            finally:
                if self._pending.get(key) is future:
                    del self._pending[key]
                if not future.done():  # the fetch was cancelled: release the waiters too
                    future.cancel()

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)  # the loop holds tasks weakly
        task.add_done_callback(self._tasks.discard)
        # Retrieve the exception so a refresh nobody awaited does not log "never retrieved".
        future.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)
        return future

    def _record_failure(self, key: Key, error: Exception) -> None:
        previous = self._failures.get(key)
        delay = min(previous.delay * 2, BACKOFF_CAP) if previous is not None else BACKOFF_START
        self._failures[key] = _Failure(self.clock.now(), delay, error)

    async def settle(self) -> None:
        """Wait until every upstream call in flight has finished and been recorded."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    def forget_signed_by_others(self, published: frozenset[str]) -> int:
        """Drop every cached token whose signing key is no longer published (revoked): the next
        request fetches a new one instead of handing out a token every resource now rejects."""
        stale = [k for k, token in self._tokens.items() if _kid(token.access_token) not in published]
        for key in stale:
            del self._tokens[key]
        return len(stale)

    def forget(self, object_ids: set[str]) -> None:
        """Drop every token, backoff and call in flight of identities this host may no longer use.

        A call in flight still answers its waiters, but its result is not kept."""
        for store in (self._tokens, self._failures, self._pending):
            for key in [k for k in store if k[0] in object_ids]:
                del store[key]


def _kid(token: str) -> str | None:
    """The `kid` of a compact JWS's header, or None if it has none or is not one."""
    header = token.split(".", 1)[0]
    try:
        parsed = orjson.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (ValueError, binascii.Error):
        return None
    kid = parsed.get("kid") if isinstance(parsed, dict) else None
    return kid if isinstance(kid, str) else None
