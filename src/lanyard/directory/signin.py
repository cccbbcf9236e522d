"""User sign-in at the token endpoint, as Entra serves it: resource owner password, authorization
code with PKCE, device code, and rotating refresh tokens. Delegated tokens carry the user (oid, upn,
name, scp) and the client that asked (appid).

Codes, device codes and refresh tokens are stored as peppered hashes only (the barrier's HMAC), in
one table; each is redeemed by one conditional UPDATE, so a code is redeemed once on any backend and
any number of nodes. A refresh token is retired when used and a new one of the same family issued;
a retired one presented again after a short grace revokes its whole family (it was copied).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import logging
import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson

from lanyard.core.errors import (
    AuthorizationPending,
    ExpiredToken,
    GraphError,
    InvalidClient,
    InvalidGrant,
    InvalidRequest,
    UnauthorizedClient,
)
from lanyard.core.ratelimit import Rate, TokenBuckets
from lanyard.directory.clients import LANYARD_PORTAL, allowed_public_redirect, portal_redirect, public_client_name
from lanyard.directory.limits import source_key
from lanyard.directory.passwords import check_policy, hash_password, verify_password
from lanyard.directory.redirects import PUBLIC_CLIENT, SPA, WEB, RedirectRegistry
from lanyard.directory.service import Directory
from lanyard.directory.sso import SsoSessions
from lanyard.observe import metrics
from lanyard.protocol.access_token import (
    UserSubject,
    client_info,
    id_token_claims,
    issuer_v2,
    user_claims,
)
from lanyard.protocol.oauth2 import (
    AUTHORIZATION_CODE,
    DEVICE_CODE,
    PASSWORD,
    REFRESH_TOKEN,
    DelegatedScope,
    UserGrantRequest,
    delegated_scope,
    is_guid,
)
from lanyard.storage import directory_repo as dirrepo
from lanyard.storage import people_repo as people
from lanyard.storage.directory_repo import Session

log = logging.getLogger("lanyard.signin")

CODE_LIFETIME = 600.0  # Entra: authorization codes live about ten minutes
DEVICE_LIFETIME = 900.0  # Entra: device codes expire after 15 minutes
DEVICE_INTERVAL = 5
REFRESH_LIFETIME = 90 * 86400.0  # Entra: 90 days, renewed by every use
# Two processes of one tool (two az commands at once) may both redeem the refresh token they read
# from one cache: inside this window the second is served, after it the reuse is taken as theft.
REFRESH_REUSE_GRACE = 30.0
# Entra: a refresh token issued to a single-page app lives 24 hours from the sign-in, never extended.
SPA_REFRESH_LIFETIME = 86400.0
ALIASES = frozenset({"common", "organizations"})
_USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"  # no vowels (no words), no look-alikes of digits
_USER_CODE_LENGTH = 9

WRONG_CREDENTIALS = 50126
_WRONG_CREDENTIALS_TEXT = "Error validating credentials due to invalid username or password."


class SignInThrottled(InvalidGrant):
    """Too many wrong passwords for this name from this address (or from this address at all)."""


class PasswordExpired(InvalidGrant):
    """The user must change their password first (Graph's forceChangePasswordNextSignIn). Entra
    answers a password or device-code grant for such a user with AADSTS50055 and the suberror
    `user_password_expired` (msal shows the description; msal.NET classifies it as UserPasswordExpired)."""

    def __init__(self) -> None:
        super().__init__(
            50055,
            "The password is expired. The user must change their password before signing in: sign in "
            "through the login page (a browser) to change it.",
        )

    def body(self, *, now: Any = None) -> dict[str, Any]:
        return {**super().body(now=now), "suberror": "user_password_expired"}


class WeakPassword(Exception):
    """A new password the policy refuses (its message is safe to show: it names the rule only)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


_NEEDS_CREDENTIAL = "The request body must contain the following parameter: 'client_assertion' or 'client_secret'."


class PasswordLimits:
    """Wrong passwords per (user name, source) and per source: the name is counted as typed, so an
    unknown name is throttled like a known one and the answer tells nothing about which exists."""

    def __init__(self, per_user: Rate, per_source: Rate, clock: Any = None) -> None:
        self.per_user: TokenBuckets[tuple[str, str]] = TokenBuckets(per_user, clock)
        self.per_source: TokenBuckets[str] = TokenBuckets(per_source, clock)

    @classmethod
    def of(cls, failures: int, source_failures: int, refill_seconds: float, clock: Any = None) -> PasswordLimits:
        return cls(
            Rate.of(1.0 / refill_seconds, failures), Rate.of(source_failures / refill_seconds, source_failures), clock
        )

    @contextmanager
    def guard(self, username: str, source: str) -> Iterator[None]:
        source = source_key(source)
        user_key = (username.lower()[:256], source)
        if self.per_user.wait(user_key) or self.per_source.wait(source):
            raise SignInThrottled(
                50053,
                "You've tried to sign in too many times with an incorrect user ID or password. Wait, then try again.",
            )
        try:
            yield
        except InvalidGrant as exc:
            if exc.aadsts == WRONG_CREDENTIALS:
                self.per_user.spend(user_key)
                self.per_source.spend(source)
            raise


@dataclass(frozen=True)
class SignedInClient:
    client_id: str
    name: str
    confidential: bool
    # A registered application's redirect URIs and isFallbackPublicClient; None for first-party clients.
    registry: RedirectRegistry | None = None
    fallback_public: bool = False
    assertion: bool = False  # authenticated with a client assertion (certificate or federated), not a secret

    def redirect_kind(self, uri: str) -> str | None:
        """Which kind of registration lets a code go to `uri` (None: it must not go there)."""
        if self.registry is None:
            return PUBLIC_CLIENT if allowed_public_redirect(uri) else None
        return self.registry.kind_of(uri)


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def pkce_matches(verifier: str, challenge: str) -> bool:
    if not 43 <= len(verifier) <= 128:
        return False
    return hmac.compare_digest(_b64url(hashlib.sha256(verifier.encode()).digest()), challenge)


def new_user_code() -> str:
    return "".join(secrets.choice(_USER_CODE_ALPHABET) for _ in range(_USER_CODE_LENGTH))


def normalize_user_code(typed: str) -> str:
    return "".join(c for c in typed.upper() if c.isalnum())[:32]


class SignIn:
    def __init__(self, directory: Directory, limits: PasswordLimits) -> None:
        self.directory = directory
        self.limits = limits
        self.clock = directory.clock
        self.sso = SsoSessions(directory.store, directory.clock, self._hash)

    # -- clients ------------------------------------------------------------------------------

    def _first_party(self, client_id: str) -> SignedInClient | None:
        """A first-party public client; the portal's one redirect URI is its callback on our own origin."""
        client_id = client_id.lower()
        name = public_client_name(client_id)
        if name is None:
            return None
        if client_id == LANYARD_PORTAL:
            registry = RedirectRegistry(public_client=(portal_redirect(self.directory.config.authority),))
            return SignedInClient(client_id, name, False, registry=registry)
        return SignedInClient(client_id, name, False)

    def public_or_registered(self, tenant: str, client_id: str) -> SignedInClient:
        """The client a login page or a device code is for (no credential is presented there)."""
        client_id = client_id.lower()
        first_party = self._first_party(client_id)
        if first_party is not None:
            return first_party
        registered = self._registered(tenant, client_id, confidential=False)
        if registered is not None:
            return registered
        raise UnauthorizedClient(
            700016,
            f"Application with identifier '{client_id[:40]}' was not found in the directory. This can happen "
            "if the application has not been installed by the administrator of the tenant.",
        )

    def _registered(self, tenant: str, client_id: str, *, confidential: bool) -> SignedInClient | None:
        if not is_guid(client_id):
            return None
        with self.directory.store.session() as s:
            principal = dirrepo.get_principal(s, app_id=client_id)
            app = dirrepo.get_application(s, app_id=client_id)
        if (
            principal is None
            or app is None
            or principal.kind != "Application"
            or not self._tenant_ok(tenant, principal.tenant_id)
        ):
            return None
        return SignedInClient(
            client_id,
            principal.display_name,
            confidential,
            RedirectRegistry.loads(app.redirect_uris),
            bool(app.fallback_public_client),
        )

    def authenticate_client(self, tenant: str, request: UserGrantRequest) -> SignedInClient:
        first_party = self._first_party(request.client_id)
        if first_party is not None:
            if request.client_secret or request.client_assertion:
                raise InvalidClient(
                    700025, "Client is public so neither 'client_assertion' nor 'client_secret' should be presented."
                )
            return first_party
        if not request.client_secret and not request.client_assertion:
            # A registered application without a credential: a public client, allowed only where its
            # registration says so (checked per grant: the code's redirect kind, isFallbackPublicClient).
            return self.public_or_registered(tenant, request.client_id)
        client_tenant = tenant if is_guid(tenant) else self.directory_tenant_of_client(request.client_id)
        principal, method = self.directory.authenticate(client_tenant, request.as_client_request())
        if principal.kind != "Application":
            raise UnauthorizedClient(700016, "Only applications can sign users in.")
        registered = self._registered(tenant, request.client_id, confidential=True)
        client = registered or SignedInClient(request.client_id, principal.display_name, True)
        return dataclasses.replace(client, assertion=method != "secret")

    @staticmethod
    def _public_flow_allowed(client: SignedInClient) -> None:
        """Password and device-code sign-in without a credential: first-party clients, and registered
        applications marked isFallbackPublicClient (Entra answers the rest with AADSTS7000218)."""
        if client.registry is not None and not client.confidential and not client.fallback_public:
            raise InvalidClient(7000218, _NEEDS_CREDENTIAL)

    def directory_tenant_of_client(self, client_id: str) -> str:
        with self.directory.store.session() as s:
            principal = dirrepo.get_principal(s, app_id=client_id)
        return principal.tenant_id if principal is not None else ""

    @staticmethod
    def _tenant_ok(asked: str, actual: str) -> bool:
        return asked in ALIASES or asked == actual

    # -- users --------------------------------------------------------------------------------

    def check_password(self, tenant: str, username: str, password: str, source: str) -> people.UserRecord:
        """The user these credentials are right for. One answer for every wrong part (AADSTS50126);
        the disabled-account answer only once the password was right (it tells nothing new then)."""
        with self.limits.guard(username, source):
            with self.directory.store.session() as s:
                user = people.get_user(s, upn=username) if len(username) <= 256 else None
            if user is not None and not self._tenant_ok(tenant, user.tenant_id):
                user = None
            if not verify_password(user.password_hash if user else None, password) or user is None:
                raise InvalidGrant(WRONG_CREDENTIALS, _WRONG_CREDENTIALS_TEXT)
        if not user.account_enabled:
            raise InvalidGrant(50057, "The user account is disabled.")
        return user

    def change_password(
        self, tenant: str, username: str, current: str, new: str, repeated: str, source: str
    ) -> people.UserRecord:
        """The change a user is made to do before a forced sign-in continues (current password again,
        the new one twice). Every refresh token and SSO session of theirs ends with the old password."""
        user = self.check_password(tenant, username, current, source)
        if new != repeated:
            raise WeakPassword("The new passwords don't match.")
        if new == current:
            raise WeakPassword("You can't reuse your current password. Choose a new one.")
        try:
            new_hash = hash_password(check_policy(new))
        except GraphError as exc:
            raise WeakPassword(exc.message) from exc
        now = self.clock.now()
        with self.directory.store.session() as s:
            people.update_user(
                s, user.object_id, password_hash=new_hash, force_change_password=False, tokens_valid_from=now
            )
            people.revoke_user_grants(s, user.object_id)
            people.end_user_sso_sessions(s, user.object_id)
            changed = people.get_user(s, object_id=user.object_id)
        assert changed is not None
        return changed

    def _current_user(self, s: Session, user_id: str | None, issued_at: float) -> people.UserRecord:
        user = people.get_user(s, object_id=user_id) if user_id else None
        if user is None or not user.account_enabled or issued_at < user.tokens_valid_from:
            raise InvalidGrant(
                50173,
                "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user "
                "might have changed or reset their password, or the account was disabled or deleted.",
            )
        if user.force_change_password:
            raise PasswordExpired()
        return user

    # -- the token endpoint -------------------------------------------------------------------

    def token(self, tenant: str, request: UserGrantRequest, source: str) -> dict[str, Any]:
        if tenant not in ALIASES and not self.directory.has_tenant(tenant):
            raise InvalidRequest(90002, f"Tenant '{tenant[:64]}' not found.")
        client = self.authenticate_client(tenant, request)
        if request.grant_type == PASSWORD:
            self._public_flow_allowed(client)
            user = self.check_password(tenant, request.username, request.password, source)
            if user.force_change_password:
                raise PasswordExpired()
            issued = self.issue(user, client, request.scope, request.endpoint, nonce=None, family=None)
        elif request.grant_type == AUTHORIZATION_CODE:
            issued = self._redeem_code(tenant, client, request)
        elif request.grant_type == DEVICE_CODE:
            self._public_flow_allowed(client)
            issued = self._redeem_device(tenant, client, request)
        else:
            assert request.grant_type == REFRESH_TOKEN
            issued = self._redeem_refresh(tenant, client, request)
        metrics.user_token_issued(request.grant_type.rsplit(":", 1)[-1], client.confidential)
        return issued

    def issue(
        self,
        user: people.UserRecord,
        client: SignedInClient,
        scope: DelegatedScope,
        endpoint: str,
        *,
        nonce: str | None,
        family: str | None,
        amr: tuple[str, ...] = ("pwd",),
        spa_until: float | None = None,
    ) -> dict[str, Any]:
        now = self.clock.now()
        lifetime = self.directory.config.token_lifetime
        subject = UserSubject(user.tenant_id, user.object_id, user.user_principal_name, user.display_name)
        claims = user_claims(
            subject,
            client_id=client.client_id,
            resource=scope.resource,
            scp=scope.scp,
            issuer=self.directory.issuer(user.tenant_id),
            now=now,
            lifetime=lifetime,
            confidential=client.confidential,
            amr=amr,
            assertion=client.assertion,
        )
        signer = self.directory.keys.signer
        v2 = endpoint == "v2"
        id_issuer = issuer_v2(self.directory.config.authority, user.tenant_id) if v2 else claims["iss"]
        id_token = signer.sign(
            id_token_claims(
                subject, client_id=client.client_id, issuer=id_issuer, now=now, lifetime=lifetime, nonce=nonce, v2=v2
            )
        )
        refresh = self._new_refresh_token(user, client, scope, family, spa_until)
        body: dict[str, Any] = {
            "token_type": "Bearer",
            "scope": scope.granted() if v2 else scope.scp,
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": signer.sign(claims),
            "refresh_token": refresh,
            "id_token": id_token,
            "client_info": client_info(subject),
        }
        if spa_until is not None:
            body["refresh_token_expires_in"] = max(0, int(spa_until - now))
        if not v2:
            body.update(
                expires_in=str(lifetime),
                ext_expires_in=str(lifetime),
                expires_on=str(claims["exp"]),
                not_before=str(claims["nbf"]),
                resource=scope.resource,
            )
        return body

    # -- refresh tokens -----------------------------------------------------------------------

    def _hash(self, value: str) -> str:
        return self.directory.barrier.secret_hash(value)

    def _new_grant(
        self,
        kind: str,
        client_id: str,
        tenant_id: str,
        *,
        user_id: str | None,
        scope: str,
        lifetime: float,
        family: str | None = None,
        detail: dict[str, Any] | None = None,
        user_code: str | None = None,
    ) -> str:
        """Store a new code, device code or refresh token (its hash only) and give back its secret."""
        secret = "1." + secrets.token_urlsafe(48)
        now = self.clock.now()
        with self.directory.store.session() as s:
            people.add_grant(
                s,
                people.GrantRecord(
                    id_hash=self._hash(secret),
                    kind=kind,
                    family=family or str(uuid.uuid4()),
                    client_id=client_id,
                    user_id=user_id,
                    tenant_id=tenant_id,
                    scope=scope,
                    user_code=user_code,
                    detail=orjson.dumps(detail or {}).decode(),
                    state="pending",
                    created_at=now,
                    expires_at=now + lifetime,
                ),
            )
        return secret

    def _new_refresh_token(
        self,
        user: people.UserRecord,
        client: SignedInClient,
        scope: DelegatedScope,
        family: str | None,
        spa_until: float | None = None,
    ) -> str:
        detail: dict[str, Any] = {}
        if client.confidential:
            # A family begun with a client credential goes on only with one (Entra: AADSTS7000218).
            detail["confidential"] = True
        lifetime = REFRESH_LIFETIME
        if spa_until is not None:
            # A single-page app's family ends 24 hours after its sign-in whatever its use.
            detail["spa_until"] = spa_until
            lifetime = max(0.0, spa_until - self.clock.now())
        return self._new_grant(
            "refresh",
            client.client_id,
            user.tenant_id,
            user_id=user.object_id,
            scope=scope.scp,
            lifetime=lifetime,
            family=family,
            detail=detail or None,
        )

    def _redeem_refresh(self, tenant: str, client: SignedInClient, request: UserGrantRequest) -> dict[str, Any]:
        now = self.clock.now()
        id_hash = self._hash(request.refresh_token)
        with self.directory.store.session() as s:
            grant = people.get_grant(s, id_hash, "refresh")
            if grant is None or grant.client_id != client.client_id or not self._tenant_ok(tenant, grant.tenant_id):
                # Bound to its client: another client presenting it learns nothing more than garbage would.
                raise InvalidGrant(9002313, "Invalid request. The refresh token is malformed or not valid.")
            if grant.state == "revoked":
                raise self._revoked()
            family_detail = orjson.loads(grant.detail)
            if family_detail.get("confidential") and not client.confidential:
                raise InvalidClient(7000218, _NEEDS_CREDENTIAL)
            spa_until = family_detail.get("spa_until")
            _check_origin(spa_until is not None, request.origin)
            if spa_until is not None and float(spa_until) <= now:
                raise InvalidGrant(
                    700084,
                    "The refresh token was issued to a single page app (SPA), and therefore has a fixed, limited "
                    "lifetime of 1.00:00:00, which cannot be extended. It is now expired and a new sign in request "
                    "must be sent by the SPA to the sign in page.",
                )
            if grant.state == "pending":
                if grant.expires_at <= now:
                    raise InvalidGrant(700082, "The refresh token has expired due to inactivity.")
                # A retired token keeps expires_at as the end of its reuse grace.
                claimed = people.claim_grant(s, id_hash, "pending", "used", expires_at=now + REFRESH_REUSE_GRACE)
                if not claimed:
                    grant = people.get_grant(s, id_hash, "refresh") or grant
            else:
                claimed = False
            usable = claimed or (grant.state == "used" and grant.expires_at > now)
            user = self._current_user(s, grant.user_id, grant.created_at) if usable else None
        if user is None:
            self._revoke_family(grant.family)
            log.warning("a retired refresh token was presented again: its family is revoked")
            raise self._revoked()
        return self.issue(
            user,
            client,
            request.scope,
            request.endpoint,
            nonce=None,
            family=grant.family,
            spa_until=None if spa_until is None else float(spa_until),
        )

    def _revoke_family(self, family: str) -> None:
        with self.directory.store.session() as s:
            people.revoke_family(s, family)

    @staticmethod
    def _revoked() -> InvalidGrant:
        return InvalidGrant(
            50173, "The provided grant has expired due to it being revoked, a fresh auth token is needed."
        )

    def forget_expired(self) -> bool:
        """Delete grants a day past their end (periodic job): none of them can be redeemed again."""
        with self.directory.store.session() as s:
            now = self.clock.now()
            people.delete_expired_grants(s, now - 86400.0, now - REFRESH_LIFETIME)
        self.sso.forget_expired()
        return False

    def revoke(self, user_id: str, client_id: str | None = None) -> int:
        """Sign a user out (of one client or all): every refresh token of theirs stops working."""
        with self.directory.store.session() as s:
            return people.revoke_user_grants(s, user_id, client_id)

    def revoke_refresh_token(self, token: str, client_id: str) -> bool:
        """Sign out with a token in hand (`lanyard logout`): its whole family ends."""
        with self.directory.store.session() as s:
            grant = people.get_grant(s, self._hash(token), "refresh")
            if grant is None or grant.client_id != client_id.lower():
                return False
            people.revoke_family(s, grant.family)
        return True

    # -- authorization codes ------------------------------------------------------------------

    def issue_code(
        self,
        user: people.UserRecord,
        client: SignedInClient,
        *,
        redirect_uri: str,
        scope: str,
        challenge: str | None,
        nonce: str | None,
        redirect_kind: str = PUBLIC_CLIENT,
    ) -> str:
        detail = {"redirect_uri": redirect_uri, "challenge": challenge, "nonce": nonce, "kind": redirect_kind}
        return self._new_grant(
            "code",
            client.client_id,
            user.tenant_id,
            user_id=user.object_id,
            scope=scope,
            lifetime=CODE_LIFETIME,
            detail=detail,
        )

    def _redeem_code(self, tenant: str, client: SignedInClient, request: UserGrantRequest) -> dict[str, Any]:
        now = self.clock.now()
        id_hash = self._hash(request.code)
        with self.directory.store.session() as s:
            grant = people.get_grant(s, id_hash, "code")
            if grant is None or grant.client_id != client.client_id or not self._tenant_ok(tenant, grant.tenant_id):
                raise InvalidGrant(
                    9002313, "Invalid request. The authorization code is malformed or was issued to another client."
                )
            replayed = grant.state != "pending"
        if replayed:
            # Redeemed before: what that redemption issued is revoked too (RFC 6749 §4.1.2).
            self._revoke_family(grant.family)
            raise InvalidGrant(
                54005, "OAuth2 Authorization code was already redeemed, please retry with a new valid code."
            )
        with self.directory.store.session() as s:
            if grant.expires_at <= now:
                raise InvalidGrant(70008, "The provided authorization code or refresh token has expired.")
            detail = orjson.loads(grant.detail)
            if request.redirect_uri != detail.get("redirect_uri") or client.redirect_kind(request.redirect_uri) is None:
                raise InvalidGrant(
                    50011,
                    "The redirect URI specified in the request does not match the one the code was issued to "
                    "or the redirect URIs configured for the application.",
                )
            single_page = detail.get("kind") == SPA
            _check_origin(single_page, request.origin)
            if detail.get("kind") == WEB and not client.confidential:
                # A code sent to a web redirect is redeemed by the web app itself, with its credential.
                raise InvalidClient(7000218, _NEEDS_CREDENTIAL)
            challenge = detail.get("challenge")
            if challenge is None and request.code_verifier:
                raise InvalidGrant(50148, "A code_verifier was sent for a code requested without a code_challenge.")
            if challenge is not None and not pkce_matches(request.code_verifier, str(challenge)):
                raise InvalidGrant(
                    50148,
                    "The code_verifier provided does not match the code_challenge supplied in the authorization "
                    "request for PKCE.",
                )
            user = self._current_user(s, grant.user_id, grant.created_at)
            if not people.claim_grant(s, id_hash, "pending", "used"):
                raise InvalidGrant(
                    54005, "OAuth2 Authorization code was already redeemed, please retry with a new valid code."
                )
        scope = request.scope if request.scope_given else delegated_scope(grant.scope, None)
        spa_until = now + SPA_REFRESH_LIFETIME if single_page else None
        return self.issue(
            user, client, scope, request.endpoint, nonce=detail.get("nonce"), family=grant.family, spa_until=spa_until
        )

    # -- device codes -------------------------------------------------------------------------

    def start_device(self, tenant: str, client_id: str, scope: str, verification_uri: str) -> dict[str, Any]:
        if tenant not in ALIASES and not self.directory.has_tenant(tenant):
            raise InvalidRequest(90002, f"Tenant '{tenant[:64]}' not found.")
        client = self.public_or_registered(tenant, client_id)
        self._public_flow_allowed(client)
        user_code = new_user_code()
        device_code = self._new_grant(
            "device",
            client.client_id,
            tenant,
            user_id=None,
            scope=scope[:2048],
            lifetime=DEVICE_LIFETIME,
            user_code=user_code,
        )
        return {
            "user_code": user_code,
            "device_code": device_code,
            "verification_uri": verification_uri,
            "expires_in": int(DEVICE_LIFETIME),
            "interval": DEVICE_INTERVAL,
            "message": f"To sign in, use a web browser to open the page {verification_uri} and enter the code "
            f"{user_code} to authenticate.",
        }

    def pending_device(self, typed_code: str) -> tuple[people.GrantRecord, SignedInClient]:
        """The device sign-in a typed code names, still waiting for its user."""
        code = normalize_user_code(typed_code)
        with self.directory.store.session() as s:
            grant = people.grant_by_user_code(s, code) if code else None
        if grant is None or grant.state != "pending" or grant.expires_at <= self.clock.now():
            raise InvalidRequest(
                70000, "The code you entered has expired or is not valid. Get a new code from the application."
            )
        return grant, self.public_or_registered(grant.tenant_id, grant.client_id)

    def approve_device(self, grant: people.GrantRecord, user: people.UserRecord) -> None:
        if not self._tenant_ok(grant.tenant_id, user.tenant_id):
            raise InvalidGrant(WRONG_CREDENTIALS, _WRONG_CREDENTIALS_TEXT)
        if user.force_change_password:
            # The device gets Entra's answer for this user on its next poll, never a token.
            with self.directory.store.session() as s:
                people.claim_grant(s, grant.id_hash, "pending", "refused", user_id=user.object_id)
            raise PasswordExpired()
        with self.directory.store.session() as s:
            if not people.claim_grant(s, grant.id_hash, "pending", "approved", user_id=user.object_id):
                raise InvalidRequest(70000, "The code you entered was already used.")

    def _redeem_device(self, tenant: str, client: SignedInClient, request: UserGrantRequest) -> dict[str, Any]:
        now = self.clock.now()
        id_hash = self._hash(request.device_code)
        with self.directory.store.session() as s:
            grant = people.get_grant(s, id_hash, "device")
            if grant is None or grant.client_id != client.client_id:
                raise InvalidGrant(70000, "The provided value for the input parameter 'device_code' is not valid.")
            if grant.expires_at <= now:
                raise ExpiredToken(70020, "The provided value for the input parameter 'device_code' has expired.")
            if grant.state == "pending":
                raise AuthorizationPending(
                    70016, "OAuth 2.0 device flow error. Authorization is pending. Continue polling."
                )
            if grant.state == "refused":
                raise PasswordExpired()
            if grant.state != "approved" or not people.claim_grant(s, id_hash, "approved", "used"):
                raise InvalidGrant(70000, "The provided value for the input parameter 'device_code' was already used.")
            user = self._current_user(s, grant.user_id, grant.created_at)
        scope = request.scope if request.scope_given else delegated_scope(grant.scope, None)
        return self.issue(user, client, scope, request.endpoint, nonce=None, family=grant.family)


def _check_origin(single_page: bool, origin: str) -> None:
    """Entra's rule for single-page apps: their codes and refresh tokens are redeemed only by a
    browser's cross-origin request (with an Origin header), and nothing else's is."""
    if single_page and not origin:
        raise InvalidRequest(
            9002327,
            "Tokens issued for the 'Single-Page Application' client-type may only be redeemed via cross-origin "
            "requests.",
        )
    if origin and not single_page:
        raise InvalidRequest(
            9002326,
            "Cross-origin token redemption is permitted only for the 'Single-Page Application' client-type. "
            f"Request origin: '{origin[:200]}'.",
        )
