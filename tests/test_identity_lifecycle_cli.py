"""The seed scenarios through the CLI, checking after each step that the directory agrees."""

from __future__ import annotations

from typing import Any

from tests.conftest import RunningPlatform, cli_json, run_cli


def sp_exists(platform: RunningPlatform, object_id: str) -> bool:
    result = run_cli(platform.home, "ad", "sp", "show", "--id", object_id, check=False)
    return result.returncode == 0


def managed_principals(platform: RunningPlatform) -> dict[str, dict[str, Any]]:
    return {
        sp["id"]: sp
        for sp in cli_json(platform.home, "ad", "sp", "list")
        if sp["servicePrincipalType"] == "ManagedIdentity"
    }


def test_seed_scenarios(platform: RunningPlatform) -> None:
    home = platform.home

    def lan(*args: str) -> Any:
        return cli_json(home, *args)

    group = lan("group", "create", "-n", "life-rg", "-l", "westeurope")
    assert group["name"] == "life-rg" and group["properties"]["provisioningState"] == "Succeeded"
    lan("appservice", "plan", "create", "-g", "life-rg", "-n", "life-plan")
    app = lan("webapp", "create", "-g", "life-rg", "-n", "life-app", "-p", "life-plan")
    assert app["kind"] == "app" and app["serverFarmId"].endswith("/serverfarms/life-plan")
    assert lan("webapp", "identity", "show", "-g", "life-rg", "-n", "life-app") is None

    # 1. system-assigned on
    block = lan("webapp", "identity", "assign", "-g", "life-rg", "-n", "life-app")
    assert block["type"] == "SystemAssigned" and block["tenantId"] == platform.tenant_id
    system_id = block["principalId"]
    sp = lan("ad", "sp", "show", "--id", system_id)
    assert sp["displayName"] == "life-app" and sp["servicePrincipalType"] == "ManagedIdentity"
    assert app["id"] in sp["alternativeNames"]

    # 2. a user-assigned identity added
    uai = lan("identity", "create", "-g", "life-rg", "-n", "life-uai")
    assert {"id", "name", "principalId", "clientId", "tenantId"} <= set(uai)
    assert lan("ad", "sp", "show", "--id", uai["clientId"])["id"] == uai["principalId"]
    block = lan("webapp", "identity", "assign", "-g", "life-rg", "-n", "life-app", "--identities", "life-uai")
    assert block["type"] == "SystemAssigned, UserAssigned" and block["principalId"] == system_id
    assert block["userAssignedIdentities"] == {
        uai["id"]: {"principalId": uai["principalId"], "clientId": uai["clientId"]}
    }

    # 3. a second user-assigned identity and system, given together, as az allows
    uai2 = lan("identity", "create", "-g", "life-rg", "-n", "life-uai-2")
    block = lan(
        "webapp", "identity", "assign", "-g", "life-rg", "-n", "life-app", "--identities", "[system]", uai2["id"]
    )
    assert set(block["userAssignedIdentities"]) == {uai["id"], uai2["id"]}

    # 4. system removed: its principal is gone, the user-assigned ones stay
    block = lan("webapp", "identity", "remove", "-g", "life-rg", "-n", "life-app")
    assert block["type"] == "UserAssigned" and "principalId" not in block
    assert not sp_exists(platform, system_id)
    assert sp_exists(platform, uai["principalId"]) and sp_exists(platform, uai2["principalId"])
    block = lan("webapp", "identity", "remove", "-g", "life-rg", "-n", "life-app", "--identities", "life-uai-2")
    assert list(block["userAssignedIdentities"]) == [uai["id"]]

    # 5. a slot has its own identity
    slot = lan("webapp", "deployment", "slot", "create", "-g", "life-rg", "-n", "life-app", "--slot", "stage")
    assert slot["name"] == "life-app/stage"
    slot_block = lan("webapp", "identity", "assign", "-g", "life-rg", "-n", "life-app", "--slot", "stage")
    assert lan("ad", "sp", "show", "--id", slot_block["principalId"])["displayName"] == "life-app/slots/stage"

    # app settings, az-shaped
    settings = lan(
        "webapp", "config", "appsettings", "set", "-g", "life-rg", "-n", "life-app", "--settings", "DB=pg", "MODE=prod"
    )
    assert settings == [
        {"name": "DB", "slotSetting": False, "value": "pg"},
        {"name": "MODE", "slotSetting": False, "value": "prod"},
    ]
    assert lan("webapp", "config", "appsettings", "list", "-g", "life-rg", "-n", "life-app") == settings

    # a function app and a VM share the user-assigned identity
    func = lan("functionapp", "create", "-g", "life-rg", "-n", "life-func", "--assign-identity", "[system]", "life-uai")
    assert func["kind"] == "functionapp" and func["identity"]["type"] == "SystemAssigned, UserAssigned"
    vm = lan("vm", "create", "-g", "life-rg", "-n", "life-vm", "--tags", "lanyard.callerAttestation=header")
    assert vm["identity"]["type"] == "None"
    assert lan("vm", "show", "-g", "life-rg", "-n", "life-vm")["tags"] == {"lanyard.callerAttestation": "header"}
    assigned = lan("vm", "identity", "assign", "-g", "life-rg", "-n", "life-vm", "--identities", "[system]", "life-uai")
    assert assigned["systemAssignedIdentity"] and uai["id"] in assigned["userAssignedIdentities"]
    vm_system = assigned["systemAssignedIdentity"]

    # 6. deleting the app deletes its and its slot's principals, not the shared identity
    run_cli(home, "webapp", "delete", "-g", "life-rg", "-n", "life-app")
    assert not sp_exists(platform, slot_block["principalId"])
    assert sp_exists(platform, uai["principalId"])
    assert lan("vm", "identity", "show", "-g", "life-rg", "-n", "life-vm")["principalId"] == vm_system

    # deleting a user-assigned identity detaches it everywhere in the same step
    run_cli(home, "identity", "delete", "-g", "life-rg", "-n", "life-uai")
    assert not sp_exists(platform, uai["principalId"])
    assert lan("vm", "identity", "show", "-g", "life-rg", "-n", "life-vm")["type"] == "SystemAssigned"
    assert lan("functionapp", "identity", "show", "-g", "life-rg", "-n", "life-func")["type"] == "SystemAssigned"

    # 7. deleting the group (it needs --yes) removes everything, principals included
    refused = run_cli(home, "group", "delete", "-n", "life-rg", check=False)
    assert refused.returncode == 1 and "--yes" in refused.stderr
    before = set(managed_principals(platform))
    run_cli(home, "group", "delete", "-n", "life-rg", "--yes")
    after = set(managed_principals(platform))
    assert vm_system in before and vm_system not in after
    assert not any(
        app["id"].lower() in str(sp.get("alternativeNames", "")).lower() for sp in managed_principals(platform).values()
    )
    missing = run_cli(home, "group", "show", "-n", "life-rg", check=False)
    assert missing.returncode == 1 and "ResourceGroupNotFound" in missing.stderr


