"""Compact JWS (RFC 7515) for RSA keys: strict parsing, signing, and signature checks.

Written for the threats in docs/security.md T3 (RFC 8725): the algorithm a key may be used with comes
from the key, never from the token header; segments must be canonical base64url; JSON objects with
duplicate names are refused; sizes are capped before anything is decoded.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

MAX_TOKEN_LENGTH = 16_384
MAX_HEADER_LENGTH = 8_192  # x5c chains are legitimately large in client assertions
_B64URL = re.compile(rb"^[A-Za-z0-9_-]*$")

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})


class JoseError(ValueError):
    """A token that is malformed or does not verify. The message is safe to show: no token content."""


def b64url_encode(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def b64url_decode(segment: bytes) -> bytes:
    """Canonical unpadded base64url only: padding, '+', '/', and stray bits are refused."""
    if not _B64URL.match(segment) or len(segment) % 4 == 1:
        raise JoseError("segment is not canonical base64url")
    try:
        raw = base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))
    except binascii.Error as exc:
        raise JoseError("segment is not base64url") from exc
    if b64url_encode(raw) != segment:
        raise JoseError("segment is not canonical base64url")
    return raw


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise JoseError(f"duplicate member {key[:32]!r} in JSON object")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise JoseError(f"segment holds the non-JSON number {name[:10]}")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JoseError("segment holds a number out of range")
    return value


def strict_json_object(raw: bytes) -> dict[str, Any]:
    """A JSON object with no duplicate members and only finite numbers (NaN, Infinity and 1e999
    would otherwise compare false against every deadline)."""
    try:
        value = json.loads(raw, object_pairs_hook=_no_duplicates, parse_constant=_no_constant, parse_float=_finite)
    except JoseError:
        raise
    except (ValueError, UnicodeDecodeError) as exc:
        raise JoseError("segment is not a JSON object") from exc
    if not isinstance(value, dict):
        raise JoseError("segment is not a JSON object")
    return value


@dataclass(frozen=True)
class CompactJws:
    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes


def parse_compact(token: str | bytes) -> CompactJws:
    raw = token.encode("ascii", "replace") if isinstance(token, str) else token
    if len(raw) > MAX_TOKEN_LENGTH:
        raise JoseError("token is too large")
    parts = raw.split(b".")
    if len(parts) != 3:
        raise JoseError("token is not a compact JWS (three segments)")
    header_b64, payload_b64, sig_b64 = parts
    if len(header_b64) > MAX_HEADER_LENGTH:
        raise JoseError("token header is too large")
    header = strict_json_object(b64url_decode(header_b64))
    claims = strict_json_object(b64url_decode(payload_b64))
    signature = b64url_decode(sig_b64)
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise JoseError("token header has no alg")
    if "crit" in header:
        raise JoseError("token header has crit parameters this server does not understand")
    return CompactJws(header, claims, header_b64 + b"." + payload_b64, signature)


def verify_rsa(jws: CompactJws, key: rsa.RSAPublicKey, allowed: frozenset[str] = RSA_ALGORITHMS) -> str:
    """Check the signature with an RSA key. Returns the algorithm used. HS*/none never pass here."""
    alg = str(jws.header["alg"])
    if alg not in allowed or alg not in RSA_ALGORITHMS:
        raise JoseError(f"algorithm {alg[:16]!r} is not allowed for this key")
    if key.key_size < 2048:
        raise JoseError("signing key is weaker than 2048 bits")
    if len(jws.signature) != key.key_size // 8:
        raise JoseError("signature has the wrong length for the key")
    digest = _HASHES[alg[2:]]()
    pad: padding.AsymmetricPadding = (
        padding.PKCS1v15()
        if alg.startswith("RS")
        else padding.PSS(mgf=padding.MGF1(digest), salt_length=padding.PSS.DIGEST_LENGTH)
    )
    try:
        key.verify(jws.signature, jws.signing_input, pad, digest)
    except InvalidSignature as exc:
        raise JoseError("signature does not verify") from exc
    return alg


class RsaSigner:
    """Signs RS256 compact JWS with a key loaded once; the header segment is encoded once too."""

    def __init__(self, key: rsa.RSAPrivateKey, header: dict[str, Any]) -> None:
        self._key = key
        self._header_b64 = b64url_encode(orjson.dumps({"typ": "JWT", "alg": "RS256", **header}))
        self._pad = padding.PKCS1v15()
        self._hash = hashes.SHA256()

    def sign(self, claims: dict[str, Any]) -> str:
        signing_input = self._header_b64 + b"." + b64url_encode(orjson.dumps(claims))
        signature = self._key.sign(signing_input, self._pad, self._hash)
        return (signing_input + b"." + b64url_encode(signature)).decode("ascii")
