"""Vault persistence: secret names (with soft-delete state) and their versions (values sealed)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from lanyard.storage import models as m


@dataclass(frozen=True)
class NameRecord:
    vault_key: str
    name_key: str
    name: str
    deleted_at: float | None
    purge_at: float | None


@dataclass(frozen=True)
class VersionRecord:
    name_key: str
    version: str
    sealed_value: bytes
    content_type: str | None
    tags: dict[str, str] | None
    enabled: bool
    not_before: int | None
    expires: int | None
    created: float
    updated: float


def _name(row: m.SecretName) -> NameRecord:
    return NameRecord(row.vault_key, row.name_key, row.name, row.deleted_at, row.purge_at)


def _version(row: m.SecretVersionRow) -> VersionRecord:
    return VersionRecord(
        row.name_key,
        row.version,
        row.sealed_value,
        row.content_type,
        json.loads(row.tags) if row.tags else None,
        row.enabled,
        row.not_before,
        row.expires,
        row.created,
        row.updated,
    )


def get_name(s: Session, vault_key: str, name_key: str) -> NameRecord | None:
    row = s.get(m.SecretName, (vault_key, name_key))
    return None if row is None else _name(row)


def put_name(s: Session, vault_key: str, name_key: str, name: str) -> None:
    if s.get(m.SecretName, (vault_key, name_key)) is None:
        s.add(m.SecretName(vault_key=vault_key, name_key=name_key, name=name, deleted_at=None, purge_at=None))
        s.flush()


def mark_deleted(s: Session, vault_key: str, name_key: str, deleted_at: float | None, purge_at: float | None) -> None:
    row = s.get(m.SecretName, (vault_key, name_key))
    if row is not None:
        row.deleted_at, row.purge_at = deleted_at, purge_at
        s.flush()


def add_version(s: Session, vault_key: str, record: VersionRecord) -> None:
    s.add(
        m.SecretVersionRow(
            vault_key=vault_key,
            name_key=record.name_key,
            version=record.version,
            sealed_value=record.sealed_value,
            content_type=record.content_type,
            tags=json.dumps(record.tags) if record.tags is not None else None,
            enabled=record.enabled,
            not_before=record.not_before,
            expires=record.expires,
            created=record.created,
            updated=record.updated,
        )
    )
    s.flush()


def update_version(
    s: Session,
    vault_key: str,
    name_key: str,
    version: str,
    *,
    content_type: str | None,
    tags: dict[str, str] | None,
    enabled: bool,
    not_before: int | None,
    expires: int | None,
    updated: float,
) -> None:
    row = s.get(m.SecretVersionRow, (vault_key, name_key, version))
    if row is not None:
        row.content_type, row.enabled, row.not_before, row.expires, row.updated = (
            content_type,
            enabled,
            not_before,
            expires,
            updated,
        )
        row.tags = json.dumps(tags) if tags is not None else None
        s.flush()


def versions(s: Session, vault_key: str, name_key: str) -> list[VersionRecord]:
    rows = s.scalars(
        select(m.SecretVersionRow)
        .where(m.SecretVersionRow.vault_key == vault_key, m.SecretVersionRow.name_key == name_key)
        .order_by(m.SecretVersionRow.created, m.SecretVersionRow.version)
    )
    return [_version(r) for r in rows]


def latest_version(s: Session, vault_key: str, name_key: str) -> VersionRecord | None:
    row = s.scalars(
        select(m.SecretVersionRow)
        .where(m.SecretVersionRow.vault_key == vault_key, m.SecretVersionRow.name_key == name_key)
        .order_by(m.SecretVersionRow.created.desc(), m.SecretVersionRow.version.desc())
        .limit(1)
    ).first()
    return None if row is None else _version(row)


def get_version(s: Session, vault_key: str, name_key: str, version: str) -> VersionRecord | None:
    row = s.get(m.SecretVersionRow, (vault_key, name_key, version))
    return None if row is None else _version(row)


def names(s: Session, vault_key: str, *, deleted: bool) -> list[NameRecord]:
    q = select(m.SecretName).where(m.SecretName.vault_key == vault_key)
    q = q.where(m.SecretName.deleted_at.is_not(None) if deleted else m.SecretName.deleted_at.is_(None))
    return [_name(r) for r in s.scalars(q.order_by(m.SecretName.name_key))]


def purge(s: Session, vault_key: str, name_key: str) -> None:
    s.execute(
        delete(m.SecretVersionRow).where(
            m.SecretVersionRow.vault_key == vault_key, m.SecretVersionRow.name_key == name_key
        )
    )
    s.execute(delete(m.SecretName).where(m.SecretName.vault_key == vault_key, m.SecretName.name_key == name_key))


def purge_vault(s: Session, vault_key: str) -> None:
    s.execute(delete(m.SecretVersionRow).where(m.SecretVersionRow.vault_key == vault_key))
    s.execute(delete(m.SecretName).where(m.SecretName.vault_key == vault_key))
