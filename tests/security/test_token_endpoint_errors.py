"""Every malformed, unknown or unauthorized token request gets an Entra-style OAuth error with the
right status and AADSTS code; forged, expired, misaddressed and wrongly-signed assertions are refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import RunningPlatform

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def post(platform: RunningPlatform, data: Any, *, v1: bool = False, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    with platform.http() as http:
        response = http.post(platform.token_url_v1 if v1 else platform.token_url_v2, data=data, **kwargs)
    assert response.headers["content-type"].startswith("application/json")
    return response.status_code, response.json()


def assert_error(result: tuple[int, dict[str, Any]], status: int, error: str, code: int) -> None:
    got_status, body = result
    assert (got_status, body.get("error")) == (status, error), body
    assert body["error_codes"] == [code], body
    assert body["error_description"].startswith(f"AADSTS{code}:")
    assert "access_token" not in body


@pytest.fixture(scope="module")
def cert_material(cert_app: dict[str, Any]) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    pem = Path(cert_app["fileWithCertAndPrivateKey"]).read_bytes()
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key, x509.load_pem_x509_certificate(pem)


def x5t(cert: x509.Certificate) -> str:
    der = cert.public_bytes(serialization.Encoding.DER)
    return base64.urlsafe_b64encode(hashlib.sha1(der).digest()).decode()


def assertion(
    platform: RunningPlatform,
    client_id: str,
    key: Any,
    cert: x509.Certificate,
    *,
    alg: str = "RS256",
    headers: dict[str, Any] | None = None,
    **overrides: Any,
) -> str:
    now = time.time()
    claims = {
        "aud": platform.token_url_v2,
        "iss": client_id,
        "sub": client_id,
        "jti": str(uuid.uuid4()),
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        **overrides,
    }
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm=alg, headers={"x5t": x5t(cert), **(headers or {})})


def assertion_form(client_id: str, token: str, **extra: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_id": client_id,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": token,
        "scope": "https://management.azure.com/.default",
        **extra,
    }


def secret_form(app: dict[str, Any], **extra: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_id": app["appId"],
        "client_secret": app["password"],
        "scope": "https://management.azure.com/.default",
        **extra,
    }


# -- request shape --------------------------------------------------------------------------


def test_unsupported_grant_type(platform: RunningPlatform, secret_app: dict[str, Any]) -> None:
    assert_error(post(platform, secret_form(secret_app, grant_type="implicit")), 400, "unsupported_grant_type", 70003)


def test_missing_grant_type(platform: RunningPlatform) -> None:
    assert_error(post(platform, {"client_id": str(uuid.uuid4())}), 400, "invalid_request", 900144)


def test_missing_client_id(platform: RunningPlatform, secret_app: dict[str, Any]) -> None:
    form = secret_form(secret_app)
    del form["client_id"]
    assert_error(post(platform, form), 400, "invalid_request", 900144)


def test_missing_scope_and_resource(platform: RunningPlatform, secret_app: dict[str, Any]) -> None:
    form = secret_form(secret_app)
    del form["scope"]
    assert_error(post(platform, form), 400, "invalid_request", 900144)
    assert_error(post(platform, form, v1=True), 400, "invalid_request", 900144)


def test_scope_without_default(platform: RunningPlatform, secret_app: dict[str, Any]) -> None:
    assert_error(
        post(platform, secret_form(secret_app, scope="https://management.azure.com/user_impersonation")),
        400,
        "invalid_scope",
        1002012,
    )


def test_two_resources_in_scope(platform: RunningPlatform, secret_app: dict[str, Any]) -> None:
    scope = "https://a.example/.default https://b.example/.default"
    assert_error(post(platform, secret_form(secret_app, scope=scope)), 400, "invalid_scope", 70011)


@pytest.mark.parametrize("resource", ["not a uri", "no-scheme", "https://x/\u00e9", "x" * 600])
def test_bad_resource(platform: RunningPlatform, secret_app: dict[str, Any], resource: str) -> None:
    form = secret_form(secret_app)
    del form["scope"]
    form["resource"] = resource
    assert_error(post(platform, form, v1=True), 400, "invalid_resource", 500011)


def test_json_body_is_refused(platform: RunningPlatform, secret_app: dict[str, Any]) -> None:
    assert_error(post(platform, None, json=secret_form(secret_app)), 400, "invalid_request", 900144)


def test_get_is_refused(platform: RunningPlatform) -> None:
    with platform.http() as http:
        response = http.get(platform.token_url_v2)
    assert_error((response.status_code, response.json()), 400, "invalid_request", 900561)


def test_duplicate_field(platform: RunningPlatform, secret_app: dict[str, Any]) -> None:
    body = "&".join(f"{k}={v}" for k, v in secret_form(secret_app).items()) + "&client_id=" + str(uuid.uuid4())
    result = post(platform, None, content=body, headers={"content-type": "application/x-www-form-urlencoded"})
    assert_error(result, 400, "invalid_request", 90015)


def test_oversized_body(platform: RunningPlatform, secret_app: dict[str, Any]) -> None:
    assert_error(post(platform, secret_form(secret_app, padding="x" * 100_000)), 400, "invalid_request", 900144)


def test_unknown_tenant(platform: RunningPlatform, secret_app: dict[str, Any]) -> None:
    with platform.http() as http:
        response = http.post(f"{platform.authority}/{uuid.uuid4()}/oauth2/v2.0/token", data=secret_form(secret_app))
    assert_error((response.status_code, response.json()), 400, "invalid_tenant", 90002)


def test_secret_and_assertion_together(platform: RunningPlatform, secret_app: dict[str, Any]) -> None:
    form = secret_form(secret_app, client_assertion="a.b.c", client_assertion_type=ASSERTION_TYPE)
    assert_error(post(platform, form), 400, "invalid_request", 9002313)


def test_no_client_authentication(platform: RunningPlatform, secret_app: dict[str, Any]) -> None:
    form = secret_form(secret_app)
    del form["client_secret"]
    assert_error(post(platform, form), 401, "invalid_client", 7000218)


# -- client secrets -------------------------------------------------------------------------


def test_unknown_client(platform: RunningPlatform, secret_app: dict[str, Any]) -> None:
    form = secret_form(secret_app, client_id=str(uuid.uuid4()))
    assert_error(post(platform, form), 400, "unauthorized_client", 700016)


def test_wrong_secret(platform: RunningPlatform, secret_app: dict[str, Any]) -> None:
    status, body = post(platform, secret_form(secret_app, client_secret=secret_app["password"] + "x"))
    assert_error((status, body), 401, "invalid_client", 7000215)
    assert secret_app["password"] not in json.dumps(body)


def test_client_secret_basic(platform: RunningPlatform, secret_app: dict[str, Any]) -> None:
    form = secret_form(secret_app)
    del form["client_secret"], form["client_id"]
    good = base64.b64encode(f"{secret_app['appId']}:{secret_app['password']}".encode()).decode()
    status, body = post(platform, form, headers={"Authorization": f"Basic {good}"})
    assert status == 200 and body["token_type"] == "Bearer"
    bad = base64.b64encode(f"{secret_app['appId']}:nope".encode()).decode()
    assert_error(post(platform, form, headers={"Authorization": f"Basic {bad}"}), 401, "invalid_client", 7000215)


# -- client assertions ----------------------------------------------------------------------


def test_valid_assertion_is_accepted(platform: RunningPlatform, cert_app: dict[str, Any], cert_material: Any) -> None:
    """The positive control: without it the refusals below could pass for the wrong reason."""
    key, cert = cert_material
    status, body = post(platform, assertion_form(cert_app["appId"], assertion(platform, cert_app["appId"], key, cert)))
    assert status == 200 and body["access_token"], body


def test_forged_assertion_other_key(platform: RunningPlatform, cert_app: dict[str, Any], cert_material: Any) -> None:
    _, cert = cert_material
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = assertion(platform, cert_app["appId"], attacker, cert)  # claims the registered cert's x5t
    assert_error(post(platform, assertion_form(cert_app["appId"], token)), 401, "invalid_client", 700027)


def test_unregistered_certificate(platform: RunningPlatform, cert_app: dict[str, Any]) -> None:
    import datetime as dt

    from lanyard.crypto.pki import self_signed

    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = self_signed(attacker, "attacker", dt.datetime.now(dt.UTC))
    token = assertion(platform, cert_app["appId"], attacker, other)
    assert_error(post(platform, assertion_form(cert_app["appId"], token)), 401, "invalid_client", 700027)


def test_expired_assertion(platform: RunningPlatform, cert_app: dict[str, Any], cert_material: Any) -> None:
    key, cert = cert_material
    past = time.time() - 3600
    token = assertion(platform, cert_app["appId"], key, cert, iat=past - 600, nbf=past - 600, exp=past)
    assert_error(post(platform, assertion_form(cert_app["appId"], token)), 401, "invalid_client", 700024)


def test_assertion_not_yet_valid(platform: RunningPlatform, cert_app: dict[str, Any], cert_material: Any) -> None:
    key, cert = cert_material
    future = time.time() + 3600
    token = assertion(platform, cert_app["appId"], key, cert, iat=future, nbf=future, exp=future + 600)
    assert_error(post(platform, assertion_form(cert_app["appId"], token)), 401, "invalid_client", 700024)


def test_assertion_without_exp(platform: RunningPlatform, cert_app: dict[str, Any], cert_material: Any) -> None:
    key, cert = cert_material
    token = assertion(platform, cert_app["appId"], key, cert, exp=None)
    assert_error(post(platform, assertion_form(cert_app["appId"], token)), 401, "invalid_client", 700023)


@pytest.mark.parametrize(
    "audience",
    [
        "https://login.microsoftonline.com/common/oauth2/v2.0/token",
        "https://evil.example/token",
        "{authority}/00000000-0000-0000-0000-000000000000/oauth2/v2.0/token",
    ],
)
def test_assertion_for_another_audience(
    platform: RunningPlatform, cert_app: dict[str, Any], cert_material: Any, audience: str
) -> None:
    key, cert = cert_material
    token = assertion(platform, cert_app["appId"], key, cert, aud=audience.format(authority=platform.authority))
    assert_error(post(platform, assertion_form(cert_app["appId"], token)), 401, "invalid_client", 700212)


def test_v1_endpoint_audience_is_accepted(
    platform: RunningPlatform, cert_app: dict[str, Any], cert_material: Any
) -> None:
    key, cert = cert_material
    token = assertion(platform, cert_app["appId"], key, cert, aud=platform.token_url_v1)
    form = assertion_form(cert_app["appId"], token)
    del form["scope"]
    status, body = post(platform, {**form, "resource": "https://management.azure.com"}, v1=True)
    assert status == 200, body


def test_assertion_issuer_mismatch(
    platform: RunningPlatform, cert_app: dict[str, Any], cert_material: Any, secret_app: dict[str, Any]
) -> None:
    key, cert = cert_material
    token = assertion(platform, cert_app["appId"], key, cert, iss=secret_app["appId"], sub=secret_app["appId"])
    assert_error(post(platform, assertion_form(cert_app["appId"], token)), 401, "invalid_client", 700021)


def test_assertion_presented_by_another_client(
    platform: RunningPlatform, cert_app: dict[str, Any], cert_material: Any, secret_app: dict[str, Any]
) -> None:
    key, cert = cert_material
    token = assertion(platform, cert_app["appId"], key, cert)
    assert_error(post(platform, assertion_form(secret_app["appId"], token)), 401, "invalid_client", 700021)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_hs256_signed_with_public_key(platform: RunningPlatform, cert_app: dict[str, Any], cert_material: Any) -> None:
    """RS/HS confusion (PyJWT GHSA-ffqj-6fqr-9h24): the certificate's public key used as an HMAC secret."""
    _, cert = cert_material
    now = time.time()
    header = {"alg": "HS256", "typ": "JWT", "x5t": x5t(cert)}
    claims = {
        "aud": platform.token_url_v2,
        "iss": cert_app["appId"],
        "sub": cert_app["appId"],
        "iat": now,
        "exp": now + 600,
    }
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    public_pem = cert.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{_b64(signature)}"
    assert_error(post(platform, assertion_form(cert_app["appId"], token)), 401, "invalid_client", 700027)


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_unsigned_assertion(platform: RunningPlatform, cert_app: dict[str, Any], cert_material: Any, alg: str) -> None:
    _, cert = cert_material
    now = time.time()
    header = {"alg": alg, "x5t": x5t(cert)}
    claims = {"aud": platform.token_url_v2, "iss": cert_app["appId"], "sub": cert_app["appId"], "exp": now + 600}
    token = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}."
    status, body = post(platform, assertion_form(cert_app["appId"], token))
    assert status == 401 and body["error"] == "invalid_client", body


