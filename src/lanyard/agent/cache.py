"""Tokens per (identity, resource): no signing on a hit, one upstream call per concurrent miss.

A token is served while it has more than REFRESH_MARGIN seconds left (clients treat less than five
minutes as expired, PROTOCOLS.md §1.8); past half its life a background refresh starts while the
cached one keeps being served.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from lanyard.protocol.msi import IssuedToken

REFRESH_MARGIN = 600
Fetch = Callable[[], Awaitable[IssuedToken]]


class TokenCache:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._tokens: dict[tuple[str, str], IssuedToken] = {}
        self._pending: dict[tuple[str, str], asyncio.Future[IssuedToken]] = {}
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        self.upstream_calls = 0
        self.hits = 0

    def __len__(self) -> int:
        return len(self._tokens)

    def _usable(self, token: IssuedToken) -> bool:
        return token.expires_on - self._clock() > REFRESH_MARGIN

    async def get(self, object_id: str, resource: str, fetch: Fetch) -> IssuedToken:
        key = (object_id, resource)
        token = self._tokens.get(key)
        if token is not None and self._usable(token):
            self.hits += 1
            half_life = token.not_before + (token.expires_on - token.not_before) / 2
            if self._clock() > half_life and key not in self._pending:
                self._start(key, fetch)  # refresh ahead; this caller keeps the cached token
            return token
        pending = self._pending.get(key)
        if pending is None:
            pending = self._start(key, fetch)
        return await asyncio.shield(pending)

    def _start(self, key: tuple[str, str], fetch: Fetch) -> asyncio.Future[IssuedToken]:
        future: asyncio.Future[IssuedToken] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        self.upstream_calls += 1

        async def run() -> None:
            try:
                token = await fetch()
            except Exception as exc:  # every waiter gets the same failure
                if not future.done():
                    future.set_exception(exc)
            else:
                self._tokens[key] = token
                if not future.done():
                    future.set_result(token)
            finally:
                self._pending.pop(key, None)

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)  # the loop holds tasks weakly
        task.add_done_callback(self._tasks.discard)
        # Retrieve the exception so a refresh nobody awaited does not log "never retrieved".
        future.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)
        return future

    def forget(self, object_ids: set[str]) -> None:
        """Drop every token of identities this host may no longer use."""
        for key in [k for k in self._tokens if k[0] in object_ids]:
            del self._tokens[key]
