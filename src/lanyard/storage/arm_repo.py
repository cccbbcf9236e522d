"""Control-plane persistence: resource groups, resources, identity links, role assignments."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from lanyard.storage import models as m
from lanyard.storage import people_repo


@dataclass(frozen=True)
class GroupRecord:
    key: str
    id: str
    subscription_id: str
    name: str
    location: str
    tags: dict[str, str]


@dataclass(frozen=True)
class ResourceRecord:
    key: str
    id: str
    subscription_id: str
    group_key: str
    type: str
    name: str
    parent_key: str | None
    kind: str | None
    location: str
    tags: dict[str, str]
    properties: dict[str, Any]
    identity_type: str
    system_principal_id: str | None
    user_identity_keys: tuple[str, ...]
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class AssignmentRecord:
    name: str
    scope: str
    role_definition_id: str
    principal_id: str
    principal_type: str
    description: str | None
    created_by: str | None
    created_at: float
    updated_at: float


def _group(row: m.ResourceGroup) -> GroupRecord:
    return GroupRecord(row.key, row.id, row.subscription_id, row.name, row.location, json.loads(row.tags))


def _resource(s: Session, row: m.Resource) -> ResourceRecord:
    links = s.scalars(select(m.ResourceIdentity.identity_key).where(m.ResourceIdentity.resource_key == row.key)).all()
    return ResourceRecord(
        row.key,
        row.id,
        row.subscription_id,
        row.group_key,
        row.type,
        row.name,
        row.parent_key,
        row.kind,
        row.location,
        json.loads(row.tags),
        json.loads(row.properties),
        row.identity_type,
        row.system_principal_id,
        tuple(sorted(links)),
        row.created_at,
        row.updated_at,
    )


def _assignment(row: m.RoleAssignment) -> AssignmentRecord:
    return AssignmentRecord(
        row.name,
        row.scope,
        row.role_definition_id,
        row.principal_id,
        row.principal_type,
        row.description,
        row.created_by,
        row.created_at,
        row.updated_at,
    )


# -- resource groups --------------------------------------------------------------------------


def get_group(s: Session, key: str) -> GroupRecord | None:
    row = s.get(m.ResourceGroup, key)
    return None if row is None else _group(row)


def put_group(
    s: Session, key: str, id_: str, sub: str, name: str, location: str, tags: dict[str, str], now: float
) -> GroupRecord:
    row = s.get(m.ResourceGroup, key)
    if row is None:
        row = m.ResourceGroup(
            key=key, id=id_, subscription_id=sub, name=name, location=location, tags=json.dumps(tags), created_at=now
        )
        s.add(row)
    else:
        row.tags = json.dumps(tags)
    s.flush()
    return _group(row)


def list_groups(s: Session, sub: str) -> list[GroupRecord]:
    rows = s.scalars(
        select(m.ResourceGroup).where(m.ResourceGroup.subscription_id == sub).order_by(m.ResourceGroup.key)
    )
    return [_group(r) for r in rows]


def delete_group_row(s: Session, key: str) -> None:
    s.execute(delete(m.ResourceGroup).where(m.ResourceGroup.key == key))


# -- resources --------------------------------------------------------------------------------


def get_resource(s: Session, key: str) -> ResourceRecord | None:
    row = s.get(m.Resource, key)
    return None if row is None else _resource(s, row)


def save_resource(s: Session, record: ResourceRecord) -> ResourceRecord:
    """Insert or replace a resource row and its identity links."""
    row = s.get(m.Resource, record.key)
    values = dict(
        id=record.id,
        subscription_id=record.subscription_id,
        group_key=record.group_key,
        type=record.type,
        name=record.name,
        parent_key=record.parent_key,
        kind=record.kind,
        location=record.location,
        tags=json.dumps(record.tags),
        properties=json.dumps(record.properties),
        identity_type=record.identity_type,
        system_principal_id=record.system_principal_id,
        created_at=record.created_at,
        updated_at=record.updated_at,
    )
    if row is None:
        s.add(m.Resource(key=record.key, **values))
    else:
        for name, value in values.items():
            setattr(row, name, value)
    s.flush()
    s.execute(delete(m.ResourceIdentity).where(m.ResourceIdentity.resource_key == record.key))
    for identity_key in record.user_identity_keys:
        s.add(m.ResourceIdentity(resource_key=record.key, identity_key=identity_key))
    s.flush()
    return record


def resources_named(s: Session, type_: str, name: str) -> list[ResourceRecord]:
    """Resources of one type by name, case-insensitively (vault names are unique platform-wide)."""
    q = select(m.Resource).where(m.Resource.type == type_, func.lower(m.Resource.name) == name.lower())
    return [_resource(s, r) for r in s.scalars(q)]


def list_resources(
    s: Session,
    *,
    sub: str | None = None,
    group_key: str | None = None,
    type_: str | None = None,
    parent_key: str | None = None,
    limit: int | None = None,
    after: str | None = None,
) -> list[ResourceRecord]:
    q = select(m.Resource)
    if sub is not None:
        q = q.where(m.Resource.subscription_id == sub)
    if group_key is not None:
        q = q.where(m.Resource.group_key == group_key)
    if type_ is not None:
        q = q.where(m.Resource.type == type_)
    if parent_key is not None:
        q = q.where(m.Resource.parent_key == parent_key)
    if after is not None:
        q = q.where(m.Resource.key > after)
    q = q.order_by(m.Resource.key)
    if limit is not None:
        q = q.limit(limit)
    return [_resource(s, r) for r in s.scalars(q)]


def children(s: Session, key: str) -> list[ResourceRecord]:
    return [_resource(s, r) for r in s.scalars(select(m.Resource).where(m.Resource.parent_key == key))]


def users_of_identity(s: Session, identity_key: str) -> list[str]:
    return list(
        s.scalars(select(m.ResourceIdentity.resource_key).where(m.ResourceIdentity.identity_key == identity_key))
    )


def delete_resource_row(s: Session, key: str) -> None:
    s.execute(delete(m.ResourceIdentity).where(m.ResourceIdentity.resource_key == key))
    s.execute(delete(m.Resource).where(m.Resource.key == key))


# -- role assignments -------------------------------------------------------------------------


def add_assignment(s: Session, record: AssignmentRecord) -> AssignmentRecord:
    s.add(
        m.RoleAssignment(
            name=record.name,
            scope=record.scope,
            scope_key=record.scope.lower(),
            role_definition_id=record.role_definition_id,
            principal_id=record.principal_id,
            principal_type=record.principal_type,
            description=record.description,
            created_by=record.created_by,
            created_at=record.created_at,
            updated_at=record.updated_at,
        )
    )
    s.flush()
    return record


def get_assignment(s: Session, name: str) -> AssignmentRecord | None:
    row = s.get(m.RoleAssignment, name)
    return None if row is None else _assignment(row)


def find_assignment(s: Session, scope: str, role_definition_id: str, principal_id: str) -> AssignmentRecord | None:
    row = s.scalars(
        select(m.RoleAssignment).where(
            m.RoleAssignment.scope_key == scope.lower(),
            m.RoleAssignment.role_definition_id == role_definition_id,
            m.RoleAssignment.principal_id == principal_id,
        )
    ).first()
    return None if row is None else _assignment(row)


def assignments_for_principal(s: Session, principal_id: str) -> list[AssignmentRecord]:
    rows = s.scalars(select(m.RoleAssignment).where(m.RoleAssignment.principal_id == principal_id))
    return [_assignment(r) for r in rows]


def assignments_for_caller(s: Session, principal_id: str) -> tuple[frozenset[str], list[AssignmentRecord]]:
    """The caller's principals (itself and every group it is in, nested) and their assignments."""
    principals = frozenset({principal_id}) | people_repo.groups_of(s, principal_id)
    rows = s.scalars(select(m.RoleAssignment).where(m.RoleAssignment.principal_id.in_(sorted(principals))))
    return principals, [_assignment(r) for r in rows]


def list_assignments(s: Session, sub: str) -> list[AssignmentRecord]:
    prefix = f"/subscriptions/{sub}".lower()
    rows = s.scalars(
        select(m.RoleAssignment)
        .where(m.RoleAssignment.scope_key.startswith(prefix, autoescape=True))
        .order_by(m.RoleAssignment.created_at)
    )
    return [_assignment(r) for r in rows if r.scope_key == prefix or r.scope_key.startswith(prefix + "/")]


def delete_assignment(s: Session, name: str) -> None:
    s.execute(delete(m.RoleAssignment).where(m.RoleAssignment.name == name))


def delete_assignments_at_or_below(s: Session, scope_key: str) -> None:
    s.execute(
        delete(m.RoleAssignment).where(
            (m.RoleAssignment.scope_key == scope_key)
            | m.RoleAssignment.scope_key.startswith(scope_key + "/", autoescape=True)
        )
    )


def delete_assignments_for_principal(s: Session, principal_id: str) -> None:
    s.execute(delete(m.RoleAssignment).where(m.RoleAssignment.principal_id == principal_id))
