"""Long-poll delivery of bindings to agents, and the wait that makes changes take effect at once.

An agent polls with the etag of the bindings it has applied. The hub answers as soon as that host's
bindings differ, and otherwise records that the host is current as of the latest generation.
`settle(g)` lets a control-plane write return only after every connected agent is current as of
`g`: when `az webapp identity remove` returns, no agent still serves the removed identity.
"""

from __future__ import annotations

import asyncio
import time

from starlette.concurrency import run_in_threadpool

from lanyard.fleet.service import Bindings, Fleet
from lanyard.storage.db import Store

ACTIVE_WINDOW = 60.0  # an agent that polled this recently is waited for


class BindingsHub:
    def __init__(self, fleet: Fleet, store: Store) -> None:
        self.fleet = fleet
        self.store = store
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed = asyncio.Event()
        self._acked: dict[str, int] = {}
        self._last_seen: dict[str, float] = {}
        self._acked_event = asyncio.Event()
        self._closing = False
        store.on_commit(self._committed)

    def close(self) -> None:
        """Shutting down: answer every waiting poll now (as "unchanged") instead of being cancelled.
        Safe to call from any thread."""
        self._closing = True
        self._committed(-1)

    def _committed(self, generation: int) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _mark_current(self, host_id: str, generation: int) -> None:
        if generation > self._acked.get(host_id, -1):
            self._acked[host_id] = generation
            self._acked_event.set()
            self._acked_event = asyncio.Event()

    async def poll(self, host_id: str, etag: str | None, wait: float) -> Bindings | None:
        self._loop = asyncio.get_running_loop()
        deadline = time.monotonic() + wait
        while True:
            self._last_seen[host_id] = time.monotonic()
            changed = self._changed
            bindings = await run_in_threadpool(self.fleet.bindings, host_id)
            if bindings.etag != etag:
                return bindings
            self._mark_current(host_id, bindings.generation)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._closing:
                return None
            try:
                await asyncio.wait_for(changed.wait(), timeout=remaining)
            except TimeoutError:
                return None

    async def settle(self, generation: int, timeout: float = 2.0) -> bool:
        """Wait until every recently seen agent is current as of `generation` (bounded)."""
        self._loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            behind = [
                h
                for h, seen in self._last_seen.items()
                if now - seen < ACTIVE_WINDOW and self._acked.get(h, -1) < generation
            ]
            if not behind:
                return True
            remaining = deadline - now
            if remaining <= 0:
                return False
            event = self._acked_event
            try:
                await asyncio.wait_for(event.wait(), timeout=remaining)
            except TimeoutError:
                return False
