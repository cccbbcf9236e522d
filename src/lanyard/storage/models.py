"""The database schema. Alembic migrations in ``migrations/versions`` create exactly this.

Portable SQL only (SQLite and PostgreSQL): string GUID keys, epoch-second floats for times,
binary columns for sealed values. Anything secret is sealed by the barrier before it gets here.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class PlatformState(Base):
    """Small named values: ids fixed at first start, and sealed platform secrets (CA key, admin secret)."""

    __tablename__ = "platform_state"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str | None] = mapped_column(Text)
    sealed: Mapped[bytes | None] = mapped_column(LargeBinary)


class Tenant(Base):
    __tablename__ = "tenants"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[float] = mapped_column(Float)


class Subscription(Base):
    __tablename__ = "subscriptions"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    display_name: Mapped[str] = mapped_column(String(256))
    state: Mapped[str] = mapped_column(String(32), default="Enabled")
    created_at: Mapped[float] = mapped_column(Float)


class Application(Base):
    """An app registration (Graph `application`): owns client credentials for its service principal."""

    __tablename__ = "applications"
    object_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    app_id: Mapped[str] = mapped_column(String(36), unique=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    display_name: Mapped[str] = mapped_column(String(256), index=True)
    created_at: Mapped[float] = mapped_column(Float)
    # Where sign-in answers may be sent: JSON {"web": [...], "publicClient": [...], "spa": [...]}.
    redirect_uris: Mapped[str] = mapped_column(Text, default="{}")
    # Graph's isFallbackPublicClient: password and device-code sign-in without a client credential.
    fallback_public_client: Mapped[bool | None] = mapped_column(Boolean)


class ServicePrincipal(Base):
    """The identity tokens are issued to: an application's, or a managed identity's."""

    __tablename__ = "service_principals"
    object_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    app_id: Mapped[str] = mapped_column(String(36), unique=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    display_name: Mapped[str] = mapped_column(String(256), index=True)
    # "Application" or "ManagedIdentity", as Graph's servicePrincipalType.
    kind: Mapped[str] = mapped_column(String(32))
    # For managed identities: the ARM id of the resource (xms_mirid); None for applications.
    resource_id: Mapped[str | None] = mapped_column(String(1024))
    created_at: Mapped[float] = mapped_column(Float)


class Credential(Base):
    """A client secret or certificate, keyed by the client (app) id it authenticates."""

    __tablename__ = "credentials"
    key_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    app_id: Mapped[str] = mapped_column(String(36), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # "password" | "certificate"
    display_name: Mapped[str | None] = mapped_column(String(256))
    secret_hash: Mapped[str | None] = mapped_column(String(64))
    hint: Mapped[str | None] = mapped_column(String(8))
    thumbprint_sha1: Mapped[str | None] = mapped_column(String(40), index=True)
    thumbprint_sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    cert_der: Mapped[bytes | None] = mapped_column(LargeBinary)
    # Platform-managed identity certificates keep their private key here, sealed; app certs never do.
    sealed_private_key: Mapped[bytes | None] = mapped_column(LargeBinary)
    start_at: Mapped[float] = mapped_column(Float)
    end_at: Mapped[float] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)


class FederatedCredential(Base):
    """A federated identity credential: tokens of an outside issuer that this client may exchange for
    its own. Owned by a user-assigned identity (ARM) or an application (Graph); keyed for the
    change feed by the client id it authenticates, like `credentials`."""

    __tablename__ = "federated_credentials"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    app_id: Mapped[str] = mapped_column(String(36), index=True)
    # "identity" (owner_key is the lower-cased ARM id of the identity) or "application" (its object id).
    owner_kind: Mapped[str] = mapped_column(String(16))
    owner_key: Mapped[str] = mapped_column(String(1024), index=True)
    name: Mapped[str] = mapped_column(String(120))
    issuer: Mapped[str] = mapped_column(String(600))
    subject: Mapped[str | None] = mapped_column(String(600))
    # Beyond Entra's exact subjects: a subject with wildcards, or an expression over the claims.
    claims_expression: Mapped[str | None] = mapped_column(Text)
    language_version: Mapped[int | None] = mapped_column(Integer)
    audiences: Mapped[str] = mapped_column(Text)  # JSON array of strings
    description: Mapped[str | None] = mapped_column(String(600))
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class SigningKey(Base):
    """A token-signing key. State machine in docs/security.md T4: pending → active → retired → removed."""

    __tablename__ = "signing_keys"
    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    sealed_private_key: Mapped[bytes] = mapped_column(LargeBinary)
    cert_der: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[float] = mapped_column(Float)
    activated_at: Mapped[float | None] = mapped_column(Float)
    activates_at: Mapped[float | None] = mapped_column(Float)  # pending: when it starts signing
    retired_at: Mapped[float | None] = mapped_column(Float)
    removes_at: Mapped[float | None] = mapped_column(Float)  # retired: when it leaves the key set
    revoked_at: Mapped[float | None] = mapped_column(Float)


Index("ix_credentials_app_kind", Credential.app_id, Credential.kind)
Index("ix_federated_owner_name", FederatedCredential.owner_key, FederatedCredential.name, unique=True)


class User(Base):
    """A person in the directory (Graph `user`). The password is kept as an argon2id hash only."""

    __tablename__ = "users"
    object_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    user_principal_name: Mapped[str] = mapped_column(String(256))
    # Sign-in names are case-insensitive: one spelling per person, whatever the case.
    upn_key: Mapped[str] = mapped_column(String(256), unique=True)
    display_name: Mapped[str] = mapped_column(String(256), index=True)
    mail_nickname: Mapped[str] = mapped_column(String(64))
    account_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    # Refresh tokens issued before this instant stop working (a password change or a disable).
    tokens_valid_from: Mapped[float] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)
    # Graph's passwordProfile.forceChangePasswordNextSignIn: no token until the password is changed.
    force_change_password: Mapped[bool] = mapped_column(Boolean, default=False)


class DirectoryGroup(Base):
    """A security group (Graph `group`); role assignments to it apply to its members."""

    __tablename__ = "groups"
    object_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    display_name: Mapped[str] = mapped_column(String(256), index=True)
    mail_nickname: Mapped[str] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)


class GroupMember(Base):
    """Direct membership; a member is a user, a service principal or another group."""

    __tablename__ = "group_members"
    group_id: Mapped[str] = mapped_column(ForeignKey("groups.object_id", ondelete="CASCADE"), primary_key=True)
    member_id: Mapped[str] = mapped_column(String(36), primary_key=True, index=True)
    member_type: Mapped[str] = mapped_column(String(32))  # "User" | "ServicePrincipal" | "Group"
    created_at: Mapped[float] = mapped_column(Float)


class SignInGrant(Base):
    """One-time sign-in artifacts, stored as SHA-256 of the secret part only: authorization codes,
    device codes, and refresh tokens (rotating: each use retires the token, the family lives on)."""

    __tablename__ = "sign_in_grants"
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # "code" | "device" | "refresh"
    family: Mapped[str] = mapped_column(String(36), index=True)
    client_id: Mapped[str] = mapped_column(String(36))
    user_id: Mapped[str | None] = mapped_column(String(36), index=True)
    tenant_id: Mapped[str] = mapped_column(String(36))
    scope: Mapped[str] = mapped_column(Text)
    # Device codes: the code the person types; authorization codes: the PKCE challenge and redirect.
    user_code: Mapped[str | None] = mapped_column(String(16), unique=True)
    detail: Mapped[str] = mapped_column(Text, default="{}")
    state: Mapped[str] = mapped_column(String(16))  # "pending" | "approved" | "used" | "revoked"
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float, index=True)


class SsoSession(Base):
    """A browser's signed-in session at the authorization endpoint, keyed by the hash of its cookie.
    In the database so that every node honours it and a sign-out ends it everywhere at once."""

    __tablename__ = "sso_sessions"
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(36), index=True)
    tenant_id: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[float] = mapped_column(Float)
    last_seen_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float, index=True)  # the absolute end


class PortalSession(Base):
    """A portal browser session, keyed by the hash of its cookie. In the database so that any node
    behind the balancer serves it and a sign-out ends it everywhere; the refresh token (and, before
    sign-in, the PKCE verifier) are sealed to the row."""

    __tablename__ = "portal_sessions"
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[float] = mapped_column(Float, index=True)
    last_seen_at: Mapped[float] = mapped_column(Float, index=True)
    user: Mapped[str] = mapped_column(String(200), default="")
    subscription: Mapped[str] = mapped_column(String(64), default="")
    sealed: Mapped[bytes] = mapped_column(LargeBinary)  # {"pending": {...}, "refresh_token": "..."}


class ResourceGroup(Base):
    __tablename__ = "resource_groups"
    key: Mapped[str] = mapped_column(String(300), primary_key=True)  # lower-cased id
    id: Mapped[str] = mapped_column(String(300))
    subscription_id: Mapped[str] = mapped_column(ForeignKey("subscriptions.id"), index=True)
    name: Mapped[str] = mapped_column(String(90))
    location: Mapped[str] = mapped_column(String(64))
    tags: Mapped[str] = mapped_column(Text, default="{}")
    created_at: Mapped[float] = mapped_column(Float)


class Resource(Base):
    """Any provider resource. Properties are JSON; identity lives in columns and a link table so the
    directory and the agent can find it by principal without parsing JSON."""

    __tablename__ = "resources"
    key: Mapped[str] = mapped_column(String(1024), primary_key=True)  # lower-cased id
    id: Mapped[str] = mapped_column(String(1024))
    subscription_id: Mapped[str] = mapped_column(String(36), index=True)
    group_key: Mapped[str] = mapped_column(ForeignKey("resource_groups.key"), index=True)
    type: Mapped[str] = mapped_column(String(200), index=True)
    name: Mapped[str] = mapped_column(String(260))
    parent_key: Mapped[str | None] = mapped_column(String(1024), index=True)
    kind: Mapped[str | None] = mapped_column(String(64))
    location: Mapped[str] = mapped_column(String(64))
    tags: Mapped[str] = mapped_column(Text, default="{}")
    properties: Mapped[str] = mapped_column(Text, default="{}")
    # ARM's identity block: SystemAssigned's principal is a service principal with resource_id = id.
    identity_type: Mapped[str] = mapped_column(String(40), default="None")
    system_principal_id: Mapped[str | None] = mapped_column(String(36), index=True)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class ResourceIdentity(Base):
    """A user-assigned identity attached to a resource (many-to-many)."""

    __tablename__ = "resource_identities"
    resource_key: Mapped[str] = mapped_column(ForeignKey("resources.key", ondelete="CASCADE"), primary_key=True)
    identity_key: Mapped[str] = mapped_column(ForeignKey("resources.key"), primary_key=True, index=True)


class RoleAssignment(Base):
    __tablename__ = "role_assignments"
    name: Mapped[str] = mapped_column(String(36), primary_key=True)
    scope: Mapped[str] = mapped_column(String(1024))
    scope_key: Mapped[str] = mapped_column(String(1024), index=True)
    role_definition_id: Mapped[str] = mapped_column(String(36))
    principal_id: Mapped[str] = mapped_column(String(36), index=True)
    principal_type: Mapped[str] = mapped_column(String(32))
    description: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class Host(Base):
    """A machine running a host agent. The agent authenticates as `principal_id` (kind "Host")."""

    __tablename__ = "hosts"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    principal_id: Mapped[str] = mapped_column(String(36), unique=True)
    created_at: Mapped[float] = mapped_column(Float)


class JoinToken(Base):
    """A one-time token a new agent exchanges for its host identity. Only its hash is stored."""

    __tablename__ = "join_tokens"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    host_name: Mapped[str | None] = mapped_column(String(256))
    expires_at: Mapped[float] = mapped_column(Float)
    used_at: Mapped[float | None] = mapped_column(Float)
    created_by: Mapped[str | None] = mapped_column(String(36))


class Placement(Base):
    """A workload (site, slot or VM) placed on a host: that host's agent may use its identities."""

    __tablename__ = "placements"
    host_id: Mapped[str] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"), primary_key=True)
    resource_key: Mapped[str] = mapped_column(String(1024), primary_key=True, index=True)
    created_at: Mapped[float] = mapped_column(Float)


