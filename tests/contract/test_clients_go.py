"""The real azidentity (Go, on MSAL Go), unmodified, as a workload: ManagedIdentityCredential gets tokens on
App Service, on every other `webapp run --platform` source (Service Fabric pinned by thumbprint), and from IMDS at the real 169.254.169.254 inside a network namespace made for the run (`vm run --netns`:
Go ignores AZURE_POD_IDENTITY_AUTHORITY_HOST), system-assigned and user-assigned by client id, resource id
and object id; each verifies against the directory's JWKS with the identity's oid."""

from __future__ import annotations

import os
import shutil
from typing import Any

import pytest

from tests.conftest import RunningPlatform, app_and_vm_with_identities, client_in_workload, token_oids
from tests.support.clients import ClientProgram

ARM = "https://management.azure.com"
SCOPE = f"{ARM}/.default"


@pytest.fixture(scope="module")
def apps(platform: RunningPlatform) -> dict[str, Any]:
    return app_and_vm_with_identities(platform.home, "go")


def every_selector(uai: dict[str, Any]) -> list[dict[str, Any]]:
    """System-assigned, then the user-assigned identity by client id, resource id and object id."""
    system = {"credential": "managed-identity", "scope": SCOPE}
    return [
        system,
        {**system, "client_id": uai["clientId"]},
        {**system, "resource_id": uai["id"]},
        {**system, "object_id": uai["principalId"]},
    ]


def test_app_service(platform: RunningPlatform, apps: dict[str, Any], go_client: ClientProgram) -> None:
    uai = apps["uai"]
    target = ["webapp", "run", "-g", "go-rg", "-n", "go-app"]
    outcomes = client_in_workload(platform.home, target, go_client, every_selector(uai))
    assert token_oids(platform, outcomes, ARM) == [apps["site_oid"]] + [uai["principalId"]] * 3


def test_app_service_refuses_an_identity_the_app_does_not_have(
    platform: RunningPlatform, apps: dict[str, Any], go_client: ClientProgram
) -> None:
    case = {"credential": "managed-identity", "scope": SCOPE, "client_id": "00000000-0000-0000-0000-000000000000"}
    (outcome,) = client_in_workload(platform.home, ["webapp", "run", "-g", "go-rg", "-n", "go-app"], go_client, [case])
    assert "token" not in outcome and "Unable to load" in outcome["message"], outcome


# How many of every_selector's cases each source serves: the rest the client refuses itself, before it asks.
SERVED = {"containerapps": 4, "ml": 2, "cloudshell": 1, "servicefabric": 1}


@pytest.mark.parametrize("source", sorted(SERVED))
def test_every_other_source(
    platform: RunningPlatform, apps: dict[str, Any], go_client: ClientProgram, source: str
) -> None:
    uai = apps["uai"]
    target = ["webapp", "run", "-g", "go-rg", "-n", "go-app", "--platform", source]
    outcomes = client_in_workload(platform.home, target, go_client, every_selector(uai))
    served = SERVED[source]
    assert token_oids(platform, outcomes[:served], ARM) == [apps["site_oid"], *[uai["principalId"]] * (served - 1)]
    for refused in outcomes[served:]:
        assert "token" not in refused and refused["error"] == "CredentialUnavailable", refused


def test_imds_at_the_link_local_address_in_a_network_namespace(
    platform: RunningPlatform, apps: dict[str, Any], go_client: ClientProgram
) -> None:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")
    uai = apps["uai"]
    target = ["vm", "run", "-g", "go-rg", "-n", "go-vm", "--netns"]
    outcomes = client_in_workload(platform.home, target, go_client, every_selector(uai))
    assert token_oids(platform, outcomes, ARM) == [apps["vm_oid"]] + [uai["principalId"]] * 3
