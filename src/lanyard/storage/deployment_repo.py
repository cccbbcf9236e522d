"""Subscription-scope deployment records (group-scope ones are rows of `resources`, see arm_repo)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from lanyard.storage import models as m


@dataclass(frozen=True)
class SubscriptionDeploymentRecord:
    key: str
    id: str
    subscription_id: str
    name: str
    location: str
    state: dict[str, Any]
    created_at: float
    updated_at: float


def _record(row: m.SubscriptionDeployment) -> SubscriptionDeploymentRecord:
    return SubscriptionDeploymentRecord(
        row.key, row.id, row.subscription_id, row.name, row.location, json.loads(row.state), row.created_at,
        row.updated_at,
    )  # fmt: skip


def get(s: Session, key: str) -> SubscriptionDeploymentRecord | None:
    row = s.get(m.SubscriptionDeployment, key)
    return None if row is None else _record(row)


def save(s: Session, record: SubscriptionDeploymentRecord) -> SubscriptionDeploymentRecord:
    row = s.get(m.SubscriptionDeployment, record.key)
    values = dict(
        id=record.id,
        subscription_id=record.subscription_id,
        name=record.name,
        location=record.location,
        state=json.dumps(record.state),
        created_at=record.created_at,
        updated_at=record.updated_at,
    )
    if row is None:
        s.add(m.SubscriptionDeployment(key=record.key, **values))
    else:
        for name, value in values.items():
            setattr(row, name, value)
    s.flush()
    return record


def list_for(s: Session, sub: str) -> list[SubscriptionDeploymentRecord]:
    q = select(m.SubscriptionDeployment).where(m.SubscriptionDeployment.subscription_id == sub)
    return [_record(r) for r in s.scalars(q.order_by(m.SubscriptionDeployment.key))]


def remove(s: Session, key: str) -> None:
    s.execute(delete(m.SubscriptionDeployment).where(m.SubscriptionDeployment.key == key))
