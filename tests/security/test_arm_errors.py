"""Bad input to the control plane gets ARM's error body with the right status, never a 500 and never
a partial change."""

from __future__ import annotations

import random
import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import RunningPlatform, cli_json

API = "api-version=2024-11-01"


@pytest.fixture(scope="module")
def arm(platform: RunningPlatform, admin_credential: Any) -> Any:
    token = admin_credential.get_token("https://management.azure.com/.default").token
    base = platform.endpoints["arm"]
    sub = platform.endpoints["subscription_id"]

    class Arm:
        subscription = sub
        group = f"/subscriptions/{sub}/resourceGroups/err-rg"

        def __call__(
            self,
            method: str,
            path: str,
            body: Any = None,
            *,
            raw: bytes | None = None,
            headers: dict[str, str] | None = None,
            query: str = API,
        ) -> httpx.Response:
            with platform.http() as http:
                url = f"{base}{path}" + (f"?{query}" if query else "")
                hdrs = {"Authorization": f"Bearer {token}", **(headers or {})}
                if raw is not None:
                    return http.request(method, url, content=raw, headers={**hdrs, "content-type": "application/json"})
                return http.request(method, url, json=body, headers=hdrs)

    client = Arm()
    assert client("PUT", client.group, {"location": "westus"}).status_code in (200, 201)
    return client


def assert_arm_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    assert error["message"]


def site(arm: Any, name: str) -> str:
    return f"{arm.group}/providers/Microsoft.Web/sites/{name}"


def test_no_token_gets_a_challenge(platform: RunningPlatform) -> None:
    with platform.http() as http:
        response = http.get(f"{platform.endpoints['arm']}/subscriptions?{API}")
    assert_arm_error(response, 401, "AuthenticationFailed")
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ") and f"{platform.authority}/{platform.tenant_id}" in challenge


def test_token_for_another_audience(platform: RunningPlatform, admin_credential: Any) -> None:
    token = admin_credential.get_token("https://vault.azure.net/.default").token
    with platform.http() as http:
        response = http.get(
            f"{platform.endpoints['arm']}/subscriptions?{API}", headers={"Authorization": f"Bearer {token}"}
        )
    assert_arm_error(response, 401, "InvalidAuthenticationToken")


def test_both_management_audiences_accepted(platform: RunningPlatform, admin_credential: Any) -> None:
    for scope in ("https://management.core.windows.net//.default", "https://management.azure.com/.default"):
        token = admin_credential.get_token(scope).token
        with platform.http() as http:
            response = http.get(
                f"{platform.endpoints['arm']}/subscriptions?api-version=2022-12-01",
                headers={"Authorization": f"Bearer {token}"},
            )
        assert response.status_code == 200
        assert [s["subscriptionId"] for s in response.json()["value"]] == [platform.endpoints["subscription_id"]]


def test_api_version_required_and_checked(arm: Any) -> None:
    assert_arm_error(arm("GET", arm.group, query=""), 400, "MissingApiVersionParameter")
    assert_arm_error(arm("GET", arm.group, query="api-version=latest"), 400, "InvalidApiVersionParameter")
    assert arm("GET", arm.group, query="api-version=2019-05-01-preview").status_code == 200


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/subscriptions/not-a-guid/resourceGroups/x", 400, "InvalidSubscriptionId"),
        (f"/subscriptions/{uuid.UUID(int=1)}/resourceGroups/x", 404, "SubscriptionNotFound"),
        ("/subscriptions/{sub}/resourceGroups/bad%20name!", 400, "InvalidResourceGroupName"),
        ("/subscriptions/{sub}/resourceGroups/nope", 404, "ResourceGroupNotFound"),
        (
            "/subscriptions/{sub}/resourceGroups/err-rg/providers/Microsoft.Nope/things/x",
            400,
            "NoRegisteredProviderFound",
        ),
        ("/subscriptions/{sub}/resourceGroups/err-rg/providers/Microsoft.Web/sites/missing", 404, "ResourceNotFound"),
        ("/subscriptions/{sub}/resourceGroups/err-rg/providers/Microsoft.Web", 404, "NotFound"),
    ],
)
def test_malformed_and_unknown_paths(arm: Any, path: str, status: int, code: str) -> None:
    assert_arm_error(arm("GET", path.format(sub=arm.subscription)), status, code)


def test_bad_json(arm: Any) -> None:
    assert_arm_error(arm("PUT", site(arm, "json-site"), raw=b"{not json"), 400, "InvalidRequestContent")
    assert_arm_error(arm("PUT", site(arm, "json-site"), raw=b"[1,2]"), 400, "InvalidRequestContent")
    assert_arm_error(arm("PUT", site(arm, "json-site"), {"location": 5}), 400, "LocationRequired")
    assert_arm_error(arm("PUT", site(arm, "json-site"), {"location": "westus", "tags": {"a": 1}}), 400, "InvalidTag")


def test_bad_names(arm: Any) -> None:
    assert_arm_error(arm("PUT", site(arm, "-bad-"), {"location": "westus"}), 400, "InvalidResourceName")
    uai = f"{arm.group}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/ab"
    assert_arm_error(arm("PUT", uai, {"location": "westus"}), 400, "InvalidResourceName")


