"""Strict JWS parsing and bearer-token validation (docs/security.md T3), without a server."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from lanyard.protocol.bearer import InvalidToken, validate_bearer
from lanyard.protocol.jose import JoseError, RsaSigner, b64url_decode, parse_compact

NOW = 1_800_000_000
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ISS = "https://localhost:8443/t/"
AUD = "https://management.azure.com"


def claims(**overrides: Any) -> dict[str, Any]:
    base = {"aud": AUD, "iss": ISS, "iat": NOW, "nbf": NOW, "exp": NOW + 3600, "tid": "t", "oid": "o", "appid": "a"}
    return {k: v for k, v in {**base, **overrides}.items() if v is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(header: dict[str, Any], body: dict[str, Any], signature: bytes = b"") -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(body).encode())}.{b64(signature)}"


def check(token: str, **kw: Any) -> dict[str, Any]:
    return validate_bearer(
        token,
        keys={"k1": KEY.public_key()},
        issuers=frozenset({ISS}),
        audiences=frozenset({AUD}),
        now=kw.pop("now", NOW),
        **kw,
    )


def good(**overrides: Any) -> str:
    return RsaSigner(KEY, {"kid": "k1"}).sign(claims(**overrides))


def test_valid_token_and_trailing_slash_audience() -> None:
    assert check(good())["oid"] == "o"
    assert check(good(aud=AUD + "/"))["aud"] == AUD + "/"


def test_signer_output_verifies_with_pyjwt() -> None:
    decoded = jwt.decode(
        good(),
        KEY.public_key(),
        algorithms=["RS256"],
        audience=AUD,
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )
    assert decoded["tid"] == "t"


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none(alg: str) -> None:
    with pytest.raises(InvalidToken):
        check(raw_token({"alg": alg, "kid": "k1"}, claims()))


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_hmac_with_public_key(alg: str) -> None:
    public_pem = KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header, body = {"alg": alg, "kid": "k1", "typ": "JWT"}, claims()
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(body).encode())}".encode()
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    token = signing_input.decode() + "." + b64(hmac.new(public_pem, signing_input, digest).digest())
    with pytest.raises(InvalidToken, match="not allowed"):
        check(token)


def test_ps256_is_not_an_access_token_algorithm() -> None:
    token = jwt.encode(claims(), KEY, algorithm="PS256", headers={"kid": "k1"})
    with pytest.raises(InvalidToken, match="not allowed"):
        check(token)


def test_signed_by_another_key() -> None:
    with pytest.raises(InvalidToken, match="does not verify"):
        check(RsaSigner(OTHER, {"kid": "k1"}).sign(claims()))


@pytest.mark.parametrize("kid", [None, "../../etc/passwd", "' OR 1=1--", "x" * 10_000, "unknown"])
def test_bad_kids(kid: str | None) -> None:
    header = {"kid": kid} if kid is not None else {}
    with pytest.raises(InvalidToken):
        check(RsaSigner(KEY, header).sign(claims()))


@pytest.mark.parametrize(
    "injected",
    [
        {"jku": "http://127.0.0.1:1/k"},
        {"x5u": "http://127.0.0.1:1/c"},
        {"jwk": {"kty": "RSA"}},
        {"x5c": ["AAAA"]},
        {"crit": ["exp"]},
    ],
)
def test_header_key_injection(injected: dict[str, Any]) -> None:
    with pytest.raises(InvalidToken):
        check(RsaSigner(KEY, {"kid": "k1", **injected}).sign(claims()))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"iss": "https://evil/t/"}, "issuer"),
        ({"iss": ISS.rstrip("/")}, "issuer"),
        ({"aud": "https://vault.azure.net"}, "audience"),
        ({"aud": [AUD]}, "audience"),
        ({"aud": None}, "audience"),
        ({"exp": None}, "exp"),
        ({"exp": str(NOW + 3600)}, "exp"),
        ({"exp": True}, "exp"),
        ({"exp": NOW - 121}, "expired"),
        ({"nbf": NOW + 3600}, "not yet valid"),
        ({"iat": NOW + 3600}, "not yet valid"),
        ({"tid": None}, "tid"),
    ],
)
def test_claim_rules(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidToken, match=message):
        check(good(**overrides))


def test_leeway_boundary() -> None:
    assert check(good(exp=NOW - 119))
    with pytest.raises(InvalidToken):
        check(good(exp=NOW - 120))


def test_duplicate_json_members() -> None:
    header = b64(b'{"alg":"RS256","kid":"k1"}')
    payload = b64(b'{"aud":"https://evil","aud":"' + AUD.encode() + b'"}')
    with pytest.raises(JoseError, match="duplicate"):
        parse_compact(f"{header}.{payload}.")


@pytest.mark.parametrize("segment", [b"YQ==", b"YQ=", b"a+b/", b"Y", b"YR"])
def test_non_canonical_base64url(segment: bytes) -> None:
    with pytest.raises(JoseError):
        b64url_decode(segment)


@pytest.mark.parametrize("token", ["a.b", "a.b.c.d", "a.b.c.d.e", "", "x" * 20_000])
def test_wrong_segment_counts_and_sizes(token: str) -> None:
    with pytest.raises(JoseError):
        parse_compact(token)


def test_weak_rsa_key_is_refused() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    token = RsaSigner(weak, {"kid": "k1"}).sign(claims())
    with pytest.raises(InvalidToken, match="weaker"):
        validate_bearer(
            token, keys={"k1": weak.public_key()}, issuers=frozenset({ISS}), audiences=frozenset({AUD}), now=NOW
        )


def test_ecdsa_token_is_refused() -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode(claims(), ec_key, algorithm="ES256", headers={"kid": "k1"})
    with pytest.raises(InvalidToken):
        check(token)
    zero = token.rsplit(".", 1)[0] + "." + b64(bytes(64))  # the "psychic signature" r = s = 0
    with pytest.raises(InvalidToken):
        check(zero)


def test_signature_of_wrong_length() -> None:
    token = good()
    with pytest.raises(InvalidToken, match="length"):
        check(token.rsplit(".", 1)[0] + "." + b64(b"\x00" * 255))
