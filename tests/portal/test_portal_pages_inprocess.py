"""The Identity and vault pages' own rules, in process with a recording stand-in for ARM: a POST without
the session's CSRF token changes nothing; ARM's refusal is shown on the page with ARM's status (never a
500); bad input is refused before any call; a PATCH keeps the user-assigned identities it did not touch."""

from __future__ import annotations

from typing import Any

import httpx

from lanyard.portal.routes import Portal
from tests.portal.test_portal_inprocess import PortalClient, _csrf, _sign_in, client, clock, portal  # noqa: F401

SITE = "/subscriptions/sub-1/resourceGroups/rg/providers/Microsoft.Web/sites/app"
UAI = "/subscriptions/sub-1/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/one"
PAGE = "/portal/resourcegroups/rg/sites/app/identity"


def _arm(target: Portal, site: dict[str, Any], write_status: int = 200) -> list[tuple[str, str, Any]]:
    calls: list[tuple[str, str, Any]] = []

    async def send(method: str, path: str, token: str, api: str, params: dict[str, str], body: Any) -> httpx.Response:
        calls.append((method, path, body))
        if method == "GET" and path == SITE:
            return httpx.Response(200, json=site)
        if method == "GET":
            return httpx.Response(200, json={"value": []})
        if write_status >= 400:
            error = {"code": "AuthorizationFailed", "message": "The client does not have authorization."}
            return httpx.Response(write_status, json={"error": error})
        return httpx.Response(200, json=site)

    target.arm_send = send
    return calls


def test_save_without_the_csrf_token_changes_nothing(client: PortalClient, portal: Portal) -> None:  # noqa: F811
    calls = _arm(portal, {"id": SITE, "identity": {"type": "None"}})
    _sign_in(client, portal)
    answer = client.post(f"{PAGE}/system", data={"status": "on", "csrf_token": "not-it"})
    assert answer.status_code == 403 and not calls


def test_turning_system_on_keeps_the_user_assigned_ones(client: PortalClient, portal: Portal) -> None:  # noqa: F811
    site = {"id": SITE, "identity": {"type": "UserAssigned", "userAssignedIdentities": {UAI: {"principalId": "p"}}}}
    calls = _arm(portal, site)
    _sign_in(client, portal)
    csrf = _csrf(client.get(PAGE).text)
    answer = client.post(f"{PAGE}/system", data={"status": "on", "csrf_token": csrf})
    assert answer.status_code == 303 and answer.headers["location"] == f"{PAGE}?tab=system"
    [patch] = [c for c in calls if c[0] == "PATCH"]
    assert patch[2] == {"identity": {"type": "SystemAssigned, UserAssigned", "userAssignedIdentities": {UAI: {}}}}


def test_removing_the_last_user_assigned_one_sends_null(client: PortalClient, portal: Portal) -> None:  # noqa: F811
    site = {"id": SITE, "identity": {"type": "UserAssigned", "userAssignedIdentities": {UAI: {}}}}
    calls = _arm(portal, site)
    _sign_in(client, portal)
    confirm = client.get(f"{PAGE}/user/remove", params={"id": UAI})
    assert confirm.status_code == 200 and ">Yes</button>" in confirm.text and ">No</a>" in confirm.text
    answer = client.post(f"{PAGE}/user/remove", data={"id": UAI, "csrf_token": _csrf(confirm.text)})
    assert answer.status_code == 303
    [patch] = [c for c in calls if c[0] == "PATCH"]
    assert patch[2] == {"identity": {"type": "None", "userAssignedIdentities": {UAI: None}}}


def test_arm_refusal_is_on_the_page_with_arms_status(client: PortalClient, portal: Portal) -> None:  # noqa: F811
    _arm(portal, {"id": SITE, "identity": {"type": "None"}}, write_status=403)
    _sign_in(client, portal)
    csrf = _csrf(client.get(PAGE).text)
    answer = client.post(f"{PAGE}/system", data={"status": "on", "csrf_token": csrf})
    assert answer.status_code == 403 and 'role="alert"' in answer.text and "AuthorizationFailed" in answer.text


