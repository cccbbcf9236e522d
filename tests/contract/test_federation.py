"""Workload identity federation end to end: an outside OIDC issuer the test starts on loopback (HTTPS,
its own CA) signs CI-shaped tokens; the platform, allowed to fetch from `localhost` only, exchanges
them for a managed identity's token when a federated identity credential matches (exact, wildcard and
claims-expression rules), and refuses everything else in Entra's error format without a 500 or a
hang. The credentials are made with our CLI, raw ARM, the real azure-mgmt-msi and Graph."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.conftest import (
    SESSION_START_ENV,
    RunningPlatform,
    cli_json,
    platform_backend,
    probe_command,
    probe_results,
    run_cli,
    secret_token,
    secrets_in_output,
    start_platform,
    verify_with_discovery,
)
from tests.support.oidc_issuer import Issuer, make_ca

ARM = "https://management.azure.com"
CI_SUBJECT = "repo:org/app:ref:refs/heads/main"
MSI = "Microsoft.ManagedIdentity/userAssignedIdentities"
FLEXIBLE = "2023-07-31-preview"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@pytest.fixture(scope="module")
def issuers() -> Iterator[dict[str, Issuer]]:
    # World-readable: the platform may run workloads under other uids, but only the platform reads these.
    folder = Path(tempfile.mkdtemp(prefix="lanyard-fed-"))
    folder.chmod(0o755)
    ca, _ = make_ca(folder)
    started = {
        "ci": Issuer(ca, folder).start(),
        "other": Issuer(ca, folder).start(),  # a real issuer no credential names
        "oversized": Issuer(ca, folder, mode="oversized").start(),
        "unreachable": Issuer(ca, folder, mode="unreachable").start(),
        # The same kind of server, reached by an address the operator did not allow (127.0.0.1, not localhost).
        "blocked": Issuer(ca, folder, host="127.0.0.1").start(),
    }
    probe = __import__("socket").socket()
    probe.bind(("127.0.0.1", 0))
    started["unreachable"].dead_port = probe.getsockname()[1]
    probe.close()  # nothing listens there any more
    try:
        yield started
    finally:
        for issuer in started.values():
            issuer.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def fed(
    request: pytest.FixtureRequest, issuers: dict[str, Issuer], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningPlatform]:
    """A platform of its own: allowed to fetch from localhost (any port) over loopback, trusting the
    test issuers' CA, with projected tokens short-lived enough to see one rewritten. On the database
    the shared platform uses (LANYARD_TEST_BACKEND=postgres: a fresh database of the test cluster)."""
    env = {
        "LANYARD_FEDERATION_ALLOWED_ISSUERS": "localhost",
        "LANYARD_FEDERATION_ALLOW_PRIVATE": "on",
        "LANYARD_FEDERATION_CA_BUNDLE": str(issuers["ci"].folder / "issuer-ca.pem"),
        "LANYARD_FEDERATION_FETCH_TIMEOUT": "3",
        "LANYARD_WORKLOAD_TOKEN_LIFETIME": "30",
        "LANYARD_LOG_LEVEL": "DEBUG",
    }
    database = None
    if platform_backend() == "postgres":
        database = request.getfixturevalue("postgres").create_database("federation")
    extra = ("--database", database) if database else ()
    running = start_platform(tmp_path_factory.mktemp("fedhome"), *extra, env=env)
    try:
        cli_json(running.home, "group", "create", "-n", "fed-rg", "-l", "westus")
        yield running
    finally:
        running.stop()
    # At DEBUG, every assertion exchanged and every projected token written: none may reach a log.
    leaks = secrets_in_output(running)
    assert not leaks, f"secrets in the federation platform's output: {leaks}"


def admin_token(platform: RunningPlatform, resource: str = ARM) -> str:
    admin = platform.endpoints["admin"]
    return secret_token(platform, admin["client_id"], admin["client_secret"], resource)


def arm_call(platform: RunningPlatform, method: str, path: str, api: str, body: Any = None) -> httpx.Response:
    url = f"{platform.endpoints['arm'].rstrip('/')}{path}?api-version={api}"
    with platform.http() as http:
        return http.request(method, url, json=body, headers={"Authorization": f"Bearer {admin_token(platform)}"})


def uai(platform: RunningPlatform, name: str) -> dict[str, Any]:
    return dict(cli_json(platform.home, "identity", "create", "-g", "fed-rg", "-n", name))


def uai_id(platform: RunningPlatform, name: str) -> str:
    return f"/subscriptions/{platform.endpoints['subscription_id']}/resourceGroups/fed-rg/providers/{MSI}/{name}"


def exchange(platform: RunningPlatform, client_id: str, assertion: str) -> httpx.Response:
    form = {
        "grant_type": "client_credentials",
        "client_id": client_id,
        "client_assertion_type": JWT_BEARER,
        "client_assertion": assertion,
        "scope": f"{ARM}/.default",
    }
    with platform.http() as http:
        return http.post(platform.token_url_v2, data=form)


def refused(response: httpx.Response, code: int) -> dict[str, Any]:
    assert response.status_code in (400, 401), response.text
    body = response.json()
    assert body["error_codes"] == [code], body
    assert body["error_description"].startswith(f"AADSTS{code}:"), body
    return dict(body)


def oid_of(platform: RunningPlatform, response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return str(verify_with_discovery(platform, response.json()["access_token"], ARM)["oid"])


def fic_create(platform: RunningPlatform, identity: str, name: str, issuer: str, subject: str) -> dict[str, Any]:
    return dict(
        cli_json(
            platform.home,
            "identity",
            "federated-credential",
            "create",
            "-g",
            "fed-rg",
            "--identity-name",
            identity,
            "--name",
            name,
            "--issuer",
            issuer,
            "--subject",
            subject,
            "--audiences",
            "api://AzureADTokenExchange",
        )
    )


@pytest.fixture(scope="module")
def ci_identity(fed: RunningPlatform, issuers: dict[str, Issuer]) -> dict[str, Any]:
    identity = uai(fed, "fed-ci")
    fic_create(fed, "fed-ci", "github-main", issuers["ci"].url, CI_SUBJECT)
    return identity


def test_a_ci_token_is_exchanged_for_the_identitys_token(
    fed: RunningPlatform, issuers: dict[str, Issuer], ci_identity: dict[str, Any]
) -> None:
    ci = issuers["ci"]
    response = exchange(fed, ci_identity["clientId"], ci.token(CI_SUBJECT))
    assert oid_of(fed, response) == ci_identity["principalId"]
    assert "/.well-known/openid-configuration" in ci.requests and "/keys" in ci.requests


def test_the_real_client_assertion_credential_exchanges_it(
    fed: RunningPlatform, issuers: dict[str, Issuer], ci_identity: dict[str, Any]
) -> None:
    from azure.identity import ClientAssertionCredential

    credential = ClientAssertionCredential(
        fed.tenant_id,
        ci_identity["clientId"],
        lambda: issuers["ci"].token(CI_SUBJECT),
        authority=fed.authority,
        connection_verify=fed.endpoints["ca_bundle"],
    )
    token = credential.get_token(f"{ARM}/.default").token
    assert verify_with_discovery(fed, token, ARM)["oid"] == ci_identity["principalId"]


def test_the_cli_shows_lists_and_deletes_as_az_does(fed: RunningPlatform, issuers: dict[str, Issuer]) -> None:
    identity = uai(fed, "fed-cli")
    created = fic_create(fed, "fed-cli", "one", issuers["ci"].url, "repo:org/cli:ref:refs/heads/main")
    assert created["name"] == "one" and created["resourceGroup"] == "fed-rg"
    assert created["type"] == f"{MSI}/federatedIdentityCredentials"
    assert created["issuer"] == issuers["ci"].url and created["audiences"] == ["api://AzureADTokenExchange"]
    base = ["identity", "federated-credential"]
    shown = cli_json(fed.home, *base, "show", "-g", "fed-rg", "--identity-name", "fed-cli", "-n", "one")
    assert shown["subject"] == "repo:org/cli:ref:refs/heads/main"
    listed = cli_json(fed.home, *base, "list", "-g", "fed-rg", "--identity-name", "fed-cli")
    assert [c["name"] for c in listed] == ["one"]
    token = issuers["ci"].token("repo:org/cli:ref:refs/heads/main")
    assert oid_of(fed, exchange(fed, identity["clientId"], token)) == identity["principalId"]
    run_cli(fed.home, *base, "delete", "-g", "fed-rg", "--identity-name", "fed-cli", "-n", "one", "--yes")
    assert cli_json(fed.home, *base, "list", "-g", "fed-rg", "--identity-name", "fed-cli") == []
    # Deleted means refused at once, on this node and (through the change feed) every other.
    refused(exchange(fed, identity["clientId"], token), 700211)


def test_wildcard_subjects(fed: RunningPlatform, issuers: dict[str, Issuer]) -> None:
    identity = uai(fed, "fed-wild")
    fic_create(fed, "fed-wild", "any-repo-main", issuers["ci"].url, "repo:org/*:ref:refs/heads/main")
    ci = issuers["ci"]
    for subject in ("repo:org/app:ref:refs/heads/main", "repo:org/other:ref:refs/heads/main"):
        assert oid_of(fed, exchange(fed, identity["clientId"], ci.token(subject))) == identity["principalId"]
    for subject in (
        "repo:org/app:ref:refs/heads/dev",
        "repo:evil/app:ref:refs/heads/main",
        "repo:org/a:b:ref:refs/heads/main",
    ):
        body = refused(exchange(fed, identity["clientId"], ci.token(subject)), 700213)
        assert subject in body["error_description"]


def test_claims_matching_expressions(fed: RunningPlatform, issuers: dict[str, Issuer]) -> None:
    identity = uai(fed, "fed-claims")
    expression = "claims['sub'] matches 'repo:org/**' and claims['environment'] eq 'production'"
    path = f"{uai_id(fed, 'fed-claims')}/federatedIdentityCredentials/prod-deploys"
    body = {
        "properties": {
            "issuer": issuers["ci"].url,
            "audiences": ["api://AzureADTokenExchange"],
            "claimsMatchingExpression": {"value": expression, "languageVersion": 1},
        }
    }
    created = arm_call(fed, "PUT", path, FLEXIBLE, body)
    assert created.status_code == 201, created.text
    assert created.json()["properties"]["claimsMatchingExpression"] == {"value": expression, "languageVersion": 1}
    ci = issuers["ci"]
    good = ci.token("repo:org/app:environment:production", environment="production")
    assert oid_of(fed, exchange(fed, identity["clientId"], good)) == identity["principalId"]
    staging = ci.token("repo:org/app:environment:staging", environment="staging")
    refused(exchange(fed, identity["clientId"], staging), 700213)
    # An expression is preview-only: the GA api-version refuses to take one.
    ga = arm_call(fed, "PUT", f"{path}-ga", "2023-01-31", body)
    assert ga.status_code == 400 and ga.json()["error"]["code"] == "InvalidRequestContent"


@pytest.mark.parametrize(
    ("properties", "says"),
    [
        ({"issuer": "https://localhost:1", "subject": "*"}, "leading wildcard"),
        ({"issuer": "https://localhost:1", "subject": "repo:org/***"}, "***"),
        ({"issuer": "http://localhost:1", "subject": "repo:x"}, "https"),
        ({"issuer": "https://localhost:1"}, "subject is required"),
        ({"issuer": "https://localhost:1", "subject": "repo:x", "audiences": []}, "audiences"),
        (
            {
                "issuer": "https://localhost:1",
                "claimsMatchingExpression": {"value": "claims['sub'] eq", "languageVersion": 1},
            },
            "ends too early",
        ),
        (
            {
                "issuer": "https://localhost:1",
                "claimsMatchingExpression": {"value": "claims['sub'] eq 'x'", "languageVersion": 2},
            },
            "languageVersion",
        ),
        (
            {
                "issuer": "https://localhost:1",
                "subject": "repo:x",
                "claimsMatchingExpression": {"value": "claims['sub'] eq 'x'", "languageVersion": 1},
            },
            "not both",
        ),
    ],
)
def test_invalid_credentials_are_refused_when_created(
    fed: RunningPlatform, ci_identity: dict[str, Any], properties: dict[str, Any], says: str
) -> None:
    path = f"{uai_id(fed, 'fed-ci')}/federatedIdentityCredentials/bad-one"
    response = arm_call(fed, "PUT", path, FLEXIBLE, {"properties": properties})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "BadRequest" and says in error["message"]
    assert arm_call(fed, "GET", path, FLEXIBLE).status_code == 404


def test_an_unregistered_issuer_is_refused_without_any_fetch(
    fed: RunningPlatform, issuers: dict[str, Issuer], ci_identity: dict[str, Any]
) -> None:
    other = issuers["other"]
    body = refused(exchange(fed, ci_identity["clientId"], other.token(CI_SUBJECT)), 700211)
    assert body["error"] == "invalid_client" and other.url in body["error_description"]
    assert other.requests == []


def test_an_issuer_the_operator_did_not_allow_is_never_fetched(
    fed: RunningPlatform, issuers: dict[str, Issuer]
) -> None:
    blocked = issuers["blocked"]
    identity = uai(fed, "fed-blocked")
    fic_create(fed, "fed-blocked", "loopback-by-address", blocked.url, CI_SUBJECT)
    body = refused(exchange(fed, identity["clientId"], blocked.token(CI_SUBJECT)), 50166)
    assert "LANYARD_FEDERATION_ALLOWED_ISSUERS" in body["error_description"]
    assert blocked.requests == []


def test_wrong_audience_expired_and_not_yet_valid_are_refused(
    fed: RunningPlatform, issuers: dict[str, Issuer], ci_identity: dict[str, Any]
) -> None:
    ci, client = issuers["ci"], ci_identity["clientId"]
    refused(exchange(fed, client, ci.token(CI_SUBJECT, audience="api://SomethingElse")), 700212)
    refused(exchange(fed, client, ci.token(CI_SUBJECT, start=time.time() - 3600, lifetime=600)), 700024)
    refused(exchange(fed, client, ci.token(CI_SUBJECT, start=time.time() + 3600)), 700024)
    # A token signed by someone else's key, naming the trusted issuer: the issuer's keys decide.
    forged = jwt.encode(
        jwt.decode(ci.token(CI_SUBJECT), options={"verify_signature": False}),
        issuers["other"].key,
        algorithm="RS256",
        headers={"kid": ci.kid},
    )
    refused(exchange(fed, client, forged), 700027)


@pytest.mark.parametrize("mode", ["unreachable", "oversized"])
def test_an_issuer_whose_keys_cannot_be_had_is_refused_not_waited_for(
    fed: RunningPlatform, issuers: dict[str, Issuer], mode: str
) -> None:
    issuer = issuers[mode]
    identity = uai(fed, f"fed-{mode}")
    fic_create(fed, f"fed-{mode}", "broken-issuer", issuer.url, CI_SUBJECT)
    for _ in range(2):  # the second answer comes from the remembered failure: no new fetch
        body = refused(exchange(fed, identity["clientId"], issuer.token(CI_SUBJECT)), 50166)
        assert issuer.url in body["error_description"]
    assert issuer.requests.count("/.well-known/openid-configuration") == 1
    if mode == "oversized":
        assert "larger than" in body["error_description"]


def test_more_than_twenty_credentials_on_one_identity(fed: RunningPlatform, issuers: dict[str, Issuer]) -> None:
    identity = uai(fed, "fed-many")
    for i in range(25):
        path = f"{uai_id(fed, 'fed-many')}/federatedIdentityCredentials/branch-{i:02d}"
        body = {"properties": {"issuer": issuers["ci"].url, "subject": f"repo:org/many:ref:refs/heads/b{i}"}}
        response = arm_call(fed, "PUT", path, "2023-01-31", body)
        assert response.status_code == 201, response.text
    listed = arm_call(fed, "GET", f"{uai_id(fed, 'fed-many')}/federatedIdentityCredentials", "2023-01-31").json()
    assert len(listed["value"]) == 25
    last = issuers["ci"].token("repo:org/many:ref:refs/heads/b24")
    assert oid_of(fed, exchange(fed, identity["clientId"], last)) == identity["principalId"]


def test_the_real_azure_mgmt_msi_manages_them(fed: RunningPlatform, issuers: dict[str, Issuer]) -> None:
    from azure.identity import ClientSecretCredential
    from azure.mgmt.msi import ManagedServiceIdentityClient
    from azure.mgmt.msi.models import FederatedIdentityCredential

    admin = fed.endpoints["admin"]
    verify = fed.endpoints["ca_bundle"]
    credential = ClientSecretCredential(
        fed.tenant_id,
        admin["client_id"],
        admin["client_secret"],
        authority=fed.authority,
        disable_instance_discovery=True,
        connection_verify=verify,
    )
    client = ManagedServiceIdentityClient(
        credential, fed.endpoints["subscription_id"], base_url=fed.endpoints["arm"], connection_verify=verify
    )
    identity = uai(fed, "fed-sdk")
    created = client.federated_identity_credentials.create_or_update(
        "fed-rg",
        "fed-sdk",
        "from-sdk",
        FederatedIdentityCredential(
            issuer=issuers["ci"].url,
            subject="repo:org/sdk:ref:refs/heads/main",
            audiences=["api://AzureADTokenExchange"],
        ),
    )
    assert created.name == "from-sdk" and created.subject == "repo:org/sdk:ref:refs/heads/main"
    assert created.id.endswith("/userAssignedIdentities/fed-sdk/federatedIdentityCredentials/from-sdk")
    got = client.federated_identity_credentials.get("fed-rg", "fed-sdk", "from-sdk")
    assert got.issuer == issuers["ci"].url and got.audiences == ["api://AzureADTokenExchange"]
    assert [c.name for c in client.federated_identity_credentials.list("fed-rg", "fed-sdk")] == ["from-sdk"]
    token = issuers["ci"].token("repo:org/sdk:ref:refs/heads/main")
    assert oid_of(fed, exchange(fed, identity["clientId"], token)) == identity["principalId"]
    client.federated_identity_credentials.delete("fed-rg", "fed-sdk", "from-sdk")
    assert list(client.federated_identity_credentials.list("fed-rg", "fed-sdk")) == []


def test_applications_take_federated_credentials_through_graph(
    fed: RunningPlatform, issuers: dict[str, Issuer]
) -> None:
    app = cli_json(fed.home, "ad", "app", "create", "--display-name", "fed-graph-app")
    principal = cli_json(fed.home, "ad", "sp", "create", "--id", app["appId"])
    graph = fed.endpoints["graph"].rstrip("/")
    headers = {"Authorization": f"Bearer {admin_token(fed, graph)}"}
    base = f"{graph}/v1.0/applications/{app['id']}/federatedIdentityCredentials"
    with fed.http() as http:
        bad = http.post(base, headers=headers, json={"name": "bad", "issuer": issuers["ci"].url, "subject": "*"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "Request_BadRequest"
        created = http.post(
            base,
            headers=headers,
            json={
                "name": "ci-main",
                "issuer": issuers["ci"].url,
                "subject": "repo:org/graph:ref:refs/heads/main",
                "audiences": ["api://AzureADTokenExchange"],
                "description": "main branch deploys",
            },
        )
        assert created.status_code == 201, created.text
        fic = created.json()
        assert fic["name"] == "ci-main" and fic["description"] == "main branch deploys"
        assert [c["id"] for c in http.get(base, headers=headers).json()["value"]] == [fic["id"]]
        token = issuers["ci"].token("repo:org/graph:ref:refs/heads/main")
        assert oid_of(fed, exchange(fed, app["appId"], token)) == principal["id"]
        patched = http.patch(
            f"{base}/{fic['id']}", headers=headers, json={"subject": "repo:org/graph:ref:refs/heads/*"}
        )
        assert patched.status_code == 204, patched.text
        assert http.get(f"{base}/{fic['id']}", headers=headers).json()["subject"] == "repo:org/graph:ref:refs/heads/*"
        release = issuers["ci"].token("repo:org/graph:ref:refs/heads/release")
        assert oid_of(fed, exchange(fed, app["appId"], release)) == principal["id"]
        assert http.delete(f"{base}/{fic['id']}", headers=headers).status_code == 204
        assert http.get(f"{base}/{fic['id']}", headers=headers).status_code == 404
    refused(exchange(fed, app["appId"], release), 700211)


def test_the_cli_manages_an_applications_credentials_as_az_does(
    fed: RunningPlatform, issuers: dict[str, Issuer], tmp_path: Path
) -> None:
    app = cli_json(fed.home, "ad", "app", "create", "--display-name", "fed-cli-app")
    principal = cli_json(fed.home, "ad", "sp", "create", "--id", app["appId"])
    spec = {"name": "deploys", "issuer": issuers["ci"].url, "subject": "repo:org/cli-app:environment:prod"}
    (tmp_path / "fic.json").write_text(json.dumps(spec))
    base = ["ad", "app", "federated-credential"]
    created = cli_json(fed.home, *base, "create", "--id", app["appId"], "--parameters", f"@{tmp_path / 'fic.json'}")
    assert created["name"] == "deploys" and created["audiences"] == ["api://AzureADTokenExchange"]
    shown = cli_json(fed.home, *base, "show", "--id", app["id"], "--federated-credential-id", "deploys")
    assert shown["id"] == created["id"]
    token = issuers["ci"].token("repo:org/cli-app:environment:prod")
    assert oid_of(fed, exchange(fed, app["appId"], token)) == principal["id"]
    change = json.dumps({"subject": "repo:org/cli-app:environment:*"})
    run_cli(
        fed.home,
        *base,
        "update",
        "--id",
        app["appId"],
        "--federated-credential-id",
        created["id"],
        "--parameters",
        change,
    )
    assert cli_json(fed.home, *base, "list", "--id", app["appId"])[0]["subject"] == "repo:org/cli-app:environment:*"
    staging = issuers["ci"].token("repo:org/cli-app:environment:staging")
    assert oid_of(fed, exchange(fed, app["appId"], staging)) == principal["id"]
    run_cli(fed.home, *base, "delete", "--id", app["appId"], "--federated-credential-id", "deploys")
    assert cli_json(fed.home, *base, "list", "--id", app["appId"]) == []


def test_a_template_deploys_an_identity_with_its_federated_credential(
    fed: RunningPlatform, issuers: dict[str, Issuer], tmp_path: Path
) -> None:
    template = {
        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
        "contentVersion": "1.0.0.0",
        "parameters": {"issuer": {"type": "string"}},
        "resources": [
            {"type": MSI, "apiVersion": "2023-01-31", "name": "fed-tpl-id", "location": "westus"},
            {
                "type": f"{MSI}/federatedIdentityCredentials",
                "apiVersion": "2023-01-31",
                "name": "fed-tpl-id/ci-main",
                "dependsOn": [f"[resourceId('{MSI}', 'fed-tpl-id')]"],
                "properties": {
                    "issuer": "[parameters('issuer')]",
                    "subject": CI_SUBJECT,
                    "audiences": ["api://AzureADTokenExchange"],
                },
            },
        ],
    }
    path = tmp_path / "fic.json"
    path.write_text(json.dumps(template))
    deployment = cli_json(
        fed.home,
        *("deployment", "group", "create", "-g", "fed-rg", "--template-file", str(path)),
        *("--parameters", f"issuer={issuers['ci'].url}"),
    )
    assert deployment["properties"]["provisioningState"] == "Succeeded"
    identity = cli_json(fed.home, "identity", "show", "-g", "fed-rg", "-n", "fed-tpl-id")
    response = exchange(fed, identity["clientId"], issuers["ci"].token(CI_SUBJECT))
    assert oid_of(fed, response) == identity["principalId"]


def test_the_workload_issuer_publishes_discovery_and_keys(fed: RunningPlatform) -> None:
    issuer = f"{fed.authority}/lanyard/v1/workload-issuer/{fed.tenant_id}"
    with fed.http() as http:
        doc = http.get(f"{issuer}/.well-known/openid-configuration").json()
        assert doc["issuer"] == issuer
        keys = http.get(doc["jwks_uri"]).json()["keys"]
    assert keys and all(k["kty"] == "RSA" for k in keys)


def test_an_aks_style_run_gets_tokens_with_the_real_workload_identity_credential(fed: RunningPlatform) -> None:
    identity = uai(fed, "fed-aks")
    cli_json(fed.home, "appservice", "plan", "create", "-g", "fed-rg", "-n", "fed-plan")
    cli_json(
        fed.home,
        "webapp",
        "create",
        "-g",
        "fed-rg",
        "-n",
        "fed-aks-app",
        "-p",
        "fed-plan",
        "--assign-identity",
        "fed-aks",
    )
    subject = "system:serviceaccount:fed-rg:fed-aks-app"
    cli_json(
        fed.home,
        *("identity", "federated-credential", "create", "-g", "fed-rg", "--identity-name", "fed-aks"),
        *("--name", "aks-run", "--workload-issuer", "--subject", subject),
    )
    scope = f"{ARM}/.default"
    variables = [
        "AZURE_CLIENT_ID",
        "AZURE_TENANT_ID",
        "AZURE_AUTHORITY_HOST",
        "AZURE_FEDERATED_TOKEN_FILE",
        "IDENTITY_ENDPOINT",
    ]
    actions = [
        {"kind": "env", "names": variables},
        {"kind": "file-digests", "names": ["AZURE_FEDERATED_TOKEN_FILE"]},
        {"kind": "wic-sync", "scope": scope},
        {"kind": "wic-async", "scope": scope},
        {"kind": "dac-sync", "scope": scope},
        # The projected token lives 30 s here and is rewritten at 80% of that, in place.
        {"kind": "wait-rewrite", "name": "AZURE_FEDERATED_TOKEN_FILE", "timeout": 90},
        {"kind": "file-digests", "names": ["AZURE_FEDERATED_TOKEN_FILE"]},
        {"kind": "wic-sync", "scope": scope},
    ]
    target = ["webapp", "run", "-g", "fed-rg", "-n", "fed-aks-app", "--platform", "aks"]
    result = subprocess.run(
        probe_command(fed.home, target, actions), capture_output=True, text=True, timeout=180, env=dict(os.environ)
    )
    assert result.returncode == 0, result.stderr
    results = probe_results(result.stdout, result.stderr)
    for r in results:
        assert r["ok"], r["error"]
    env, before, first, first_async, default, rewritten, after, later = (r["value"] for r in results)
    assert env["AZURE_CLIENT_ID"] == identity["clientId"] and env["AZURE_TENANT_ID"] == fed.tenant_id
    assert env["AZURE_AUTHORITY_HOST"] == f"{fed.authority}/" and env["IDENTITY_ENDPOINT"] is None
    assert before["AZURE_FEDERATED_TOKEN_FILE"] and after["AZURE_FEDERATED_TOKEN_FILE"]
    assert rewritten and before != after
    for token in (first, first_async, default, later):
        assert verify_with_discovery(fed, token, ARM)["oid"] == identity["principalId"]


def test_a_vm_runs_aks_style_too(fed: RunningPlatform) -> None:
    identity = uai(fed, "fed-aks-vm-id")
    cli_json(fed.home, "vm", "create", "-g", "fed-rg", "-n", "fed-aks-vm", "--assign-identity", "fed-aks-vm-id")
    cli_json(
        fed.home,
        *("identity", "federated-credential", "create", "-g", "fed-rg", "--identity-name", "fed-aks-vm-id"),
        *("--name", "vm-run", "--workload-issuer", "--subject", "system:serviceaccount:fed-rg:fed-aks-vm"),
    )
    actions = [
        {"kind": "env", "names": ["AZURE_POD_IDENTITY_AUTHORITY_HOST", "AZURE_CLIENT_ID"]},
        {"kind": "wic-sync", "scope": f"{ARM}/.default"},
    ]
    target = ["vm", "run", "-g", "fed-rg", "-n", "fed-aks-vm", "--platform", "aks"]
    result = subprocess.run(
        probe_command(fed.home, target, actions), capture_output=True, text=True, timeout=180, env=dict(os.environ)
    )
    assert result.returncode == 0, result.stderr
    results = probe_results(result.stdout, result.stderr)
    for r in results:
        assert r["ok"], r["error"]
    env, token = (r["value"] for r in results)
    # No metadata service: the federated token is the only way in.
    assert env == {"AZURE_POD_IDENTITY_AUTHORITY_HOST": None, "AZURE_CLIENT_ID": identity["clientId"]}
    assert verify_with_discovery(fed, token, ARM)["oid"] == identity["principalId"]


@pytest.fixture(scope="module")
def node_modules() -> str:
    """The real @azure/identity from the npm registry (scripts/install-node-identity caches it)."""
    if shutil.which("node") is None and os.environ.get("CI") != "true":
        pytest.skip("node is not installed")
    script = Path(__file__).resolve().parents[2] / "scripts" / "install-node-identity"
    done = subprocess.run([str(script)], capture_output=True, text=True, timeout=600, env=SESSION_START_ENV)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_an_aks_style_run_works_with_nodes_workload_identity_credential(
    fed: RunningPlatform, node_modules: str
) -> None:
    identity = uai(fed, "fed-aks-node")
    cli_json(
        fed.home, "webapp", "create", "-g", "fed-rg", "-n", "fed-aks-node-app", "--assign-identity", "fed-aks-node"
    )
    cli_json(
        fed.home,
        *("identity", "federated-credential", "create", "-g", "fed-rg", "--identity-name", "fed-aks-node"),
        *("--name", "aks-node-run", "--workload-issuer", "--subject", "system:serviceaccount:fed-rg:fed-aks-node-app"),
    )
    script = Path(__file__).resolve().parents[1] / "workloads" / "wic.js"
    command = [
        *(sys.executable, "-m", "lanyard", "--home", str(fed.home)),
        *("webapp", "run", "-g", "fed-rg", "-n", "fed-aks-node-app", "--platform", "aks"),
        *("--", shutil.which("node") or "node", str(script), json.dumps([f"{ARM}/.default"])),
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=180, env={**os.environ, "NODE_PATH": node_modules}
    )
    assert result.returncode == 0, result.stderr
    (answer,) = probe_results(result.stdout, result.stderr)
    assert answer["ok"], answer["error"]
    assert verify_with_discovery(fed, answer["value"], ARM)["oid"] == identity["principalId"]


def test_an_aks_style_run_without_a_user_assigned_identity_is_refused(fed: RunningPlatform) -> None:
    cli_json(fed.home, "appservice", "plan", "create", "-g", "fed-rg", "-n", "fed-plan2")
    cli_json(
        fed.home,
        "webapp",
        "create",
        "-g",
        "fed-rg",
        "-n",
        "fed-aks-system",
        "-p",
        "fed-plan2",
        "--assign-identity",
        "[system]",
    )
    target = ["webapp", "run", "-g", "fed-rg", "-n", "fed-aks-system", "--platform", "aks"]
    result = subprocess.run(
        probe_command(fed.home, target, [{"kind": "env", "names": ["AZURE_CLIENT_ID"]}]),
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert result.returncode != 0
    assert "user-assigned identity" in result.stderr