class SecretName(Base):
    """A secret in a vault, across its versions; soft-deleted secrets keep their row with deleted_at."""

    __tablename__ = "vault_secrets"
    vault_key: Mapped[str] = mapped_column(String(1024), primary_key=True)
    name_key: Mapped[str] = mapped_column(String(127), primary_key=True)
    name: Mapped[str] = mapped_column(String(127))
    deleted_at: Mapped[float | None] = mapped_column(Float)
    purge_at: Mapped[float | None] = mapped_column(Float)


class SecretVersionRow(Base):
    __tablename__ = "vault_secret_versions"
    vault_key: Mapped[str] = mapped_column(String(1024), primary_key=True)
    name_key: Mapped[str] = mapped_column(String(127), primary_key=True)
    version: Mapped[str] = mapped_column(String(32), primary_key=True)
    sealed_value: Mapped[bytes] = mapped_column(LargeBinary)
    content_type: Mapped[str | None] = mapped_column(String(255))
    tags: Mapped[str | None] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean)
    not_before: Mapped[int | None] = mapped_column(Integer)
    expires: Mapped[int | None] = mapped_column(Integer)
    created: Mapped[float] = mapped_column(Float)
    updated: Mapped[float] = mapped_column(Float)


class Change(Base):
    """The change feed: one row per (kind, key) a committed transaction changed, written in that
    transaction. Every node follows it to invalidate what it caches (storage/feed.py)."""

    __tablename__ = "changes"
    __table_args__ = {"sqlite_autoincrement": True}
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    kind: Mapped[str] = mapped_column(String(32))
    key: Mapped[str] = mapped_column(String(1200))
    at: Mapped[float] = mapped_column(Float)


