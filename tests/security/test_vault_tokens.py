"""Token attacks and bad input against the vault data plane: each refused with the Key Vault error
body and the right status; the challenge comes before the body is read."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sqlite3
import time
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import RunningPlatform, cli_json


@pytest.fixture(scope="module")
def vault(platform: RunningPlatform) -> dict[str, Any]:
    cli_json(platform.home, "group", "create", "-n", "kvsec-rg", "-l", "westus")
    created = cli_json(platform.home, "keyvault", "create", "-n", "kvsec", "-g", "kvsec-rg")
    cli_json(
        platform.home,
        "keyvault",
        "secret",
        "set",
        "--vault-name",
        "kvsec",
        "-n",
        "target",
        "--value",
        "top-secret-value-123",
    )
    return {"url": created["properties"]["vaultUri"].rstrip("/"), "audience": platform.endpoints["vault_audience"]}


def call(
    platform: RunningPlatform,
    method: str,
    url: str,
    token: str | None = None,
    body: Any = None,
    raw: bytes | None = None,
    api: str | None = "7.5",
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    params = {"api-version": api} if api else {}
    with platform.http() as http:
        if raw is not None:
            return http.request(
                method, url, params=params, headers={**headers, "content-type": "application/json"}, content=raw
            )
        return http.request(method, url, params=params, headers=headers, json=body)


def admin_token(admin_credential: Any, audience: str) -> str:
    return str(admin_credential.get_token(f"{audience}/.default").token)


def assert_kv_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code, response.text
    assert "top-secret-value-123" not in response.text


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}.{b64(signature)}"


def test_challenge_before_the_body(platform: RunningPlatform, vault: dict[str, Any]) -> None:
    response = call(platform, "PUT", f"{vault['url']}/secrets/sneaky", body={"value": "x"})
    assert_kv_error(response, 401, "Unauthorized")
    challenge = response.headers["www-authenticate"]
    assert challenge == (
        f'Bearer authorization="{platform.authority}/{platform.tenant_id}", resource="{vault["audience"]}"'
    )
    assert "," not in challenge.split("authorization=")[1].split('"')[1]


def test_the_unauthenticated_put_wrote_nothing(
    platform: RunningPlatform, vault: dict[str, Any], admin_credential: Any
) -> None:
    call(platform, "PUT", f"{vault['url']}/secrets/never", body={"value": "x"})
    token = admin_token(admin_credential, vault["audience"])
    assert_kv_error(call(platform, "GET", f"{vault['url']}/secrets/never/", token), 404, "SecretNotFound")


def test_token_for_another_audience(platform: RunningPlatform, vault: dict[str, Any], admin_credential: Any) -> None:
    for audience in ("https://management.azure.com", "https://vault.azure.net"):
        response = call(platform, "GET", f"{vault['url']}/secrets/target/", admin_token(admin_credential, audience))
        assert_kv_error(response, 401, "Unauthorized")
        assert "audience" in response.json()["error"]["message"]


def _claims(platform: RunningPlatform, vault: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "aud": vault["audience"],
        "iss": f"{platform.authority}/{platform.tenant_id}/",
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "tid": platform.tenant_id,
        "oid": platform.endpoints["admin"]["object_id"],
        "appid": platform.endpoints["admin"]["client_id"],
        "ver": "1.0",
    }
    return {**base, **overrides}


def _real_kid(platform: RunningPlatform) -> tuple[str, dict[str, Any]]:
    with platform.http() as http:
        jwks = http.get(f"{platform.authority}/common/discovery/keys").json()
    key = jwks["keys"][0]
    return key["kid"], key


@pytest.mark.parametrize(
    "attack",
    ["alg-none", "hs256-public-key", "foreign-key-our-kid", "foreign-kid", "other-tenant", "expired", "jku", "garbage"],
)
def test_token_attacks(platform: RunningPlatform, vault: dict[str, Any], attack: str) -> None:
    kid, jwk = _real_kid(platform)
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    claims = _claims(platform, vault)
    if attack == "alg-none":
        token = forged({"alg": "none", "typ": "JWT", "kid": kid}, claims)
    elif attack == "hs256-public-key":
        public_pem = jwt.PyJWK(jwk).key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        header = {"alg": "HS256", "typ": "JWT", "kid": kid}
        signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
        token = signing_input + "." + b64(hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest())
    elif attack == "foreign-key-our-kid":
        token = jwt.encode(claims, attacker, algorithm="RS256", headers={"kid": kid})
    elif attack == "foreign-kid":
        token = jwt.encode(claims, attacker, algorithm="RS256", headers={"kid": "attacker-key"})
    elif attack == "other-tenant":
        token = jwt.encode(
            _claims(
                platform,
                vault,
                tid="00000000-0000-0000-0000-000000000001",
                iss="https://login.microsoftonline.com/00000000-0000-0000-0000-000000000001/",
            ),
            attacker,
            algorithm="RS256",
            headers={"kid": kid},
        )
    elif attack == "expired":
        token = jwt.encode(
            _claims(platform, vault, exp=int(time.time()) - 3600), attacker, algorithm="RS256", headers={"kid": kid}
        )
    elif attack == "jku":
        token = jwt.encode(claims, attacker, algorithm="RS256", headers={"kid": kid, "jku": "http://127.0.0.1:9/k"})
    else:
        token = "not.a.token"
    response = call(platform, "GET", f"{vault['url']}/secrets/target/", token)
    assert_kv_error(response, 401, "Unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer ")


@pytest.mark.parametrize(
    ("method", "path", "body", "raw", "api", "status", "code"),
    [
        ("GET", "/secrets/target/", None, None, None, 400, "BadParameter"),
        ("GET", "/secrets/target/", None, None, "banana", 400, "BadParameter"),
        ("PUT", "/secrets/bad_name!", {"value": "x"}, None, "7.5", 400, "BadParameter"),
        ("PUT", "/secrets/" + "a" * 128, {"value": "x"}, None, "7.5", 400, "BadParameter"),
        ("PUT", "/secrets/ok", None, b"{not json", "7.5", 400, "BadParameter"),
        ("PUT", "/secrets/ok", {"value": 5}, None, "7.5", 400, "BadParameter"),
        ("PUT", "/secrets/ok", {"value": "x" * 30_000}, None, "7.5", 400, "BadParameter"),
        ("PUT", "/secrets/ok", {"value": "x", "tags": {"a": 1}}, None, "7.5", 400, "BadParameter"),
        ("PUT", "/secrets/ok", {"value": "x", "attributes": {"exp": "soon"}}, None, "7.5", 400, "BadParameter"),
        ("GET", "/secrets/missing/", None, None, "7.5", 404, "SecretNotFound"),
        ("GET", "/secrets/target/00000000000000000000000000000000", None, None, "7.5", 404, "SecretNotFound"),
        ("GET", "/keys", None, None, "7.5", 404, "NotFound"),
        ("DELETE", "/deletedsecrets/target", None, None, "7.5", 404, "SecretNotFound"),
        ("POST", "/secrets/restore", {"value": "AAAA"}, None, "7.5", 400, "BadParameter"),
    ],
)
def test_bad_input(
    platform: RunningPlatform,
    vault: dict[str, Any],
    admin_credential: Any,
    method: str,
    path: str,
    body: Any,
    raw: bytes | None,
    api: str | None,
    status: int,
    code: str,
) -> None:
    token = admin_token(admin_credential, vault["audience"])
    assert_kv_error(call(platform, method, vault["url"] + path, token, body, raw, api), status, code)


def test_unknown_vault(platform: RunningPlatform, vault: dict[str, Any], admin_credential: Any) -> None:
    token = admin_token(admin_credential, vault["audience"])
    url = f"https://nosuchvault.{platform.endpoints['vault_suffix']}/secrets/x/"
    assert_kv_error(call(platform, "GET", url, token), 404, "VaultNotFound")


def test_values_are_sealed_at_rest(platform: RunningPlatform, vault: dict[str, Any]) -> None:
    if platform.database is not None:
        # PostgreSQL: every row of every table, binary columns included, as the database holds them.
        import sqlalchemy as sa

        engine = sa.create_engine(platform.database)
        try:
            metadata = sa.MetaData()
            metadata.reflect(engine)
            assert "vault_secret_versions" in metadata.tables
            with engine.connect() as conn:
                dump = "\n".join(
                    repr(tuple(row)) for table in metadata.tables.values() for row in conn.execute(sa.select(table))
                )
        finally:
            engine.dispose()
        assert "top-secret-value-123" not in dump and b"top-secret-value-123".hex() not in dump
        return
    assert (platform.home / "lanyard.db").exists()
    con = sqlite3.connect(platform.home / "lanyard.db")
    try:
        dump = "\n".join(con.iterdump())
    finally:
        con.close()
    assert "top-secret-value-123" not in dump
    for path in platform.home.glob("lanyard.db*"):
        assert b"top-secret-value-123" not in path.read_bytes()


def test_no_secret_or_token_in_the_server_log(
    platform: RunningPlatform, vault: dict[str, Any], admin_credential: Any
) -> None:
    token = admin_token(admin_credential, vault["audience"])
    call(platform, "GET", f"{vault['url']}/secrets/target/", token)
    log = (platform.home / "server.log").read_text()
    for needle in ("top-secret-value-123", token, platform.endpoints["admin"]["client_secret"]):
        assert needle not in log