def test_bad_input_makes_no_write(client: PortalClient, portal: Portal) -> None:  # noqa: F811
    calls = _arm(portal, {"id": SITE, "identity": {"type": "None"}})
    _sign_in(client, portal)
    csrf = _csrf(client.get(PAGE).text)
    assert client.post(f"{PAGE}/system", data={"status": "maybe", "csrf_token": csrf}).status_code == 400
    assert client.post(f"{PAGE}/user/add", data={"id": "/not/an/identity", "csrf_token": csrf}).status_code == 400
    assert client.post(f"{PAGE}/user/remove", data={"id": UAI, "csrf_token": csrf}).status_code == 400
    vault = "/portal/resourcegroups/rg/vaults/kv"
    assert client.post(f"{vault}/policies/add", data={"object_id": "x", "csrf_token": csrf}).status_code == 400
    assert (
        client.post(f"{vault}/secrets/set", data={"name": "a b", "value": "v", "csrf_token": csrf}).status_code == 400
    )
    assert client.post(f"{vault}/secrets/reveal", data={"name": "ok"}).status_code == 403
    assert not [c for c in calls if c[0] in ("PUT", "PATCH")]


def test_creating_an_app_is_one_put_in_the_groups_location(client: PortalClient, portal: Portal) -> None:  # noqa: F811
    calls: list[tuple[str, str, Any]] = []

    async def send(method: str, path: str, token: str, api: str, params: dict[str, str], body: Any) -> httpx.Response:
        calls.append((method, path, body))
        if method == "GET" and path.endswith("/resources"):
            return httpx.Response(200, json={"value": []})
        if method == "GET":
            return httpx.Response(200, json={"id": "/subscriptions/sub-1/resourceGroups/rg", "location": "northeurope"})
        return httpx.Response(200, json={"id": SITE})

    portal.arm_send = send
    _sign_in(client, portal)
    csrf = _csrf(client.get("/portal/resourcegroups/rg").text)
    assert client.post("/portal/resourcegroups/rg/sites", data={"name": "app", "kind": "app"}).status_code == 403
    bad = client.post("/portal/resourcegroups/rg/sites", data={"name": "-app", "kind": "app", "csrf_token": csrf})
    assert bad.status_code == 400 and "2 to 60 letters" in bad.text
    odd = client.post("/portal/resourcegroups/rg/sites", data={"name": "app", "kind": "vm", "csrf_token": csrf})
    assert odd.status_code == 400 and not calls
    made = client.post("/portal/resourcegroups/rg/sites", data={"name": "app", "kind": "app", "csrf_token": csrf})
    assert made.status_code == 303 and made.headers["location"] == PAGE
    assert calls[-1] == ("PUT", SITE, {"location": "northeurope", "kind": "app", "properties": {}})


def test_an_app_goes_on_the_chosen_plan_and_a_plan_is_one_put(client: PortalClient, portal: Portal) -> None:  # noqa: F811
    calls: list[tuple[str, str, Any]] = []
    farm = "/subscriptions/sub-1/resourceGroups/rg/providers/Microsoft.Web/serverfarms/plan-1"

    async def send(method: str, path: str, token: str, api: str, params: dict[str, str], body: Any) -> httpx.Response:
        calls.append((method, path, body))
        if method == "GET":
            return httpx.Response(200, json={"id": "/subscriptions/sub-1/resourceGroups/rg", "location": "westus"})
        return httpx.Response(200, json={"id": path})

    portal.arm_send = send
    _sign_in(client, portal)
    csrf = _csrf(client.get("/portal/resourcegroups/rg").text)
    form = {"name": "app", "kind": "app", "csrf_token": csrf}
    bad = client.post("/portal/resourcegroups/rg/sites", data={**form, "plan": "../other"})
    assert bad.status_code == 400 and "a plan of this group" in bad.text and not calls
    made = client.post("/portal/resourcegroups/rg/sites", data={**form, "plan": "plan-1"})
    assert made.status_code == 303
    assert calls[-1] == ("PUT", SITE, {"location": "westus", "kind": "app", "properties": {"serverFarmId": farm}})

    calls.clear()
    plan = {"name": "plan-1", "sku": "B1", "os": "linux", "csrf_token": csrf}
    assert client.post("/portal/resourcegroups/rg/plans", data={**plan, "csrf_token": "x"}).status_code == 403
    for wrong in ({"sku": "Z9"}, {"os": "beos"}, {"name": "-"}):
        refused = client.post("/portal/resourcegroups/rg/plans", data={**plan, **wrong})
        assert refused.status_code == 400 and "A plan needs" in refused.text
    assert not calls
    done = client.post("/portal/resourcegroups/rg/plans", data=plan)
    assert done.status_code == 303 and done.headers["location"] == "/portal/resourcegroups/rg"
    body = {
        "location": "westus",
        "kind": "linux",
        "sku": {"name": "B1", "tier": "Basic"},
        "properties": {"reserved": True},
    }
    assert calls[-1] == ("PUT", farm, body)
