"""Validation of the access tokens resource servers receive (RFC 6750 bearer, RFC 8725 rules).

Decoding and validating are one call. The key is chosen by `kid` from keys the caller trusts; the
algorithm comes from the key (RS256 only), never from the header; `iss`, `aud`, `exp` and `nbf`
are all required and checked against the caller's expectations.
"""

from __future__ import annotations

import math
import re
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric import rsa

from lanyard.protocol.jose import JoseError, parse_compact, verify_rsa

_KID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_ONLY_RS256 = frozenset({"RS256"})
# The longest lifetime the platform issues (LANYARD_TOKEN_LIFETIME is capped at two days): a token
# claiming to live longer, or to expire further ahead, was not minted by the rules this checks.
MAX_LIFETIME = 2 * 86400


class KeySource(Protocol):
    """Where a verifier finds the public key a token names by `kid`: a JWKS, or a key ring."""

    def get(self, kid: str) -> rsa.RSAPublicKey | None: ...


class InvalidToken(ValueError):
    """Reject this token. The message names the failed rule and never includes the token."""


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (RFC 6750 §2.1), or None."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def normalize_audience(value: str) -> str:
    """Clients send both `X` and `X/` for the same resource (docs/protocols.md §1.2)."""
    return value[:-1] if value.endswith("/") else value


def validate_bearer(
    token: str,
    *,
    keys: KeySource,
    issuers: frozenset[str],
    audiences: frozenset[str],
    now: float,
    leeway: float = 120.0,
) -> dict[str, Any]:
    try:
        jws = parse_compact(token)
    except JoseError as exc:
        raise InvalidToken(str(exc)) from exc
    header = jws.header
    for injected in ("jku", "x5u", "jwk", "x5c"):
        if injected in header:
            raise InvalidToken(f"token header '{injected}' is not accepted")
    typ = header.get("typ", "JWT")
    if not isinstance(typ, str) or typ.upper() != "JWT":
        raise InvalidToken("token typ is not an access token's")
    kid = header.get("kid")
    if not isinstance(kid, str) or not _KID.match(kid):
        raise InvalidToken("token has no usable kid")
    key = keys.get(kid)
    if key is None:
        raise InvalidToken("token was signed by an unknown key")
    try:
        verify_rsa(jws, key, _ONLY_RS256)
    except JoseError as exc:
        raise InvalidToken(str(exc)) from exc

    claims = jws.claims
    iss = claims.get("iss")
    if not isinstance(iss, str) or iss not in issuers:
        raise InvalidToken("token issuer is not trusted here")
    aud = claims.get("aud")
    if not isinstance(aud, str) or normalize_audience(aud) not in audiences:
        raise InvalidToken("token audience is not this resource")
    for name in ("exp", "nbf", "iat"):
        value = claims.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise InvalidToken(f"token claim '{name}' is missing or not a number")
    if claims["exp"] <= now - leeway:
        raise InvalidToken("token has expired")
    if claims["nbf"] > now + leeway or claims["iat"] > now + leeway:
        raise InvalidToken("token is not yet valid")
    if claims["exp"] > now + MAX_LIFETIME + leeway or claims["exp"] - claims["iat"] > MAX_LIFETIME + leeway:
        raise InvalidToken("token lifetime is longer than this issuer gives")
    for name in ("tid", "oid", "appid"):
        if not isinstance(claims.get(name), str):
            raise InvalidToken(f"token claim '{name}' is missing")
    if not iss.endswith(f"/{claims['tid']}/"):
        raise InvalidToken("token tenant is not its issuer's")
    return claims
