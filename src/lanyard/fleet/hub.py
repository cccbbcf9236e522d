"""Long-poll delivery of bindings to agents, and the wait that makes changes take effect at once.

An agent polls with the etag of the bindings it has applied. The hub answers as soon as that host's
bindings differ, and otherwise records in the database that the host is current as of the newest
change id it read, so every node sees it. Polls are woken by the change feed, so an agent polling
node A learns of a write committed on node B within the feed's delay. `settle(id)` lets a
control-plane write return only after every recently seen agent, polling any node, is current as
of that write: when `az webapp identity remove` returns, no agent still serves the removed identity.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from lanyard.core.clock import Clock
from lanyard.core.errors import StoreUnavailable
from lanyard.fleet.service import Bindings, Fleet
from lanyard.storage import fleet_repo
from lanyard.storage.db import Store
from lanyard.storage.feed import RESET, Change

log = logging.getLogger("lanyard.fleet")
ACTIVE_WINDOW = 60.0  # an agent seen this recently is waited for
ACK_REFRESH = 10.0  # rewrite an unchanged acknowledgement this often, so "seen" stays current
SETTLE_RECHECK = 0.01  # how often settle looks at other nodes' acknowledgements
# Changes that can alter some host's bindings; others (secret values, role assignments) wake no one.
BINDING_KINDS = frozenset(
    {
        "placements",
        "resources",
        "resource_identities",
        "service_principals",
        "credentials",
        "hosts",
        "signing_keys",
        RESET,
    }
)


class BindingsHub:
    def __init__(self, fleet: Fleet, store: Store, clock: Clock) -> None:
        self.fleet = fleet
        self.store = store
        self.clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed = asyncio.Event()
        self._acked_event = asyncio.Event()
        self._written: dict[str, tuple[int, float]] = {}  # host -> (change id, when) last written here
        self._closing = False
        self.relevant_through = 0  # newest binding-relevant change this node has heard of
        self._settled = 0  # every active agent was current as of this id, last time we looked

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def close(self) -> None:
        """Shutting down: answer every waiting poll now (as "unchanged") instead of being cancelled.
        Safe to call from any thread."""
        self._closing = True
        self._wake_threadsafe()

    def apply(self, changes: Sequence[Change]) -> None:
        """A change-feed listener (any thread): wake the polls if bindings may have changed."""
        relevant = [c.id for c in changes if c.kind in BINDING_KINDS]
        if relevant:
            self.relevant_through = max(self.relevant_through, *relevant)
            self._wake_threadsafe()

    def _wake_threadsafe(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _acknowledge(self, host_id: str, change_id: int) -> None:
        now = self.clock.now()
        try:
            with self.store.session() as s:
                fleet_repo.acknowledge(s, host_id, change_id, now)
        except IntegrityError:
            return  # another node wrote this host's first row at the same moment; the next poll writes
        self._written[host_id] = (change_id, now)

    async def _mark_current(self, host_id: str, change_id: int) -> None:
        written = self._written.get(host_id)
        if written is None or change_id > written[0] or self.clock.now() - written[1] > ACK_REFRESH:
            await run_in_threadpool(self._acknowledge, host_id, change_id)
            self._acked_event.set()
            self._acked_event = asyncio.Event()

    async def poll(self, host_id: str, etag: str | None, wait: float) -> Bindings | None:
        self._loop = asyncio.get_running_loop()
        deadline = time.monotonic() + wait
        while True:
            changed = self._changed
            bindings = await run_in_threadpool(self.fleet.bindings, host_id)
            if bindings.etag != etag:
                return bindings
            await self._mark_current(host_id, bindings.generation)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._closing:
                return None
            try:
                await asyncio.wait_for(changed.wait(), timeout=remaining)
            except TimeoutError:
                return None

    async def settle(self, change_id: int | None = None, timeout: float = 2.0) -> bool:
        """Wait until every recently seen agent, on any node, is current as of `change_id` (default:
        the newest binding-relevant change this node knows of). Bounded by `timeout`."""
        self._loop = asyncio.get_running_loop()
        target = self.relevant_through if change_id is None else change_id
        if target <= self._settled:
            return True
        deadline = time.monotonic() + timeout
        while True:
            try:
                behind = await run_in_threadpool(self._behind, target)
            except StoreUnavailable:
                return False
            if not behind:
                self._settled = max(self._settled, target)
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning("%d host agent(s) did not apply change %d in %.1f s", len(behind), target, timeout)
                return False
            event = self._acked_event
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout=min(SETTLE_RECHECK, remaining))

    def _behind(self, target: int) -> list[str]:
        with self.store.session() as s:
            return fleet_repo.hosts_behind(s, target, self.clock.now() - ACTIVE_WINDOW)