class HostAck(Base):
    """The newest change a host's agent is known to have applied, seen by every node, so a write
    can wait for agents connected to any node."""

    __tablename__ = "host_acks"
    host_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    change_id: Mapped[int] = mapped_column(BigInteger)
    seen_at: Mapped[float] = mapped_column(Float)


class Node(Base):
    """A running server process, with the newest change it has applied. A write waits until every
    live node has applied it, so the next request on any node sees it."""

    __tablename__ = "nodes"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    url: Mapped[str] = mapped_column(String(300))
    pid: Mapped[int] = mapped_column(Integer)
    position: Mapped[int] = mapped_column(BigInteger)
    started_at: Mapped[float] = mapped_column(Float)
    seen_at: Mapped[float] = mapped_column(Float)


class AuditRecord(Base):
    """The append-only audit trail (lanyard/audit): hash-chained records, one chain per server
    process and per host agent. Not on the change feed: nothing caches it."""

    __tablename__ = "audit"
    __table_args__ = (
        Index("ix_audit_chain_seq", "chain", "seq", unique=True),
        Index("ix_audit_at", "at"),
        Index("ix_audit_principal", "principal"),
        {"sqlite_autoincrement": True},
    )
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    chain: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[float] = mapped_column(Float)
    action: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))
    principal: Mapped[str | None] = mapped_column(String(64))
    app_id: Mapped[str | None] = mapped_column(String(64))
    resource: Mapped[str | None] = mapped_column(String(1200))
    host: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text)
    prev_sha256: Mapped[str] = mapped_column(String(64))
    sha256: Mapped[str] = mapped_column(String(64))


class SubscriptionDeployment(Base):
    """A deployment at subscription scope. Group-scope deployments are rows of `resources`, which need a
    group; these have none, so they live here, with the same JSON state."""

    __tablename__ = "subscription_deployments"
    key: Mapped[str] = mapped_column(String(1024), primary_key=True)  # lower-cased id
    id: Mapped[str] = mapped_column(String(1024))
    subscription_id: Mapped[str] = mapped_column(ForeignKey("subscriptions.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    location: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(Text, default="{}")
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
