"""What a Contributor or Website Contributor must not be able to do (Azure's rules, and the rogue-host
attack): make join tokens (and so join a machine of theirs), switch a vault's permission model, or
place an app on a host when they may not assign the app's user-assigned identities."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import RunningPlatform, cli_json, secret_token

ARM = "https://management.azure.com"
KV_VERSION = "api-version=2023-07-01"


def token_for(platform: RunningPlatform, app: dict[str, Any]) -> str:
    return secret_token(platform, app["appId"], app["password"], ARM)


@pytest.fixture(scope="module")
def people(platform: RunningPlatform) -> dict[str, Any]:
    home = platform.home
    sub = f"/subscriptions/{platform.endpoints['subscription_id']}"
    cli_json(home, "group", "create", "-n", "perm-rg", "-l", "westus")
    contributor = cli_json(home, "ad", "sp", "create-for-rbac", "--name", "perm-contributor")
    cli_json(
        home,
        "role",
        "assignment",
        "create",
        "--assignee",
        contributor["appId"],
        "--role",
        "Contributor",
        "--scope",
        sub,
    )
    cli_json(home, "identity", "create", "-g", "perm-rg", "-n", "perm-uai")
    with_uai = cli_json(
        home, "webapp", "create", "-g", "perm-rg", "-n", "perm-uai-app", "--assign-identity", "perm-uai"
    )
    plain = cli_json(home, "webapp", "create", "-g", "perm-rg", "-n", "perm-plain-app")
    web = cli_json(home, "ad", "sp", "create-for-rbac", "--name", "perm-website-contributor")
    for site in (with_uai, plain):
        cli_json(
            home,
            "role",
            "assignment",
            "create",
            "--assignee",
            web["appId"],
            "--role",
            "Website Contributor",
            "--scope",
            site["id"],
        )
    return {"contributor": contributor, "web": web, "with_uai": with_uai["id"], "plain": plain["id"], "sub": sub}


def test_a_contributor_cannot_make_join_tokens(platform: RunningPlatform, people: dict[str, Any]) -> None:
    url = f"{platform.authority}/lanyard/v1/joinTokens"
    with platform.http() as http:
        refused = http.post(
            url, json={}, headers={"Authorization": f"Bearer {token_for(platform, people['contributor'])}"}
        )
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "AuthorizationFailed"
    assert cli_json(platform.home, "host", "join-token", "create")["token"]  # the Owner can


def test_switching_a_vault_to_rbac_takes_role_assignment_rights(
    platform: RunningPlatform, people: dict[str, Any]
) -> None:
    token = token_for(platform, people["contributor"])
    url = f"{platform.authority}{people['sub']}/resourceGroups/perm-rg/providers/Microsoft.KeyVault/vaults/permkv?{KV_VERSION}"
    props = {"tenantId": platform.tenant_id, "sku": {"family": "A", "name": "standard"}, "accessPolicies": []}
    with platform.http() as http:
        made = http.put(
            url, json={"location": "westus", "properties": props}, headers={"Authorization": f"Bearer {token}"}
        )
        assert made.status_code in (200, 201), made.text
        switch = {"location": "westus", "properties": {**props, "enableRbacAuthorization": True}}
        refused = http.put(url, json=switch, headers={"Authorization": f"Bearer {token}"})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "AuthorizationFailed", refused.text
        assert "roleAssignments/write" in refused.json()["error"]["message"]
        # Other changes stay a Contributor's to make.
        tagged = http.put(
            url,
            json={"location": "westus", "tags": {"a": "b"}, "properties": props},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert tagged.status_code == 200, tagged.text


def test_placing_an_app_takes_the_right_to_assign_its_identities(
    platform: RunningPlatform, people: dict[str, Any]
) -> None:
    host = platform.endpoints["agent"]["hostId"]
    url = f"{platform.authority}/lanyard/v1/hosts/{host}/placements"
    headers = {"Authorization": f"Bearer {token_for(platform, people['web'])}"}
    with platform.http() as http:
        refused = http.put(url, json={"resourceId": people["with_uai"]}, headers=headers)
        assert refused.status_code == 403, refused.text
        assert "userAssignedIdentities/assign/action" in refused.json()["error"]["message"]
        allowed = http.put(url, json={"resourceId": people["plain"]}, headers=headers)
        assert allowed.status_code == 200, allowed.text
