"""The real azure-mgmt-* SDKs, unmodified except base_url and the credential, against the control plane."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.msi import ManagedServiceIdentityClient
from azure.mgmt.resource.resources import ResourceManagementClient
from azure.mgmt.web import WebSiteManagementClient
from azure.mgmt.web.models import ManagedServiceIdentity, Site, UserAssignedIdentity

from tests.conftest import RunningPlatform, cli_json, credential_for, run_cli

READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"


def role_id(platform: RunningPlatform, guid: str) -> str:
    return f"/subscriptions/{platform.endpoints['subscription_id']}/providers/Microsoft.Authorization/roleDefinitions/{guid}"


@pytest.fixture(scope="module")
def clients(platform: RunningPlatform, admin_credential: Any) -> dict[str, Any]:
    sub, base = platform.endpoints["subscription_id"], platform.endpoints["arm"]
    return {
        "resources": ResourceManagementClient(admin_credential, sub, base_url=base),
        "msi": ManagedServiceIdentityClient(admin_credential, sub, base_url=base),
        "web": WebSiteManagementClient(admin_credential, sub, base_url=base),
        "auth": AuthorizationManagementClient(admin_credential, sub, base_url=base),
        "compute": ComputeManagementClient(admin_credential, sub, base_url=base),
    }


def directory_principal(platform: RunningPlatform, object_id: str) -> dict[str, Any] | None:
    result = run_cli(platform.home, "ad", "sp", "show", "--id", object_id, check=False)
    if result.returncode != 0:
        assert "ResourceNotFound" in result.stderr, result.stderr
        return None
    import json

    return dict(json.loads(result.stdout))


def test_resource_groups(clients: dict[str, Any]) -> None:
    rc = clients["resources"]
    group = rc.resource_groups.create_or_update("sdk-rg", {"location": "westus", "tags": {"env": "test"}})
    assert group.name == "sdk-rg" and group.properties.provisioning_state == "Succeeded"
    assert rc.resource_groups.check_existence("sdk-rg") is True
    assert rc.resource_groups.check_existence("sdk-rg-missing") is False
    assert rc.resource_groups.get("SDK-RG").tags == {"env": "test"}
    assert "sdk-rg" in [g.name for g in rc.resource_groups.list()]
    updated = rc.resource_groups.update("sdk-rg", {"tags": {"env": "prod"}})
    assert updated.tags == {"env": "prod"}
    rc.resource_groups.begin_delete("sdk-rg").result()
    with pytest.raises(ResourceNotFoundError):
        rc.resource_groups.get("sdk-rg")


def test_user_assigned_identities_lifecycle(platform: RunningPlatform, clients: dict[str, Any]) -> None:
    clients["resources"].resource_groups.create_or_update("msi-rg", {"location": "westus"})
    msi = clients["msi"]
    created = msi.user_assigned_identities.create_or_update("msi-rg", "uai-one", {"location": "westus"})
    assert created.type == "Microsoft.ManagedIdentity/userAssignedIdentities"
    assert created.tenant_id == platform.tenant_id
    sp = directory_principal(platform, created.principal_id)
    assert sp is not None and sp["appId"] == created.client_id and sp["servicePrincipalType"] == "ManagedIdentity"
    assert created.id in sp["alternativeNames"]
    again = msi.user_assigned_identities.create_or_update(
        "msi-rg", "uai-one", {"location": "westus", "tags": {"a": "b"}}
    )
    assert (again.principal_id, again.client_id) == (created.principal_id, created.client_id)
    assert [i.name for i in msi.user_assigned_identities.list_by_resource_group("msi-rg")] == ["uai-one"]
    assert created.id in [i.id for i in msi.user_assigned_identities.list_by_subscription()]
    msi.user_assigned_identities.delete("msi-rg", "uai-one")
    assert directory_principal(platform, created.principal_id) is None
    with pytest.raises(ResourceNotFoundError):
        msi.user_assigned_identities.get("msi-rg", "uai-one")


def test_site_with_system_and_user_assigned(platform: RunningPlatform, clients: dict[str, Any]) -> None:
    clients["resources"].resource_groups.create_or_update("web-rg", {"location": "westus"})
    uai = clients["msi"].user_assigned_identities.create_or_update("web-rg", "web-uai", {"location": "westus"})
    web = clients["web"]
    identity = ManagedServiceIdentity(
        type="SystemAssigned, UserAssigned", user_assigned_identities={uai.id: UserAssignedIdentity()}
    )
    site = web.web_apps.begin_create_or_update(
        "web-rg", "sdk-site", Site(location="westus", identity=identity)
    ).result()
    assert site.identity.type == "SystemAssigned, UserAssigned"
    assert site.identity.tenant_id == platform.tenant_id
    system_sp = directory_principal(platform, site.identity.principal_id)
    assert system_sp is not None and system_sp["displayName"] == "sdk-site"
    assert site.id in system_sp["alternativeNames"]
    ((uai_id, uai_entry),) = site.identity.user_assigned_identities.items()
    assert uai_id.lower() == uai.id.lower()
    assert (uai_entry.principal_id, uai_entry.client_id) == (uai.principal_id, uai.client_id)

    fetched = web.web_apps.get("web-rg", "sdk-site")
    assert fetched.identity.principal_id == site.identity.principal_id
    assert fetched.default_host_name and fetched.state == "Running"

    # A slot gets its own system-assigned identity, named <app>/slots/<slot>.
    slot = web.web_apps.begin_create_or_update_slot(
        "web-rg", "sdk-site", "staging", Site(location="westus", identity=ManagedServiceIdentity(type="SystemAssigned"))
    ).result()
    assert slot.identity.principal_id not in (None, site.identity.principal_id)
    slot_sp = directory_principal(platform, slot.identity.principal_id)
    assert slot_sp is not None and slot_sp["displayName"] == "sdk-site/slots/staging"
    assert [s.name for s in web.web_apps.list_slots("web-rg", "sdk-site")] == ["sdk-site/staging"]

    # Turning the identity off deletes the principal; the user-assigned one is untouched.
    off = web.web_apps.begin_create_or_update(
        "web-rg", "sdk-site", Site(location="westus", identity=ManagedServiceIdentity(type="None"))
    ).result()
    assert off.identity.type == "None" and off.identity.principal_id is None
    assert directory_principal(platform, site.identity.principal_id) is None
    assert directory_principal(platform, uai.principal_id) is not None

    web.web_apps.delete("web-rg", "sdk-site")
    assert directory_principal(platform, slot.identity.principal_id) is None
    assert directory_principal(platform, uai.principal_id) is not None
    with pytest.raises(ResourceNotFoundError):
        web.web_apps.get("web-rg", "sdk-site")


def test_app_settings_through_sdk(clients: dict[str, Any]) -> None:
    clients["resources"].resource_groups.create_or_update("cfg-rg", {"location": "westus"})
    web = clients["web"]
    web.web_apps.begin_create_or_update("cfg-rg", "cfg-site", Site(location="westus")).result()
    web.web_apps.update_application_settings("cfg-rg", "cfg-site", {"properties": {"DB": "x", "MODE": "y"}})
    assert web.web_apps.list_application_settings("cfg-rg", "cfg-site").properties == {"DB": "x", "MODE": "y"}


def test_virtual_machine_identity(platform: RunningPlatform, clients: dict[str, Any]) -> None:
    clients["resources"].resource_groups.create_or_update("vm-rg", {"location": "westus"})
    compute = clients["compute"]
    vm = compute.virtual_machines.begin_create_or_update(
        "vm-rg", "vm1", {"location": "westus", "identity": {"type": "SystemAssigned"}}
    ).result()
    assert vm.identity.type == "SystemAssigned"
    assert directory_principal(platform, vm.identity.principal_id) is not None
    compute.virtual_machines.begin_delete("vm-rg", "vm1").result()
    assert directory_principal(platform, vm.identity.principal_id) is None


def test_role_assignments(platform: RunningPlatform, clients: dict[str, Any], secret_app: dict[str, Any]) -> None:
    group = clients["resources"].resource_groups.create_or_update("rbac-rg", {"location": "westus"})
    auth = clients["auth"]
    principal = cli_json(platform.home, "ad", "sp", "show", "--id", secret_app["appId"])["id"]
    name = str(uuid.uuid4())
    created = auth.role_assignments.create(
        group.id,
        name,
        {
            "role_definition_id": role_id(platform, READER),
            "principal_id": principal,
            "principal_type": "ServicePrincipal",
        },
    )
    assert created.principal_id == principal and created.scope == group.id
    assert auth.role_assignments.get(group.id, name).id == created.id
    assert created.id in [a.id for a in auth.role_assignments.list_for_scope(group.id)]
    assert created.id in [a.id for a in auth.role_assignments.list_for_subscription()]
    with pytest.raises(HttpResponseError) as duplicate:
        auth.role_assignments.create(
            group.id, str(uuid.uuid4()), {"role_definition_id": role_id(platform, READER), "principal_id": principal}
        )
    assert duplicate.value.status_code == 409
    reader = auth.role_definitions.get(group.id, READER)
    assert reader.role_name == "Reader"
    names = {d.role_name for d in auth.role_definitions.list(group.id)}
    assert {"Owner", "Contributor", "Reader", "Managed Identity Operator", "Key Vault Secrets User"} <= names

    # The Reader can read the group but its writes are denied.
    sub, base = platform.endpoints["subscription_id"], platform.endpoints["arm"]
    as_reader = ResourceManagementClient(credential_for(platform, secret_app), sub, base_url=base)
    assert as_reader.resource_groups.get("rbac-rg").name == "rbac-rg"
    with pytest.raises(HttpResponseError) as denied:
        as_reader.resource_groups.create_or_update("rbac-rg", {"location": "westus", "tags": {"x": "y"}})
    assert denied.value.status_code == 403 and denied.value.error.code == "AuthorizationFailed"
    with pytest.raises(HttpResponseError) as denied_elsewhere:
        as_reader.resource_groups.get("msi-rg")
    assert denied_elsewhere.value.status_code in (403, 404)

    auth.role_assignments.delete(group.id, name)
    with pytest.raises(HttpResponseError) as gone:
        as_reader.resource_groups.get("rbac-rg")  # permission changes apply to the very next request
    assert gone.value.status_code == 403


def test_paging_follows_next_link(clients: dict[str, Any]) -> None:
    """More than one page: the SDK follows nextLink verbatim (docs/protocols.md §5.6)."""
    clients["resources"].resource_groups.create_or_update("page-rg", {"location": "westus"})
    msi = clients["msi"]
    for i in range(105):
        msi.user_assigned_identities.create_or_update("page-rg", f"page-uai-{i:03d}", {"location": "westus"})
    names = [i.name for i in msi.user_assigned_identities.list_by_resource_group("page-rg")]
    assert len(names) == 105 and len(set(names)) == 105
    clients["resources"].resource_groups.begin_delete("page-rg").result()


def test_metadata_endpoints_for_az_cloud_register(platform: RunningPlatform) -> None:
    with platform.http() as http:
        doc = http.get(f"{platform.endpoints['arm']}/metadata/endpoints?api-version=2022-09-01").json()
    assert doc["authentication"]["loginEndpoint"].rstrip("/") == platform.authority
    assert doc["authentication"]["audiences"][0] == "https://management.core.windows.net/"
    assert doc["resourceManager"].rstrip("/") == platform.endpoints["arm"]
    assert doc["suffixes"]["keyVaultDns"] == "." + platform.endpoints["vault_suffix"]  # az concatenates it
