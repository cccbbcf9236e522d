"""The hash chain and the group-commit writer, in process (no sockets; a frozen clock)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from lanyard.audit.record import GENESIS, Chain, Event, verify
from lanyard.audit.writer import GroupCommit
from lanyard.core.clock import FrozenClock
from lanyard.core.errors import AuditUnavailable


def test_a_chain_verifies_and_any_change_breaks_it() -> None:
    chain = Chain("node:test")
    records = chain.extend([Event("token.issue", principal=f"p{i}") for i in range(5)], 1_800_000_000.0)
    chain.advance(records)
    assert records[0]["prev_sha256"] == GENESIS and verify(records) is None
    altered = [dict(r) for r in records]
    altered[2]["principal"] = "someone-else"
    assert verify(altered) == verify(altered) and verify(altered).seq == 3  # type: ignore[union-attr]
    assert verify(records[:2] + records[3:]).seq == 4  # type: ignore[union-attr]  # a record removed
    assert "altered" in verify(altered).reason  # type: ignore[union-attr]


class Sink:
    def __init__(self, fail: bool = False, hang: float = 0.0) -> None:
        self.name, self.fail, self.hang = "memory", fail, hang
        self.batches: list[list[dict[str, Any]]] = []

    def write(self, records: Sequence[dict[str, Any]]) -> None:
        if self.hang:
            import time

            time.sleep(self.hang)
        if self.fail:
            raise OSError("refused")
        self.batches.append(list(records))

    def head(self, chain: str) -> tuple[int, str] | None:
        return None

    def close(self) -> None:
        return None


def test_concurrent_records_are_group_committed() -> None:
    sink = Sink()
    writer = GroupCommit(Chain("node:t"), [sink], 2.0, FrozenClock())

    async def main() -> None:
        await asyncio.gather(*(writer.record(Event("agent.token", principal=str(i))) for i in range(100)))

    asyncio.run(main())
    writer.close()
    flat = [r for batch in sink.batches for r in batch]
    assert len(flat) == 100 and len(sink.batches) < 100 and verify(flat) is None


@pytest.mark.parametrize("sink", [Sink(fail=True), Sink(hang=1.0)], ids=["refusing", "hanging"])
def test_a_failing_sink_refuses_every_waiter(sink: Sink) -> None:
    writer = GroupCommit(Chain("node:t"), [sink], 0.2, FrozenClock())

    async def main() -> list[BaseException | None]:
        results = await asyncio.gather(
            *(writer.record(Event("token.issue")) for _ in range(10)), return_exceptions=True
        )
        return list(results)  # type: ignore[arg-type]

    results = asyncio.run(main())
    writer.close()
    assert all(isinstance(r, AuditUnavailable) for r in results)


def test_identical_events_of_a_batch_become_one_record_with_a_count() -> None:
    from lanyard.audit.record import Event, coalesce

    served = Event(
        "agent.token", "granted", "oid", "app", "/sites/a", "host", {"token_ref": "ab", "caller": {"pid": 7}}
    )
    other = Event("agent.token", "granted", "oid", "app", "/sites/a", "host", {"token_ref": "ab", "caller": {"pid": 8}})
    merged = coalesce([served, other, served, served])
    assert [e.detail.get("caller") for e in merged] == [{"pid": 7}, {"pid": 8}]
    assert merged[0].detail["count"] == 3 and "count" not in merged[1].detail
    assert coalesce([served, other]) == [served, other]  # nothing to merge: the same list back


def test_a_nul_in_what_a_request_carried_is_recorded_as_text_every_sink_holds() -> None:
    """PostgreSQL refuses NUL in text; a refused record would refuse the request (a path of %00)."""
    from lanyard.audit.record import Chain, Event, verify

    records = Chain("node:t").extend(
        [Event("arm.write", "denied", resource="/subscriptions/\x00/x", detail={"p": "\x00"})], 1.0
    )
    assert records[0]["resource"] == "/subscriptions/\ufffd/x" and records[0]["detail"] == {"p": "\ufffd"}
    assert verify(records) is None
