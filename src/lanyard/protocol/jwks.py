"""JSON Web Key Sets (RFC 7517) for the directory's signing keys, in Entra's shape.

Entra's `kid` equals `x5t` (base64url SHA-1 of the certificate), and every key carries its
certificate in `x5c`; we do the same so verifiers written for Entra work unchanged.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def x5t(cert: x509.Certificate) -> str:
    der = cert.public_bytes(serialization.Encoding.DER)
    return base64.urlsafe_b64encode(hashlib.sha1(der, usedforsecurity=False).digest()).rstrip(b"=").decode()


def rsa_jwk(cert: x509.Certificate, issuer: str | None = None) -> dict[str, Any]:
    public = cert.public_key()
    if not isinstance(public, rsa.RSAPublicKey):
        raise ValueError("signing certificates must hold RSA keys")
    numbers = public.public_numbers()
    thumb = x5t(cert)
    jwk: dict[str, Any] = {
        "kty": "RSA",
        "use": "sig",
        "alg": "RS256",
        "kid": thumb,
        "x5t": thumb,
        "n": _b64url_uint(numbers.n),
        "e": _b64url_uint(numbers.e),
        "x5c": [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()],
    }
    if issuer:
        jwk["issuer"] = issuer
    return jwk
