"""Build client assertions and token-request bodies; check the responses are the real thing.

Checks matter because a benchmark that measures a fast 400 is worse than none: every target is
asked once for real, and its answer verified, before wrk is pointed at it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ARM_SCOPE = "https://management.azure.com/.default"
FORM = "application/x-www-form-urlencoded"


class CheckFailed(Exception):
    """A target answered, but not with what a real client needs: a correctness failure."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class CertCredential:
    """An app's certificate credential: the private key is parsed once, here, never per request."""

    client_id: str
    key: rsa.RSAPrivateKey
    cert_der: bytes

    @classmethod
    def from_pem(cls, client_id: str, pem: bytes) -> CertCredential:
        """Accept one PEM holding both the certificate and the private key (az's --create-cert file)."""
        key = serialization.load_pem_private_key(_pem_block(pem, b"PRIVATE KEY"), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise CheckFailed("certificate credential's private key is not RSA")
        cert = x509.load_pem_x509_certificate(_pem_block(pem, b"CERTIFICATE"))
        return cls(client_id, key, cert.public_bytes(serialization.Encoding.DER))

    @property
    def x5t(self) -> str:
        """Azure identifies the certificate by the base64url SHA-1 thumbprint of its DER."""
        return b64url(hashlib.sha1(self.cert_der, usedforsecurity=False).digest())


def _pem_block(pem: bytes, label: bytes) -> bytes:
    """Cut one block out of a multi-block PEM ('PRIVATE KEY' also matches 'RSA PRIVATE KEY')."""
    for block in pem.split(b"-----END ")[:-1]:
        start = block.find(b"-----BEGIN ")
        if start >= 0 and label in block[start:].split(b"\n", 1)[0]:
            kind = block[start + 11 :].split(b"-----", 1)[0]
            return block[start:] + b"-----END " + kind + b"-----\n"
    raise CheckFailed(f"no {label.decode()} block in the credential PEM")


def client_assertion(cred: CertCredential, audience: str, lifetime_s: int = 600) -> str:
    """An RS256 client assertion as Azure SDKs send it. Built once per measured run and replayed:
    the servers under test do not reject a reused jti (the node peer is configured the same)."""
    now = int(time.time())
    header = {"alg": "RS256", "typ": "JWT", "x5t": cred.x5t}
    claims = {
        "aud": audience,
        "iss": cred.client_id,
        "sub": cred.client_id,
        "jti": str(uuid.uuid4()),
        "iat": now,
        "nbf": now,
        "exp": now + lifetime_s,
    }
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = cred.key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64url(signature)}"


def secret_form(client_id: str, secret: str, scope: str = ARM_SCOPE) -> str:
    return urlencode(
        {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret, "scope": scope}
    )


def assertion_form(client_id: str, assertion: str, scope: str = ARM_SCOPE) -> str:
    return urlencode(
        {
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": assertion,
            "scope": scope,
        }
    )


# ------------------------------------------------------------------------------------------ checks


def json_body(response: httpx.Response, what: str) -> dict[str, Any]:
    if response.status_code != 200:
        raise CheckFailed(f"{what}: HTTP {response.status_code}: {response.text[:300]}")
    try:
        body = response.json()
    except ValueError as exc:
        raise CheckFailed(f"{what}: body is not JSON: {response.text[:200]}") from exc
    if not isinstance(body, dict):
        raise CheckFailed(f"{what}: body is not a JSON object")
    return body


def check_jwks(doc: dict[str, Any], what: str) -> None:
    keys = doc.get("keys")
    if not isinstance(keys, list) or not keys:
        raise CheckFailed(f"{what}: JWKS has no keys")
    for key in keys:
        if not {"kty", "kid", "n", "e"} <= set(key):
            raise CheckFailed(f"{what}: JWKS key lacks kty/kid/n/e: {sorted(key)}")


def check_discovery(doc: dict[str, Any], what: str) -> None:
    missing = {"issuer", "token_endpoint", "jwks_uri"} - set(doc)
    if missing:
        raise CheckFailed(f"{what}: discovery document lacks {sorted(missing)}")


def check_token(body: dict[str, Any], jwks: dict[str, Any], what: str) -> dict[str, Any]:
    """The response must carry a Bearer access token that is an RS256 JWT signed by a JWKS key."""
    token = body.get("access_token")
    if not isinstance(token, str) or not token:
        raise CheckFailed(f"{what}: no access_token in {sorted(body)}")
    if str(body.get("token_type", "")).lower() != "bearer":
        raise CheckFailed(f"{what}: token_type is {body.get('token_type')!r}, expected Bearer")
    return verify_rs256(token, jwks, what)


def verify_rs256(token: str, jwks: dict[str, Any], what: str) -> dict[str, Any]:
    try:
        header_b64, claims_b64, signature_b64 = token.split(".")
        header = json.loads(b64url_decode(header_b64))
        claims: dict[str, Any] = json.loads(b64url_decode(claims_b64))
    except ValueError as exc:
        raise CheckFailed(f"{what}: access_token is not a JWT") from exc
    if header.get("alg") != "RS256":
        raise CheckFailed(f"{what}: access_token alg is {header.get('alg')!r}, expected RS256")
    candidates = [k for k in jwks.get("keys", []) if k.get("kid") == header.get("kid")] or jwks.get("keys", [])
    signing_input = f"{header_b64}.{claims_b64}".encode("ascii")
    for jwk in candidates:
        public = rsa.RSAPublicNumbers(
            int.from_bytes(b64url_decode(jwk["e"])), int.from_bytes(b64url_decode(jwk["n"]))
        ).public_key()
        try:
            public.verify(b64url_decode(signature_b64), signing_input, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            continue
        if int(claims.get("exp", 0)) <= time.time():
            raise CheckFailed(f"{what}: access_token is already expired")
        return claims
    raise CheckFailed(f"{what}: access_token signature does not verify against the JWKS (kid {header.get('kid')})")
