"""Caller attestation wired into the agent's listeners: one PeerConnection per accepted connection,
attested on its first token request, re-checked on every later one.

The connection object rides in each request's ASGI `state` (uvicorn copies the protocol's app_state
into every scope), so the hot path pays one dict lookup and one /proc/PID/stat read per request; the
/proc scan happens once per connection, on a single worker thread so a flood of unattested
connections queues there instead of taking every core.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from starlette.types import Scope

from lanyard.agent.attest import Caller, PeerConnection, Unattested, WorkloadScope, attest_many
from lanyard.agent.bindings import BindingsState, Workload
from lanyard.agent.workloads import RunningWorkload
from lanyard.core.listener import BoundedHttpToolsProtocol
from lanyard.protocol.msi import MsiError

log = logging.getLogger("lanyard.agent.attest")
CONNECTION = "lanyard.connection"
CALLER = "lanyard.caller"  # the attested Caller, for the access log
HEADER_ONLY = "header"


class AttestingProtocol(BoundedHttpToolsProtocol):
    """The bounded httptools protocol (lanyard.core.listener), remembering each connection's two
    addresses for attestation."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        local = transport.get_extra_info("sockname")
        remote = transport.get_extra_info("peername")
        # app_state is shared by every connection of a listener: give this one its own.
        state = dict(self.app_state)
        if isinstance(local, tuple) and isinstance(remote, tuple):
            state[CONNECTION] = PeerConnection((str(local[0]), int(local[1])), (str(remote[0]), int(remote[1])))
        self.app_state = state

    def connection_lost(self, exc: Exception | None) -> None:
        conn = self.app_state.get(CONNECTION)
        if isinstance(conn, PeerConnection):
            conn.release()  # its pidfd
        super().connection_lost(exc)


class CallerCheck:
    """Decides, per request, whether the process behind the connection may speak for a workload."""

    def __init__(self, on_refusal: Callable[[str, str, str], None] | None = None) -> None:
        """`on_refusal(resource_id, peer, reason)`: the audit trail's note of each refusal."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="attest")
        self.on_refusal = on_refusal
        self.refusals = 0
        # Connections waiting for attestation; one drain at a time attests them all with one /proc walk.
        self._pending: list[tuple[PeerConnection, WorkloadScope, asyncio.Future[Caller]]] = []
        self._draining = False
        self._drainer: asyncio.Task[None] | None = None
        self.scans = 0

    async def _attest(self, conn: PeerConnection, scope: WorkloadScope) -> Caller:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Caller] = loop.create_future()
        self._pending.append((conn, scope, future))
        if not self._draining:
            self._draining = True
            self._drainer = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                self.scans += 1
                try:
                    results = await loop.run_in_executor(
                        self._executor, attest_many, [(conn, scope) for conn, scope, _ in batch]
                    )
                except Exception as exc:  # an unexpected /proc failure refuses, never hangs the waiters
                    results = [Unattested(f"attestation failed ({type(exc).__name__})") for _ in batch]
                for (_, _, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, Unattested):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._draining = False

    async def __call__(self, scope: Scope, registration: RunningWorkload | None, workload: Workload) -> Caller | None:
        if workload.attestation == HEADER_ONLY:
            return None  # the resource opted into Azure's behaviour: whoever holds the secret
        conn: PeerConnection | None = (scope.get("state") or {}).get(CONNECTION)
        if registration is None or registration.scope is None:
            raise self._refuse(workload, conn, "the workload has not started yet")
        if conn is None:
            raise self._refuse(workload, conn, "the connection's peer is unknown")
        if conn.refused is not None:
            raise self._refuse(workload, conn, conn.refused)
        caller = conn.caller
        if caller is None or conn.scope is not registration.scope:
            try:
                caller = await self._attest(conn, registration.scope)
            except Unattested as exc:
                if exc.final:
                    conn.refused = str(exc)
                raise self._refuse(workload, conn, str(exc)) from None
            conn.pin(caller, registration.scope)
        elif not conn.still_in(registration.scope):
            # Every request: still the same process, still in this workload's session (setsid after
            # attestation leaves it), the workload still the same run (its leader's start time).
            conn.release()
            raise self._refuse(workload, conn, "the attested caller exited or left the workload")
        scope[CALLER] = caller
        return caller

    async def for_resource(
        self, state: BindingsState, scope: Scope, registration: RunningWorkload | None, resource_id: str
    ) -> Caller | None:
        """The attested caller for a request on behalf of `resource_id` (None: attestation is off for
        it, or the workload is no longer placed here, which issuing the token then answers)."""
        bound = state.workload(resource_id)
        if bound is None:
            return None
        return await self(scope, registration, bound)

    def _refuse(self, workload: Workload, conn: PeerConnection | None, reason: str) -> MsiError:
        self.refusals += 1
        peer = f"{conn.remote[0]}:{conn.remote[1]}" if conn is not None else "unknown"
        log.warning("refused a token request for %s from %s: %s", workload.resource_id, peer, reason)
        if self.on_refusal is not None:
            self.on_refusal(workload.resource_id, peer, reason)
        return MsiError(401, f"Unauthorized: the calling process is not part of this workload ({reason}).")

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