def test_jku_header_is_refused(platform: RunningPlatform, cert_app: dict[str, Any], cert_material: Any) -> None:
    key, cert = cert_material
    token = assertion(platform, cert_app["appId"], key, cert, headers={"jku": "http://127.0.0.1:1/keys"})
    assert_error(post(platform, assertion_form(cert_app["appId"], token)), 401, "invalid_client", 50027)


def test_tampered_claims(platform: RunningPlatform, cert_app: dict[str, Any], cert_material: Any) -> None:
    key, cert = cert_material
    header, payload, signature = assertion(platform, cert_app["appId"], key, cert).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["exp"] += 3600
    token = f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"
    assert_error(post(platform, assertion_form(cert_app["appId"], token)), 401, "invalid_client", 700027)


@pytest.mark.parametrize("garbage", ["abc", "a.b.c", "a.b.c.d.e", "", "eyJ.eyJ.", "." * 10])
def test_malformed_assertion(platform: RunningPlatform, cert_app: dict[str, Any], garbage: str) -> None:
    status, body = post(platform, assertion_form(cert_app["appId"], garbage))
    assert status in (400, 401) and body["error"] in ("invalid_client", "invalid_request"), body


def test_wrong_assertion_type(platform: RunningPlatform, cert_app: dict[str, Any], cert_material: Any) -> None:
    key, cert = cert_material
    form = assertion_form(
        cert_app["appId"],
        assertion(platform, cert_app["appId"], key, cert),
        client_assertion_type="urn:ietf:params:oauth:client-assertion-type:saml2-bearer",
    )
    assert_error(post(platform, form), 400, "invalid_request", 7000219)


