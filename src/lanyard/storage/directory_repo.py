"""Directory persistence: tenants, applications, service principals, credentials, signing keys.

Functions take the caller's Session, so a caller composes several into one transaction; they
return plain records, so nothing above storage touches SQLAlchemy objects.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

__all__ = ["Session"]

from lanyard.storage import models as m
from lanyard.storage.locks import transaction_lock


@dataclass(frozen=True)
class TenantRecord:
    id: str
    display_name: str


@dataclass(frozen=True)
class SubscriptionRecord:
    id: str
    tenant_id: str
    display_name: str
    state: str


@dataclass(frozen=True)
class ApplicationRecord:
    object_id: str
    app_id: str
    tenant_id: str
    display_name: str
    created_at: float
    redirect_uris: str = "{}"  # JSON: {"web": [...], "publicClient": [...], "spa": [...]}
    fallback_public_client: bool | None = None


@dataclass(frozen=True)
class PrincipalRecord:
    object_id: str
    app_id: str
    tenant_id: str
    display_name: str
    kind: str
    resource_id: str | None
    created_at: float


@dataclass(frozen=True)
class CredentialRecord:
    key_id: str
    app_id: str
    kind: str
    display_name: str | None
    secret_hash: str | None
    hint: str | None
    thumbprint_sha1: str | None
    thumbprint_sha256: str | None
    cert_der: bytes | None
    sealed_private_key: bytes | None
    start_at: float
    end_at: float


@dataclass(frozen=True)
class SigningKeyRecord:
    kid: str
    state: str
    sealed_private_key: bytes
    cert_der: bytes
    created_at: float
    activated_at: float | None
    activates_at: float | None = None
    retired_at: float | None = None
    removes_at: float | None = None
    revoked_at: float | None = None


def _tenant(row: m.Tenant) -> TenantRecord:
    return TenantRecord(row.id, row.display_name)


def _app(row: m.Application) -> ApplicationRecord:
    return ApplicationRecord(
        row.object_id,
        row.app_id,
        row.tenant_id,
        row.display_name,
        row.created_at,
        row.redirect_uris or "{}",
        row.fallback_public_client,
    )


def _principal(row: m.ServicePrincipal) -> PrincipalRecord:
    return PrincipalRecord(
        row.object_id, row.app_id, row.tenant_id, row.display_name, row.kind, row.resource_id, row.created_at
    )


def _credential(row: m.Credential) -> CredentialRecord:
    return CredentialRecord(
        row.key_id,
        row.app_id,
        row.kind,
        row.display_name,
        row.secret_hash,
        row.hint,
        row.thumbprint_sha1,
        row.thumbprint_sha256,
        row.cert_der,
        row.sealed_private_key,
        row.start_at,
        row.end_at,
    )


# -- platform state ---------------------------------------------------------------------------


def get_state(s: Session, name: str) -> tuple[str | None, bytes | None] | None:
    row = s.get(m.PlatformState, name)
    return None if row is None else (row.value, row.sealed)


def put_state(s: Session, name: str, value: str | None = None, sealed: bytes | None = None) -> None:
    row = s.get(m.PlatformState, name)
    if row is None:
        s.add(m.PlatformState(name=name, value=value, sealed=sealed))
    else:
        row.value, row.sealed = value, sealed


# -- tenants and subscriptions ----------------------------------------------------------------


def add_tenant(s: Session, tenant_id: str, display_name: str, now: float) -> TenantRecord:
    row = m.Tenant(id=tenant_id, display_name=display_name, created_at=now)
    s.add(row)
    s.flush()
    return _tenant(row)


def list_tenants(s: Session) -> list[TenantRecord]:
    return [_tenant(r) for r in s.scalars(select(m.Tenant).order_by(m.Tenant.created_at))]


def add_subscription(s: Session, sub_id: str, tenant_id: str, display_name: str, now: float) -> SubscriptionRecord:
    row = m.Subscription(id=sub_id, tenant_id=tenant_id, display_name=display_name, state="Enabled", created_at=now)
    s.add(row)
    s.flush()
    return SubscriptionRecord(row.id, row.tenant_id, row.display_name, row.state)


def list_subscriptions(s: Session, tenant_id: str | None = None) -> list[SubscriptionRecord]:
    q = select(m.Subscription).order_by(m.Subscription.created_at)
    if tenant_id:
        q = q.where(m.Subscription.tenant_id == tenant_id)
    return [SubscriptionRecord(r.id, r.tenant_id, r.display_name, r.state) for r in s.scalars(q)]


# -- applications and principals --------------------------------------------------------------


def add_application(
    s: Session, object_id: str, app_id: str, tenant_id: str, display_name: str, now: float
) -> ApplicationRecord:
    row = m.Application(
        object_id=object_id, app_id=app_id, tenant_id=tenant_id, display_name=display_name, created_at=now
    )
    s.add(row)
    s.flush()
    return _app(row)


def get_application(s: Session, *, object_id: str | None = None, app_id: str | None = None) -> ApplicationRecord | None:
    if object_id:
        row = s.get(m.Application, object_id)
    else:
        row = s.scalars(select(m.Application).where(m.Application.app_id == app_id)).first()
    return None if row is None else _app(row)


def list_applications(
    s: Session, tenant_id: str, *, display_name: str | None = None, app_id: str | None = None, limit: int = 1000
) -> list[ApplicationRecord]:
    q = select(m.Application).where(m.Application.tenant_id == tenant_id)
    if display_name is not None:
        q = q.where(m.Application.display_name == display_name)
    if app_id is not None:
        q = q.where(m.Application.app_id == app_id)
    return [_app(r) for r in s.scalars(q.order_by(m.Application.created_at).limit(limit))]


def update_application(s: Session, object_id: str, **values: object) -> None:
    s.execute(update(m.Application).where(m.Application.object_id == object_id).values(**values))


def delete_application(s: Session, object_id: str) -> bool:
    row = s.get(m.Application, object_id)
    if row is None:
        return False
    s.execute(delete(m.Credential).where(m.Credential.app_id == row.app_id))
    s.execute(delete(m.ServicePrincipal).where(m.ServicePrincipal.app_id == row.app_id))
    s.delete(row)
    return True


def add_principal(
    s: Session,
    *,
    object_id: str,
    app_id: str,
    tenant_id: str,
    display_name: str,
    kind: str,
    resource_id: str | None,
    now: float,
) -> PrincipalRecord:
    row = m.ServicePrincipal(
        object_id=object_id,
        app_id=app_id,
        tenant_id=tenant_id,
        display_name=display_name,
        kind=kind,
        resource_id=resource_id,
        created_at=now,
    )
    s.add(row)
    s.flush()
    return _principal(row)


def get_principal(s: Session, *, object_id: str | None = None, app_id: str | None = None) -> PrincipalRecord | None:
    if object_id:
        row = s.get(m.ServicePrincipal, object_id)
    else:
        row = s.scalars(select(m.ServicePrincipal).where(m.ServicePrincipal.app_id == app_id)).first()
    return None if row is None else _principal(row)


def list_principals(
    s: Session,
    tenant_id: str,
    *,
    display_name: str | None = None,
    app_id: str | None = None,
    kind: str | None = None,
    limit: int = 1000,
) -> list[PrincipalRecord]:
    q = select(m.ServicePrincipal).where(m.ServicePrincipal.tenant_id == tenant_id)
    if display_name is not None:
        q = q.where(m.ServicePrincipal.display_name == display_name)
    if app_id is not None:
        q = q.where(m.ServicePrincipal.app_id == app_id)
    if kind is not None:
        q = q.where(m.ServicePrincipal.kind == kind)
    return [_principal(r) for r in s.scalars(q.order_by(m.ServicePrincipal.created_at).limit(limit))]


def delete_principal(s: Session, object_id: str) -> bool:
    row = s.get(m.ServicePrincipal, object_id)
    if row is None:
        return False
    s.execute(delete(m.Credential).where(m.Credential.app_id == row.app_id))
    s.delete(row)
    return True


# -- credentials ------------------------------------------------------------------------------


def add_credential(s: Session, record: CredentialRecord, now: float) -> CredentialRecord:
    s.add(
        m.Credential(
            key_id=record.key_id,
            app_id=record.app_id,
            kind=record.kind,
            display_name=record.display_name,
            secret_hash=record.secret_hash,
            hint=record.hint,
            thumbprint_sha1=record.thumbprint_sha1,
            thumbprint_sha256=record.thumbprint_sha256,
            cert_der=record.cert_der,
            sealed_private_key=record.sealed_private_key,
            start_at=record.start_at,
            end_at=record.end_at,
            created_at=now,
        )
    )
    return record


def list_credentials(s: Session, app_id: str, kind: str | None = None) -> list[CredentialRecord]:
    q = select(m.Credential).where(m.Credential.app_id == app_id)
    if kind is not None:
        q = q.where(m.Credential.kind == kind)
    return [_credential(r) for r in s.scalars(q.order_by(m.Credential.created_at))]


def delete_platform_credentials(s: Session, app_id: str) -> None:
    """Forget every platform-held key of an identity; the next host to need one gets a new one."""
    s.execute(delete(m.Credential).where(m.Credential.app_id == app_id, m.Credential.sealed_private_key.is_not(None)))


def delete_credential(s: Session, app_id: str, key_id: str) -> bool:
    result = s.execute(delete(m.Credential).where(m.Credential.app_id == app_id, m.Credential.key_id == key_id))
    return bool(getattr(result, "rowcount", 0))


# -- signing keys -----------------------------------------------------------------------------


def add_signing_key(s: Session, record: SigningKeyRecord) -> None:
    s.add(
        m.SigningKey(
            kid=record.kid,
            state=record.state,
            sealed_private_key=record.sealed_private_key,
            cert_der=record.cert_der,
            created_at=record.created_at,
            activated_at=record.activated_at,
            activates_at=record.activates_at,
            retired_at=record.retired_at,
            removes_at=record.removes_at,
            revoked_at=record.revoked_at,
        )
    )


def list_signing_keys(s: Session) -> list[SigningKeyRecord]:
    rows = s.scalars(select(m.SigningKey).order_by(m.SigningKey.created_at))
    return [_signing_key(r) for r in rows]


def _signing_key(r: m.SigningKey) -> SigningKeyRecord:
    return SigningKeyRecord(
        r.kid,
        r.state,
        r.sealed_private_key,
        r.cert_der,
        r.created_at,
        r.activated_at,
        r.activates_at,
        r.retired_at,
        r.removes_at,
        r.revoked_at,
    )


def signing_kids(s: Session, states: frozenset[str]) -> list[str]:
    """The kids of the keys in `states`, sorted (no key material read: bindings polls ask often)."""
    # Sorted here, not by the database's collation: the bindings etag must not depend on the backend.
    return sorted(s.scalars(select(m.SigningKey.kid).where(m.SigningKey.state.in_(states))))


def update_signing_key(s: Session, kid: str, **values: object) -> None:
    s.execute(update(m.SigningKey).where(m.SigningKey.kid == kid).values(**values))


def delete_signing_key(s: Session, kid: str) -> None:
    s.execute(delete(m.SigningKey).where(m.SigningKey.kid == kid))


def lock_signing_keys(s: Session) -> None:
    """Serialize key-lifecycle transactions across nodes; what is read after this is current."""
    transaction_lock(s, "signing-keys")


def identities_due_for_renewal(s: Session, created_before: float, limit: int) -> list[PrincipalRecord]:
    """Managed identities whose newest platform credential was made before `created_before`."""
    newer = (
        select(m.Credential.key_id)
        .where(
            m.Credential.app_id == m.ServicePrincipal.app_id,
            m.Credential.sealed_private_key.is_not(None),
            m.Credential.created_at >= created_before,
        )
        .exists()
    )
    older = (
        select(m.Credential.key_id)
        .where(m.Credential.app_id == m.ServicePrincipal.app_id, m.Credential.sealed_private_key.is_not(None))
        .exists()
    )
    q = select(m.ServicePrincipal).where(m.ServicePrincipal.kind == "ManagedIdentity", older, ~newer).limit(limit)
    return [_principal(r) for r in s.scalars(q)]


def end_platform_credentials(s: Session, app_id: str, keep: str, end_at: float) -> None:
    """Every platform credential of `app_id` but `keep` ends by `end_at` (the grace after a renewal)."""
    s.execute(
        update(m.Credential)
        .where(
            m.Credential.app_id == app_id,
            m.Credential.sealed_private_key.is_not(None),
            m.Credential.key_id != keep,
            m.Credential.end_at > end_at,
        )
        .values(end_at=end_at)
    )


def end_certificates(s: Session, app_id: str, keep: str, end_at: float) -> None:
    """Every certificate credential of `app_id` but `keep` ends by `end_at`."""
    s.execute(
        update(m.Credential)
        .where(
            m.Credential.app_id == app_id,
            m.Credential.kind == "certificate",
            m.Credential.key_id != keep,
            m.Credential.end_at > end_at,
        )
        .values(end_at=end_at)
    )


def delete_ended_platform_credentials(s: Session, ended_before: float) -> None:
    s.execute(
        delete(m.Credential).where(m.Credential.sealed_private_key.is_not(None), m.Credential.end_at < ended_before)
    )


def identities_without_platform_credential(s: Session, now: float) -> list[PrincipalRecord]:
    """Managed identities with no platform-held certificate valid at `now` (one query, any size)."""
    usable = (
        select(m.Credential.key_id)
        .where(
            m.Credential.app_id == m.ServicePrincipal.app_id,
            m.Credential.sealed_private_key.is_not(None),
            m.Credential.end_at > now,
        )
        .exists()
    )
    q = select(m.ServicePrincipal).where(m.ServicePrincipal.kind == "ManagedIdentity", ~usable)
    return [_principal(r) for r in s.scalars(q)]
