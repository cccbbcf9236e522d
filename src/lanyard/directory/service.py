"""The directory (Entra's role): who exists, how they prove it, and the tokens they get.

Protocol rules live in :mod:`lanyard.protocol`; this module joins them to storage and keys.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import math
import secrets
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cachetools import LRUCache
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from lanyard.config import FederationSettings
from lanyard.core.cache import FeedCache
from lanyard.core.clock import Clock
from lanyard.core.errors import GraphError, InvalidClient, InvalidRequest, UnauthorizedClient
from lanyard.crypto.barrier import Barrier
from lanyard.crypto.pki import new_rsa_key, private_key_pem, self_signed, thumbprint_sha1, thumbprint_sha256
from lanyard.directory.federated import verify_federated
from lanyard.directory.keys import SigningKeys
from lanyard.directory.oidc import IssuerKeys
from lanyard.observe import metrics
from lanyard.protocol.access_token import Subject, issuer_v1, token_response, v1_claims
from lanyard.protocol.assertion import RegisteredCertificate, verify_client_assertion
from lanyard.protocol.federation import Rule, compile_rule
from lanyard.protocol.jose import JoseError, parse_compact
from lanyard.protocol.oauth2 import TokenRequest, is_guid
from lanyard.protocol.verify import TokenVerifier
from lanyard.storage import directory_repo as repo
from lanyard.storage import federation_repo
from lanyard.storage.db import Store
from lanyard.storage.feed import ANY, RESET, Change

log = logging.getLogger("lanyard.directory")
SECRET_DEFAULT_YEARS = 1
# Clients and their credentials are cached per node and invalidated per client id by the change
# feed, from whichever node wrote; the TTL bounds staleness only while the feed is down.
CLIENT_CACHE_SECONDS = 5.0
CLIENT_CACHE_SIZE = 50_000
# Azure's managed-identity certificates live 90 days and are renewed from about day 46.
IDENTITY_CERT_LIFETIME = 90 * 86400.0
_CLIENT_KINDS = frozenset({"credentials", "service_principals", "applications", "federated_credentials"})
# The platform's own workload issuer (AKS-style runs) lives under each base URL at this path.
WORKLOAD_ISSUER_PATH = "/lanyard/v1/workload-issuer"
Method = Literal["secret", "certificate", "federated"]


@dataclass(frozen=True)
class _Client:
    principal: repo.PrincipalRecord | None
    credentials: list[repo.CredentialRecord]
    certificates: list[RegisteredCertificate]
    # Federated identity credentials, compiled (docs/federation.md).
    rules: tuple[Rule, ...] = ()


@dataclass(frozen=True)
class DirectoryConfig:
    authority: str  # e.g. https://localhost:8443, no trailing slash
    # Every base URL clients may know the token endpoint by; client assertions must name one.
    known_bases: tuple[str, ...]
    token_lifetime: int = 3600
    assertion_skew: float = 300.0
    identity_cert_lifetime: float = IDENTITY_CERT_LIFETIME


def add_password_credential(
    s: repo.Session, barrier: Barrier, app_id: str, display_name: str | None, secret: str, now: float, end: float
) -> repo.CredentialRecord:
    """Store a client secret as its peppered hash; the secret itself is returned to the caller once."""
    record = repo.CredentialRecord(
        key_id=str(uuid.uuid4()),
        app_id=app_id,
        kind="password",
        display_name=display_name,
        secret_hash=barrier.secret_hash(secret),
        hint=secret[:3],
        thumbprint_sha1=None,
        thumbprint_sha256=None,
        cert_der=None,
        sealed_private_key=None,
        start_at=now,
        end_at=end,
    )
    return repo.add_credential(s, record, now)


def new_client_secret() -> str:
    # 40 characters like Entra's; the first three are the hint shown in listings. Never a leading '-':
    # az (argparse) would read `-p -abc…` as another option, and Entra's secrets never start with one.
    while True:
        secret = secrets.token_urlsafe(30)
        if not secret.startswith("-"):
            return secret


class Directory:
    def __init__(
        self,
        store: Store,
        barrier: Barrier,
        keys: SigningKeys,
        clock: Clock,
        config: DirectoryConfig,
        federation: IssuerKeys | None = None,
    ) -> None:
        self.store = store
        # Outside issuers' keys: with the default settings no host is allowed, so nothing is fetched.
        self.federation = federation or IssuerKeys(FederationSettings(), clock)
        self.barrier = barrier
        self.keys = keys
        self.clock = clock
        self.config = config
        self._tenants: frozenset[str] = frozenset()
        self._issuers: frozenset[str] = frozenset()
        self._tenant_listeners: list[Callable[[frozenset[str]], None]] = []
        self._load_tenants()
        self._clients: FeedCache[str, _Client] = FeedCache(
            CLIENT_CACHE_SIZE, CLIENT_CACHE_SECONDS, clock, metrics.cache_stats("clients")
        )
        self._opened: LRUCache[str, tuple[str, str]] = LRUCache(maxsize=CLIENT_CACHE_SIZE)
        self._opened_lock = threading.Lock()
        # Resource servers trust what is published (keys as stored, issuers of known tenants).
        self.verifier = TokenVerifier(keys, self.trusted_issuers, clock)

    # -- following the change feed ------------------------------------------------------------

    def apply(self, changes: Sequence[Change]) -> None:
        tenants = False
        for change in changes:
            if change.kind == RESET:
                self._clients.clear()
                tenants = True
            elif change.kind in _CLIENT_KINDS:
                if change.key == ANY:
                    self._clients.clear()
                else:
                    self._clients.invalidate(change.key)
            elif change.kind == "tenants":
                tenants = True
        if tenants:
            self._load_tenants()
        self.keys.apply(changes)

    def _load_tenants(self) -> None:
        with self.store.session() as s:
            tenants = frozenset(t.id for t in repo.list_tenants(s))
        self._tenants = tenants
        self._issuers = frozenset(self.issuer(t) for t in tenants)
        for listener in self._tenant_listeners:
            listener(tenants)

    def on_tenants(self, listener: Callable[[frozenset[str]], None]) -> None:
        self._tenant_listeners.append(listener)

    # -- tenants ------------------------------------------------------------------------------

    def has_tenant(self, tenant_id: str) -> bool:
        return tenant_id in self._tenants

    @property
    def tenants(self) -> frozenset[str]:
        return self._tenants

    def trusted_issuers(self) -> frozenset[str]:
        return self._issuers

    def issuer(self, tenant_id: str) -> str:
        return issuer_v1(self.config.authority, tenant_id)

    def workload_issuer(self, tenant_id: str, base: str | None = None) -> str:
        """The issuer of the projected tokens AKS-style runs get (its discovery document and keys are
        served by the platform; the directory verifies its tokens with its own keys, no fetch)."""
        return f"{base or self.config.authority}{WORKLOAD_ISSUER_PATH}/{tenant_id}"

    def _own_workload_issuers(self) -> frozenset[str]:
        bases = {self.config.authority, *self.config.known_bases}
        return frozenset(self.workload_issuer(t, b) for t in self._tenants for b in bases)

    def _issuer_key(self, issuer: str, kid: str | None) -> rsa.RSAPublicKey:
        if issuer in self._own_workload_issuers():
            key = self.keys.get(kid) if kid else None
            if key is None:
                raise InvalidClient(
                    700027, "Client assertion failed signature validation. [Reason - The key was not found.]"
                )
            return key
        return self.federation.key(issuer, kid)

    # -- token endpoint -----------------------------------------------------------------------

    def _audiences_for(self, tenant_id: str) -> frozenset[str]:
        return frozenset(
            f"{base}/{tenant_id}/oauth2/{path}" for base in self.config.known_bases for path in ("token", "v2.0/token")
        )

    def _registered_certificates(self, credentials: list[repo.CredentialRecord]) -> list[RegisteredCertificate]:
        certs = []
        for c in credentials:
            if c.kind != "certificate" or c.cert_der is None:
                continue
            public = x509.load_der_x509_certificate(c.cert_der).public_key()
            if isinstance(public, rsa.RSAPublicKey):
                certs.append(
                    RegisteredCertificate(
                        c.key_id, c.thumbprint_sha1 or "", c.thumbprint_sha256 or "", public, c.start_at, c.end_at
                    )
                )
        return certs

    def _check_secret(self, secret: str, credentials: list[repo.CredentialRecord], now: float) -> None:
        offered = self.barrier.secret_hash(secret)
        matched = None
        for c in credentials:
            # Compare against every secret, always: the time taken says nothing about which matched.
            if c.kind == "password" and c.secret_hash and hmac.compare_digest(offered, c.secret_hash):
                matched = c
        if matched is None:
            raise InvalidClient(
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the "
                "request is the client secret value, not the client secret ID.",
            )
        if not matched.start_at <= now <= matched.end_at:
            raise InvalidClient(7000222, "The provided client secret keys are expired or not yet valid.")

    def _client(self, client_id: str) -> _Client:
        def load() -> _Client:
            with self.store.session() as s:
                principal = repo.get_principal(s, app_id=client_id)
                credentials = repo.list_credentials(s, client_id) if principal else []
                federated = federation_repo.list_for_client(s, client_id) if principal else []
            rules = tuple(
                compile_rule(f.name, f.issuer, f.audiences, f.subject, f.claims_expression) for f in federated
            )
            return _Client(principal, credentials, self._registered_certificates(credentials), rules)

        return self._clients.load(client_id, load)

    def is_cached(self, client_id: str) -> bool:
        """True when authenticating this client needs no storage round-trip and no outbound fetch."""
        client = self._clients.peek(client_id)
        return client is not None and not client.rules

    def authenticate(self, tenant_id: str, request: TokenRequest) -> tuple[repo.PrincipalRecord, Method]:
        now = self.clock.now()
        client = self._client(request.client_id)
        principal, credentials = client.principal, client.credentials
        if principal is None or principal.tenant_id != tenant_id:
            raise UnauthorizedClient(
                700016,
                f"Application with identifier '{request.client_id}' was not found in the directory "
                f"'{tenant_id}'. This can happen if the application has not been installed by the "
                "administrator of the tenant.",
            )
        if request.client_secret is not None:
            self._check_secret(request.client_secret, credentials, now)
            return principal, "secret"
        assert request.client_assertion is not None
        try:
            jws = parse_compact(request.client_assertion)
        except JoseError as exc:
            raise InvalidClient(50027, f"JWT token is invalid or malformed: {exc}.") from exc
        issuer = jws.claims.get("iss")
        if isinstance(issuer, str) and issuer != request.client_id and not is_guid(issuer):
            # Issued by a URL, not by a client: an outside issuer's token (workload identity federation;
            # a credential's issuer is always an https URL). Another client's own assertion stays 700021.
            verify_federated(jws, client.rules, now=now, skew=self.config.assertion_skew, key_for=self._issuer_key)
            return principal, "federated"
        verify_client_assertion(
            request.client_assertion,
            client_id=request.client_id,
            certificates=client.certificates,
            audiences=self._audiences_for(tenant_id),
            now=now,
            skew=self.config.assertion_skew,
        )
        return principal, "certificate"

    def token(self, tenant_id: str, request: TokenRequest) -> dict[str, Any]:
        if not self.has_tenant(tenant_id):
            raise InvalidRequest(
                90002,
                f"Tenant '{tenant_id[:64]}' not found. Check to make sure you have the correct tenant ID and "
                "are signing into the correct cloud.",
            )
        principal, method = self.authenticate(tenant_id, request)
        issued = self.mint(principal, request.resource, method, request.endpoint)
        metrics.token_issued(method, principal.kind.lower())
        return issued

    def mint(
        self,
        principal: repo.PrincipalRecord,
        resource: str,
        method: Literal["secret", "certificate", "managed", "federated"],
        endpoint: Literal["v1", "v2"] = "v2",
    ) -> dict[str, Any]:
        subject = Subject(
            principal.tenant_id, principal.object_id, principal.app_id, principal.kind, principal.resource_id
        )
        claims = v1_claims(
            subject,
            resource=resource,
            issuer=self.issuer(principal.tenant_id),
            now=self.clock.now(),
            lifetime=self.config.token_lifetime,
            auth_method=method,
        )
        if log.isEnabledFor(logging.DEBUG):
            # The token's id as a hash (docs/security.md): enough to match a log line to an audit record.
            uti = hashlib.sha256(str(claims.get("uti", "")).encode()).hexdigest()[:16]
            log.debug("issued a %s token to %s for %s (uti#%s)", method, principal.app_id, resource[:200], uti)
        return token_response(self.keys.signer.sign(claims), claims, endpoint)

    # -- applications and service principals (Graph's role) ----------------------------------

    def create_application(self, s: repo.Session, tenant_id: str, display_name: str) -> repo.ApplicationRecord:
        if not display_name or len(display_name) > 256:
            raise GraphError("displayName must be 1 to 256 characters.", code="Request_BadRequest")
        return repo.add_application(s, str(uuid.uuid4()), str(uuid.uuid4()), tenant_id, display_name, self.clock.now())

    def create_principal_for(self, s: repo.Session, app: repo.ApplicationRecord) -> repo.PrincipalRecord:
        if repo.get_principal(s, app_id=app.app_id) is not None:
            raise GraphError(
                "Another object with the same value for property servicePrincipalNames already exists.",
                code="Request_MultipleObjectsWithSameKeyValue",
                status=409,
            )
        return repo.add_principal(
            s,
            object_id=str(uuid.uuid4()),
            app_id=app.app_id,
            tenant_id=app.tenant_id,
            display_name=app.display_name,
            kind="Application",
            resource_id=None,
            now=self.clock.now(),
        )

    def add_password(
        self, s: repo.Session, app_id: str, display_name: str | None, end_at: float | None = None
    ) -> tuple[repo.CredentialRecord, str]:
        now = self.clock.now()
        secret = new_client_secret()
        end = end_at if end_at is not None else now + SECRET_DEFAULT_YEARS * 365 * 86400
        if end <= now:
            raise GraphError("endDateTime must be in the future.", code="Request_BadRequest")
        return add_password_credential(s, self.barrier, app_id, display_name, secret, now, end), secret

    def add_certificate(
        self, s: repo.Session, app_id: str, cert_der: bytes, display_name: str | None = None
    ) -> repo.CredentialRecord:
        try:
            cert = x509.load_der_x509_certificate(cert_der)
        except ValueError as exc:
            raise GraphError("keyCredentials.key is not a DER X.509 certificate.", code="Request_BadRequest") from exc
        public = cert.public_key()
        if not isinstance(public, rsa.RSAPublicKey) or public.key_size < 2048:
            raise GraphError(
                "Key credentials must be RSA certificates of at least 2048 bits.", code="Request_BadRequest"
            )
        der = cert.public_bytes(serialization.Encoding.DER)
        sha1 = thumbprint_sha1(der)
        for existing in repo.list_credentials(s, app_id, "certificate"):
            if existing.thumbprint_sha1 == sha1:
                return existing
        record = repo.CredentialRecord(
            key_id=str(uuid.uuid4()),
            app_id=app_id,
            kind="certificate",
            display_name=display_name or cert.subject.rfc4514_string()[:256],
            secret_hash=None,
            hint=None,
            thumbprint_sha1=sha1,
            thumbprint_sha256=thumbprint_sha256(der),
            cert_der=der,
            sealed_private_key=None,
            start_at=cert.not_valid_before_utc.timestamp(),
            end_at=cert.not_valid_after_utc.timestamp(),
        )
        return repo.add_credential(s, record, self.clock.now())

    # -- managed identities (the control plane's PrincipalService) ----------------------------

    def create_managed_identity(
        self, s: repo.Session, tenant_id: str, display_name: str, resource_id: str
    ) -> repo.PrincipalRecord:
        """A service principal for a system- or user-assigned identity. Its client id is new; its
        credential is held by the platform, never shown. It is made here, on the write path, so
        that no read (a host's bindings, on any node) ever has to create one."""
        principal = repo.add_principal(
            s,
            object_id=str(uuid.uuid4()),
            app_id=str(uuid.uuid4()),
            tenant_id=tenant_id,
            display_name=display_name[:256],
            kind="ManagedIdentity",
            resource_id=resource_id,
            now=self.clock.now(),
        )
        self.new_identity_credential(s, principal)
        return principal

    def delete_managed_identity(self, s: repo.Session, object_id: str) -> None:
        repo.delete_principal(s, object_id)

    def revoke_identity_credentials(self, s: repo.Session, object_id: str) -> None:
        """An identity left a host (detached, unplaced, or its workload deleted): the key that host
        holds must stop working at once, so the platform's key for it is replaced."""
        principal = repo.get_principal(s, object_id=object_id)
        if principal is not None and principal.kind == "ManagedIdentity":
            repo.delete_platform_credentials(s, principal.app_id)
            self.new_identity_credential(s, principal)

    def identity_credential(self, s: repo.Session, principal: repo.PrincipalRecord) -> tuple[str, str] | None:
        """The platform-held certificate of a managed identity as PEM (certificate, private key),
        or None if it has no usable one. Only host agents that run the identity's workload receive
        it. Read-only: credentials are made on write paths only."""
        now = self.clock.now()
        usable = [
            c
            for c in repo.list_credentials(s, principal.app_id, "certificate")
            if c.sealed_private_key and c.cert_der and c.start_at <= now + 300 < c.end_at
        ]
        if not usable:
            return None
        newest = max(usable, key=lambda c: c.start_at)
        with self._opened_lock:
            opened = self._opened.get(newest.key_id)
        if opened is None:
            # A credential's key material never changes under its key id: open and encode it once,
            # not on every bindings poll of every host (that was most of a poll's time).
            assert newest.sealed_private_key is not None and newest.cert_der is not None
            key_pem = self.barrier.open(newest.sealed_private_key, context=f"credential:{newest.key_id}")
            cert = x509.load_der_x509_certificate(newest.cert_der)
            opened = (cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode())
            with self._opened_lock:
                self._opened[newest.key_id] = opened
        return opened

    def ensure_identity_credentials(self, s: repo.Session) -> int:
        """Give every managed identity without a usable platform credential a new one (start-up,
        under the start-up lock; stores from before credentials were made on the write path)."""
        missing = repo.identities_without_platform_credential(s, self.clock.now() + 300)
        for principal in missing:
            self.new_identity_credential(s, principal)
        return len(missing)

    def new_identity_credential(self, s: repo.Session, principal: repo.PrincipalRecord) -> repo.CredentialRecord:
        record = self.make_identity_credential(principal)
        return repo.add_credential(s, record, self.clock.now())

    def make_identity_credential(self, principal: repo.PrincipalRecord) -> repo.CredentialRecord:
        """A new platform-held certificate for an identity, sealed, not yet stored (key generation
        is slow: callers make it before taking any lock)."""
        now = self.clock.now()
        lifetime = self.config.identity_cert_lifetime
        key = new_rsa_key(2048)
        days = max(1, math.ceil(lifetime / 86400))
        cert = self_signed(
            key, f"managed identity {principal.app_id}", dt.datetime.fromtimestamp(now, dt.UTC), days=days
        )
        der = cert.public_bytes(serialization.Encoding.DER)
        key_id = str(uuid.uuid4())
        return repo.CredentialRecord(
            key_id=key_id,
            app_id=principal.app_id,
            kind="certificate",
            display_name="platform-managed",
            secret_hash=None,
            hint=None,
            thumbprint_sha1=thumbprint_sha1(der),
            thumbprint_sha256=thumbprint_sha256(der),
            cert_der=der,
            sealed_private_key=self.barrier.seal(private_key_pem(key), context=f"credential:{key_id}"),
            start_at=cert.not_valid_before_utc.timestamp(),
            end_at=min(cert.not_valid_after_utc.timestamp(), now + lifetime),
        )

    def add_host_principal(self, s: repo.Session, tenant_id: str, name: str, cert_der: bytes) -> repo.PrincipalRecord:
        principal = repo.add_principal(
            s,
            object_id=str(uuid.uuid4()),
            app_id=str(uuid.uuid4()),
            tenant_id=tenant_id,
            display_name=f"host:{name}"[:256],
            kind="Host",
            resource_id=None,
            now=self.clock.now(),
        )
        self.add_certificate(s, principal.app_id, cert_der, display_name=f"host agent {name}"[:256])
        return principal

    @staticmethod
    def check_object_id(value: str) -> str:
        if not is_guid(value):
            raise GraphError(f"Invalid object identifier '{value[:64]}'.", code="Request_BadRequest")
        return value.lower()


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
