"""Template deployments against a real platform: the seeds' two templates through `lanyard deployment group
create` and through azure-mgmt-resource's deployments client, identity blocks, outputs, and ARM's errors."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.mgmt.resource.deployments import DeploymentsMgmtClient
from azure.mgmt.resource.resources import ResourceManagementClient

from tests.conftest import RunningPlatform, cli_json, run_cli

SCHEMA = "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#"
PRINCIPAL_OUTPUT = (
    "[reference(resourceId('Microsoft.Web/sites', variables('appName')), '2018-02-01', 'Full').identity.principalId]"
)

# Seed (a): a web app with a system-assigned identity, and its plan, ordered by dependsOn.
SYSTEM_TEMPLATE: dict[str, Any] = {
    "$schema": SCHEMA,
    "contentVersion": "1.0.0.0",
    "parameters": {
        "appName": {"type": "string"},
        "location": {"type": "string", "defaultValue": "[resourceGroup().location]"},
    },
    "variables": {"appName": "[parameters('appName')]", "planName": "[concat(parameters('appName'), '-plan')]"},
    "resources": [
        {
            "type": "Microsoft.Web/sites",
            "apiVersion": "2022-03-01",
            "name": "[variables('appName')]",
            "location": "[parameters('location')]",
            "identity": {"type": "SystemAssigned"},
            "dependsOn": ["[resourceId('Microsoft.Web/serverfarms', variables('planName'))]"],
            "properties": {"serverFarmId": "[resourceId('Microsoft.Web/serverfarms', variables('planName'))]"},
        },
        {
            "type": "Microsoft.Web/serverfarms",
            "apiVersion": "2022-03-01",
            "name": "[variables('planName')]",
            "location": "[parameters('location')]",
            "sku": {"name": "B1"},
        },
    ],
    "outputs": {"principalId": {"type": "string", "value": PRINCIPAL_OUTPUT}},
}

# Seed (b): a user-assigned identity and a web app that uses it.
USER_TEMPLATE: dict[str, Any] = {
    "$schema": SCHEMA,
    "contentVersion": "1.0.0.0",
    "parameters": {"appName": {"type": "string"}, "identityName": {"type": "string"}},
    "variables": {
        "appName": "[parameters('appName')]",
        "planName": "[concat(parameters('appName'), '-plan')]",
        "identityId": "[resourceId('Microsoft.ManagedIdentity/userAssignedIdentities', parameters('identityName'))]",
    },
    "resources": [
        {
            "type": "Microsoft.ManagedIdentity/userAssignedIdentities",
            "apiVersion": "2023-01-31",
            "name": "[parameters('identityName')]",
            "location": "[resourceGroup().location]",
        },
        {
            "type": "Microsoft.Web/serverfarms",
            "apiVersion": "2022-03-01",
            "name": "[variables('planName')]",
            "location": "[resourceGroup().location]",
            "sku": {"name": "B1"},
        },
        {
            "type": "Microsoft.Web/sites",
            "apiVersion": "2022-03-01",
            "name": "[variables('appName')]",
            "location": "[resourceGroup().location]",
            "identity": {"type": "UserAssigned", "userAssignedIdentities": {"[variables('identityId')]": {}}},
            "dependsOn": [
                "[variables('identityId')]",
                "[resourceId('Microsoft.Web/serverfarms', variables('planName'))]",
            ],
            "properties": {"serverFarmId": "[resourceId('Microsoft.Web/serverfarms', variables('planName'))]"},
        },
    ],
    "outputs": {
        "identityPrincipalId": {
            "type": "string",
            "value": "[reference(variables('identityId'), '2023-01-31').principalId]",
        },
        "attached": {
            "type": "object",
            "value": "[reference(resourceId('Microsoft.Web/sites', variables('appName')), '2018-02-01', "
            "'Full').identity.userAssignedIdentities]",
        },
    },
}


@pytest.fixture(scope="module")
def dep(platform: RunningPlatform, admin_credential: Any) -> DeploymentsMgmtClient:
    return DeploymentsMgmtClient(
        admin_credential, platform.endpoints["subscription_id"], base_url=platform.endpoints["arm"]
    )


def write(tmp_path: Path, name: str, doc: Any) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return str(path)


def lan(platform: RunningPlatform, *args: str) -> Any:
    return cli_json(platform.home, *args)


@pytest.fixture(scope="module")
def resources(platform: RunningPlatform, admin_credential: Any) -> ResourceManagementClient:
    return ResourceManagementClient(
        admin_credential, platform.endpoints["subscription_id"], base_url=platform.endpoints["arm"]
    )


def test_system_assigned_seed_through_the_cli(platform: RunningPlatform, tmp_path: Path) -> None:
    lan(platform, "group", "create", "-n", "tpl-sys", "-l", "westus")
    template = write(tmp_path, "webapp.json", SYSTEM_TEMPLATE)
    result = run_cli(
        platform.home,
        "deployment",
        "group",
        "create",
        "-g",
        "tpl-sys",
        "--template-file",
        template,
        "--parameters",
        "appName=tpl-app",
    )
    deployment = json.loads(result.stdout)
    assert deployment["name"] == "webapp" and deployment["properties"]["provisioningState"] == "Succeeded"
    # Progress lines name each resource, the plan first because the site depends on it.
    lines = [line.split() for line in result.stderr.splitlines() if line.startswith("  ")]
    assert lines == [
        ["Succeeded", "Microsoft.Web/serverfarms/tpl-app-plan"],
        ["Succeeded", "Microsoft.Web/sites/tpl-app"],
    ]
    shown = lan(platform, "webapp", "identity", "show", "-g", "tpl-sys", "-n", "tpl-app")
    assert shown["type"] == "SystemAssigned"
    assert deployment["properties"]["outputs"]["principalId"] == {"type": "String", "value": shown["principalId"]}
    sp = lan(platform, "ad", "sp", "show", "--id", shown["principalId"])
    assert sp["servicePrincipalType"] == "ManagedIdentity"
    site = lan(platform, "webapp", "show", "-g", "tpl-sys", "-n", "tpl-app")
    assert site["serverFarmId"].lower().endswith("/serverfarms/tpl-app-plan")

    assert [d["name"] for d in lan(platform, "deployment", "group", "list", "-g", "tpl-sys")] == ["webapp"]
    again = lan(platform, "deployment", "group", "show", "-g", "tpl-sys", "-n", "webapp")
    assert again["properties"]["outputs"] == deployment["properties"]["outputs"]
    assert again["properties"]["parameters"]["appName"] == {"type": "String", "value": "tpl-app"}

    # Redeploying with "identity": {"type": "None"} removes the identity and its principal.
    without = copy.deepcopy(SYSTEM_TEMPLATE)
    without["resources"][0]["identity"] = {"type": "None"}
    del without["outputs"]
    run_cli(
        platform.home,
        "deployment",
        "group",
        "create",
        "-g",
        "tpl-sys",
        "-n",
        "webapp",
        "--template-file",
        write(tmp_path, "none.json", without),
        "--parameters",
        "appName=tpl-app",
    )
    assert lan(platform, "webapp", "identity", "show", "-g", "tpl-sys", "-n", "tpl-app") is None
    gone = run_cli(platform.home, "ad", "sp", "show", "--id", shown["principalId"], check=False)
    assert gone.returncode != 0 and "ResourceNotFound" in gone.stderr

    # Deleting the deployment deletes its record, not what it deployed.
    run_cli(platform.home, "deployment", "group", "delete", "-g", "tpl-sys", "-n", "webapp")
    assert lan(platform, "deployment", "group", "list", "-g", "tpl-sys") == []
    assert lan(platform, "webapp", "show", "-g", "tpl-sys", "-n", "tpl-app")["name"] == "tpl-app"
    run_cli(platform.home, "group", "delete", "-n", "tpl-sys", "--yes")


def test_user_assigned_seed_through_the_cli_with_a_parameters_file(platform: RunningPlatform, tmp_path: Path) -> None:
    lan(platform, "group", "create", "-n", "tpl-uai", "-l", "westus")
    params = write(
        tmp_path,
        "params.json",
        {"$schema": SCHEMA, "contentVersion": "1.0.0.0", "parameters": {"identityName": {"value": "tpl-id"}}},
    )
    deployment = lan(
        platform,
        "deployment",
        "group",
        "create",
        "-g",
        "tpl-uai",
        "-n",
        "uai",
        "--template-file",
        write(tmp_path, "uai.json", USER_TEMPLATE),
        "--parameters",
        f"@{params}",
        "--parameters",
        "appName=tpl-uai-app",
    )
    identity = lan(platform, "identity", "show", "-g", "tpl-uai", "-n", "tpl-id")
    outputs = deployment["properties"]["outputs"]
    assert outputs["identityPrincipalId"]["value"] == identity["principalId"]
    assert list(outputs["attached"]["value"]) == [identity["id"]]
    shown = lan(platform, "webapp", "identity", "show", "-g", "tpl-uai", "-n", "tpl-uai-app")
    assert shown["type"] == "UserAssigned" and list(shown["userAssignedIdentities"]) == [identity["id"]]
    assert shown["userAssignedIdentities"][identity["id"]]["principalId"] == identity["principalId"]
    run_cli(platform.home, "group", "delete", "-n", "tpl-uai", "--yes")


def test_the_sdk_polls_a_deployment_to_completion(
    platform: RunningPlatform, resources: ResourceManagementClient, dep: DeploymentsMgmtClient
) -> None:
    resources.resource_groups.create_or_update("tpl-sdk", {"location": "westus"})
    body = {
        "properties": {
            "mode": "Incremental",
            "template": SYSTEM_TEMPLATE,
            "parameters": {"appName": {"value": "tpl-sdk-app"}},
        }
    }
    poller = dep.deployments.begin_create_or_update("tpl-sdk", "sdk-dep", body)
    result = poller.result()
    assert poller.status() == "Succeeded" and result.properties.provisioning_state == "Succeeded"
    principal = result.properties.outputs["principalId"]["value"]
    shown = lan(platform, "webapp", "identity", "show", "-g", "tpl-sdk", "-n", "tpl-sdk-app")
    assert principal == shown["principalId"]
    assert [d.name for d in dep.deployments.list_by_resource_group("tpl-sdk")] == ["sdk-dep"]
    ops = list(dep.deployment_operations.list("tpl-sdk", "sdk-dep"))
    assert [o.properties.target_resource.resource_name for o in ops] == ["tpl-sdk-app-plan", "tpl-sdk-app"]
    assert {o.properties.provisioning_state for o in ops} == {"Succeeded"}
    # Deployments are not resources of the group.
    assert "Microsoft.Resources/deployments" not in {
        r.type for r in resources.resources.list_by_resource_group("tpl-sdk")
    }
    assert dep.deployments.check_existence("tpl-sdk", "sdk-dep") is True
    assert dep.deployments.check_existence("tpl-sdk", "never-made") is False
    exported = dep.deployments.export_template("tpl-sdk", "sdk-dep")
    assert exported.template["resources"] == SYSTEM_TEMPLATE["resources"]
    validated = dep.deployments.begin_validate("tpl-sdk", "sdk-check", body).result()
    assert validated.error is None
    dep.deployments.begin_delete("tpl-sdk", "sdk-dep").result()
    assert list(dep.deployments.list_by_resource_group("tpl-sdk")) == []
    resources.resource_groups.begin_delete("tpl-sdk").result()


def validation_error(dep: DeploymentsMgmtClient, body: dict[str, Any]) -> str | None:
    """Validate answers 400 with the error, which the SDK either raises or returns, by version."""
    try:
        result = dep.deployments.begin_validate("tpl-bad", "bad", body).result()
    except HttpResponseError as exc:
        return str(_error(exc)["code"])
    return None if result.error is None else str(result.error.code)


def _error(exc: HttpResponseError) -> dict[str, Any]:
    assert exc.response is not None
    return dict(exc.response.json()["error"])


def test_bad_templates_get_arms_errors(
    platform: RunningPlatform, resources: ResourceManagementClient, dep: DeploymentsMgmtClient
) -> None:
    resources.resource_groups.create_or_update("tpl-bad", {"location": "westus"})
    site = SYSTEM_TEMPLATE["resources"][0]
    cases: list[tuple[dict[str, Any], dict[str, Any], str]] = [
        ({"$schema": SCHEMA, "contentVersion": "1.0.0.0"}, {}, "properties.template.resources"),
        (
            {**SYSTEM_TEMPLATE, "outputs": {"x": {"type": "string", "value": "[nosuch('a')]"}}},
            {"appName": {"value": "a"}},
            "",
        ),
        (SYSTEM_TEMPLATE, {"appName": {"value": 5}}, "properties.template.parameters.appName"),
        (SYSTEM_TEMPLATE, {}, "properties.template.parameters.appName"),
        (
            {
                **SYSTEM_TEMPLATE,
                "resources": [
                    {**site, "dependsOn": ["other"]},
                    {**site, "name": "other", "dependsOn": ["[variables('appName')]"]},
                ],
            },
            {"appName": {"value": "a"}},
            "dependsOn",
        ),
    ]
    for template, parameters, path in cases:
        body = {"properties": {"mode": "Incremental", "template": template, "parameters": parameters}}
        with pytest.raises(HttpResponseError) as info:
            dep.deployments.begin_create_or_update("tpl-bad", "bad", body)
        assert info.value.status_code == 400
        error = _error(info.value)
        assert error["code"] == "InvalidTemplate", error
        assert error["message"].startswith("Deployment template validation failed:")
        assert path in error["additionalInfo"][0]["info"]["path"], error
        assert validation_error(dep, body) == "InvalidTemplate"
    cycle = _error(info.value)
    assert "Circular dependency detected on resource" in cycle["message"]
    assert list(dep.deployments.list_by_resource_group("tpl-bad")) == []

    # A resource that fails mid-deployment: the earlier ones stay deployed, the deployment is Failed with details.
    failing = {
        "$schema": SCHEMA,
        "contentVersion": "1.0.0.0",
        "resources": [
            {"type": "Microsoft.ManagedIdentity/userAssignedIdentities", "apiVersion": "2023-01-31", "name": "kept"},
            {
                "type": "Microsoft.Web/sites",
                "apiVersion": "2022-03-01",
                "name": "broken",
                "dependsOn": ["kept"],
                "properties": {"serverFarmId": "[resourceId('Microsoft.Web/serverfarms', 'missing-plan')]"},
            },
            {
                "type": "Microsoft.Web/sites/slots",
                "apiVersion": "2022-03-01",
                "name": "broken/stage",
                "dependsOn": ["broken"],
            },
        ],
    }
    poller = dep.deployments.begin_create_or_update(
        "tpl-bad", "fails", {"properties": {"mode": "Incremental", "template": failing}}
    )
    with pytest.raises(HttpResponseError) as failed:
        poller.result()
    assert "DeploymentFailed" in str(failed.value)
    record = dep.deployments.get("tpl-bad", "fails")
    assert record.properties.provisioning_state == "Failed"
    assert record.properties.error.code == "DeploymentFailed"
    assert [d.code for d in record.properties.error.details] == ["ServerFarmNotFound"]
    ops = {
        o.properties.target_resource.resource_name: o.properties
        for o in dep.deployment_operations.list("tpl-bad", "fails")
    }
    assert set(ops) == {"kept", "broken"}  # the slot depending on the failure never started
    assert ops["kept"].provisioning_state == "Succeeded" and ops["broken"].provisioning_state == "Failed"
    assert lan(platform, "identity", "show", "-g", "tpl-bad", "-n", "kept")["name"] == "kept"

    # The CLI reports the same failure and exits non-zero.
    out = run_cli(platform.home, "deployment", "group", "show", "-g", "tpl-bad", "-n", "missing", check=False)
    assert out.returncode != 0 and "DeploymentNotFound" in out.stderr
    resources.resource_groups.begin_delete("tpl-bad").result()


def test_cli_reports_an_invalid_template(platform: RunningPlatform, tmp_path: Path) -> None:
    lan(platform, "group", "create", "-n", "tpl-cli-bad", "-l", "westus")
    bad = write(tmp_path, "bad.json", {**SYSTEM_TEMPLATE, "variables": {"appName": "[toLower(1)]"}})
    out = run_cli(
        platform.home,
        "deployment",
        "group",
        "create",
        "-g",
        "tpl-cli-bad",
        "--template-file",
        bad,
        "--parameters",
        "appName=x",
        check=False,
    )
    assert out.returncode != 0 and "InvalidTemplate" in out.stderr and "variables.appName" in out.stderr
    run_cli(platform.home, "group", "delete", "-n", "tpl-cli-bad", "--yes")


READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
ROLE_TEMPLATE: dict[str, Any] = {
    "$schema": SCHEMA,
    "contentVersion": "1.0.0.0",
    "variables": {
        "siteId": "[resourceId('Microsoft.Web/sites', 'tpl-role-app')]",
        "reader": f"[subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '{READER}')]",
    },
    "resources": [
        {
            "type": "Microsoft.Web/sites",
            "apiVersion": "2022-03-01",
            "name": "tpl-role-app",
            "identity": {"type": "SystemAssigned"},
        },
        {
            "type": "Microsoft.Authorization/roleAssignments",
            "apiVersion": "2022-04-01",
            "name": "[guid(variables('siteId'), 'reader')]",
            "scope": "[variables('siteId')]",
            "dependsOn": ["[variables('siteId')]"],
            "properties": {
                "roleDefinitionId": "[variables('reader')]",
                "principalId": "[reference(variables('siteId'), '2022-03-01', 'Full').identity.principalId]",
                "principalType": "ServicePrincipal",
            },
        },
    ],
}


def test_role_assignment_for_a_deployed_identity(platform: RunningPlatform, tmp_path: Path) -> None:
    lan(platform, "group", "create", "-n", "tpl-role", "-l", "westus")
    deployment = lan(
        platform,
        "deployment",
        "group",
        "create",
        "-g",
        "tpl-role",
        "--template-file",
        write(tmp_path, "role.json", ROLE_TEMPLATE),
    )
    assert deployment["properties"]["provisioningState"] == "Succeeded"
    site = lan(platform, "webapp", "show", "-g", "tpl-role", "-n", "tpl-role-app")
    principal = site["identity"]["principalId"]
    found = lan(platform, "role", "assignment", "list", "--scope", site["id"])
    mine = [a for a in found if a["principalId"] == principal]
    assert len(mine) == 1 and mine[0]["roleDefinitionId"].endswith(READER)
    assert mine[0]["scope"].lower() == site["id"].lower()
    # Deploying the same template again is idempotent: the assignment's guid() name is stable.
    again = lan(
        platform,
        "deployment",
        "group",
        "create",
        "-g",
        "tpl-role",
        "--template-file",
        write(tmp_path, "role.json", ROLE_TEMPLATE),
    )
    assert again["properties"]["provisioningState"] == "Succeeded"
    run_cli(platform.home, "group", "delete", "-n", "tpl-role", "--yes")


def test_requests_arm_refuses_are_never_500(platform: RunningPlatform, admin_credential: Any) -> None:
    import ssl

    import httpx

    token = admin_credential.get_token("https://management.azure.com/.default").token
    sub = platform.endpoints["subscription_id"]
    base = platform.endpoints["arm"].rstrip("/")
    lan(platform, "group", "create", "-n", "tpl-raw", "-l", "westus")
    group = f"{base}/subscriptions/{sub}/resourcegroups/tpl-raw/providers/Microsoft.Resources/deployments"
    template = {"$schema": SCHEMA, "contentVersion": "1.0.0.0", "resources": []}
    cases: list[tuple[str, str, Any, int, str]] = [
        ("PUT", f"{group}/d1", [], 400, "InvalidRequestContent"),
        (
            "PUT",
            f"{group}/d1",
            {"properties": {"template": template, "mode": "Complete"}},
            400,
            "InvalidDeploymentMode",
        ),
        ("PUT", f"{group}/d1", {"properties": {"template": "[concat('a')]"}}, 400, "InvalidTemplate"),
        ("PUT", f"{group}/d1", {"properties": {"template": template, "parameters": []}}, 400, "InvalidTemplate"),
        (
            "PUT",
            f"{base}/subscriptions/{sub}/providers/Microsoft.Resources/deployments/d1",
            {"properties": {"template": template}},
            400,
            "LocationRequired",
        ),
        (
            "PUT",
            f"{base}/subscriptions/{sub}/resourcegroups/nope/providers/Microsoft.Resources/deployments/d1",
            {"properties": {"template": template}},
            404,
            "ResourceGroupNotFound",
        ),
        ("GET", f"{group}/missing", None, 404, "DeploymentNotFound"),
        ("GET", f"{group}/missing/operationStatuses/abc", None, 404, "DeploymentNotFound"),
        ("POST", f"{group}/missing/cancel", None, 404, "DeploymentNotFound"),
        ("PATCH", f"{group}/d1", {}, 405, "MethodNotAllowed"),
    ]
    with httpx.Client(verify=ssl.create_default_context(cafile=platform.endpoints["ca_bundle"]), timeout=30) as http:
        for method, url, body, status, code in cases:
            response = http.request(
                method,
                url,
                params={"api-version": "2024-11-01"},
                json=body,
                headers={"Authorization": f"Bearer {token}"},
            )
            assert (response.status_code, response.json()["error"]["code"]) == (status, code), (method, url)
        put = http.put(
            f"{group}/empty",
            params={"api-version": "2024-11-01"},
            json={"properties": {"template": template}},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert put.status_code == 201 and put.json()["properties"]["provisioningState"] == "Running"
        status = http.get(put.headers["Azure-AsyncOperation"], headers={"Authorization": f"Bearer {token}"})
        assert status.json()["status"] == "Succeeded"
        cancel = http.post(
            f"{group}/empty/cancel", params={"api-version": "2024-11-01"}, headers={"Authorization": f"Bearer {token}"}
        )
        assert (cancel.status_code, cancel.json()["error"]["code"]) == (409, "DeploymentCannotBeCancelled")
    run_cli(platform.home, "group", "delete", "-n", "tpl-raw", "--yes")


def test_secure_parameters_are_used_but_never_stored_or_shown(platform: RunningPlatform, tmp_path: Path) -> None:
    secret = "tpl-secret-" + uuid.uuid4().hex
    template = {
        "$schema": SCHEMA,
        "contentVersion": "1.0.0.0",
        "parameters": {"pw": {"type": "securestring"}},
        "resources": [
            {
                "type": "Microsoft.ManagedIdentity/userAssignedIdentities",
                "apiVersion": "2023-01-31",
                "name": "tpl-secure-id",
                "condition": "[equals(length(parameters('pw')), 43)]",
            }
        ],
        "outputs": {"echo": {"type": "securestring", "value": "[parameters('pw')]"}},
    }
    lan(platform, "group", "create", "-n", "tpl-secure", "-l", "westus")
    result = run_cli(
        platform.home,
        "deployment",
        "group",
        "create",
        "-g",
        "tpl-secure",
        "-n",
        "secure",
        "--template-file",
        write(tmp_path, "secure.json", template),
        "--parameters",
        f"pw={secret}",
    )
    deployment = json.loads(result.stdout)
    assert deployment["properties"]["parameters"] == {"pw": {"type": "SecureString"}}
    assert deployment["properties"]["outputs"] == {}
    # The parameter was used: its length made the condition true.
    assert lan(platform, "identity", "show", "-g", "tpl-secure", "-n", "tpl-secure-id")["name"] == "tpl-secure-id"
    shown = run_cli(platform.home, "deployment", "group", "list", "-g", "tpl-secure").stdout
    assert secret not in result.stdout + result.stderr + shown
    sinks = [
        p for p in platform.home.rglob("*") if p.is_file() and (".log" in p.name or p.name.startswith("lanyard.db"))
    ]
    assert sinks and not [p.name for p in sinks if secret.encode() in p.read_bytes()]
    run_cli(platform.home, "group", "delete", "-n", "tpl-secure", "--yes")


SUB_SCHEMA = "https://schema.management.azure.com/schemas/2018-05-01/subscriptionDeploymentTemplate.json#"


def sub_template(group: str) -> dict[str, Any]:
    return {
        "$schema": SUB_SCHEMA,
        "contentVersion": "1.0.0.0",
        "parameters": {"groupName": {"type": "string", "defaultValue": group}},
        "resources": [
            {
                "type": "Microsoft.Resources/resourceGroups",
                "apiVersion": "2022-09-01",
                "name": "[parameters('groupName')]",
                "location": "[deployment().location]",
                "tags": {"made-by": "[deployment().name]"},
            }
        ],
        "outputs": {
            "groupId": {
                "type": "string",
                "value": "[subscriptionResourceId('Microsoft.Resources/resourceGroups', parameters('groupName'))]",
            },
            "tenant": {"type": "string", "value": "[subscription().tenantId]"},
        },
    }


def test_subscription_scope_deployment_creates_a_group(
    platform: RunningPlatform, resources: ResourceManagementClient, dep: DeploymentsMgmtClient
) -> None:
    group = f"tpl-sub-{uuid.uuid4().hex[:6]}"
    name = f"sub-{uuid.uuid4().hex[:6]}"
    body = {"location": "westus", "properties": {"mode": "Incremental", "template": sub_template(group)}}
    validated = dep.deployments.begin_validate_at_subscription_scope(name, body).result()
    assert validated.error is None
    result = dep.deployments.begin_create_or_update_at_subscription_scope(name, body).result()
    sub = platform.endpoints["subscription_id"]
    assert result.properties.provisioning_state == "Succeeded"
    assert result.id == f"/subscriptions/{sub}/providers/Microsoft.Resources/deployments/{name}"
    assert result.location == "westus"
    assert result.properties.outputs["groupId"]["value"] == f"/subscriptions/{sub}/resourceGroups/{group}"
    assert result.properties.outputs["tenant"]["value"] == platform.tenant_id
    made = resources.resource_groups.get(group)
    assert made.location == "westus" and made.tags == {"made-by": name}
    ops = list(dep.deployment_operations.list_at_subscription_scope(name))
    assert [o.properties.target_resource.resource_type for o in ops] == ["Microsoft.Resources/resourceGroups"]
    assert name in [d.name for d in dep.deployments.list_at_subscription_scope()]
    assert dep.deployments.get_at_subscription_scope(name).properties.outputs == result.properties.outputs
    assert (
        dep.deployments.export_template_at_subscription_scope(name).template["resources"]
        == body["properties"]["template"]["resources"]
    )
    dep.deployments.begin_delete_at_subscription_scope(name).result()
    assert name not in [d.name for d in dep.deployments.list_at_subscription_scope()]
    # The record only: the group it made stays, as in ARM.
    assert resources.resource_groups.get(group).name == group
    resources.resource_groups.begin_delete(group).result()


def test_subscription_scope_errors(platform: RunningPlatform, dep: DeploymentsMgmtClient) -> None:
    def refused(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with pytest.raises(HttpResponseError) as caught:
            dep.deployments.begin_create_or_update_at_subscription_scope("sub-bad", body).result()
        assert caught.value.status_code is not None
        return caught.value.status_code, _error(caught.value)

    template = sub_template("tpl-sub-never")
    status, error = refused({"properties": {"mode": "Incremental", "template": template}})
    assert (status, error["code"]) == (400, "LocationRequired")
    # resourceGroup() is refused where ARM refuses it: there is no group at subscription scope.
    uses_group = {**template, "parameters": {"groupName": {"type": "string", "defaultValue": "[resourceGroup().name]"}}}
    status, error = refused({"location": "westus", "properties": {"mode": "Incremental", "template": uses_group}})
    assert (status, error["code"]) == (400, "InvalidTemplate") and "resourceGroup" in error["message"]
    site = {**SYSTEM_TEMPLATE["resources"][1], "location": "westus", "name": "x"}
    wrong = {**template, "resources": [site], "outputs": {}}
    status, error = refused({"location": "westus", "properties": {"mode": "Incremental", "template": wrong}})
    assert (status, error["code"]) == (400, "InvalidTemplate") and "subscription scope" in error["message"]
    assert error["additionalInfo"][0]["info"]["path"] == "properties.template.resources[0].type"
    assert "sub-bad" not in [d.name for d in dep.deployments.list_at_subscription_scope()]


def test_subscription_scope_through_the_cli(platform: RunningPlatform, tmp_path: Path) -> None:
    group, name = f"tpl-subcli-{uuid.uuid4().hex[:6]}", f"subcli-{uuid.uuid4().hex[:6]}"
    template = write(tmp_path, "sub.json", sub_template(group))
    result = run_cli(
        platform.home, "deployment", "sub", "create", "-l", "westus", "-n", name, "--template-file", template
    )
    assert result.returncode == 0, result.stderr
    assert "Succeeded  Microsoft.Resources/resourceGroups/" + group in result.stderr
    assert json.loads(result.stdout)["properties"]["provisioningState"] == "Succeeded"
    assert lan(platform, "deployment", "sub", "show", "-n", name)["location"] == "westus"
    assert name in [d["name"] for d in lan(platform, "deployment", "sub", "list")]
    assert lan(platform, "group", "show", "-n", group)["location"] == "westus"
    run_cli(platform.home, "deployment", "sub", "delete", "-n", name)
    assert name not in [d["name"] for d in lan(platform, "deployment", "sub", "list")]
    run_cli(platform.home, "group", "delete", "-n", group, "--yes")


def nested_template(group: str, identity: str, scope: str = "inner") -> dict[str, Any]:
    """A subscription template: a group, then a nested deployment into it that makes an identity."""
    inner = {
        "$schema": SCHEMA,
        "contentVersion": "1.0.0.0",
        "parameters": {"identityName": {"type": "string"}},
        "resources": [
            {
                "type": "Microsoft.ManagedIdentity/userAssignedIdentities",
                "apiVersion": "2023-01-31",
                "name": "[parameters('identityName')]",
                "location": "[resourceGroup().location]",
            }
        ],
        "outputs": {
            "principalId": {
                "type": "string",
                "value": "[reference(resourceId('Microsoft.ManagedIdentity/userAssignedIdentities', "
                "parameters('identityName')), '2023-01-31').principalId]",
            }
        },
    }
    doc = sub_template(group)
    doc["resources"].append(
        {
            "type": "Microsoft.Resources/deployments",
            "apiVersion": "2022-09-01",
            "name": "inner-identity",
            "resourceGroup": "[parameters('groupName')]",
            "dependsOn": ["[subscriptionResourceId('Microsoft.Resources/resourceGroups', parameters('groupName'))]"],
            "properties": {
                "mode": "Incremental",
                "expressionEvaluationOptions": {"scope": scope},
                "parameters": {"identityName": {"value": identity}},
                "template": inner,
            },
        }
    )
    doc["outputs"]["principalId"] = {
        "type": "string",
        "value": "[reference('inner-identity').outputs.principalId.value]",
    }
    return doc


def test_nested_deployment_into_a_group_made_in_the_same_deployment(
    platform: RunningPlatform, resources: ResourceManagementClient, dep: DeploymentsMgmtClient
) -> None:
    group, name = f"tpl-nest-{uuid.uuid4().hex[:6]}", f"nest-{uuid.uuid4().hex[:6]}"
    body = {"location": "westus", "properties": {"mode": "Incremental", "template": nested_template(group, "nest-uai")}}
    result = dep.deployments.begin_create_or_update_at_subscription_scope(name, body).result()
    assert result.properties.provisioning_state == "Succeeded", result.properties.error
    uai = lan(platform, "identity", "show", "-g", group, "-n", "nest-uai")
    assert result.properties.outputs["principalId"]["value"] == uai["principalId"]
    # The nested deployment is a deployment of its own, in its group, with its operations.
    nested = dep.deployments.get(group, "inner-identity")
    assert nested.properties.provisioning_state == "Succeeded"
    assert nested.properties.outputs["principalId"]["value"] == uai["principalId"]
    [op] = list(dep.deployment_operations.list(group, "inner-identity"))
    assert op.properties.target_resource.resource_name == "nest-uai"
    parent_ops = list(dep.deployment_operations.list_at_subscription_scope(name))
    assert [o.properties.target_resource.resource_type for o in parent_ops] == [
        "Microsoft.Resources/resourceGroups",
        "Microsoft.Resources/deployments",
    ]
    resources.resource_groups.begin_delete(group).result()


def test_nested_deployment_errors(platform: RunningPlatform, dep: DeploymentsMgmtClient) -> None:
    # Into a group that does not exist: the nested deployment fails, and the parent names its error.
    template = nested_template("tpl-nest-missing", "x")
    template["resources"] = template["resources"][1:]
    template["resources"][0]["dependsOn"] = []
    template["outputs"] = {}
    body = {"location": "westus", "properties": {"mode": "Incremental", "template": template}}
    poller = dep.deployments.begin_create_or_update_at_subscription_scope("nest-missing", body)
    with pytest.raises(HttpResponseError):
        poller.result()
    failed = dep.deployments.get_at_subscription_scope("nest-missing").properties.error
    assert failed.code == "DeploymentFailed"
    assert [d.code for d in failed.details] == ["ResourceGroupNotFound"]

    def refused(doc: dict[str, Any]) -> dict[str, Any]:
        with pytest.raises(HttpResponseError) as caught:
            dep.deployments.begin_create_or_update_at_subscription_scope(
                "nest-bad", {"location": "westus", "properties": {"mode": "Incremental", "template": doc}}
            ).result()
        assert caught.value.status_code == 400
        return _error(caught.value)

    other = copy.deepcopy(template)
    other["resources"][0]["subscriptionId"] = str(uuid.uuid4())
    error = refused(other)
    assert error["code"] == "InvalidTemplate" and "subscription" in error["message"]
    assert error["additionalInfo"][0]["info"]["path"] == "properties.template.resources[0].subscriptionId"
    # A cycle across the boundary: the group waits for the nested deployment that waits for the group.
    cycle = nested_template("tpl-nest-cycle", "x")
    cycle["resources"][0]["dependsOn"] = ["inner-identity"]
    error = refused(cycle)
    assert error["code"] == "InvalidTemplate" and "Circular dependency" in error["message"]
