"""F18: no secret in any output. A platform at DEBUG is driven through client-secret and certificate
tokens, App Service tokens through its agent, vault writes and reads, and failures (a wrong secret,
a bad assertion, a wrong identity header, a forged bearer token); then every byte it wrote (its log
files, access logs, the agent's, its stdout and stderr) and every error body it returned is
searched for every token, client secret, private key, IDENTITY_HEADER and vault value: 0 found."""

from __future__ import annotations

import base64
import json
import secrets
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import (
    ARM_RESOURCE,
    cli_json,
    probe_command,
    probe_results,
    secret_token,
    start_platform,
    vault_names_resolve,
)

pytestmark = pytest.mark.skipif(not vault_names_resolve(), reason="*.vault.lanyard.localhost does not resolve")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _private_key_lines(pem_path: str) -> list[str]:
    """The base64 lines of the PEM's private key: any one of them in a log is a leak."""
    text = Path(pem_path).read_text()
    body = text.split("PRIVATE KEY-----", 1)[1].split("-----END", 1)[0]
    return [line for line in body.split() if len(line) >= 32]


def test_no_token_secret_or_value_in_any_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    running = start_platform(tmp_path / "home", env={"LANYARD_LOG_LEVEL": "DEBUG"})
    needles: dict[str, str] = {}  # what must not appear -> what it is (for the failure message)
    error_bodies: list[str] = []
    try:
        home = running.home
        admin = running.endpoints["admin"]
        needles[admin["client_secret"]] = "the admin client secret"
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", running.endpoints["ca_bundle"])  # this platform only

        # Client-secret and certificate applications, and their tokens.
        secret_app = cli_json(home, "ad", "sp", "create-for-rbac", "--name", "f18-secret")
        needles[secret_app["password"]] = "a client secret"
        token = secret_token(running, secret_app["appId"], secret_app["password"], ARM_RESOURCE)
        needles[token] = "a client-secret token"
        cert_app = cli_json(home, "ad", "sp", "create-for-rbac", "--name", "f18-cert", "--create-cert")
        for line in _private_key_lines(cert_app["fileWithCertAndPrivateKey"]):
            needles[line] = "a line of a client certificate's private key"
        from azure.identity import CertificateCredential, ClientSecretCredential

        cert_token = (
            CertificateCredential(
                running.tenant_id,
                cert_app["appId"],
                certificate_path=cert_app["fileWithCertAndPrivateKey"],
                authority=running.authority,
                disable_instance_discovery=True,
            )
            .get_token(f"{ARM_RESOURCE}/.default")
            .token
        )
        needles[cert_token] = "a certificate-credential token"

        # Failures: a wrong secret, a bad assertion, a forged bearer token.
        wrong_secret = "wrong-" + secrets.token_urlsafe(24)
        needles[wrong_secret] = "a wrong client secret"
        rs256 = _b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
        bad_assertion = f"{rs256}.{_b64(secrets.token_bytes(40))}.{_b64(b'x' * 64)}"
        needles[bad_assertion] = "a bad client assertion"
        none, claims = _b64(b'{"alg":"none"}'), _b64(json.dumps({"aud": ARM_RESOURCE}).encode())
        forged = f"{none}.{claims}.{_b64(secrets.token_bytes(20))}"
        needles[forged] = "a forged bearer token"
        with running.http() as http:
            for form in (
                {"client_id": secret_app["appId"], "client_secret": wrong_secret},
                {
                    "client_id": cert_app["appId"],
                    "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    "client_assertion": bad_assertion,
                },
            ):
                answer = http.post(
                    running.token_url_v2,
                    data={"grant_type": "client_credentials", "scope": f"{ARM_RESOURCE}/.default", **form},
                )
                assert answer.status_code in (400, 401), answer.text
                error_bodies.append(answer.text)
            answer = http.get(
                f"{running.authority}/subscriptions?api-version=2022-12-01&code={wrong_secret}",
                headers={"Authorization": f"Bearer {forged}"},
            )
            assert answer.status_code == 401
            error_bodies.append(answer.text)
            answer = http.get(f"{running.authority}/metrics", headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == 403  # no role on the subscription
            error_bodies.append(answer.text)

        # A vault: a value written and read back, and a vault call with a forged token.
        cli_json(home, "group", "create", "-n", "f18-rg", "-l", "westus")
        vault = cli_json(home, "keyvault", "create", "-n", "f18kv", "-g", "f18-rg")
        vault_url = vault["properties"]["vaultUri"]
        vault_value = "vault-value-" + secrets.token_urlsafe(24)
        needles[vault_value] = "a vault secret's value"
        cli_json(home, "keyvault", "secret", "set", "--vault-name", "f18kv", "-n", "f18", "--value", vault_value)
        from azure.keyvault.secrets import SecretClient

        admin_credential = ClientSecretCredential(
            running.tenant_id,
            admin["client_id"],
            admin["client_secret"],
            authority=running.authority,
            disable_instance_discovery=True,
        )
        vault_token = admin_credential.get_token(f"{running.endpoints['vault_audience']}/.default").token
        needles[vault_token] = "an admin vault token"
        with SecretClient(vault_url, admin_credential, verify_challenge_resource=False) as client:
            assert client.get_secret("f18").value == vault_value
        verify = ssl.create_default_context(cafile=running.ca_cert)
        forged_vault = httpx.get(
            f"{vault_url.rstrip('/')}/secrets/f18?api-version=7.5",
            headers={"Authorization": f"Bearer {forged}"},
            verify=verify,
        )
        assert forged_vault.status_code == 401
        error_bodies.append(forged_vault.text)

        # An App Service workload through the agent: its header, its tokens, a wrong header.
        cli_json(home, "webapp", "create", "-g", "f18-rg", "-n", "f18-app", "--assign-identity", "[system]")
        wrong_header = "hdr-" + secrets.token_urlsafe(30)
        needles[wrong_header] = "a wrong IDENTITY_HEADER"
        good = f"?api-version=2019-08-01&resource={ARM_RESOURCE}"
        actions = [
            {"kind": "env", "names": ["IDENTITY_HEADER"]},
            {"kind": "raw", "path": good, "headers_from_env": {"X-IDENTITY-HEADER": "IDENTITY_HEADER"}},
            {"kind": "raw", "path": good, "headers": {"X-IDENTITY-HEADER": wrong_header}},
            {
                "kind": "raw",
                "path": good + "&client_id=nope",
                "headers_from_env": {"X-IDENTITY-HEADER": "IDENTITY_HEADER"},
            },
            {"kind": "azid-sync", "scope": "https://vault.azure.net/.default"},
        ]
        result = subprocess.run(
            probe_command(home, ["webapp", "run", "-g", "f18-rg", "-n", "f18-app"], actions),
            capture_output=True,
            text=True,
            timeout=180,
        )
        env, granted, refused, unknown, sdk_token = (r["value"] for r in probe_results(result.stdout, result.stderr))
        needles[env["IDENTITY_HEADER"]] = "a workload's IDENTITY_HEADER"
        assert granted["status"] == 200 and refused["status"] == 401 and unknown["status"] == 400
        needles[granted["body"]["access_token"]] = "an App Service token"
        needles[sdk_token] = "an App Service token (azure-identity)"
        error_bodies += [json.dumps(refused["body"]), json.dumps(unknown["body"])]
    finally:
        running.stop()  # every writer flushes before the process exits

    sinks: dict[str, bytes] = {}
    for path in sorted(running.home.rglob("*")):
        if path.is_file() and ("logs" in path.parts or path.name == "server.log"):
            sinks[str(path.relative_to(running.home))] = path.read_bytes()
    for index, body in enumerate(error_bodies):
        sinks[f"error body {index}"] = body.encode()
    assert "logs/lanyard.log" in sinks and "logs/access.log" in sinks and "agent/logs/access.log" in sinks
    assert b"DEBUG lanyard." in sinks["logs/lanyard.log"]  # the level really was DEBUG
    assert b"uti#" in sinks["logs/lanyard.log"]  # token issuance logged, by the hash of its id
    assert b"/msi/token" in sinks["agent/logs/access.log"] and b"/oauth2/v2.0/token" in sinks["logs/access.log"]
    assert len(needles) >= 12
    found = [
        f"{what} in {sink}"
        for needle, what in needles.items()
        for sink, data in sinks.items()
        if needle.encode() in data
    ]
    assert found == [], found
