"""The agent's audit journal and repeat serves: the first serve of a token to a caller on a connection
waits for its durable record; a repeat on that connection joins the next batch without waiting, but
only while the journal is accepting batches (in process, a real journal file in a temporary folder)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from lanyard.agent.attest import Caller, PeerConnection
from lanyard.agent.audit import REPEAT_FRESHNESS, AgentAudit
from lanyard.agent.bindings import Identity
from lanyard.config import AuditSettings
from lanyard.core.errors import AuditUnavailable
from lanyard.protocol.msi import IssuedToken

IDENTITY = Identity("system", "oid-1", "cid-1", "/subscriptions/s/resourceGroups/g/providers/x/sites/a", None)  # type: ignore[arg-type]
TOKEN = IssuedToken("header.payload.signature", 2_000_000_000, 1_999_990_000, "cid-1")
WORKLOAD = IDENTITY.resource_id


def journal(audit: AgentAudit) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in audit.path.read_bytes().splitlines() if line.strip()]


def served(records: list[dict[str, Any]]) -> int:
    return sum(int(r["detail"].get("count", 1)) for r in records if r["action"] == "agent.token")


async def serve(audit: AgentAudit, conn: PeerConnection | None, caller: Caller | None = None) -> None:
    await audit.token_served(IDENTITY, WORKLOAD, "https://management.azure.com/", TOKEN, caller, conn)


async def settle(audit: AgentAudit) -> None:
    while audit.writer._batch is not None or audit.writer._flushing:
        await asyncio.sleep(0.005)


def break_journal(audit: AgentAudit) -> None:
    """Every later write fails (disk full), as the journal is re-opened by path after a failure."""
    audit.path.unlink()
    audit.path.symlink_to("/dev/full")


def new_audit(home: Path) -> AgentAudit:
    audit = AgentAudit(home, "host-1", AuditSettings(deadline=0.5))
    audit.writer.bind(asyncio.get_running_loop())
    return audit


def connection(port: int) -> PeerConnection:
    return PeerConnection(("127.0.0.1", 50342), ("127.0.0.1", port))


def test_a_repeat_on_the_same_connection_is_recorded_in_a_later_batch(tmp_path: Path) -> None:
    async def main() -> None:
        audit = new_audit(tmp_path)
        conn = connection(40001)
        await serve(audit, conn)
        assert served(journal(audit)) == 1  # durable before the first serve returned
        for _ in range(5):
            await serve(audit, conn)
        await settle(audit)
        records = journal(audit)
        assert served(records) == 6
        audit.writer.close()

    asyncio.run(main())


def test_a_broken_journal_refuses_first_serves_and_stops_repeats_after_one_batch(tmp_path: Path) -> None:
    async def main() -> None:
        audit = new_audit(tmp_path)
        conn = connection(40002)
        await serve(audit, conn)
        break_journal(audit)
        with pytest.raises(AuditUnavailable):
            await serve(audit, connection(40003))  # a first serve waits for its own record
        with pytest.raises(AuditUnavailable):
            await serve(audit, conn)  # the journal failed since: a repeat waits too, and is refused
        with pytest.raises(AuditUnavailable):
            await serve(audit, None)  # no connection known: every serve waits
        audit.writer.close()

    asyncio.run(main())


def test_a_repeat_waits_when_no_batch_was_accepted_recently(tmp_path: Path) -> None:
    async def main() -> None:
        audit = new_audit(tmp_path)
        conn = connection(40004)
        await serve(audit, conn)
        await asyncio.sleep(REPEAT_FRESHNESS * 2)
        break_journal(audit)
        with pytest.raises(AuditUnavailable):
            await serve(audit, conn)
        audit.writer.close()

    asyncio.run(main())


def test_another_caller_on_the_same_connection_waits_for_its_own_record(tmp_path: Path) -> None:
    async def main() -> None:
        audit = new_audit(tmp_path)
        conn = connection(40005)
        first, second = Caller(100, 1000, 5, "/usr/bin/python3"), Caller(101, 1000, 6, "/usr/bin/python3")
        await serve(audit, conn, first)
        break_journal(audit)
        with pytest.raises(AuditUnavailable):
            await serve(audit, conn, second)
        audit.writer.close()

    asyncio.run(main())