@pytest.mark.parametrize(
    "identity",
    [
        {"type": "Magic"},
        {"type": 7},
        {"type": "UserAssigned"},
        {"type": "SystemAssigned", "userAssignedIdentities": {"/x": {}}},
        {"type": "UserAssigned", "userAssignedIdentities": {"/subscriptions/x/resourceGroups/y": {}}},
        {"type": "UserAssigned", "userAssignedIdentities": []},
        "SystemAssigned",
    ],
)
def test_bad_identity_blocks(arm: Any, identity: Any) -> None:
    response = arm("PUT", site(arm, "identity-site"), {"location": "westus", "identity": identity})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"]


def test_identity_type_parsed_leniently_emitted_canonically(arm: Any) -> None:
    uai = f"{arm.group}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/lenient-uai"
    assert arm("PUT", uai, {"location": "westus"}).status_code in (200, 201)
    body = {
        "location": "westus",
        "identity": {
            "type": "userassigned ,SYSTEMASSIGNED",
            "userAssignedIdentities": {uai.upper().replace("/SUBSCRIPTIONS", "/subscriptions"): {}},
        },
    }
    response = arm("PUT", site(arm, "lenient-site"), body)
    assert response.status_code == 200, response.text
    assert response.json()["identity"]["type"] == "SystemAssigned, UserAssigned"
    assert arm("DELETE", site(arm, "lenient-site")).status_code == 200


def test_failed_identity_change_leaves_nothing_behind(platform: RunningPlatform, arm: Any) -> None:
    """System-assigned plus a missing user-assigned identity: refused, and no principal was created."""
    before = {sp["id"] for sp in cli_json(platform.home, "ad", "sp", "list")}
    missing = f"{arm.group}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/does-not-exist"
    body = {
        "location": "westus",
        "identity": {"type": "SystemAssigned, UserAssigned", "userAssignedIdentities": {missing: {}}},
    }
    assert_arm_error(arm("PUT", site(arm, "atomic-site"), body), 400, "InvalidUserAssignedIdentity")
    assert {sp["id"] for sp in cli_json(platform.home, "ad", "sp", "list")} == before
    assert_arm_error(arm("GET", site(arm, "atomic-site")), 404, "ResourceNotFound")


def test_group_location_conflict(arm: Any) -> None:
    assert_arm_error(arm("PUT", arm.group, {"location": "eastus"}), 409, "InvalidResourceGroupLocation")
    assert_arm_error(
        arm("PUT", f"/subscriptions/{arm.subscription}/resourceGroups/no-location", {}), 400, "LocationRequired"
    )


def test_role_assignment_errors(arm: Any, platform: RunningPlatform) -> None:
    base = f"{arm.group}/providers/Microsoft.Authorization/roleAssignments"
    role = f"/subscriptions/{arm.subscription}/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7"
    admin_oid = platform.endpoints["admin"]["object_id"]
    assert_arm_error(
        arm("PUT", f"{base}/not-a-guid", {"properties": {"roleDefinitionId": role, "principalId": admin_oid}}),
        400,
        "InvalidRoleAssignmentId",
    )
    assert_arm_error(
        arm(
            "PUT",
            f"{base}/{uuid.uuid4()}",
            {"properties": {"roleDefinitionId": role, "principalId": str(uuid.uuid4())}},
        ),
        400,
        "PrincipalNotFound",
    )
    assert_arm_error(
        arm(
            "PUT", f"{base}/{uuid.uuid4()}", {"properties": {"roleDefinitionId": role + "0", "principalId": admin_oid}}
        ),
        400,
        "RoleDefinitionDoesNotExist",
    )
    assert_arm_error(arm("PUT", f"{base}/{uuid.uuid4()}", {"properties": {}}), 400, "InvalidRoleAssignmentRequest")
    missing_scope = f"{arm.group}/providers/Microsoft.Web/sites/nope/providers/Microsoft.Authorization/roleAssignments"
    assert_arm_error(arm("GET", missing_scope), 404, "ResourceNotFound")


def test_method_not_allowed(arm: Any) -> None:
    assert_arm_error(arm("POST", arm.group, {}), 405, "MethodNotAllowed")


def test_random_paths_never_500(arm: Any) -> None:
    rng = random.Random(99)
    pieces = [
        "subscriptions",
        arm.subscription,
        "resourceGroups",
        "err-rg",
        "providers",
        "Microsoft.Web",
        "sites",
        "x",
        "slots",
        "config",
        "appsettings",
        "list",
        "Microsoft.Authorization",
        "roleAssignments",
        str(uuid.uuid4()),
        "..",
        "%2e%2e",
        "%00",
        "a" * 300,
        "Microsoft.ManagedIdentity",
        "userAssignedIdentities",
    ]
    bodies: list[Any] = [
        None,
        {},
        {"location": "westus"},
        {"identity": {"type": "None"}},
        [],
        "x",
        {"properties": {"a": None}},
        {"location": "westus", "identity": None},
    ]
    for _ in range(150):
        path = "/subscriptions/" + "/".join(rng.choice(pieces) for _ in range(rng.randint(1, 10)))
        method = rng.choice(["GET", "PUT", "PATCH", "DELETE", "POST"])
        response = arm(method, path, rng.choice(bodies))
        assert response.status_code < 500, (method, path, response.text)
        if response.status_code >= 400 and response.url.path.startswith("/subscriptions"):
            # (A path with `..` is normalized by the client and may leave the ARM tree.)
            error = response.json()["error"]
            assert isinstance(error, dict) and error["code"], (method, path, str(response.url), response.text)