def test_random_bodies_never_500(platform: RunningPlatform, secret_app: dict[str, Any]) -> None:
    """A bounded, seeded barrage of junk: every answer is a 4xx OAuth error, never a 5xx."""
    rng = random.Random(1234)
    keys = [
        "grant_type",
        "client_id",
        "client_secret",
        "scope",
        "resource",
        "client_assertion",
        "client_assertion_type",
        "claims",
        "x",
    ]
    values = [
        "",
        "client_credentials",
        secret_app["appId"],
        "%00",
        "\u0000",
        "a" * 3000,
        "https://x/.default",
        "eyJhbGciOiJub25lIn0.e30.",
        str(uuid.uuid4()),
        ASSERTION_TYPE,
        "%ff%fe",
        "&&==",
        "+",
    ]
    with platform.http() as http:
        for _ in range(150):
            form = "&".join(f"{rng.choice(keys)}={rng.choice(values)}" for _ in range(rng.randint(0, 7)))
            raw = form.encode("utf-8") if rng.random() < 0.8 else bytes(rng.randrange(256) for _ in range(64))
            response = http.post(
                platform.token_url_v2, content=raw, headers={"content-type": "application/x-www-form-urlencoded"}
            )
            assert 400 <= response.status_code < 500, (response.status_code, raw)
            assert response.json()["error"]
