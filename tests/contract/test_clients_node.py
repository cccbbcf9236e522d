"""The real @azure/identity (4.14, on msal-node), unmodified, as a workload: ManagedIdentityCredential gets
tokens on every source the agent serves (App Service, Container Apps, Azure ML, Cloud Shell, Service
Fabric, IMDS through AZURE_POD_IDENTITY_AUTHORITY_HOST), system-assigned and user-assigned by client id,
resource id and object id where the source allows them; each verifies against the directory's JWKS
with the identity's oid."""

from __future__ import annotations

import os
import subprocess
from typing import Any

import pytest

from tests.conftest import RunningPlatform, app_and_vm_with_identities, cli_json, client_in_workload, token_oids
from tests.support.clients import ClientProgram, outcomes

ARM = "https://management.azure.com"
SCOPE = f"{ARM}/.default"


@pytest.fixture(scope="module")
def apps(platform: RunningPlatform) -> dict[str, Any]:
    return app_and_vm_with_identities(platform.home, "node")


def system(scope: str = SCOPE) -> dict[str, Any]:
    return {"credential": "managed-identity", "scope": scope}


def every_selector(uai: dict[str, Any]) -> list[dict[str, Any]]:
    """System-assigned, then the user-assigned identity by client id, resource id and object id."""
    return [
        system(),
        {**system(), "client_id": uai["clientId"]},
        {**system(), "resource_id": uai["id"]},
        {**system(), "object_id": uai["principalId"]},
    ]


def webapp(*platform: str) -> list[str]:
    return ["webapp", "run", "-g", "node-rg", "-n", "node-app", *platform]


def test_app_service(platform: RunningPlatform, apps: dict[str, Any], node_client: ClientProgram) -> None:
    uai = apps["uai"]
    outcomes = client_in_workload(platform.home, webapp(), node_client, every_selector(uai))
    assert token_oids(platform, outcomes, ARM) == [apps["site_oid"]] + [uai["principalId"]] * 3


def test_container_apps(platform: RunningPlatform, apps: dict[str, Any], node_client: ClientProgram) -> None:
    uai = apps["uai"]
    target = webapp("--platform", "containerapps")
    outcomes = client_in_workload(platform.home, target, node_client, every_selector(uai))
    assert token_oids(platform, outcomes, ARM) == [apps["site_oid"]] + [uai["principalId"]] * 3


def test_azure_ml(platform: RunningPlatform, apps: dict[str, Any], node_client: ClientProgram) -> None:
    """ML names the system-assigned identity by DEFAULT_IDENTITY_CLIENT_ID and a user-assigned one by client id
    only: msal-node refuses a resource or object id itself, before it asks."""
    uai = apps["uai"]
    selectors = every_selector(uai)
    outcomes = client_in_workload(platform.home, webapp("--platform", "ml"), node_client, selectors)
    assert token_oids(platform, outcomes[:2], ARM) == [apps["site_oid"], uai["principalId"]]
    for refused in outcomes[2:]:
        assert "token" not in refused and refused["message"], refused


def test_cloud_shell(platform: RunningPlatform, apps: dict[str, Any], node_client: ClientProgram) -> None:
    """Cloud Shell has no user-assigned identity: @azure/identity refuses one before it asks."""
    cases = [system(), {**system(), "client_id": apps["uai"]["clientId"]}]
    outcomes = client_in_workload(platform.home, webapp("--platform", "cloudshell"), node_client, cases)
    assert token_oids(platform, outcomes[:1], ARM) == [apps["site_oid"]]
    assert "token" not in outcomes[1] and "user-assigned" in outcomes[1]["message"].lower(), outcomes[1]


def test_service_fabric(platform: RunningPlatform, apps: dict[str, Any], node_client: ClientProgram) -> None:
    """msal-node pins no thumbprint: it trusts the endpoint's certificate through NODE_EXTRA_CA_CERTS."""
    cases = [system(), {**system(), "client_id": apps["uai"]["clientId"]}]
    outcomes = client_in_workload(platform.home, webapp("--platform", "servicefabric"), node_client, cases)
    assert token_oids(platform, outcomes[:1], ARM) == [apps["site_oid"]]
    assert "token" not in outcomes[1], outcomes[1]


def test_vm_through_the_pod_identity_host(
    platform: RunningPlatform, apps: dict[str, Any], node_client: ClientProgram
) -> None:
    """`vm run` names the agent's IMDS in AZURE_POD_IDENTITY_AUTHORITY_HOST, which msal-node honours (and
    asks at `/metadata/identity/oauth2/token/`, with a trailing slash)."""
    uai = apps["uai"]
    target = ["vm", "run", "-g", "node-rg", "-n", "node-vm"]
    outcomes = client_in_workload(platform.home, target, node_client, every_selector(uai))
    assert token_oids(platform, outcomes, ARM) == [apps["vm_oid"]] + [uai["principalId"]] * 3


def test_a_token_for_another_resource(
    platform: RunningPlatform, apps: dict[str, Any], node_client: ClientProgram
) -> None:
    vault = "https://vault.azure.net"
    outcomes = client_in_workload(platform.home, webapp(), node_client, [system(f"{vault}/.default")])
    assert token_oids(platform, outcomes, vault) == [apps["site_oid"]]


def test_client_secret_credential(
    platform: RunningPlatform, secret_app: dict[str, Any], node_client: ClientProgram
) -> None:
    """Outside any workload: the platform's authority, trusted through NODE_EXTRA_CA_CERTS as an app would."""
    case = {
        "credential": "client-secret",
        "scope": SCOPE,
        "authority": platform.authority,
        "tenant_id": platform.tenant_id,
        "client_id": secret_app["appId"],
    }
    env = {**os.environ, "NODE_EXTRA_CA_CERTS": platform.ca_cert}

    def run(secret: str) -> dict[str, Any]:
        result = subprocess.run(
            node_client.command([case]),
            capture_output=True,
            text=True,
            timeout=120,
            env={**env, "AZURE_CLIENT_SECRET": secret},
        )
        assert result.returncode == 0, result.stderr
        return outcomes(result.stdout, result.stderr, 1)[0]

    principal = cli_json(platform.home, "ad", "sp", "show", "--id", secret_app["appId"])["id"]
    assert token_oids(platform, [run(secret_app["password"])], ARM) == [principal]
    refused = run("not-the-secret")
    assert "token" not in refused and "AADSTS7000215" in refused["message"], refused
