"""Group commit: records from concurrent requests are written together, each waiter acked.

A request that grants something awaits `Auditor.record(event)`. Records queue in the current
batch; one flush at a time runs in the writer's own thread (so a chain has exactly one writer)
and writes the whole batch to every sink: the primary sink first (the database, or the agent's
journal), then any mirrors (the JSON-lines file). The batch is acked only if every sink accepted
it. Every batch has a deadline counted from its first record: when a sink refuses or hangs, its
waiters get AuditUnavailable within the deadline and the request answers 503; nothing waits on a
hung sink for longer, and the records queued behind it fail the same way.

The chain head moves only when the primary sink accepted a batch. After any failure the head is
reloaded from the primary sink before the next batch (a commit whose outcome was lost may have
landed).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from lanyard.audit.record import Chain, Event, coalesce
from lanyard.core.clock import Clock, SystemClock
from lanyard.core.errors import AuditUnavailable

log = logging.getLogger("lanyard.audit")
DEFAULT_DEADLINE = 2.0
MAX_QUEUED = 100_000  # records waiting beyond this are refused at once (memory stays bounded)
MAX_EVENTUAL = 10_000
RETRY_EVENTUAL = 1.0


class Sink(Protocol):
    name: str

    def write(self, records: Sequence[dict[str, Any]]) -> None:
        """Durably accept the records or raise."""
        ...

    def head(self, chain: str) -> tuple[int, str] | None:
        """The newest (seq, sha256) this sink holds for `chain`, if it can tell."""
        ...

    def close(self) -> None: ...


class Auditor(Protocol):
    enabled: bool

    async def record(self, event: Event) -> None: ...

    def record_sync(self, event: Event) -> None: ...

    def note(self, event: Event) -> None: ...

    def eventually(self, event: Event) -> None: ...

    def bind(self, loop: asyncio.AbstractEventLoop) -> None: ...

    def close(self) -> None: ...


class NullAuditor:
    """Audit switched off (LANYARD_AUDIT=off): every call returns at once."""

    enabled = False

    async def record(self, event: Event) -> None:
        return None

    def record_sync(self, event: Event) -> None:
        return None

    def note(self, event: Event) -> None:
        return None

    def eventually(self, event: Event) -> None:
        return None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        return None

    def close(self) -> None:
        return None


NULL_AUDITOR = NullAuditor()


@dataclass
class _Batch:
    future: asyncio.Future[None]
    timer: asyncio.TimerHandle
    events: list[Event] = field(default_factory=list)
    eventual: list[Event] = field(default_factory=list)


class GroupCommit:
    """The Auditor of one process: one chain, one writer thread, the given sinks."""

    enabled = True

    def __init__(
        self,
        chain: Chain,
        sinks: Sequence[Sink],
        deadline: float = DEFAULT_DEADLINE,
        clock: Clock | None = None,
        on_written: Callable[[list[dict[str, Any]]], None] | None = None,
        coalesce: bool = False,
    ) -> None:
        """`on_written(records)` runs in the writer thread once the primary sink holds them.
        `coalesce`: identical events of a batch become one record with a count (record.coalesce)."""
        if not sinks:
            raise ValueError("an audit writer needs at least one sink")
        self.chain = chain
        self.sinks = list(sinks)
        self.deadline = deadline
        self.on_written = on_written
        self.coalesce = coalesce
        self.clock: Clock = clock or SystemClock()
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-writer")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._batch: _Batch | None = None
        self._flushing = False
        self._queued = 0
        self._eventual: list[Event] = []
        self._retry: asyncio.TimerHandle | None = None
        self._stale = True  # load the head from the primary sink before the first batch
        self.batches = 0
        self.failures = 0
        self.written = 0

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Sync callers (worker threads) hand their records to this loop."""
        self._loop = loop

    # -- the hot path ---------------------------------------------------------------------------

    async def record(self, event: Event) -> None:
        """Return once `event` is durably accepted; raise AuditUnavailable otherwise, within the deadline."""
        batch = self._current(asyncio.get_running_loop())
        if self._queued >= MAX_QUEUED:
            raise AuditUnavailable("the audit trail is not keeping up")
        batch.events.append(event)
        self._queued += 1
        try:
            await asyncio.shield(batch.future)
        except AuditUnavailable as exc:
            # A fresh exception per waiter: one shared instance would grow its traceback each raise.
            raise AuditUnavailable(exc.message) from None

    def note(self, event: Event) -> None:
        """Record without waiting (refusals: nothing is granted, so nothing waits on the record)."""
        loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._add_unawaited(event)
        else:
            loop.call_soon_threadsafe(self._add_unawaited, event)

    def eventually(self, event: Event) -> None:
        """Record, retrying until accepted (events that already happened, from background jobs)."""
        loop = self._loop
        if loop is None:
            return
        loop.call_soon_threadsafe(self._add_eventual, event)

    def record_sync(self, event: Event) -> None:
        """`record` for worker threads: blocks at most the deadline (plus a little)."""
        loop = self._loop
        if loop is None or not loop.is_running():
            raise AuditUnavailable("the audit writer is not running")
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if on_loop:  # blocking here would stall the very loop that writes the record
            self._add_eventual(event)
            return
        future = asyncio.run_coroutine_threadsafe(self.record(event), loop)
        try:
            future.result(timeout=self.deadline + 1.0)
        except concurrent.futures.TimeoutError as exc:
            future.cancel()
            raise AuditUnavailable("the audit trail did not accept the record in time") from exc

    # -- batching -------------------------------------------------------------------------------

    def _add_unawaited(self, event: Event) -> None:
        if self._queued >= MAX_QUEUED:
            return
        self._current(asyncio.get_running_loop()).events.append(event)
        self._queued += 1

    def _add_eventual(self, event: Event) -> None:
        if len(self._eventual) < MAX_EVENTUAL:
            self._eventual.append(event)
        else:
            log.error("audit: %d job records could not be written; dropping %s", MAX_EVENTUAL, event.action)
        self._current(asyncio.get_running_loop())

    def _current(self, loop: asyncio.AbstractEventLoop) -> _Batch:
        batch = self._batch
        if batch is None:
            future: asyncio.Future[None] = loop.create_future()
            future.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)
            timer = loop.call_later(self.deadline, self._expire, future)
            batch = self._batch = _Batch(future, timer)
            if not self._flushing:
                self._flushing = True
                loop.create_task(self._flush_loop())
        return batch

    @staticmethod
    def _expire(future: asyncio.Future[None]) -> None:
        if not future.done():
            future.set_exception(AuditUnavailable("the audit trail did not accept the record within its deadline"))

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._batch is not None:
                batch, self._batch = self._batch, None
                events = batch.events
                eventual, self._eventual = self._eventual, []
                self._queued -= len(events)
                try:
                    await loop.run_in_executor(self._executor, self._commit, [*eventual, *events])
                except Exception as exc:
                    self.failures += 1
                    self._stale = True
                    self._eventual = [*eventual, *self._eventual][:MAX_EVENTUAL]
                    log.error("audit: a batch of %d records was refused (%s)", len(events), _describe(exc))
                    if not batch.future.done():
                        batch.future.set_exception(AuditUnavailable("the audit trail refused the record"))
                else:
                    if not batch.future.done():
                        batch.future.set_result(None)
                batch.timer.cancel()
        finally:
            self._flushing = False
        if self._eventual and self._retry is None:
            self._retry = loop.call_later(RETRY_EVENTUAL, self._retry_eventual)

    def _retry_eventual(self) -> None:
        self._retry = None
        if self._eventual:
            self._current(asyncio.get_running_loop())

    def _commit(self, events: list[Event]) -> None:
        if not events:
            return
        if self._stale:
            head = self.sinks[0].head(self.chain.name)
            if head is not None and head[0] >= self.chain.seq:
                self.chain.seq, self.chain.sha256 = head
            self._stale = False
        records = self.chain.extend(coalesce(events) if self.coalesce else events, self.clock.now())
        primary, *mirrors = self.sinks
        primary.write(records)
        self.chain.advance(records)
        if self.on_written is not None:
            self.on_written(records)
        for sink in mirrors:
            sink.write(records)
        self.batches += 1
        self.written += len(records)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:  # closing is best effort
                log.warning("audit: closing %s failed (%s)", sink.name, _describe(exc))


def _describe(exc: BaseException) -> str:
    """An exception's type and errno only: messages of database drivers may quote the statement."""
    errno = getattr(exc, "errno", None)
    return f"{type(exc).__name__}{f' errno {errno}' if errno else ''}"
