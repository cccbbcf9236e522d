"""The token endpoint's side of workload identity federation: an outside issuer's token, presented
as a client assertion, checked against a client's federated credentials (docs/federation.md).

Order matters: the credentials are consulted before anything is fetched, so a token from an issuer
no credential of this client names is refused without a single outbound request; audience,
subject and lifetime are checked next, so a token that could never pass costs no fetch either; the
signature last, with the issuer's key.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cryptography.hazmat.primitives.asymmetric import rsa

from lanyard.core.errors import InvalidClient
from lanyard.protocol.assertion import numeric_claim
from lanyard.protocol.federation import Rule
from lanyard.protocol.jose import CompactJws, JoseError, verify_rsa

KeyFor = Callable[[str, str | None], rsa.RSAPublicKey]
_DOCS = "See docs/federation.md in Lanyard, or Entra's workload identity federation documentation."


def _audiences(claims: dict[str, object]) -> list[str]:
    aud = claims.get("aud")
    values = aud if isinstance(aud, list) else [aud]
    return [a for a in values if isinstance(a, str)]


def shown(value: object) -> str:
    return str(value)[:200].encode("unicode_escape").decode()


def verify_federated(jws: CompactJws, rules: Sequence[Rule], *, now: float, skew: float, key_for: KeyFor) -> Rule:
    """The credential a federated assertion satisfies, or the AADSTS refusal Entra gives."""
    claims = jws.claims
    issuer = claims.get("iss")
    by_issuer = [r for r in rules if r.issuer == issuer]
    if not by_issuer:
        raise InvalidClient(
            700211,
            f"No matching federated identity record found for presented assertion issuer '{shown(issuer)}'. "
            f"Please check your federated identity credential Subject, Audience and Issuer against the presented "
            f"assertion. {_DOCS}",
        )
    audiences = _audiences(claims)
    by_audience = [r for r in by_issuer if any(a in r.audiences for a in audiences)]
    if not by_audience:
        raise InvalidClient(
            700212,
            "No matching federated identity record found for presented assertion audience "
            f"'{shown(','.join(audiences))}'. {_DOCS}",
        )
    matched = next((r for r in by_audience if r.subject_matches(claims)), None)
    if matched is None:
        raise InvalidClient(
            700213,
            "No matching federated identity record found for presented assertion subject "
            f"'{shown(claims.get('sub'))}'. "
            f"Please check your federated identity credential Subject, Audience and Issuer against the presented "
            f"assertion. {_DOCS}",
        )
    exp = numeric_claim(claims, "exp", required=True)
    nbf = numeric_claim(claims, "nbf", required=False)
    iat = numeric_claim(claims, "iat", required=False)
    assert exp is not None
    if exp <= now - skew:
        raise InvalidClient(700024, "Client assertion is not within its valid time range (expired).")
    if (nbf is not None and nbf > now + skew) or (iat is not None and iat > now + skew):
        raise InvalidClient(700024, "Client assertion is not within its valid time range (not yet valid).")
    for injected in ("jku", "x5u", "jwk", "x5c"):
        if injected in jws.header:
            # The issuer's published keys verify its tokens; a key carried in the token never does.
            raise InvalidClient(50027, f"Client assertion header '{injected}' is not accepted.")
    kid = jws.header.get("kid")
    key = key_for(matched.issuer, kid if isinstance(kid, str) else None)
    try:
        verify_rsa(jws, key)
    except JoseError as exc:
        raise InvalidClient(700027, f"Client assertion failed signature validation: {exc}.") from exc
    return matched