def test_role_assignment_commands(platform: RunningPlatform, secret_app: dict[str, Any]) -> None:
    home = platform.home
    group = cli_json(home, "group", "create", "-n", "role-rg", "-l", "westus")
    created = cli_json(
        home,
        "role",
        "assignment",
        "create",
        "--assignee",
        secret_app["appId"],
        "--role",
        "Reader",
        "--scope",
        group["id"],
    )
    assert created["scope"] == group["id"] and created["roleDefinitionId"].endswith(
        "acdd72a7-3385-48ef-bd42-f606fba81ae7"
    )
    listed = cli_json(home, "role", "assignment", "list", "--assignee", secret_app["appId"], "--scope", group["id"])
    assert [(a["roleDefinitionName"], a["scope"]) for a in listed] == [("Reader", group["id"])]
    duplicate = run_cli(
        home,
        "role",
        "assignment",
        "create",
        "--assignee",
        secret_app["appId"],
        "--role",
        "Reader",
        "--scope",
        group["id"],
        check=False,
    )
    assert duplicate.returncode == 1 and "RoleAssignmentExists" in duplicate.stderr
    run_cli(
        home,
        "role",
        "assignment",
        "delete",
        "--assignee",
        secret_app["appId"],
        "--role",
        "Reader",
        "--scope",
        group["id"],
    )
    assert cli_json(home, "role", "assignment", "list", "--assignee", secret_app["appId"], "--scope", group["id"]) == []
    names = [d["roleName"] for d in cli_json(home, "role", "definition", "list")]
    assert "Managed Identity Operator" in names and "Key Vault Secrets User" in names
    unknown = run_cli(
        home, "role", "assignment", "create", "--assignee", secret_app["appId"], "--role", "Nope", check=False
    )
    assert unknown.returncode == 1 and "Nope" in unknown.stderr
    run_cli(home, "group", "delete", "-n", "role-rg", "--yes")
