"""Reading the audit table, and accepting the records a host agent ships from its journal."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, Table, insert, select

from lanyard.audit.record import FIELDS, GENESIS, digest
from lanyard.audit.sinks import chain_head, record_of, row_of
from lanyard.storage import models as m

_TABLE: Table = m.AuditRecord.__table__  # type: ignore[assignment]
MAX_PAGE = 1000
MAX_SHIPPED = 2000


@dataclass(frozen=True)
class Query:
    principal: str | None = None
    resource: str | None = None
    action: str | None = None
    since: float | None = None
    until: float | None = None
    chain: str | None = None
    after: int = 0  # the id of the last record of the previous page
    top: int = MAX_PAGE
    by_chain: bool = False  # order by (chain, seq), for walking the chains
    newest_first: bool = False  # descending ids, continued with `before` (the portal's view)
    before: int | None = None  # newest_first: the id of the last record of the previous page


def list_records(engine: Engine, q: Query) -> tuple[list[dict[str, Any]], int | None]:
    """One page of records and the id to continue after (None on the last page)."""
    t = _TABLE
    stmt = select(t)
    if q.principal:
        stmt = stmt.where((t.c.principal == q.principal.lower()) | (t.c.app_id == q.principal.lower()))
    if q.resource:
        stmt = stmt.where(t.c.resource.contains(q.resource, autoescape=True))
    if q.action:
        stmt = stmt.where(t.c.action.startswith(q.action, autoescape=True))
    if q.since is not None:
        stmt = stmt.where(t.c.at >= q.since)
    if q.until is not None:
        stmt = stmt.where(t.c.at < q.until)
    if q.chain:
        stmt = stmt.where(t.c.chain == q.chain)
    top = max(1, min(q.top, MAX_PAGE))
    if q.by_chain:
        # Keyset paging over (chain, seq) encoded as the row id of the last one seen is not ordered;
        # page by offset instead (verification is an operator's occasional walk).
        stmt = stmt.order_by(t.c.chain, t.c.seq).offset(q.after).limit(top + 1)
    elif q.newest_first:
        if q.before is not None:
            stmt = stmt.where(t.c.id < q.before)
        stmt = stmt.order_by(t.c.id.desc()).limit(top + 1)
    else:
        stmt = stmt.where(t.c.id > q.after).order_by(t.c.id).limit(top + 1)
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    more = len(rows) > top
    records = [_public(record_of(r)) for r in rows[:top]]
    if not more:
        return records, None
    return records, (q.after + top) if q.by_chain else int(rows[top - 1].id)


def _public(record: dict[str, Any]) -> dict[str, Any]:
    record.pop("id", None)
    return record


class ShipmentRefused(Exception):
    def __init__(self, message: str, head: tuple[int, str]) -> None:
        super().__init__(message)
        self.message = message
        self.head = head


def head_of(engine: Engine, chain: str) -> tuple[int, str]:
    return chain_head(engine, chain) or (0, GENESIS)


def accept_shipment(engine: Engine, chain: str, host_id: str, records: Sequence[Any]) -> tuple[int, str]:
    """Store a host agent's records on its own chain: each must follow the stored head and hash to
    what it claims; records already stored are skipped (a retried shipment). Returns the new head."""
    if len(records) > MAX_SHIPPED:
        raise ShipmentRefused(f"at most {MAX_SHIPPED} records per shipment", head_of(engine, chain))
    with engine.begin() as conn:
        row = conn.execute(
            select(_TABLE.c.seq, _TABLE.c.sha256).where(_TABLE.c.chain == chain).order_by(_TABLE.c.seq.desc()).limit(1)
        ).first()
        seq, sha = (int(row[0]), str(row[1])) if row is not None else (0, GENESIS)
        rows = []
        for raw in records:
            record = _shipped(raw, chain, host_id)
            if record["seq"] <= seq:
                continue
            if record["seq"] != seq + 1 or record["prev_sha256"] != sha:
                raise ShipmentRefused(f"record {record['seq']} does not follow record {seq}", (seq, sha))
            if digest(record) != record["sha256"]:
                raise ShipmentRefused(f"record {record['seq']} does not hash to its sha256", (seq, sha))
            rows.append(row_of(record))
            seq, sha = record["seq"], record["sha256"]
        if rows:
            conn.execute(insert(_TABLE), rows)
    return seq, sha


def _shipped(raw: Any, chain: str, host_id: str) -> dict[str, Any]:
    if not isinstance(raw, dict) or not isinstance(raw.get("detail"), dict):
        raise ShipmentRefused("every record must be an object with a detail object", (0, GENESIS))
    record = {name: raw.get(name) for name in FIELDS}
    record["prev_sha256"], record["sha256"] = raw.get("prev_sha256"), raw.get("sha256")
    if record["chain"] != chain or record["host"] != host_id:
        raise ShipmentRefused("records must be on the calling host's own chain", (0, GENESIS))
    if not isinstance(record["seq"], int) or not isinstance(record["at"], (int, float)):
        raise ShipmentRefused("seq and at must be numbers", (0, GENESIS))
    for name in ("action", "outcome", "prev_sha256", "sha256"):
        value = record[name]
        if not isinstance(value, str) or len(value) > 64:
            raise ShipmentRefused(f"{name} must be a short string", (0, GENESIS))
    for name, limit in (("principal", 64), ("app_id", 64), ("resource", 1200)):
        value = record[name]
        if value is not None and (not isinstance(value, str) or len(value) > limit):
            raise ShipmentRefused(f"{name} must be a string of at most {limit} characters", (0, GENESIS))
    return record
