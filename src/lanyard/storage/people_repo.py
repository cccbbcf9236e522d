"""Persistence of people: users, groups, memberships, and the sign-in grants issued to users.

Like directory_repo: functions take the caller's Session and return plain records.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from lanyard.storage import models as m

# Groups nest; a cycle or an absurd depth must not make a decision loop or explode.
MAX_NESTING = 8


@dataclass(frozen=True)
class UserRecord:
    object_id: str
    tenant_id: str
    user_principal_name: str
    display_name: str
    mail_nickname: str
    account_enabled: bool
    password_hash: str
    tokens_valid_from: float
    created_at: float
    force_change_password: bool = False

    def __repr__(self) -> str:  # the hash stays out of logs and tracebacks
        return f"UserRecord(object_id={self.object_id!r}, upn={self.user_principal_name!r})"


@dataclass(frozen=True)
class GroupRecord:
    object_id: str
    tenant_id: str
    display_name: str
    mail_nickname: str
    description: str | None
    created_at: float


@dataclass(frozen=True)
class MemberRecord:
    group_id: str
    member_id: str
    member_type: str


@dataclass(frozen=True)
class GrantRecord:
    id_hash: str
    kind: str
    family: str
    client_id: str
    user_id: str | None
    tenant_id: str
    scope: str
    user_code: str | None
    detail: str
    state: str
    created_at: float
    expires_at: float


def _user(r: m.User) -> UserRecord:
    return UserRecord(
        r.object_id,
        r.tenant_id,
        r.user_principal_name,
        r.display_name,
        r.mail_nickname,
        r.account_enabled,
        r.password_hash,
        r.tokens_valid_from,
        r.created_at,
        bool(r.force_change_password),
    )


def _group(r: m.DirectoryGroup) -> GroupRecord:
    return GroupRecord(r.object_id, r.tenant_id, r.display_name, r.mail_nickname, r.description, r.created_at)


_GRANT_FIELDS = tuple(f.name for f in fields(GrantRecord))


def _grant(r: m.SignInGrant) -> GrantRecord:
    return GrantRecord(*(getattr(r, name) for name in _GRANT_FIELDS))


@dataclass(frozen=True)
class SsoSessionRecord:
    id_hash: str
    user_id: str
    tenant_id: str
    created_at: float
    last_seen_at: float
    expires_at: float


# -- users ------------------------------------------------------------------------------------


def add_user(s: Session, record: UserRecord) -> UserRecord:
    s.add(
        m.User(
            object_id=record.object_id,
            tenant_id=record.tenant_id,
            user_principal_name=record.user_principal_name,
            upn_key=record.user_principal_name.lower(),
            display_name=record.display_name,
            mail_nickname=record.mail_nickname,
            account_enabled=record.account_enabled,
            password_hash=record.password_hash,
            tokens_valid_from=record.tokens_valid_from,
            created_at=record.created_at,
            force_change_password=record.force_change_password,
        )
    )
    s.flush()
    return record


def get_user(s: Session, *, object_id: str | None = None, upn: str | None = None) -> UserRecord | None:
    if object_id is not None:
        row = s.get(m.User, object_id)
    else:
        row = s.scalars(select(m.User).where(m.User.upn_key == (upn or "").lower())).first()
    return None if row is None else _user(row)


def list_users(
    s: Session, tenant_id: str, *, field: str | None = None, value: str = "", prefix: bool = False, limit: int = 1000
) -> list[UserRecord]:
    q = select(m.User).where(m.User.tenant_id == tenant_id)
    if field == "userPrincipalName":
        key = value.lower()
        q = q.where(m.User.upn_key.startswith(key, autoescape=True) if prefix else m.User.upn_key == key)
    elif field == "displayName":
        q = q.where(m.User.display_name.startswith(value, autoescape=True) if prefix else m.User.display_name == value)
    return [_user(r) for r in s.scalars(q.order_by(m.User.created_at).limit(limit))]


def update_user(s: Session, object_id: str, **values: object) -> None:
    if "user_principal_name" in values:
        values["upn_key"] = str(values["user_principal_name"]).lower()
    s.execute(update(m.User).where(m.User.object_id == object_id).values(**values))


def delete_user(s: Session, object_id: str) -> bool:
    row = s.get(m.User, object_id)
    if row is None:
        return False
    s.execute(delete(m.GroupMember).where(m.GroupMember.member_id == object_id))
    s.execute(delete(m.SignInGrant).where(m.SignInGrant.user_id == object_id))
    s.execute(delete(m.SsoSession).where(m.SsoSession.user_id == object_id))
    s.delete(row)
    return True


# -- groups -----------------------------------------------------------------------------------


def add_group(s: Session, record: GroupRecord) -> GroupRecord:
    s.add(
        m.DirectoryGroup(
            object_id=record.object_id,
            tenant_id=record.tenant_id,
            display_name=record.display_name,
            mail_nickname=record.mail_nickname,
            description=record.description,
            created_at=record.created_at,
        )
    )
    s.flush()
    return record


def get_group(s: Session, object_id: str) -> GroupRecord | None:
    row = s.get(m.DirectoryGroup, object_id)
    return None if row is None else _group(row)


def list_groups(
    s: Session, tenant_id: str, *, display_name: str | None = None, prefix: bool = False, limit: int = 1000
) -> list[GroupRecord]:
    q = select(m.DirectoryGroup).where(m.DirectoryGroup.tenant_id == tenant_id)
    if display_name is not None:
        col = m.DirectoryGroup.display_name
        q = q.where(col.startswith(display_name, autoescape=True) if prefix else col == display_name)
    return [_group(r) for r in s.scalars(q.order_by(m.DirectoryGroup.created_at).limit(limit))]


def delete_group(s: Session, object_id: str) -> bool:
    row = s.get(m.DirectoryGroup, object_id)
    if row is None:
        return False
    # Every member's memberships change (the feed is keyed by member): delete rows one by one
    # through the ORM so each member is announced, then the group, then where it was a member.
    for member in s.scalars(select(m.GroupMember).where(m.GroupMember.group_id == object_id)):
        s.delete(member)
    s.execute(delete(m.GroupMember).where(m.GroupMember.member_id == object_id))
    s.flush()
    s.delete(row)
    return True


def add_member(s: Session, group_id: str, member_id: str, member_type: str, now: float) -> bool:
    if s.get(m.GroupMember, (group_id, member_id)) is not None:
        return False
    s.add(m.GroupMember(group_id=group_id, member_id=member_id, member_type=member_type, created_at=now))
    s.flush()
    return True


def remove_member(s: Session, group_id: str, member_id: str) -> bool:
    row = s.get(m.GroupMember, (group_id, member_id))
    if row is None:
        return False
    s.delete(row)
    s.flush()
    return True


def list_members(s: Session, group_id: str) -> list[MemberRecord]:
    rows = s.scalars(select(m.GroupMember).where(m.GroupMember.group_id == group_id).order_by(m.GroupMember.created_at))
    return [MemberRecord(r.group_id, r.member_id, r.member_type) for r in rows]


def direct_groups_of(s: Session, member_id: str) -> list[str]:
    return sorted(s.scalars(select(m.GroupMember.group_id).where(m.GroupMember.member_id == member_id)))


def groups_of(s: Session, member_id: str) -> frozenset[str]:
    """Every group `member_id` belongs to, directly or through nested groups (transitively)."""
    found: set[str] = set()
    frontier = {member_id}
    for _ in range(MAX_NESTING):
        if not frontier:
            break
        rows = s.scalars(select(m.GroupMember.group_id).where(m.GroupMember.member_id.in_(sorted(frontier))))
        frontier = set(rows) - found
        found |= frontier
    return frozenset(found)


# -- sign-in grants ---------------------------------------------------------------------------


def add_grant(s: Session, record: GrantRecord) -> None:
    s.add(m.SignInGrant(**asdict(record)))
    s.flush()


def get_grant(s: Session, id_hash: str, kind: str, *, for_update: bool = False) -> GrantRecord | None:
    q = select(m.SignInGrant).where(m.SignInGrant.id_hash == id_hash, m.SignInGrant.kind == kind)
    if for_update:
        q = q.with_for_update()
    row = s.scalars(q).first()
    return None if row is None else _grant(row)


def grant_by_user_code(s: Session, user_code: str) -> GrantRecord | None:
    row = s.scalars(
        select(m.SignInGrant).where(m.SignInGrant.user_code == user_code, m.SignInGrant.kind == "device")
    ).first()
    return None if row is None else _grant(row)


def claim_grant(s: Session, id_hash: str, from_state: str, to_state: str, **values: object) -> bool:
    """Move a grant from one state to the next; False when another request got there first.
    One conditional UPDATE: two redemptions of one code cannot both succeed, on any backend."""
    result = s.execute(
        update(m.SignInGrant)
        .where(m.SignInGrant.id_hash == id_hash, m.SignInGrant.state == from_state)
        .values(state=to_state, **values)
    )
    return bool(getattr(result, "rowcount", 0))


def revoke_family(s: Session, family: str) -> None:
    s.execute(update(m.SignInGrant).where(m.SignInGrant.family == family).values(state="revoked"))


def revoke_user_grants(s: Session, user_id: str, client_id: str | None = None) -> int:
    q = update(m.SignInGrant).where(m.SignInGrant.user_id == user_id, m.SignInGrant.state != "revoked")
    if client_id is not None:
        q = q.where(m.SignInGrant.client_id == client_id)
    result = s.execute(q.values(state="revoked"))
    return int(getattr(result, "rowcount", 0))


def delete_expired_grants(s: Session, before: float, retired_before: float) -> None:
    """Grants past their end; retired refresh tokens (whose reuse must still revoke their family)
    only once their family could no longer be alive."""
    s.execute(delete(m.SignInGrant).where(m.SignInGrant.expires_at < before, m.SignInGrant.state != "used"))
    s.execute(delete(m.SignInGrant).where(m.SignInGrant.state == "used", m.SignInGrant.created_at < retired_before))


# -- SSO sessions -----------------------------------------------------------------------------


def add_sso_session(s: Session, record: SsoSessionRecord) -> None:
    s.add(m.SsoSession(**asdict(record)))
    s.flush()


def get_sso_session(s: Session, id_hash: str) -> SsoSessionRecord | None:
    row = s.get(m.SsoSession, id_hash)
    if row is None:
        return None
    return SsoSessionRecord(row.id_hash, row.user_id, row.tenant_id, row.created_at, row.last_seen_at, row.expires_at)


def touch_sso_session(s: Session, id_hash: str, now: float) -> None:
    s.execute(update(m.SsoSession).where(m.SsoSession.id_hash == id_hash).values(last_seen_at=now))


def end_sso_session(s: Session, id_hash: str) -> bool:
    result = s.execute(delete(m.SsoSession).where(m.SsoSession.id_hash == id_hash))
    return bool(getattr(result, "rowcount", 0))


def end_user_sso_sessions(s: Session, user_id: str) -> None:
    s.execute(delete(m.SsoSession).where(m.SsoSession.user_id == user_id))


def delete_expired_sso_sessions(s: Session, idle_before: float, now: float) -> None:
    s.execute(delete(m.SsoSession).where((m.SsoSession.expires_at < now) | (m.SsoSession.last_seen_at < idle_before)))
