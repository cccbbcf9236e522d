"""RFC 7523 client assertions, signed with a certificate's key (RS256, `x5t` as azure-identity sends)."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

ASSERTION_LIFETIME = 600


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class CertificateKey:
    """A certificate and its private key, parsed once."""

    key: rsa.RSAPrivateKey
    x5t: str

    @classmethod
    def from_pem(cls, certificate_pem: str | bytes, private_key_pem: str | bytes) -> CertificateKey:
        cert_bytes = certificate_pem.encode() if isinstance(certificate_pem, str) else certificate_pem
        key_bytes = private_key_pem.encode() if isinstance(private_key_pem, str) else private_key_pem
        cert = x509.load_pem_x509_certificate(cert_bytes)
        key = serialization.load_pem_private_key(key_bytes, password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("client assertion keys must be RSA")
        der = cert.public_bytes(serialization.Encoding.DER)
        return cls(key, _b64(hashlib.sha1(der, usedforsecurity=False).digest()))

    def assertion(self, client_id: str, audience: str, now: float | None = None) -> str:
        issued = time.time() if now is None else now
        header = {"alg": "RS256", "typ": "JWT", "x5t": self.x5t}
        claims = {
            "aud": audience,
            "iss": client_id,
            "sub": client_id,
            "jti": str(uuid.uuid4()),
            "iat": int(issued),
            "nbf": int(issued),
            "exp": int(issued) + ASSERTION_LIFETIME,
        }
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64(signature)}"
