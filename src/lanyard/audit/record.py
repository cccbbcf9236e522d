"""Audit records and their hash chain (docs/security.md, "The audit trail").

A record is a flat set of fields plus a `detail` object. Each chain (one per server process, one
per host agent) numbers its records from 1; each record carries the sha256 of the one before it
(`prev_sha256`, GENESIS for the first) and its own sha256 over a canonical encoding of every other
field, so a changed, inserted or removed record breaks the chain at that point.

Tokens are never recorded: a token is named by `token_ref`, the first 16 hex digits of the
sha256 of its `uti`/`jti`, which an investigator can compute from a token they hold.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

GENESIS = "0" * 64
FIELDS = ("chain", "seq", "at", "action", "outcome", "principal", "app_id", "resource", "host", "detail")


@dataclass(frozen=True)
class Event:
    """What happened, before it is placed on a chain."""

    action: str
    outcome: str = "granted"  # granted | denied | failed | request
    principal: str | None = None
    app_id: str | None = None
    resource: str | None = None
    host: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


def coalesce(events: list[Event]) -> list[Event]:
    """Identical events of one batch as one, whose detail says how many (`count`). A cached token
    served 30 times to the same process in the same few milliseconds is one record saying so, not
    30 records: every grant is still covered by a record naming its token, at a fraction of the cost."""
    if len(events) < 2:
        return events
    counts: dict[bytes, list[Any]] = {}
    for event in events:
        key = orjson.dumps(
            [event.action, event.outcome, event.principal, event.app_id, event.resource, event.host, event.detail],
            option=orjson.OPT_SORT_KEYS,
        )
        seen = counts.get(key)
        if seen is None:
            counts[key] = [event, 1]
        else:
            seen[1] += 1
    if len(counts) == len(events):
        return events
    return [
        event
        if n == 1
        else Event(
            event.action,
            event.outcome,
            event.principal,
            event.app_id,
            event.resource,
            event.host,
            {**event.detail, "count": n},
        )
        for event, n in counts.values()
    ]


def outcome_of(status: int) -> str:
    if status < 400:
        return "granted"
    return "denied" if status in (401, 403) else "failed"


def token_ref(token_id: str) -> str:
    return hashlib.sha256(token_id.encode()).hexdigest()[:16]


def unverified_claims(token: str) -> dict[str, Any]:
    """The payload of a compact JWS, unchecked: for naming what a record is about, never for trusting it."""
    parts = token.split(".")
    if len(parts) != 3 or len(parts[1]) > 16384:
        return {}
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return {}
    return claims if isinstance(claims, dict) else {}


def ref_of_token(token: str) -> str | None:
    claims = unverified_claims(token)
    token_id = claims.get("uti") or claims.get("jti")
    return token_ref(str(token_id)) if token_id else None


def canonical(record: Mapping[str, Any]) -> bytes:
    """The bytes a record's sha256 covers: every field but sha256 itself, keys sorted."""
    body = {name: record.get(name) for name in FIELDS}
    body["prev_sha256"] = record.get("prev_sha256")
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def digest(record: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(record)).hexdigest()


def storable(value: Any) -> Any:
    """What a request carried, as every sink can hold it: a NUL (a path of `%00`) is text PostgreSQL
    refuses, and a refused record would refuse the request with it. NULs become U+FFFD."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(v) for v in value]
    return value


@dataclass
class Chain:
    """The head of one chain, advanced by the one writer that owns it."""

    name: str
    seq: int = 0
    sha256: str = GENESIS

    def extend(self, events: Iterable[Event], now: float) -> list[dict[str, Any]]:
        """Chained records for `events`, without moving the head (see `advance`)."""
        records = []
        seq, prev = self.seq, self.sha256
        at = round(now, 6)
        for event in events:
            seq += 1
            record: dict[str, Any] = {
                "chain": self.name,
                "seq": seq,
                "at": at,
                "action": event.action,
                "outcome": event.outcome,
                "principal": storable(event.principal),
                "app_id": storable(event.app_id),
                "resource": storable(event.resource),
                "host": storable(event.host),
                "detail": storable(dict(event.detail)),
                "prev_sha256": prev,
            }
            record["sha256"] = prev = digest(record)
            records.append(record)
        return records

    def advance(self, records: list[dict[str, Any]]) -> None:
        if records:
            self.seq, self.sha256 = records[-1]["seq"], records[-1]["sha256"]


@dataclass(frozen=True)
class Break:
    chain: str
    seq: int
    reason: str


def verify(records: Iterable[Mapping[str, Any]], heads: Mapping[str, tuple[int, str]] | None = None) -> Break | None:
    """Walk records ordered by (chain, seq); the first one that does not follow its predecessor.

    `heads` gives a chain's last verified (seq, sha256) when the walk starts mid-chain."""
    last: dict[str, tuple[int, str]] = dict(heads or {})
    for record in records:
        chain, seq = str(record.get("chain")), int(record.get("seq") or 0)
        prev_seq, prev_sha = last.get(chain, (0, GENESIS))
        if seq != prev_seq + 1:
            return Break(chain, seq, f"expected record {prev_seq + 1}, found {seq} (records missing or reordered)")
        if record.get("prev_sha256") != prev_sha:
            return Break(chain, seq, "prev_sha256 does not match the record before it")
        if digest(record) != record.get("sha256"):
            return Break(chain, seq, "sha256 does not match the record's content (altered)")
        last[chain] = (seq, str(record["sha256"]))
    return None
