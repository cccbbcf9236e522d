"""The agent's audit trail: a local journal, shipped to the platform (docs/security.md).

The agent has no database. Every token it answers with (minted or cached) is first appended to a
hash-chained JSON-lines journal in the agent's home, fsync'd per group commit (audit/writer.py);
if the journal refuses or hangs, the token is refused with a 503 MSI error within the deadline.
The journal's path is re-checked on every write, so a deleted journal refuses grants instead of
writing into a vanished file.

A shipper sends the journal to the platform in batches over the host's own sign-in
(`POST /lanyard/v1/agent/audit`), where the records join the audit table on the host's chain,
checked record by record against the stored head. At start the agent asks for that head and
ships whatever the journal holds beyond it; a journal lost with the machine's disk continues the
chain from the platform's head.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
from pathlib import Path
from typing import Any

from cachetools import LRUCache

from lanyard.agent.attest import Caller
from lanyard.agent.bindings import Identity
from lanyard.agent.upstream import Upstream, UpstreamError
from lanyard.audit.record import Chain, Event, ref_of_token
from lanyard.audit.sinks import FileSink, last_record, read_records
from lanyard.audit.writer import GroupCommit
from lanyard.config import AuditSettings
from lanyard.protocol.msi import IssuedToken

log = logging.getLogger("lanyard.agent.audit")
JOURNAL = "audit/journal.jsonl"
SHIP_PATH = "/lanyard/v1/agent/audit"
SHIP_BATCH = 1000
SHIP_INTERVAL = 0.5
SHIP_BACKOFF_CAP = 10.0
UNSHIPPED_IN_MEMORY = 200_000  # beyond this the shipper reads the journal back


def host_chain(host_id: str) -> str:
    return f"host:{host_id}"


class AgentAudit:
    """The journal writer, the token-record builder and the shipper of one agent."""

    def __init__(self, home: Path, host_id: str, settings: AuditSettings) -> None:
        self.path = home / JOURNAL
        self.host_id = host_id
        self.settings = settings
        self._unshipped: collections.deque[dict[str, Any]] = collections.deque()
        self._lock = threading.Lock()
        self._overflowed = False
        self._refs: LRUCache[str, str | None] = LRUCache(100_000)
        self.writer = GroupCommit(
            Chain(host_chain(host_id)),
            [FileSink(self.path, fsync=settings.fsync)],
            settings.deadline,
            on_written=self._written,
            coalesce=True,  # a pool hammering one cached token: one record per batch, with its count
        )
        self.shipped_seq = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- recording ------------------------------------------------------------------------------

    def _written(self, records: list[dict[str, Any]]) -> None:
        with self._lock:
            if len(self._unshipped) + len(records) > UNSHIPPED_IN_MEMORY:
                self._overflowed = True  # read back from the journal once the platform is reachable
                return
            self._unshipped.extend(records)

    def _token_ref(self, token: str) -> str | None:
        ref = self._refs.get(token, False)
        if ref is False:
            ref = self._refs[token] = ref_of_token(token)
        return ref if isinstance(ref, str) or ref is None else None

    async def token_served(
        self, identity: Identity, resource_id: str, audience: str, token: IssuedToken, caller: Caller | None
    ) -> None:
        """Raises AuditUnavailable when the journal did not accept the record in time."""
        detail: dict[str, Any] = {"audience": audience, "token_ref": self._token_ref(token.access_token)}
        if caller is not None:
            detail["caller"] = caller.audit_fields()
        await self.writer.record(
            Event("agent.token", "granted", identity.object_id, identity.client_id, resource_id, self.host_id, detail)
        )

    def attestation_refused(self, resource_id: str, peer: str, reason: str) -> None:
        """A token refused because its caller is not the workload's (nothing granted: not awaited)."""
        self.writer.note(
            Event(
                "agent.attestation", "denied", None, None, resource_id, self.host_id, {"peer": peer, "reason": reason}
            )
        )

    # -- shipping -------------------------------------------------------------------------------

    async def start(self, upstream: Upstream) -> None:
        """Continue the chain where journal or platform left it, then ship in the background."""
        loop = asyncio.get_running_loop()
        self.writer.bind(loop)
        platform_seq, platform_sha = await self._platform_head(upstream)
        local = await loop.run_in_executor(None, last_record, self.path)
        local_seq = int(local["seq"]) if local and local.get("chain") == host_chain(self.host_id) else 0
        if local is not None and local_seq >= platform_seq:
            self.writer.chain.seq, self.writer.chain.sha256 = local_seq, str(local["sha256"])
        else:
            if local_seq < platform_seq:
                log.warning("audit journal %s is behind the platform's record; continuing its chain", self.path)
            self.writer.chain.seq, self.writer.chain.sha256 = platform_seq, platform_sha
        self.shipped_seq = platform_seq
        if local_seq > platform_seq:
            await loop.run_in_executor(None, self._refill)
        self._task = loop.create_task(self._ship_loop(upstream), name="audit shipper")

    async def _platform_head(self, upstream: Upstream) -> tuple[int, str]:
        response = await upstream.platform_call("GET", SHIP_PATH)
        if response.status_code != 200:
            raise UpstreamError(f"the audit API answered {response.status_code}")
        body = response.json()
        return int(body["seq"]), str(body["sha256"])

    def _refill(self) -> None:
        """Reload unshipped records from the journal (after a restart, or memory ran over)."""
        records = [
            r
            for r in read_records(self.path)
            if r.get("chain") == host_chain(self.host_id) and int(r.get("seq") or 0) > self.shipped_seq
        ]
        with self._lock:
            self._unshipped = collections.deque(records[:UNSHIPPED_IN_MEMORY])
            self._overflowed = len(records) > UNSHIPPED_IN_MEMORY

    async def _ship_loop(self, upstream: Upstream) -> None:
        delay = SHIP_INTERVAL
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            self._wake.clear()
            try:
                while await self._ship_once(upstream):
                    pass
                delay = SHIP_INTERVAL
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("audit: shipping failed (%s); retrying", type(exc).__name__)
                delay = min(delay * 2, SHIP_BACKOFF_CAP)

    async def _ship_once(self, upstream: Upstream) -> bool:
        """Ship one batch; True while more are waiting."""
        with self._lock:
            while self._unshipped and int(self._unshipped[0]["seq"]) <= self.shipped_seq:
                self._unshipped.popleft()
            batch = [self._unshipped[i] for i in range(min(SHIP_BATCH, len(self._unshipped)))]
            overflowed = self._overflowed
        if not batch or int(batch[0]["seq"]) != self.shipped_seq + 1:
            if overflowed or batch:
                await asyncio.get_running_loop().run_in_executor(None, self._refill)
                with self._lock:
                    return bool(self._unshipped) and int(self._unshipped[0]["seq"]) == self.shipped_seq + 1
            return False
        response = await upstream.platform_call("POST", SHIP_PATH, {"records": batch}, timeout=30.0)
        if response.status_code == 200:
            self.shipped_seq = int(response.json()["seq"])
            return True
        if response.status_code == 409:
            head = response.json().get("head") or {}
            self.shipped_seq = int(head.get("seq", self.shipped_seq))
            log.warning("audit: the platform's chain is at %d; re-shipping from there", self.shipped_seq)
            return False
        raise UpstreamError(f"the audit API answered {response.status_code}")

    async def flush(self, timeout: float = 10.0) -> bool:
        """Ship everything written so far (tests, shutdown); True when nothing is left."""
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            with self._lock:
                empty = not self._unshipped and not self._overflowed
            if empty and self.shipped_seq >= self.writer.chain.seq:
                return True
            self._wake.set()
            await asyncio.sleep(0.05)
        return False

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.flush(timeout=3.0)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.writer.close()
