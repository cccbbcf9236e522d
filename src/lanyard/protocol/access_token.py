"""Access tokens in the v1 profile that Azure managed-identity tokens use (docs/protocols.md §8).

Clients read `tid` from the token without checking it (az login --identity), so every token is a
JWT carrying the tenant; resource servers match `aud` exactly as it was requested.
"""

from __future__ import annotations

import base64
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
