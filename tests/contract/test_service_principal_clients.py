"""The real azure-identity and msal clients, unmodified, get tokens from the directory.

Trust comes from the platform's CA bundle through REQUESTS_CA_BUNDLE, as an app would configure it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msal
import pytest
from azure.identity import CertificateCredential, ClientSecretCredential
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.conftest import RunningPlatform, verify_with_discovery

ARM = "https://management.azure.com"


@pytest.fixture(autouse=True)
def trust_platform(platform: RunningPlatform, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", platform.endpoints["ca_bundle"])
    monkeypatch.setenv("SSL_CERT_FILE", platform.endpoints["ca_bundle"])
    monkeypatch.setenv("NO_PROXY", "*")


def assert_v1_profile(claims: dict[str, Any], platform: RunningPlatform, app_id: str, appidacr: str) -> None:
    assert claims["tid"] == platform.tenant_id
    assert claims["appid"] == app_id
    assert claims["appidacr"] == appidacr
    assert claims["idtyp"] == "app"
    assert claims["ver"] == "1.0"
    assert claims["sub"] == claims["oid"]
    assert claims["iat"] <= claims["nbf"] < claims["exp"]
    assert claims["exp"] - claims["iat"] == 3600


def principal_object_id(platform: RunningPlatform, app_id: str) -> str:
    from tests.conftest import cli_json

    return str(cli_json(platform.home, "ad", "sp", "show", "--id", app_id)["id"])


def test_client_secret_credential(platform: RunningPlatform, secret_app: dict[str, Any]) -> None:
    credential = ClientSecretCredential(
        platform.tenant_id,
        secret_app["appId"],
        secret_app["password"],
        authority=platform.authority,
        disable_instance_discovery=True,
    )
    token = credential.get_token(f"{ARM}/.default")
    claims = verify_with_discovery(platform, token.token, ARM)
    assert_v1_profile(claims, platform, secret_app["appId"], "1")
    assert claims["oid"] == principal_object_id(platform, secret_app["appId"])
    assert "xms_mirid" not in claims
    assert token.expires_on > claims["iat"]


def test_certificate_credential(platform: RunningPlatform, cert_app: dict[str, Any]) -> None:
    credential = CertificateCredential(
        platform.tenant_id,
        cert_app["appId"],
        certificate_path=cert_app["fileWithCertAndPrivateKey"],
        authority=platform.authority,
        disable_instance_discovery=True,
    )
    token = credential.get_token("api://my-service/.default")
    claims = verify_with_discovery(platform, token.token, "api://my-service")
    assert_v1_profile(claims, platform, cert_app["appId"], "2")


def test_certificate_credential_with_chain(platform: RunningPlatform, cert_app: dict[str, Any]) -> None:
    credential = CertificateCredential(
        platform.tenant_id,
        cert_app["appId"],
        certificate_path=cert_app["fileWithCertAndPrivateKey"],
        authority=platform.authority,
        disable_instance_discovery=True,
        send_certificate_chain=True,
    )
    token = credential.get_token("https://vault.azure.net/.default")
    assert verify_with_discovery(platform, token.token, "https://vault.azure.net")["appid"] == cert_app["appId"]


def _msal_app(platform: RunningPlatform, client_id: str, credential: Any) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(
        client_id,
        client_credential=credential,
        authority=f"{platform.authority}/{platform.tenant_id}",
        instance_discovery=False,
        verify=platform.endpoints["ca_bundle"],
    )


def test_msal_secret_v2_and_cache(platform: RunningPlatform, secret_app: dict[str, Any]) -> None:
    app = _msal_app(platform, secret_app["appId"], secret_app["password"])
    first = app.acquire_token_for_client(scopes=["https://management.core.windows.net//.default"])
    assert "access_token" in first, first.get("error_description")
    claims = verify_with_discovery(platform, first["access_token"], "https://management.core.windows.net/")
    assert claims["aud"] == "https://management.core.windows.net/"
    second = app.acquire_token_for_client(scopes=["https://management.core.windows.net//.default"])
    assert second["access_token"] == first["access_token"]
    assert second.get("token_source") == "cache"


def test_msal_certificate_ps256_x5t_s256(platform: RunningPlatform, cert_app: dict[str, Any]) -> None:
    """msal with a public certificate and no thumbprint signs PS256 with x5t#S256 and a wrapped x5c."""
    pem = Path(cert_app["fileWithCertAndPrivateKey"]).read_bytes()
    cert = x509.load_pem_x509_certificate(pem)
    key = serialization.load_pem_private_key(pem, password=None)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    credential = {"private_key": key_pem, "public_certificate": cert.public_bytes(serialization.Encoding.PEM).decode()}
    result = _msal_app(platform, cert_app["appId"], credential).acquire_token_for_client(
        scopes=["https://graph.example/.default"]
    )
    assert "access_token" in result, result.get("error_description")
    assert verify_with_discovery(platform, result["access_token"], "https://graph.example")["appidacr"] == "2"


