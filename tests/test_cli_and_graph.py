"""The CLI (as a real command) and the Graph-shaped API behind it: shapes, errors, and who may call it."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from azure.identity import CertificateCredential, ClientSecretCredential

from tests.conftest import RunningPlatform, cli_json, run_cli


def graph_token(platform: RunningPlatform, app: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", platform.endpoints["ca_bundle"])
    credential = ClientSecretCredential(
        platform.tenant_id, app["appId"], app["password"], authority=platform.authority, disable_instance_discovery=True
    )
    return credential.get_token(f"{platform.endpoints['graph']}/.default").token


def admin_token(platform: RunningPlatform, monkeypatch: pytest.MonkeyPatch) -> str:
    admin = platform.endpoints["admin"]
    return graph_token(platform, {"appId": admin["client_id"], "password": admin["client_secret"]}, monkeypatch)


def test_sp_show_by_app_id_and_object_id(platform: RunningPlatform, secret_app: dict[str, Any]) -> None:
    by_app = cli_json(platform.home, "ad", "sp", "show", "--id", secret_app["appId"])
    by_object = cli_json(platform.home, "ad", "sp", "show", "--id", by_app["id"])
    assert by_app == by_object
    assert {"id", "appId", "displayName"} <= set(by_app)
    assert by_app["servicePrincipalType"] == "Application"
    assert by_app["appOwnerOrganizationId"] == platform.tenant_id
    assert by_app["passwordCredentials"][0]["hint"] == secret_app["password"][:3]
    assert (
        "secretText" not in by_app["passwordCredentials"][0] or by_app["passwordCredentials"][0]["secretText"] is None
    )


def test_sp_list_by_display_name(platform: RunningPlatform, secret_app: dict[str, Any]) -> None:
    listed = cli_json(platform.home, "ad", "sp", "list", "--display-name", "test-secret-app")
    assert [sp["appId"] for sp in listed] == [secret_app["appId"]]
    assert cli_json(platform.home, "ad", "sp", "list", "--display-name", "no such app") == []


def test_credential_reset_rotates_the_secret(platform: RunningPlatform, monkeypatch: pytest.MonkeyPatch) -> None:
    app = cli_json(platform.home, "ad", "sp", "create-for-rbac", "--name", "rotating")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", platform.endpoints["ca_bundle"])

    def token_with(secret: str) -> str:
        return (
            ClientSecretCredential(
                platform.tenant_id, app["appId"], secret, authority=platform.authority, disable_instance_discovery=True
            )
            .get_token("api://r/.default")
            .token
        )

    assert token_with(app["password"])
    appended = cli_json(platform.home, "ad", "app", "credential", "reset", "--id", app["appId"], "--append")
    assert token_with(app["password"]) and token_with(appended["password"])  # overlap: both work
    replaced = cli_json(platform.home, "ad", "app", "credential", "reset", "--id", app["appId"])
    assert token_with(replaced["password"])
    from azure.core.exceptions import ClientAuthenticationError

    with pytest.raises(ClientAuthenticationError, match="AADSTS7000215"):
        token_with(appended["password"])


def test_certificate_reset_and_delete(platform: RunningPlatform, monkeypatch: pytest.MonkeyPatch) -> None:
    app = cli_json(platform.home, "ad", "app", "create", "--display-name", "cert-rotation")
    cli_json(platform.home, "ad", "sp", "create", "--id", app["appId"])
    created = cli_json(platform.home, "ad", "app", "credential", "reset", "--id", app["appId"], "--create-cert")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", platform.endpoints["ca_bundle"])
    credential = CertificateCredential(
        platform.tenant_id,
        app["appId"],
        certificate_path=created["fileWithCertAndPrivateKey"],
        authority=platform.authority,
        disable_instance_discovery=True,
    )
    assert credential.get_token("api://c/.default").token
    shown = cli_json(platform.home, "ad", "app", "show", "--id", app["appId"])
    assert len(shown["keyCredentials"]) == 1 and shown["keyCredentials"][0]["type"] == "AsymmetricX509Cert"
    run_cli(platform.home, "ad", "app", "delete", "--id", app["appId"])
    gone = run_cli(platform.home, "ad", "sp", "show", "--id", app["appId"], check=False)
    assert gone.returncode != 0 and gone.stderr.count("\n") == 1 and "ResourceNotFound" in gone.stderr


def test_cli_errors_are_one_line(platform: RunningPlatform) -> None:
    missing = run_cli(platform.home, "ad", "app", "show", "--id", str(uuid.uuid4()), check=False)
    assert missing.returncode == 1 and missing.stderr.startswith("ERROR:") and missing.stderr.count("\n") == 1
    invalid = run_cli(platform.home, "ad", "sp", "show", "--id", "not-a-name", check=False)
    assert invalid.returncode == 1 and invalid.stderr.count("\n") == 1


def test_cli_without_platform(tmp_path: Any) -> None:
    result = run_cli(tmp_path, "ad", "sp", "list", check=False)
    assert result.returncode == 1 and "lanyard up" in result.stderr


def test_account_commands(platform: RunningPlatform) -> None:
    shown = cli_json(platform.home, "account", "show")
    assert shown["tenantId"] == platform.tenant_id and shown["id"] == platform.endpoints["subscription_id"]
    token = cli_json(platform.home, "account", "get-access-token", "--resource", "https://management.azure.com/")
    assert token["tokenType"] == "Bearer" and token["accessToken"].count(".") == 2


# -- Graph API directly ---------------------------------------------------------------------


def test_graph_requires_a_token(platform: RunningPlatform) -> None:
    with platform.http() as http:
        response = http.get(f"{platform.endpoints['graph']}/v1.0/servicePrincipals")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["error"]["code"] == "InvalidAuthenticationToken"


def test_graph_refuses_wrong_audience(platform: RunningPlatform, monkeypatch: pytest.MonkeyPatch) -> None:
    admin = platform.endpoints["admin"]
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", platform.endpoints["ca_bundle"])
    token = (
        ClientSecretCredential(
            platform.tenant_id,
            admin["client_id"],
            admin["client_secret"],
            authority=platform.authority,
            disable_instance_discovery=True,
        )
        .get_token("https://management.azure.com/.default")
        .token
    )
    with platform.http() as http:
        response = http.get(
            f"{platform.endpoints['graph']}/v1.0/servicePrincipals", headers={"Authorization": f"Bearer {token}"}
        )
    assert response.status_code == 401 and "audience" in response.json()["error"]["message"]


def test_graph_denies_non_admins(
    platform: RunningPlatform, secret_app: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    token = graph_token(platform, secret_app, monkeypatch)
    with platform.http() as http:
        response = http.post(
            f"{platform.endpoints['graph']}/v1.0/applications",
            json={"displayName": "x"},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "Authorization_RequestDenied"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("POST", "/applications", b"{not json", 400, "BadRequest"),
        ("POST", "/applications", b"[1]", 400, "BadRequest"),
        ("POST", "/applications", b"{}", 400, "Request_BadRequest"),
        ("GET", "/applications/not-a-guid", b"", 400, "Request_BadRequest"),
        ("GET", f"/applications/{uuid.UUID(int=7)}", b"", 404, "Request_ResourceNotFound"),
        ("GET", "/applications?$filter=foo eq 'bar'", b"", 400, "Request_UnsupportedQuery"),
        ("POST", "/servicePrincipals", b'{"appId": "00000000-0000-0000-0000-000000000009"}', 400, "Request_BadRequest"),
        ("GET", "/nothing-here", b"", 404, "Request_ResourceNotFound"),
        ("PUT", "/applications", b"{}", 405, "Request_BadRequest"),
    ],
)
def test_graph_bad_requests(
    platform: RunningPlatform,
    monkeypatch: pytest.MonkeyPatch,
    method: str,
    path: str,
    body: bytes,
    status: int,
    code: str,
) -> None:
    token = admin_token(platform, monkeypatch)
    with platform.http() as http:
        response = http.request(
            method,
            f"{platform.endpoints['graph']}/v1.0{path}",
            content=body,
            headers={"Authorization": f"Bearer {token}", "content-type": "application/json"},
        )
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_duplicate_service_principal(
    platform: RunningPlatform, secret_app: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    token = admin_token(platform, monkeypatch)
    with platform.http() as http:
        response = http.post(
            f"{platform.endpoints['graph']}/v1.0/servicePrincipals",
            json={"appId": secret_app["appId"]},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert response.status_code == 409


def test_unknown_paths_answer_in_json(platform: RunningPlatform) -> None:
    with platform.http() as http:
        response = http.get(f"{platform.authority}/nothing/here/at/all")
        assert response.status_code == 404 and response.json()["error"]
        response = http.get(f"{platform.authority}/{uuid.uuid4()}/v2.0/.well-known/openid-configuration")
        assert response.status_code == 400 and response.json()["error"] == "invalid_tenant"


def test_get_by_ids_finds_users_groups_and_principals_by_type(
    platform: RunningPlatform, secret_app: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    token = admin_token(platform, monkeypatch)
    graph = f"{platform.endpoints['graph']}/v1.0"
    auth = {"Authorization": f"Bearer {token}"}
    upn = f"ids-{uuid.uuid4().hex[:8]}@ids.example"
    with platform.http() as http:
        user = http.post(
            f"{graph}/users",
            headers=auth,
            json={
                "accountEnabled": True,
                "displayName": "Ids User",
                "mailNickname": upn.split("@")[0],
                "userPrincipalName": upn,
                "passwordProfile": {"password": "Ids-Us3r-Pa55word", "forceChangePasswordNextSignIn": False},
            },
        ).json()
        team = http.post(
            f"{graph}/groups",
            headers=auth,
            json={"displayName": "Ids Team", "mailNickname": f"ids{uuid.uuid4().hex[:8]}", "securityEnabled": True},
        ).json()
        sp = cli_json(platform.home, "ad", "sp", "show", "--id", secret_app["appId"])
        ids = [user["id"], team["id"], sp["id"], str(uuid.uuid4())]

        def by_ids(types: list[str] | None) -> list[dict[str, Any]]:
            body: dict[str, Any] = {"ids": ids} if types is None else {"ids": ids, "types": types}
            response = http.post(f"{graph}/directoryObjects/getByIds", headers=auth, json=body)
            assert response.status_code == 200, response.text
            return list(response.json()["value"])

        every = by_ids(None)  # Graph's default: every type; the unknown id is left out
        assert [(o["@odata.type"], o["id"]) for o in every] == [
            ("#microsoft.graph.user", user["id"]),
            ("#microsoft.graph.group", team["id"]),
            ("#microsoft.graph.servicePrincipal", sp["id"]),
        ]
        assert every[0]["userPrincipalName"] == upn and every[1]["displayName"] == "Ids Team"
        assert [o["id"] for o in by_ids(["user", "group", "servicePrincipal", "directoryObjectPartnerReference"])] == [
            user["id"],
            team["id"],
            sp["id"],
        ]
        assert [o["id"] for o in by_ids(["microsoft.graph.group"])] == [team["id"]]
        assert by_ids(["application"]) == []
