"""Federated identity credentials: who outside may exchange its tokens for a client's.

Functions take the caller's Session and return plain records, like directory_repo.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from lanyard.storage import models as m
from lanyard.storage.locks import transaction_lock


@dataclass(frozen=True)
class FederatedRecord:
    id: str
    app_id: str
    owner_kind: str  # "identity" | "application"
    owner_key: str
    name: str
    issuer: str
    subject: str | None
    claims_expression: str | None
    language_version: int | None
    audiences: tuple[str, ...]
    description: str | None
    created_at: float
    updated_at: float


def _record(row: m.FederatedCredential) -> FederatedRecord:
    return FederatedRecord(
        row.id,
        row.app_id,
        row.owner_kind,
        row.owner_key,
        row.name,
        row.issuer,
        row.subject,
        row.claims_expression,
        row.language_version,
        tuple(orjson.loads(row.audiences)),
        row.description,
        row.created_at,
        row.updated_at,
    )


def lock_owner(s: Session, owner_key: str) -> None:
    """Serialize writes to one owner's credentials (on every node): take it, then read, then write,
    so two creates of one name make one credential, not a unique-index error."""
    transaction_lock(s, f"federated-credentials:{owner_key}")


def save(s: Session, record: FederatedRecord) -> FederatedRecord:
    """Insert, or replace the credential of the same owner and name (a PUT)."""
    row = s.scalars(
        select(m.FederatedCredential).where(
            m.FederatedCredential.owner_key == record.owner_key,
            func.lower(m.FederatedCredential.name) == record.name.lower(),
        )
    ).first()
    if row is None:
        row = m.FederatedCredential(id=record.id, created_at=record.created_at)
        s.add(row)
    row.app_id = record.app_id
    row.owner_kind = record.owner_kind
    row.owner_key = record.owner_key
    row.name = record.name
    row.issuer = record.issuer
    row.subject = record.subject
    row.claims_expression = record.claims_expression
    row.language_version = record.language_version
    row.audiences = orjson.dumps(list(record.audiences)).decode()
    row.description = record.description
    row.updated_at = record.updated_at
    s.flush()
    return _record(row)


def get(s: Session, owner_key: str, name: str) -> FederatedRecord | None:
    row = s.scalars(
        select(m.FederatedCredential).where(
            m.FederatedCredential.owner_key == owner_key, func.lower(m.FederatedCredential.name) == name.lower()
        )
    ).first()
    return None if row is None else _record(row)


def get_by_id(s: Session, owner_key: str, credential_id: str) -> FederatedRecord | None:
    row = s.get(m.FederatedCredential, credential_id)
    return None if row is None or row.owner_key != owner_key else _record(row)


def list_for_owner(s: Session, owner_key: str) -> list[FederatedRecord]:
    q = select(m.FederatedCredential).where(m.FederatedCredential.owner_key == owner_key)
    return [_record(r) for r in s.scalars(q.order_by(m.FederatedCredential.created_at, m.FederatedCredential.name))]


def list_for_client(s: Session, app_id: str) -> list[FederatedRecord]:
    q = select(m.FederatedCredential).where(m.FederatedCredential.app_id == app_id)
    return [_record(r) for r in s.scalars(q.order_by(m.FederatedCredential.created_at))]


def delete_one(s: Session, owner_key: str, credential_id: str) -> bool:
    row = s.get(m.FederatedCredential, credential_id)
    if row is None or row.owner_key != owner_key:
        return False
    s.delete(row)
    s.flush()
    return True


def delete_for_owner(s: Session, owner_key: str) -> None:
    s.execute(delete(m.FederatedCredential).where(m.FederatedCredential.owner_key == owner_key))
