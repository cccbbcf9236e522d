"""Access tokens in the v1 profile that Azure managed-identity tokens use (docs/protocols.md §8).

Clients read `tid` from the token without checking it (az login --identity), so every token is a
JWT carrying the tenant; resource servers match `aud` exactly as it was requested.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any, Literal


def _uti() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode()


@dataclass(frozen=True)
class Subject:
    """Who the token is for, as the directory knows it."""

    tenant_id: str
    object_id: str
    app_id: str
    kind: str  # "Application" | "ManagedIdentity"
    resource_id: str | None = None


def issuer_v1(authority: str, tenant_id: str) -> str:
    return f"{authority}/{tenant_id}/"


def issuer_v2(authority: str, tenant_id: str) -> str:
    return f"{authority}/{tenant_id}/v2.0"


def v1_claims(
    subject: Subject,
    *,
    resource: str,
    issuer: str,
    now: float,
    lifetime: int,
    auth_method: Literal["secret", "certificate", "managed", "federated"],
) -> dict[str, Any]:
    iat = int(now)
    claims: dict[str, Any] = {
        "aud": resource,
        "iss": issuer,
        "iat": iat,
        "nbf": iat,
        "exp": iat + lifetime,
        "aio": _uti(),
        "appid": subject.app_id,
        # Entra: "1" client secret, "2" certificate (managed identities authenticate by certificate).
        "appidacr": "1" if auth_method == "secret" else "2",
        "idp": issuer,
        "idtyp": "app",
        "oid": subject.object_id,
        "rh": _uti(),
        "sub": subject.object_id,
        "tid": subject.tenant_id,
        "uti": _uti(),
        "ver": "1.0",
    }
    if subject.resource_id:
        claims["xms_mirid"] = subject.resource_id
    return claims


def token_response(token: str, claims: dict[str, Any], endpoint: Literal["v1", "v2"]) -> dict[str, Any]:
    """The v2 endpoint answers with numbers, the v1 endpoint with strings (as Entra does)."""
    lifetime = claims["exp"] - claims["iat"]
    if endpoint == "v2":
        return {
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": token,
        }
    return {
        "token_type": "Bearer",
        "expires_in": str(lifetime),
        "ext_expires_in": str(lifetime),
        "expires_on": str(claims["exp"]),
        "not_before": str(claims["nbf"]),
        "resource": claims["aud"],
        "access_token": token,
    }


# -- delegated tokens (a user signed in through a client) --------------------------------------


@dataclass(frozen=True)
class UserSubject:
    tenant_id: str
    object_id: str
    upn: str
    name: str


def pairwise_sub(object_id: str, client_id: str) -> str:
    """Entra's `sub` for users: stable per (user, client), unlinkable across clients."""
    digest = hashlib.sha256(f"{object_id}|{client_id}".encode()).digest()[:32]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def user_claims(
    user: UserSubject,
    *,
    client_id: str,
    resource: str,
    scp: str,
    issuer: str,
    now: float,
    lifetime: int,
    confidential: bool,
    amr: tuple[str, ...] = ("pwd",),
    assertion: bool = False,
) -> dict[str, Any]:
    """A v1-profile delegated access token, with the claims az, msal and resource servers read."""
    iat = int(now)
    return {
        "aud": resource,
        "iss": issuer,
        "iat": iat,
        "nbf": iat,
        "exp": iat + lifetime,
        "acr": "1",
        "aio": _uti(),
        "amr": list(amr),
        "appid": client_id,
        # Entra: "0" public client, "1" client secret, "2" client assertion (certificate or federated).
        "appidacr": ("2" if assertion else "1") if confidential else "0",
        "idtyp": "user",
        "name": user.name,
        "oid": user.object_id,
        "preferred_username": user.upn,
        "rh": _uti(),
        "scp": scp,
        "sub": pairwise_sub(user.object_id, client_id),
        "tid": user.tenant_id,
        "unique_name": user.upn,
        "upn": user.upn,
        "uti": _uti(),
        "ver": "1.0",
    }


def id_token_claims(
    user: UserSubject, *, client_id: str, issuer: str, now: float, lifetime: int, nonce: str | None, v2: bool
) -> dict[str, Any]:
    iat = int(now)
    claims: dict[str, Any] = {
        "aud": client_id,
        "iss": issuer,
        "iat": iat,
        "nbf": iat,
        "exp": iat + lifetime,
        "aio": _uti(),
        "name": user.name,
        "oid": user.object_id,
        "preferred_username": user.upn,
        "rh": _uti(),
        "sub": pairwise_sub(user.object_id, client_id),
        "tid": user.tenant_id,
        "uti": _uti(),
        "ver": "2.0" if v2 else "1.0",
    }
    if not v2:
        claims["upn"] = user.upn
        claims["unique_name"] = user.upn
    if nonce:
        claims["nonce"] = nonce
    return claims


def client_info(user: UserSubject) -> str:
    """What msal keys its account cache by: base64url of {"uid", "utid"}."""
    raw = json.dumps({"uid": user.object_id, "utid": user.tenant_id}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
