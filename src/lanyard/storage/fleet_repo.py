"""Host-agent persistence: hosts, join tokens, placements."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from lanyard.storage import models as m


@dataclass(frozen=True)
class HostRecord:
    id: str
    name: str
    principal_id: str
    created_at: float


def _host(row: m.Host) -> HostRecord:
    return HostRecord(row.id, row.name, row.principal_id, row.created_at)


def add_host(s: Session, host_id: str, name: str, principal_id: str, now: float) -> HostRecord:
    row = m.Host(id=host_id, name=name, principal_id=principal_id, created_at=now)
    s.add(row)
    s.flush()
    return _host(row)


def get_host(s: Session, host_id: str) -> HostRecord | None:
    row = s.get(m.Host, host_id)
    return None if row is None else _host(row)


def host_by_principal(s: Session, principal_id: str) -> HostRecord | None:
    row = s.scalars(select(m.Host).where(m.Host.principal_id == principal_id)).first()
    return None if row is None else _host(row)


def list_hosts(s: Session) -> list[HostRecord]:
    return [_host(r) for r in s.scalars(select(m.Host).order_by(m.Host.created_at))]


def delete_host(s: Session, host_id: str) -> None:
    """The host, its placements and its acknowledgement: it is no longer part of the platform."""
    s.execute(delete(m.Placement).where(m.Placement.host_id == host_id))
    s.execute(delete(m.HostAck).where(m.HostAck.host_id == host_id))
    s.execute(delete(m.Host).where(m.Host.id == host_id))


def find_host(s: Session, id_or_name: str) -> list[HostRecord]:
    """Hosts by id, or else by name (names need not be unique: the caller decides)."""
    found = s.get(m.Host, id_or_name.lower())
    if found is not None:
        return [_host(found)]
    return [_host(r) for r in s.scalars(select(m.Host).where(m.Host.name == id_or_name))]


def add_join_token(
    s: Session, token_hash: str, host_name: str | None, expires_at: float, created_by: str | None
) -> None:
    s.add(
        m.JoinToken(
            token_hash=token_hash, host_name=host_name, expires_at=expires_at, used_at=None, created_by=created_by
        )
    )
    s.flush()


def use_join_token(s: Session, token_hash: str, now: float) -> m.JoinToken | None:
    """Marks the token used and returns it, or None if unknown, used or expired (one use, ever).

    One conditional UPDATE decides, on every backend: SQLite ignores FOR UPDATE and reads before a
    session's first write run outside its transaction, so a read-then-write let two joins share a
    token there."""
    claimed = s.execute(
        update(m.JoinToken)
        .where(m.JoinToken.token_hash == token_hash, m.JoinToken.used_at.is_(None), m.JoinToken.expires_at > now)
        .values(used_at=now)
    )
    if getattr(claimed, "rowcount", 0) != 1:
        return None
    return s.get(m.JoinToken, token_hash)


def place(s: Session, host_id: str, resource_key: str, now: float) -> bool:
    if s.get(m.Placement, (host_id, resource_key)) is not None:
        return False
    s.add(m.Placement(host_id=host_id, resource_key=resource_key, created_at=now))
    s.flush()
    return True


def unplace(s: Session, host_id: str, resource_key: str) -> bool:
    result = s.execute(
        delete(m.Placement).where(m.Placement.host_id == host_id, m.Placement.resource_key == resource_key)
    )
    return bool(getattr(result, "rowcount", 0))


def placements_for_host(s: Session, host_id: str) -> list[str]:
    return list(
        s.scalars(
            select(m.Placement.resource_key).where(m.Placement.host_id == host_id).order_by(m.Placement.resource_key)
        )
    )


def delete_placements_for_resource(s: Session, resource_key: str) -> None:
    s.execute(delete(m.Placement).where(m.Placement.resource_key == resource_key))


# -- acknowledgements: which change each host's agent has applied, seen by every node ----------


def acknowledge(s: Session, host_id: str, change_id: int, now: float) -> None:
    """Record that `host_id` is current as of `change_id` and was seen now (never moves back)."""
    row = s.get(m.HostAck, host_id, with_for_update=s.get_bind().dialect.name == "postgresql")
    if row is None:
        s.add(m.HostAck(host_id=host_id, change_id=change_id, seen_at=now))
    else:
        row.change_id = max(row.change_id, change_id)
        row.seen_at = now


def hosts_behind(s: Session, change_id: int, seen_since: float) -> list[str]:
    """Hosts seen since `seen_since` whose agent has not yet applied `change_id`."""
    q = select(m.HostAck.host_id).where(m.HostAck.seen_at >= seen_since, m.HostAck.change_id < change_id)
    return list(s.scalars(q))
