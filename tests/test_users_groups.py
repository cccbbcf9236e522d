"""People in the directory: users and groups through Graph and `lanyard ad user|group`, and role
assignments to users and to groups deciding what a signed-in user may do at ARM and in a vault;
leaving a group takes the group's rights away on the very next request."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import RunningPlatform, cli_json, run_cli

AZ_CLI = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
PASSWORD = "Corr3ct-Horse-Battery"


def graph(platform: RunningPlatform, method: str, path: str, body: Any = None) -> httpx.Response:
    admin = platform.endpoints["admin"]
    base = platform.endpoints["graph"]
    with platform.http() as http:
        token = http.post(
            platform.token_url_v2,
            data={
                "grant_type": "client_credentials",
                "client_id": admin["client_id"],
                "client_secret": admin["client_secret"],
                "scope": f"{base}/.default",
            },
        ).json()["access_token"]
        return http.request(method, f"{base}/v1.0{path}", json=body, headers={"Authorization": f"Bearer {token}"})


def new_user(platform: RunningPlatform, prefix: str) -> dict[str, Any]:
    upn = f"{prefix}-{uuid.uuid4().hex[:8]}@people.example"
    return dict(
        cli_json(
            platform.home,
            "ad", "user", "create", "--display-name", f"{prefix} person", "--user-principal-name", upn,
            "--password", PASSWORD,
        )
    )


def user_token(platform: RunningPlatform, upn: str, resource: str, password: str = PASSWORD) -> httpx.Response:
    with platform.http() as http:
        return http.post(
            platform.token_url_v2,
            data={
                "grant_type": "password",
                "client_id": AZ_CLI,
                "username": upn,
                "password": password,
                "scope": f"{resource}/.default offline_access openid profile",
                "client_info": "1",
            },
        )


def test_users_through_graph_and_cli(platform: RunningPlatform) -> None:
    user = new_user(platform, "ann")
    upn = user["userPrincipalName"]
    assert user["accountEnabled"] is True and user["displayName"] == "ann person"
    assert "password" not in json.dumps(user).lower().replace("passwordprofile", "")
    # show by UPN (any case) and by id; list by eq and by startswith
    assert cli_json(platform.home, "ad", "user", "show", "--id", upn.upper())["id"] == user["id"]
    assert cli_json(platform.home, "ad", "user", "show", "--id", user["id"])["userPrincipalName"] == upn
    assert [u["id"] for u in cli_json(platform.home, "ad", "user", "list", "--upn", upn)] == [user["id"]]
    assert user["id"] in [u["id"] for u in cli_json(platform.home, "ad", "user", "list", "--display-name", "ann p")]
    assert cli_json(platform.home, "ad", "user", "list", "--display-name", "nobody-starts-so") == []
    # PATCH, then a duplicate UPN and weak passwords refused in Graph's format, never echoing the password
    assert graph(platform, "PATCH", f"/users/{user['id']}", {"displayName": "Ann Renamed"}).status_code == 204
    assert graph(platform, "GET", f"/users/{upn}").json()["displayName"] == "Ann Renamed"
    dup = graph(
        platform, "POST", "/users",
        {"displayName": "x", "userPrincipalName": upn, "accountEnabled": True, "passwordProfile": {"password": PASSWORD}},
    )
    assert dup.status_code == 400 and dup.json()["error"]["code"] == "Request_MultipleObjectsWithSameKeyValue"
    weak = graph(
        platform, "POST", "/users",
        {"displayName": "x", "userPrincipalName": "weak@people.example", "passwordProfile": {"password": "abcdefgh1"}},
    )
    assert weak.status_code == 400 and weak.json()["error"]["code"] == "Request_BadRequest"
    assert "abcdefgh1" not in weak.text
    bad_filter = graph(platform, "GET", "/users?$filter=accountEnabled eq true")
    assert bad_filter.status_code == 400 and bad_filter.json()["error"]["code"] == "Request_UnsupportedQuery"
    assert graph(platform, "GET", "/users/not-a-user@people.example").status_code == 404
    # nothing in the server's log holds the password
    assert PASSWORD not in (platform.home / "server.log").read_text(errors="replace")
    run_cli(platform.home, "ad", "user", "delete", "--id", upn)
    assert graph(platform, "GET", f"/users/{user['id']}").status_code == 404


def test_groups_and_members_through_cli(platform: RunningPlatform) -> None:
    user = new_user(platform, "gus")
    name = f"people-{uuid.uuid4().hex[:6]}"
    group = cli_json(platform.home, "ad", "group", "create", "--display-name", name, "--mail-nickname", name)
    outer = cli_json(platform.home, "ad", "group", "create", "--display-name", f"{name}-outer", "--mail-nickname", "o")
    assert group["securityEnabled"] is True and group["mailEnabled"] is False
    assert cli_json(platform.home, "ad", "group", "show", "--group", name)["id"] == group["id"]
    run_cli(platform.home, "ad", "group", "member", "add", "--group", name, "--member-id", user["id"])
    run_cli(platform.home, "ad", "group", "member", "add", "--group", outer["id"], "--member-id", group["id"])
    members = cli_json(platform.home, "ad", "group", "member", "list", "--group", name)
    assert [(m["id"], m["@odata.type"]) for m in members] == [(user["id"], "#microsoft.graph.user")]
    # membership is transitive for checks; adding twice, or a cycle, is refused
    check = ["ad", "group", "member", "check", "--member-id", user["id"], "--group"]
    assert cli_json(platform.home, *check, outer["id"]) == {"value": True}
    again = run_cli(platform.home, "ad", "group", "member", "add", "--group", name, "--member-id", user["id"], check=False)
    assert again.returncode != 0 and "already exist" in again.stderr
    cycle = run_cli(
        platform.home, "ad", "group", "member", "add", "--group", name, "--member-id", outer["id"], check=False
    )
    assert cycle.returncode != 0 and "cannot contain itself" in cycle.stderr
    member_of = graph(platform, "GET", f"/users/{user['userPrincipalName']}/memberOf").json()["value"]
    assert [g["id"] for g in member_of] == [group["id"]]
    run_cli(platform.home, "ad", "group", "member", "remove", "--group", name, "--member-id", user["id"])
    assert cli_json(platform.home, "ad", "group", "member", "list", "--group", name) == []
    assert cli_json(platform.home, *check, outer["id"]) == {"value": False}
    run_cli(platform.home, "ad", "group", "delete", "--group", name)
    assert graph(platform, "GET", f"/groups/{group['id']}").status_code == 404
    assert graph(platform, "GET", f"/groups/{outer['id']}/members").json()["value"] == []


@pytest.fixture(scope="module")
def vault(platform: RunningPlatform) -> dict[str, Any]:
    home = platform.home
    cli_json(home, "group", "create", "-n", "people-rg", "-l", "westus")
    created = cli_json(
        home, "keyvault", "create", "-n", "people-kv", "-g", "people-rg", "--enable-rbac-authorization", "true"
    )
    cli_json(
        home, "role", "assignment", "create", "--assignee", platform.endpoints["admin"]["client_id"],
        "--role", "Key Vault Secrets Officer", "--scope", created["id"],
    )
    cli_json(home, "keyvault", "secret", "set", "--vault-name", "people-kv", "-n", "shared", "--value", "s3cret-value")
    return dict(created)


def read_secret(platform: RunningPlatform, vault: dict[str, Any], token: str) -> httpx.Response:
    url = str(vault["properties"]["vaultUri"]).rstrip("/")
    with platform.http() as http:
        return http.get(f"{url}/secrets/shared?api-version=7.4", headers={"Authorization": f"Bearer {token}"})


def arm_groups(platform: RunningPlatform, token: str) -> httpx.Response:
    sub = platform.endpoints["subscription_id"]
    with platform.http() as http:
        return http.get(
            f"{platform.authority}/subscriptions/{sub}/resourcegroups/people-rg?api-version=2024-11-01",
            headers={"Authorization": f"Bearer {token}"},
        )


def test_rbac_through_group_membership(platform: RunningPlatform, vault: dict[str, Any]) -> None:
    home = platform.home
    user = new_user(platform, "rita")
    upn = user["userPrincipalName"]
    name = f"readers-{uuid.uuid4().hex[:6]}"
    group = cli_json(home, "ad", "group", "create", "--display-name", name, "--mail-nickname", name)
    for role, scope in (("Key Vault Secrets User", vault["id"]), ("Reader", vault["id"].split("/providers/")[0])):
        assignment = cli_json(home, "role", "assignment", "create", "--assignee", group["id"], "--role", role,
                              "--scope", scope)
        assert assignment["principalType"] == "Group"
    vault_resource = platform.endpoints["vault_audience"]
    # Not a member yet: a valid user token, and no rights.
    vault_token = user_token(platform, upn, vault_resource).json()["access_token"]
    arm_token = user_token(platform, upn, "https://management.azure.com").json()["access_token"]
    denied = read_secret(platform, vault, vault_token)
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "Forbidden"
    assert arm_groups(platform, arm_token).status_code == 403
    # In the group: the group's assignments are the user's (the same tokens: decided per request).
    run_cli(home, "ad", "group", "member", "add", "--group", group["id"], "--member-id", user["id"])
    granted = read_secret(platform, vault, vault_token)
    assert granted.status_code == 200 and granted.json()["value"] == "s3cret-value"
    assert arm_groups(platform, arm_token).status_code == 200
    # Out of the group: gone, at once.
    run_cli(home, "ad", "group", "member", "remove", "--group", group["id"], "--member-id", user["id"])
    assert read_secret(platform, vault, vault_token).status_code == 403
    assert arm_groups(platform, arm_token).status_code == 403


def test_role_assignment_to_a_user_by_upn(platform: RunningPlatform, vault: dict[str, Any]) -> None:
    home = platform.home
    user = new_user(platform, "uma")
    upn = user["userPrincipalName"]
    token = user_token(platform, upn, platform.endpoints["vault_audience"]).json()["access_token"]
    assert read_secret(platform, vault, token).status_code == 403
    assignment = cli_json(
        home, "role", "assignment", "create", "--assignee", upn, "--role", "Key Vault Secrets User",
        "--scope", vault["id"],
    )
    assert assignment["principalType"] == "User" and assignment["principalId"] == user["id"]
    assert read_secret(platform, vault, token).status_code == 200
    # Deleting the user deletes what it was granted; a dangling id cannot be assigned.
    run_cli(home, "ad", "user", "delete", "--id", user["id"])
    assert read_secret(platform, vault, token).status_code == 403
    refused = run_cli(
        home, "role", "assignment", "create", "--assignee-object-id", user["id"], "--assignee", upn,
        "--role", "Reader", "--scope", vault["id"], check=False,
    )
    assert refused.returncode != 0 and "PrincipalNotFound" in refused.stderr


def test_lanyard_login_acts_as_the_user(platform: RunningPlatform, tmp_path: Any) -> None:
    """`lanyard login -u -p` in a home of its own (the shared home stays the admin's)."""
    home = platform.home
    user = new_user(platform, "lee")
    upn = user["userPrincipalName"]
    cli_home = tmp_path / "cli"
    cli_home.mkdir()
    (cli_home / "endpoints.json").write_text((home / "endpoints.json").read_text())
    cli_json(home, "group", "create", "-n", "login-rg", "-l", "westus")
    wrong = run_cli(cli_home, "login", "-u", upn, "-p", "Wrong-Pa55word", check=False)
    assert wrong.returncode != 0 and "AADSTS50126" in wrong.stderr and "Wrong-Pa55word" not in wrong.stderr
    assert not (cli_home / "user-session.json").exists()
    signed_in = cli_json(cli_home, "login", "-u", upn, "-p", PASSWORD)
    assert signed_in[0]["user"] == {"name": upn, "type": "user"}
    session = cli_home / "user-session.json"
    assert session.stat().st_mode & 0o077 == 0 and PASSWORD not in session.read_text()
    assert cli_json(cli_home, "account", "show")["user"] == {"name": upn, "type": "user"}
    denied = run_cli(cli_home, "group", "show", "-n", "login-rg", check=False)
    assert denied.returncode != 0 and "AuthorizationFailed" in denied.stderr
    assignment = cli_json(
        home, "role", "assignment", "create", "--assignee", upn, "--role", "Reader",
        "--scope", f"/subscriptions/{platform.endpoints['subscription_id']}/resourceGroups/login-rg",
    )
    assert cli_json(cli_home, "group", "show", "-n", "login-rg")["name"] == "login-rg"
    token = cli_json(cli_home, "account", "get-access-token")["accessToken"]
    assert token.count(".") == 2
    # Reader: sees, cannot change.
    refused = run_cli(cli_home, "group", "create", "-n", "login-rg-2", "-l", "westus", check=False)
    assert refused.returncode != 0 and "AuthorizationFailed" in refused.stderr
    # The directory as a member: reads, no writes.
    assert cli_json(cli_home, "ad", "user", "show", "--id", upn)["id"] == user["id"]
    made = run_cli(cli_home, "ad", "group", "create", "--display-name", "nope", "--mail-nickname", "nope", check=False)
    assert made.returncode != 0 and "Authorization_RequestDenied" in made.stderr
    kept = json.loads(session.read_text())["refresh_token"]
    run_cli(cli_home, "logout")
    assert not session.exists()
    with platform.http() as http:
        after = http.post(platform.token_url_v2, data={
            "grant_type": "refresh_token", "client_id": "97192263-e80d-4f00-9b19-2728d68e9f05",
            "refresh_token": kept, "scope": "https://management.azure.com/.default",
        })
    assert after.status_code == 400 and after.json()["error"] == "invalid_grant"
    # Signed out, the CLI is the admin application again.
    assert cli_json(cli_home, "account", "show")["user"]["type"] == "servicePrincipal"
    run_cli(home, "role", "assignment", "delete", "--ids", assignment["id"])


def test_a_signed_in_person_reads_the_directory_and_changes_nothing(platform: RunningPlatform) -> None:
    """Entra's default member permissions: a person's delegated Graph token reads users, groups and
    service principals (and `/me`), and every write is Authorization_RequestDenied; an application's
    own token gets no /me."""
    person, other = new_user(platform, "reader"), new_user(platform, "other")
    base = platform.endpoints["graph"]
    token = user_token(platform, person["userPrincipalName"], base).json()["access_token"]
    bearer = {"Authorization": f"Bearer {token}"}
    with platform.http() as http:
        me = http.get(f"{base}/v1.0/me", headers=bearer)
        assert me.status_code == 200 and me.json()["id"] == person["id"], me.text
        found = http.get(f"{base}/v1.0/users/{other['id']}", headers=bearer)
        assert found.status_code == 200 and found.json()["userPrincipalName"] == other["userPrincipalName"]
        assert http.get(f"{base}/v1.0/servicePrincipals", headers=bearer).status_code == 200
        by_ids = http.post(f"{base}/v1.0/directoryObjects/getByIds", json={"ids": [other["id"]]}, headers=bearer)
        assert by_ids.status_code == 200 and [o["id"] for o in by_ids.json()["value"]] == [other["id"]]
        for method, path, body in [
            ("POST", "/groups", {"displayName": "g", "mailNickname": "g", "securityEnabled": True}),
            ("PATCH", f"/users/{other['id']}", {"displayName": "renamed"}),
            ("DELETE", f"/users/{other['id']}", None),
            ("POST", "/applications", {"displayName": "mine"}),
        ]:
            refused = http.request(method, f"{base}/v1.0{path}", json=body, headers=bearer)
            assert refused.status_code == 403 and refused.json()["error"]["code"] == "Authorization_RequestDenied"
    assert graph(platform, "GET", f"/users/{other['id']}").json()["displayName"] == "other person"
    app_me = graph(platform, "GET", "/me")
    assert app_me.status_code == 400 and "delegated" in app_me.json()["error"]["message"]
