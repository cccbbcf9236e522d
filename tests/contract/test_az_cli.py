"""The real az CLI (azure-cli 2.91 from PyPI, scripts/ensure-az) against a running platform registered as a
custom cloud: the commands a new user runs for identities, web apps, function apps, VMs, roles, Key Vault,
generic resources and template deployments, inside workloads and out, each output checked against the shape
Azure returns. Each test has its own AZURE_CONFIG_DIR; az costs a second or two a call, so commands are
grouped by what they need."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RunningPlatform, cli_json, probe_command
from tests.contract.test_deployments import SYSTEM_TEMPLATE, USER_TEMPLATE
from tests.support.azcli import AzCli, az_environment, require_az, setup_script

GUID_LENGTH = 36


@pytest.fixture
def az(platform: RunningPlatform, tmp_path: Path) -> AzCli:
    """az signed in as the admin application (`az login --service-principal`), in a config folder of its own."""
    cli = AzCli(require_az(), platform, tmp_path / "azure")
    cli.register_cloud()
    admin = platform.endpoints["admin"]
    accounts = cli.login_service_principal(admin["client_id"], admin["client_secret"])
    # az login prints the subscriptions it found: the platform's, in its tenant, as the default.
    [account] = [a for a in accounts if a["id"] == platform.endpoints["subscription_id"]]
    assert account["cloudName"] == "Lanyard"
    assert account["tenantId"] == platform.tenant_id
    assert account["isDefault"] is True and account["state"] == "Enabled"
    assert account["user"] == {"name": admin["client_id"], "type": "servicePrincipal"}
    return cli


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def group(az: AzCli) -> str:
    name = unique("az-rg-")
    made = az.json("group", "create", "-n", name, "-l", "westeurope")
    assert made["name"] == name and made["location"] == "westeurope"
    assert made["properties"] == {"provisioningState": "Succeeded"}
    assert made["type"] == "Microsoft.Resources/resourceGroups"
    return name


def sub_id(platform: RunningPlatform) -> str:
    return str(platform.endpoints["subscription_id"])


def test_groups_identities_and_generic_resources(az: AzCli, platform: RunningPlatform) -> None:
    rg = group(az)
    shown = az.json("group", "show", "-n", rg)
    assert shown["id"] == f"/subscriptions/{sub_id(platform)}/resourceGroups/{rg}"
    assert rg in [g["name"] for g in az.json("group", "list")]

    uai = az.json("identity", "create", "-g", rg, "-n", "az-uai")
    assert len(uai["principalId"]) == len(uai["clientId"]) == GUID_LENGTH
    assert uai["tenantId"] == platform.tenant_id and uai["resourceGroup"] == rg
    assert uai["type"] == "Microsoft.ManagedIdentity/userAssignedIdentities"
    assert az.json("identity", "show", "-g", rg, "-n", "az-uai")["principalId"] == uai["principalId"]

    # `resource create|show` without --api-version: az reads the namespace's api-versions first.
    created = az.json(
        "resource", "create", "-g", rg, "-n", "az-uai2", "--resource-type",
        "Microsoft.ManagedIdentity/userAssignedIdentities", "-p", "{}",
    )  # fmt: skip
    assert len(created["properties"]["principalId"]) == GUID_LENGTH
    shown_uai = az.json(
        "resource",
        "show",
        "-g",
        rg,
        "-n",
        "az-uai",
        "--resource-type",
        "Microsoft.ManagedIdentity/userAssignedIdentities",
    )
    assert shown_uai["id"] == uai["id"] and shown_uai["properties"]["clientId"] == uai["clientId"]
    assert az.json("resource", "show", "--ids", uai["id"])["name"] == "az-uai"

    # `resource list -g` goes through /subscriptions/{s}/resources?$filter=resourceGroup eq '…'.
    listed = az.json("resource", "list", "-g", rg)
    assert sorted(r["name"] for r in listed) == ["az-uai", "az-uai2"]
    for item in listed:
        assert item["resourceGroup"] == rg and item["location"] == "westeurope"
        assert item["provisioningState"] == "Succeeded" and item["createdTime"]
        assert "properties" not in item or item["properties"] is None

    # The principals are in the directory, found by az ad sp list --display-name (startswith).
    sps = az.json("ad", "sp", "list", "--display-name", "az-uai")
    assert {s["id"] for s in sps} >= {uai["principalId"], created["properties"]["principalId"]}
    assert all(s["displayName"].startswith("az-uai") for s in sps)
    assert {s["servicePrincipalType"] for s in sps} == {"ManagedIdentity"}

    az.run("identity", "delete", "-g", rg, "-n", "az-uai")
    missing = az.run("identity", "show", "-g", rg, "-n", "az-uai", check=False)
    assert missing.returncode != 0 and "ResourceNotFound" in missing.stderr
    az.run("group", "delete", "-n", rg, "--yes")


def test_web_apps_plans_slots_and_function_apps(az: AzCli, platform: RunningPlatform) -> None:
    rg = group(az)
    plan = az.json("appservice", "plan", "create", "-g", rg, "-n", "az-plan", "--is-linux", "--sku", "B1")
    assert plan["kind"] == "linux" and plan["reserved"] is True
    assert plan["sku"]["name"] == "B1"
    app_name = unique("az-app-")
    app = az.json("webapp", "create", "-g", rg, "-p", "az-plan", "-n", app_name, "--runtime", "PYTHON:3.11")
    assert app["name"] == app_name and app["kind"] == "app" and app["state"] == "Running"
    assert app["serverFarmId"] == plan["id"] and app["resourceGroup"] == rg
    assert app["defaultHostName"].startswith(app_name + ".")

    shown = az.json("webapp", "show", "-g", rg, "-n", app_name)
    assert shown["sku"] == "Basic" and shown["reserved"] is True
    assert shown["siteConfig"]["linuxFxVersion"] == "PYTHON|3.11"

    uai = az.json("identity", "create", "-g", rg, "-n", "az-app-uai")
    assigned = az.json("webapp", "identity", "assign", "-g", rg, "-n", app_name, "--identities", "[system]", uai["id"])
    assert assigned["type"] == "SystemAssigned, UserAssigned"
    assert len(assigned["principalId"]) == GUID_LENGTH and assigned["tenantId"] == platform.tenant_id
    assert assigned["userAssignedIdentities"][uai["id"]]["principalId"] == uai["principalId"]

    az.run("webapp", "config", "appsettings", "set", "-g", rg, "-n", app_name, "--settings", "GREETING=hello")
    settings = az.json("webapp", "config", "appsettings", "list", "-g", rg, "-n", app_name)
    assert {"name": "GREETING", "value": "hello", "slotSetting": False} in settings

    # `webapp create` on an existing app keeps its identities and settings, as az's does in Azure.
    again = az.run("webapp", "create", "-g", rg, "-p", "az-plan", "-n", app_name, "--runtime", "PYTHON:3.11")
    assert "already exists" in again.stderr
    kept = az.json("webapp", "identity", "show", "-g", rg, "-n", app_name)
    assert kept["principalId"] == assigned["principalId"] and uai["id"] in kept["userAssignedIdentities"]
    assert "GREETING" in [
        s["name"] for s in az.json("webapp", "config", "appsettings", "list", "-g", rg, "-n", app_name)
    ]

    slot = az.json("webapp", "deployment", "slot", "create", "-g", rg, "-n", app_name, "--slot", "staging")
    assert slot["id"].endswith(f"/sites/{app_name}/slots/staging") and slot["type"] == "Microsoft.Web/sites/slots"
    assert slot["serverFarmId"] == plan["id"]

    removed = az.json("webapp", "identity", "remove", "-g", rg, "-n", app_name, "--identities", "[system]")
    assert removed["type"] == "UserAssigned" and "principalId" not in {k for k, v in removed.items() if v}

    # A function app on the plan (made as a generic resource), then az's functionapp commands on it.
    func_name = unique("az-func-")
    az.run(
        "resource", "create", "-g", rg, "-n", func_name, "--resource-type", "Microsoft.Web/sites", "--is-full-object",
        "-p", json.dumps({"kind": "functionapp", "location": "westeurope", "properties": {"serverFarmId": plan["id"]}}),
    )  # fmt: skip
    func = az.json("functionapp", "show", "-g", rg, "-n", func_name)
    assert func["kind"] == "functionapp" and func["serverFarmId"] == plan["id"]
    # And as a user would: a storage account, then `functionapp create` with it on the Linux plan.
    account_name = unique("azst")
    account = az.json("storage", "account", "create", "-g", rg, "-n", account_name, "--sku", "Standard_LRS")
    assert account["sku"]["name"] == "Standard_LRS" and account["kind"] == "StorageV2"
    assert set(account["primaryEndpoints"]) >= {"blob", "queue", "table"}
    made_func = unique("az-func-")
    created = az.run(
        "functionapp", "create", "-g", rg, "-n", made_func, "-p", "az-plan", "--storage-account", account_name,
        "--runtime", "python", "--functions-version", "4",
    )  # fmt: skip
    assert created.json()["kind"].startswith("functionapp") and created.json()["serverFarmId"] == plan["id"]
    func_settings = {
        s["name"]: s["value"]
        for s in az.json("functionapp", "config", "appsettings", "list", "-g", rg, "-n", made_func)
    }
    assert func_settings["FUNCTIONS_WORKER_RUNTIME"] == "python"
    assert f"AccountName={account_name};" in func_settings["AzureWebJobsStorage"]
    # Its Application Insights component is not made: az 2.91 makes a workspace-based one only after reading
    # a region map from a public URL (appinsights.azureedge.net), which a self-hosted platform cannot serve.
    # The component type itself, as a generic resource:
    component = az.json(
        "resource", "create", "-g", rg, "-n", made_func, "--resource-type", "Microsoft.Insights/components",
        "-p", json.dumps({"kind": "web", "properties": {"Application_Type": "web"}}),
    )  # fmt: skip
    assert component["kind"] == "web" and component["properties"]["Application_Type"] == "web"
    key = component["properties"]["InstrumentationKey"]
    assert len(key) == GUID_LENGTH and len(component["properties"]["AppId"]) == GUID_LENGTH
    assert component["properties"]["ConnectionString"].startswith(f"InstrumentationKey={key};IngestionEndpoint=")
    shown_component = az.json("resource", "show", "--ids", component["id"])
    assert shown_component["properties"]["InstrumentationKey"] == key

    func_identity = az.json("functionapp", "identity", "assign", "-g", rg, "-n", func_name)
    assert func_identity["type"] == "SystemAssigned"
    assert az.json("functionapp", "identity", "show", "-g", rg, "-n", func_name) == func_identity
    az.run("group", "delete", "-n", rg, "--yes")


def test_role_assignments_and_assignee_lookup(az: AzCli, platform: RunningPlatform) -> None:
    rg = group(az)
    scope = f"/subscriptions/{sub_id(platform)}/resourceGroups/{rg}"
    uai = az.json("identity", "create", "-g", rg, "-n", "az-role-uai")
    first = az.run(
        "role", "assignment", "create", "--assignee", uai["principalId"], "--role", "Reader", "--scope", scope
    )
    made = first.json()
    # --assignee is looked up through Graph's directoryObjects/getByIds: no warning that it could not be.
    assert "WARNING" not in first.stderr, first.stderr
    assert made["principalId"] == uai["principalId"] and made["principalType"] == "ServicePrincipal"
    reader = f"/subscriptions/{sub_id(platform)}/providers/Microsoft.Authorization/roleDefinitions/"
    assert made["roleDefinitionId"] == reader + "acdd72a7-3385-48ef-bd42-f606fba81ae7"
    # Again: ARM answers 409 RoleAssignmentExists, and az reports the existing assignment.
    second = az.run(
        "role", "assignment", "create", "--assignee", uai["principalId"], "--role", "Reader", "--scope", scope
    )
    assert second.json()["id"] == made["id"]

    listed = az.json("role", "assignment", "list", "-g", rg, "--role", "Reader")
    [entry] = [a for a in listed if a["principalId"] == uai["principalId"]]
    assert entry["roleDefinitionName"] == "Reader" and entry["scope"] == scope
    assert entry["principalName"] == uai["clientId"]  # a service principal is named by its app id
    assert az.json("role", "assignment", "list", "-g", rg, "--role", "Owner") == []
    by_assignee = az.run("role", "assignment", "list", "--assignee", uai["principalId"], "--all")
    assert "WARNING" not in by_assignee.stderr and [a["id"] for a in by_assignee.json()] == [made["id"]]

    az.run("role", "assignment", "delete", "--ids", made["id"])
    assert az.json("role", "assignment", "list", "-g", rg, "--role", "Reader") == []
    az.run("group", "delete", "-n", rg, "--yes")


def test_role_assignments_to_a_user_and_a_group(az: AzCli, platform: RunningPlatform) -> None:
    rg = group(az)
    scope = f"/subscriptions/{sub_id(platform)}/resourceGroups/{rg}"
    upn = f"{unique('az-user-')}@az.example"
    user = az.json(
        "ad",
        "user",
        "create",
        "--display-name",
        "Role User",
        "--user-principal-name",
        upn,
        "--password",
        "Az-Ro1e-Pa55word",
    )
    team = az.json("ad", "group", "create", "--display-name", unique("az-team-"), "--mail-nickname", unique("team"))
    # A user by UPN, a group by object id: az resolves the group (and checks the user) through getByIds.
    for assignee, object_id, kind in ((upn, user["id"], "User"), (team["id"], team["id"], "Group")):
        made = az.run("role", "assignment", "create", "--assignee", assignee, "--role", "Reader", "--scope", scope)
        assert "WARNING" not in made.stderr, made.stderr
        assert made.json()["principalId"] == object_id and made.json()["principalType"] == kind
    listed = az.json("role", "assignment", "list", "-g", rg, "--role", "Reader")
    names = {a["principalId"]: (a["principalType"], a["principalName"]) for a in listed}
    assert names[user["id"]] == ("User", upn)
    assert names[team["id"]] == ("Group", team["displayName"])
    az.run("group", "delete", "-n", rg, "--yes")


def test_key_vault_without_resource_group(az: AzCli, platform: RunningPlatform) -> None:
    rg = group(az)
    name = unique("azkv")
    vault = az.json("keyvault", "create", "-g", rg, "-n", name, "--enable-rbac-authorization", "false")
    assert vault["properties"]["vaultUri"].startswith(f"https://{name.lower()}.")
    # Without -g az finds the vault through /subscriptions/{s}/resources?$filter=resourceType … and name …
    shown = az.json("keyvault", "show", "-n", name)
    assert shown["id"] == vault["id"] and shown["resourceGroup"] == rg
    assert name in [v["name"] for v in az.json("keyvault", "list")]

    uai = az.json("identity", "create", "-g", rg, "-n", "az-kv-uai")
    policy = az.json(
        "keyvault", "set-policy", "-n", name, "--object-id", uai["principalId"], "--secret-permissions", "get", "list"
    )
    [granted] = [p for p in policy["properties"]["accessPolicies"] if p["objectId"] == uai["principalId"]]
    assert sorted(granted["permissions"]["secrets"]) == ["get", "list"]

    az.json("keyvault", "secret", "set", "--vault-name", name, "-n", "greeting", "--value", "hello")
    secret = az.json("keyvault", "secret", "show", "--vault-name", name, "-n", "greeting")
    assert secret["value"] == "hello" and secret["id"].startswith(f"https://{name.lower()}.")

    after = az.json("keyvault", "delete-policy", "-n", name, "--object-id", uai["principalId"])
    assert uai["principalId"] not in [p["objectId"] for p in after["properties"]["accessPolicies"]]
    az.run("group", "delete", "-n", rg, "--yes")


def test_template_deployments_with_the_seeds_templates(az: AzCli, platform: RunningPlatform, tmp_path: Path) -> None:
    rg = group(az)
    system_file, user_file = tmp_path / "system.json", tmp_path / "user.json"
    system_file.write_text(json.dumps(SYSTEM_TEMPLATE, indent=2))
    user_file.write_text(json.dumps(USER_TEMPLATE, indent=2))
    app = unique("az-dep-")

    valid = az.json(
        "deployment",
        "group",
        "validate",
        "-g",
        rg,
        "--template-file",
        str(system_file),
        "--parameters",
        f"appName={app}",
    )
    assert valid["properties"]["provisioningState"] == "Succeeded"

    done = az.json(
        "deployment", "group", "create", "-g", rg, "-n", "system", "--template-file", str(system_file),
        "--parameters", f"appName={app}",
    )  # fmt: skip
    assert done["properties"]["provisioningState"] == "Succeeded" and done["name"] == "system"
    assert done["properties"]["mode"] == "Incremental"
    principal = done["properties"]["outputs"]["principalId"]["value"]
    assert az.json("webapp", "identity", "show", "-g", rg, "-n", app)["principalId"] == principal
    [sp] = az.json("ad", "sp", "list", "--display-name", app)
    assert sp["id"] == principal

    shown = az.json("deployment", "group", "show", "-g", rg, "-n", "system")
    assert shown["id"] == done["id"] and shown["properties"]["outputs"] == done["properties"]["outputs"]
    operations = az.json("deployment", "operation", "group", "list", "-g", rg, "-n", "system")
    targets = sorted(o["properties"]["targetResource"]["resourceType"] for o in operations)
    assert targets == ["Microsoft.Web/serverfarms", "Microsoft.Web/sites"]
    assert {o["properties"]["provisioningState"] for o in operations} == {"Succeeded"}

    user_app, identity = unique("az-dep-"), unique("az-dep-uai-")
    user = az.json(
        "deployment", "group", "create", "-g", rg, "-n", "user", "--template-file", str(user_file),
        "--parameters", f"appName={user_app}", f"identityName={identity}",
    )  # fmt: skip
    assert user["properties"]["provisioningState"] == "Succeeded"
    uai = az.json("identity", "show", "-g", rg, "-n", identity)
    assert uai["id"] in az.json("webapp", "identity", "show", "-g", rg, "-n", user_app)["userAssignedIdentities"]

    assert sorted(d["name"] for d in az.json("deployment", "group", "list", "-g", rg)) == ["system", "user"]
    az.run("deployment", "group", "delete", "-g", rg, "-n", "system")
    assert [d["name"] for d in az.json("deployment", "group", "list", "-g", rg)] == ["user"]
    # Deleting the deployment record leaves what it deployed, as in Azure.
    assert az.json("webapp", "show", "-g", rg, "-n", app)["name"] == app
    az.run("group", "delete", "-n", rg, "--yes")


def _az_in_workload(platform: RunningPlatform, target: list[str], folder: Path, rg: str) -> dict[str, Any]:
    """`az login --identity` then `az group show` inside a workload the agent runs; returns what they printed."""
    az_path = require_az()
    config = folder / "azure"
    config.mkdir()
    config.chmod(0o777)
    script = (
        f"{setup_script(az_path, platform.endpoints['arm'])} && "
        f"{az_path} login --identity -o json > {folder}/login.json && "
        f"{az_path} group show -n {rg} -o json > {folder}/group.json"
    )
    env = {**os.environ, **az_environment(config, platform.endpoints["ca_bundle"])}
    # The agent sets the CA variables for the workload itself (its own bundle); az's config lives with it.
    env.pop("REQUESTS_CA_BUNDLE", None)
    command = [*probe_command(platform.home, target, [])[:-3], "sh", "-c", script]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr + done.stdout
    return {
        "login": json.loads((folder / "login.json").read_text()),
        "group": json.loads((folder / "group.json").read_text()),
    }


def test_login_identity_inside_webapp_and_vm_run(az: AzCli, platform: RunningPlatform, workload_folder: Path) -> None:
    rg = group(az)
    home = platform.home
    app = unique("az-run-")
    cli_json(home, "appservice", "plan", "create", "-g", rg, "-n", "az-run-plan")
    made = cli_json(home, "webapp", "create", "-g", rg, "-p", "az-run-plan", "-n", app)
    assert made["name"] == app
    app_identity = az.json("webapp", "identity", "assign", "-g", rg, "-n", app)
    vm = cli_json(home, "vm", "create", "-g", rg, "-n", "az-run-vm", "--assign-identity", "[system]")
    vm_identity = az.json("vm", "identity", "show", "-g", rg, "-n", "az-run-vm")
    assert vm_identity["type"] == "SystemAssigned" and vm_identity["principalId"] == vm["identity"]["principalId"]
    scope = f"/subscriptions/{sub_id(platform)}/resourceGroups/{rg}"
    for principal in (app_identity["principalId"], vm_identity["principalId"]):
        az.run("role", "assignment", "create", "--assignee-object-id", principal,
               "--assignee-principal-type", "ServicePrincipal", "--role", "Reader", "--scope", scope)  # fmt: skip

    for target, folder in (
        (["webapp", "run", "-g", rg, "-n", app], workload_folder / "webapp"),
        (["vm", "run", "-g", rg, "-n", "az-run-vm"], workload_folder / "vm"),
    ):
        folder.mkdir()
        folder.chmod(0o777)
        printed = _az_in_workload(platform, target, folder, rg)
        [account] = printed["login"]
        assert account["id"] == sub_id(platform) and account["tenantId"] == platform.tenant_id
        assert account["user"]["type"] == "servicePrincipal"
        assert account["user"]["assignedIdentityInfo"] == "MSI"
        assert printed["group"]["id"] == scope
    az.run("group", "delete", "-n", rg, "--yes")


def test_ad_app_redirect_uris(az: AzCli, platform: RunningPlatform) -> None:
    """`az ad app create|update` with redirect URIs and isFallbackPublicClient, as az sends them to Graph."""
    name = unique("az-redirect-")
    made = az.json(
        "ad", "app", "create", "--display-name", name,
        "--web-redirect-uris", "https://web.example/cb", "https://web.example/other",
        "--public-client-redirect-uris", "http://localhost", "--is-fallback-public-client", "true",
    )
    assert made["web"]["redirectUris"] == ["https://web.example/cb", "https://web.example/other"]
    assert made["publicClient"]["redirectUris"] == ["http://localhost"] and made["isFallbackPublicClient"] is True
    az.run("ad", "app", "update", "--id", made["appId"], "--web-redirect-uris", "https://web.example/new")
    shown = az.json("ad", "app", "show", "--id", made["appId"])
    assert shown["web"]["redirectUris"] == ["https://web.example/new"]
    assert shown["publicClient"]["redirectUris"] == ["http://localhost"]
    refused = az.run("ad", "app", "update", "--id", made["appId"], "--web-redirect-uris", "http://web.example/x",
                     check=False)
    assert refused.returncode != 0 and "redirectUris" in refused.stderr
    assert az.json("ad", "app", "show", "--id", made["appId"])["web"]["redirectUris"] == ["https://web.example/new"]
    az.run("ad", "app", "delete", "--id", made["appId"])


def test_subscription_scope_deployment(az: AzCli, platform: RunningPlatform, tmp_path: Path) -> None:
    from tests.contract.test_deployments import sub_template

    rg, name = unique("az-subdep-rg-"), unique("az-subdep-")
    template = tmp_path / "sub.json"
    template.write_text(json.dumps(sub_template(rg), indent=2))
    valid = az.json("deployment", "sub", "validate", "-l", "westeurope", "-n", name, "--template-file", str(template))
    assert valid["properties"]["provisioningState"] == "Succeeded"
    done = az.json("deployment", "sub", "create", "-l", "westeurope", "-n", name, "--template-file", str(template))
    assert done["properties"]["provisioningState"] == "Succeeded" and done["location"] == "westeurope"
    assert done["properties"]["outputs"]["groupId"]["value"] == f"/subscriptions/{sub_id(platform)}/resourceGroups/{rg}"
    assert az.json("group", "show", "-n", rg)["location"] == "westeurope"
    assert az.json("deployment", "sub", "show", "-n", name)["id"] == done["id"]
    assert name in [d["name"] for d in az.json("deployment", "sub", "list")]
    [op] = az.json("deployment", "operation", "sub", "list", "-n", name)
    assert op["properties"]["targetResource"]["resourceType"] == "Microsoft.Resources/resourceGroups"
    az.run("deployment", "sub", "delete", "-n", name)
    assert name not in [d["name"] for d in az.json("deployment", "sub", "list")]
    az.run("group", "delete", "-n", rg, "--yes")
