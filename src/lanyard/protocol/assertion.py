"""RFC 7523 client assertions, as azure-identity and msal build them (docs/protocols.md §6.4).

azure-identity's CertificateCredential sends RS256 with `x5t` (padded base64url SHA-1);
msal with a public certificate sends PS256 with `x5t#S256` and an `x5c` chain whose entries may
contain newlines. The key that checks the signature is always a certificate registered on the
client: a key carried in the token (`x5c`, `jwk`, `jku`, `x5u`) is only ever used to *find* one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import rsa

from lanyard.core.errors import InvalidClient
from lanyard.protocol.jose import CompactJws, JoseError, parse_compact, verify_rsa

MAX_ASSERTION_LIFETIME = 24 * 3600
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class RegisteredCertificate:
    key_id: str
    thumbprint_sha1: str  # upper-case hex
    thumbprint_sha256: str
    public_key: rsa.RSAPublicKey
    start_at: float
    end_at: float


def _thumbprint_from_header(value: object, size: int) -> str | None:
    if not isinstance(value, str) or len(value) > 128:
        return None
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        return None
    return raw.hex().upper() if len(raw) == size else None


def _x5c_thumbprints(value: object) -> set[str]:
    """SHA-1 and SHA-256 thumbprints of the leaf in an x5c header (standard base64, maybe wrapped)."""
    if not isinstance(value, list) or not value or not isinstance(value[0], str):
        return set()
    try:
        der = base64.b64decode(_WHITESPACE.sub("", value[0]), validate=True)
    except (binascii.Error, ValueError):
        return set()
    return {
        hashlib.sha1(der, usedforsecurity=False).hexdigest().upper(),
        hashlib.sha256(der).hexdigest().upper(),
    }


def _select_certificate(jws: CompactJws, certificates: Iterable[RegisteredCertificate]) -> RegisteredCertificate:
    header = jws.header
    wanted_sha1 = _thumbprint_from_header(header.get("x5t"), 20)
    wanted_sha256 = _thumbprint_from_header(header.get("x5t#S256"), 32)
    from_chain = _x5c_thumbprints(header.get("x5c"))
    for cert in certificates:
        if (
            cert.thumbprint_sha1 == wanted_sha1
            or cert.thumbprint_sha256 == wanted_sha256
            or cert.thumbprint_sha1 in from_chain
            or cert.thumbprint_sha256 in from_chain
        ):
            return cert
    raise InvalidClient(
        700027,
        "Client assertion contains an invalid signature. [Reason - The key was not found.]",
    )


def numeric_claim(claims: dict[str, object], name: str, required: bool) -> float | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise InvalidClient(700023, f"Client assertion is missing the '{name}' claim.")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidClient(700023, f"Client assertion claim '{name}' must be a number.")
    return float(value)


def verify_client_assertion(
    assertion: str,
    *,
    client_id: str,
    certificates: Iterable[RegisteredCertificate],
    audiences: frozenset[str],
    now: float,
    skew: float = 300.0,
) -> RegisteredCertificate:
    """Check an assertion completely; return the certificate credential that signed it."""
    try:
        jws = parse_compact(assertion)
    except JoseError as exc:
        raise InvalidClient(50027, f"JWT token is invalid or malformed: {exc}.") from exc
    for injected in ("jku", "x5u", "jwk"):
        if injected in jws.header:
            raise InvalidClient(50027, f"Client assertion header '{injected}' is not accepted.")

    claims = jws.claims
    if claims.get("iss") != client_id or claims.get("sub") != client_id:
        raise InvalidClient(700021, "Client assertion application identifier doesn't match 'client_id' parameter.")
    aud = claims.get("aud")
    aud_values = aud if isinstance(aud, list) else [aud]
    if not any(isinstance(a, str) and a in audiences for a in aud_values):
        raise InvalidClient(700212, "Client assertion audience claim does not match this token endpoint.")

    exp = numeric_claim(claims, "exp", required=True)
    nbf = numeric_claim(claims, "nbf", required=False)
    iat = numeric_claim(claims, "iat", required=False)
    assert exp is not None
    if exp <= now - skew:
        raise InvalidClient(700024, "Client assertion is not within its valid time range (expired).")
    if (nbf is not None and nbf > now + skew) or (iat is not None and iat > now + skew):
        raise InvalidClient(700024, "Client assertion is not within its valid time range (not yet valid).")
    if exp - now > MAX_ASSERTION_LIFETIME:
        raise InvalidClient(700024, "Client assertion lifetime is longer than 24 hours.")

    cert = _select_certificate(jws, certificates)
    if not cert.start_at - skew <= now <= cert.end_at:
        raise InvalidClient(700027, "The certificate used to sign the client assertion is not currently valid.")
    try:
        verify_rsa(jws, cert.public_key)
    except JoseError as exc:
        raise InvalidClient(700027, f"Client assertion failed signature validation: {exc}.") from exc
    return cert