def test_msal_certificate_thumbprint_rs256(platform: RunningPlatform, cert_app: dict[str, Any]) -> None:
    pem = Path(cert_app["fileWithCertAndPrivateKey"]).read_bytes()
    cert = x509.load_pem_x509_certificate(pem)
    from cryptography.hazmat.primitives import hashes

    thumbprint = cert.fingerprint(hashes.SHA1()).hex()
    credential = {"private_key": pem.decode(), "thumbprint": thumbprint}
    result = _msal_app(platform, cert_app["appId"], credential).acquire_token_for_client(
        scopes=["https://storage.example/.default"]
    )
    assert "access_token" in result, result.get("error_description")


def test_msal_against_v1_document(platform: RunningPlatform, secret_app: dict[str, Any]) -> None:
    """msal's oidc_authority mode reads the v1 document, so it posts to the v1 token endpoint."""
    app = msal.ConfidentialClientApplication(
        secret_app["appId"],
        client_credential=secret_app["password"],
        oidc_authority=f"{platform.authority}/{platform.tenant_id}",
        verify=platform.endpoints["ca_bundle"],
    )
    result = app.acquire_token_for_client(scopes=["https://v1.example/.default"])
    assert "access_token" in result, result.get("error_description")
    assert verify_with_discovery(platform, result["access_token"], "https://v1.example")["ver"] == "1.0"


def test_v1_endpoint_resource_shape(platform: RunningPlatform, secret_app: dict[str, Any]) -> None:
    """The v1 endpoint takes `resource` and answers in Entra's v1 shape (numbers as strings)."""
    with platform.http() as http:
        response = http.post(
            platform.token_url_v1,
            data={
                "grant_type": "client_credentials",
                "client_id": secret_app["appId"],
                "client_secret": secret_app["password"],
                "resource": "https://management.azure.com/",
            },
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["resource"] == "https://management.azure.com/"
    assert body["token_type"] == "Bearer"
    for name in ("expires_in", "expires_on", "not_before"):
        assert isinstance(body[name], str) and body[name].isdigit()
    claims = verify_with_discovery(platform, body["access_token"], "https://management.azure.com/")
    assert claims["exp"] == int(body["expires_on"])


def test_v1_discovery_and_common_keys(platform: RunningPlatform) -> None:
    with platform.http() as http:
        v1 = http.get(f"{platform.authority}/{platform.tenant_id}/.well-known/openid-configuration").json()
        v2 = http.get(f"{platform.authority}/{platform.tenant_id}/v2.0/.well-known/openid-configuration").json()
        common = http.get(f"{platform.authority}/common/discovery/keys").json()
        tenant_keys = http.get(v1["jwks_uri"]).json()
    assert v1["issuer"] == f"{platform.authority}/{platform.tenant_id}/"
    assert v1["token_endpoint"] == platform.token_url_v1
    assert v2["issuer"] == f"{platform.authority}/{platform.tenant_id}/v2.0"
    assert v2["token_endpoint"] == platform.token_url_v2
    assert common == tenant_keys
    for key in common["keys"]:
        assert key["kty"] == "RSA" and key["kid"] == key["x5t"] and key["x5c"]
        cert = x509.load_der_x509_certificate(__import__("base64").b64decode(key["x5c"][0]))
        assert cert.public_key().key_size >= 2048
