"""The Access control (IAM) pages in process, with recording stand-ins for ARM and Graph: the list names
roles and principals and marks inherited assignments; the search is Graph's startswith; Add is one ARM
PUT of a new role assignment; Remove is a confirmation and then one DELETE; a POST without the CSRF token
or with bad input makes no ARM call; ARM's and Graph's refusals are on the page, never a 500."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from lanyard.portal.access import GRAPH_SCOPE, AccessPages
from lanyard.portal.routes import Portal
from tests.portal.test_portal_inprocess import PortalClient, _csrf, _sign_in, clock, portal  # noqa: F401

SUB = "/subscriptions/sub-1"
RG = f"{SUB}/resourceGroups/rg"
AUTHZ = "/providers/Microsoft.Authorization"
READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
OWNER = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"
ANN = "11111111-1111-4111-8111-111111111111"
APP = "22222222-2222-4222-8222-222222222222"
HERE = f"{RG}{AUTHZ}/roleAssignments/33333333-3333-4333-8333-333333333333"
ABOVE = f"{SUB}{AUTHZ}/roleAssignments/44444444-4444-4444-8444-444444444444"
PAGE = "/portal/resourcegroups/rg/access"


def _assignment(assignment_id: str, role: str, principal: str, kind: str) -> dict[str, Any]:
    scope = assignment_id.split("/providers/")[0]
    props = {
        "roleDefinitionId": f"{SUB}{AUTHZ}/roleDefinitions/{role}",
        "principalId": principal,
        "principalType": kind,
        "scope": scope,
    }
    return {"id": assignment_id, "name": assignment_id.rsplit("/", 1)[-1], "properties": props}


class Stand:
    """ARM and Graph as the pages see them, recording every call."""

    def __init__(self) -> None:
        self.arm: list[tuple[str, str, Any]] = []
        self.graph: list[tuple[str, str, dict[str, str], Any]] = []
        self.write: tuple[int, str] = (201, "")
        self.list_status = 200
        self.graph_status = 200
        self.paged = False

    async def arm_send(
        self, method: str, path: str, token: str, api: str, params: dict[str, str], body: Any
    ) -> httpx.Response:
        self.arm.append((method, path, body))
        if method == "GET" and path.endswith("/roleAssignments"):
            if self.list_status >= 400:
                error = {"code": "AuthorizationFailed", "message": "The client may not read role assignments."}
                return httpx.Response(self.list_status, json={"error": error})
            items = [_assignment(HERE, READER, ANN, "User"), _assignment(ABOVE, OWNER, APP, "ServicePrincipal")]
            if not self.paged:
                return httpx.Response(200, json={"value": items})
            # ARM's paging: one a page, the rest behind nextLink (on ARM's own host, with its $skiptoken).
            start = int(params.get("$skiptoken", "0"))
            body: dict[str, Any] = {"value": items[start : start + 1]}
            if start + 1 < len(items):
                body["nextLink"] = f"https://arm.example{path}?api-version={api}&$skiptoken={start + 1}"
            return httpx.Response(200, json=body)
        if method == "GET" and path.endswith("/roleDefinitions"):
            roles = [
                {"id": f"{SUB}{AUTHZ}/roleDefinitions/{g}", "name": g, "properties": {"roleName": n}}
                for g, n in ((READER, "Reader"), (OWNER, "Owner"))
            ]
            return httpx.Response(200, json={"value": roles})
        status, code = self.write
        if status >= 400:
            return httpx.Response(status, json={"error": {"code": code, "message": f"{code} said ARM."}})
        return httpx.Response(status, json={"id": path})

    async def graph_send(self, method: str, path: str, token: str, params: dict[str, str], body: Any) -> httpx.Response:
        self.graph.append((method, path, params, body))
        if self.graph_status >= 400:
            error = {"code": "Authorization_RequestDenied", "message": "Insufficient privileges."}
            return httpx.Response(self.graph_status, json={"error": error})
        ann = {
            "@odata.type": "#microsoft.graph.user",
            "id": ANN,
            "displayName": "Ann Lee",
            "userPrincipalName": "ann@x",
        }
        app = {"@odata.type": "#microsoft.graph.servicePrincipal", "id": APP, "displayName": "deployer", "appId": "a-1"}
        if path == "/directoryObjects/getByIds":
            return httpx.Response(200, json={"value": [o for o in (ann, app) if o["id"] in body["ids"]]})
        if path == "/users":
            return httpx.Response(200, json={"value": [ann]})
        return httpx.Response(200, json={"value": []})


@pytest.fixture
def stand(portal: Portal) -> Stand:  # noqa: F811
    stand = Stand()
    portal.arm_send = stand.arm_send
    return stand


@pytest.fixture
def client(portal: Portal, stand: Stand) -> Iterator[PortalClient]:  # noqa: F811
    pages = AccessPages(portal)
    pages.graph_send = stand.graph_send
    client = PortalClient(Starlette(routes=[*pages.routes(), *portal.routes()]))
    _sign_in(client, portal)
    yield client
    client.close()


def _writes(stand: Stand) -> list[tuple[str, str, Any]]:
    return [c for c in stand.arm if c[0] != "GET"]


def test_the_list_names_roles_and_principals_and_marks_inherited_ones(
    client: PortalClient,
    stand: Stand,
    portal: Portal,  # noqa: F811
) -> None:
    page = client.get(PAGE)
    assert page.status_code == 200
    rows = re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td>", page.text)
    assert ("Ann Lee (ann@x)", "User", "Reader", "This scope") in rows
    assert ("deployer (a-1)", "ServicePrincipal", "Owner", f"Inherited: {SUB}") in rows
    # Listed at the group (ARM returns those above and below it too), named as az names them.
    assert ("GET", f"{RG}{AUTHZ}/roleAssignments", None) in stand.arm
    [lookup] = [g for g in stand.graph if g[1] == "/directoryObjects/getByIds"]
    assert sorted(lookup[3]["ids"]) == [ANN, APP]
    graph_tokens = [r for r in portal.token_requests if r["scope"].startswith(GRAPH_SCOPE)]  # type: ignore[attr-defined]
    assert graph_tokens and graph_tokens[0]["grant_type"] == "refresh_token"
    # Only the one at this scope can be removed here; the inherited one is removed where it was made.
    assert 'aria-label="Remove Reader for Ann Lee"' in page.text and "Remove Owner" not in page.text
    assert client.get("/portal/access").text.count("Inherited") == 0


def test_every_page_of_the_list_is_shown(client: PortalClient, stand: Stand) -> None:
    stand.paged = True
    page = client.get(PAGE)
    assert "Ann Lee" in page.text and "deployer" in page.text
    listed = [c for c in stand.arm if c[1].endswith("/roleAssignments")]
    assert [c[1] for c in listed] == [f"{RG}{AUTHZ}/roleAssignments"] * 2


def test_when_graph_refuses_the_object_ids_are_shown(client: PortalClient, stand: Stand) -> None:
    stand.graph_status = 403
    page = client.get(PAGE)
    assert page.status_code == 200 and "Authorization_RequestDenied" in page.text and 'role="status"' in page.text
    assert f"<tr><td>{ANN}</td><td>User</td><td>Reader</td>" in page.text
    search = client.get(PAGE, params={"q": "Ann"})
    assert search.status_code == 200 and "Paste the object id instead" in search.text


def test_search_is_graphs_startswith_and_select_fills_the_form(client: PortalClient, stand: Stand) -> None:
    found = client.get(PAGE, params={"q": "O'Brien"})
    assert found.status_code == 200 and 'aria-label="Select Ann Lee"' in found.text
    filters = {g[1]: g[2]["$filter"] for g in stand.graph if g[0] == "GET"}
    assert filters == {p: "startswith(displayName,'O''Brien')" for p in ("/users", "/groups", "/servicePrincipals")}
    chosen = client.get(PAGE, params={"principal": ANN, "type": "User"})
    assert (
        "Selected: Ann Lee (User)" in chosen.text
        and f'name="principal_id" required maxlength="36" value="{ANN}"' in (chosen.text)
    )
    assert client.get(PAGE, params={"principal": "not-a-guid"}).status_code == 400
    assert client.get(PAGE, params={"q": "x" * 101}).status_code == 400
    assert not _writes(stand)


def test_add_is_one_put_of_a_new_assignment(client: PortalClient, stand: Stand) -> None:
    csrf = _csrf(client.get(PAGE).text)
    form = {"role": READER, "principal_id": ANN, "selected_id": ANN, "principal_type": "User", "csrf_token": csrf}
    added = client.post(f"{PAGE}/add", data=form)
    assert added.status_code == 303 and added.headers["location"] == PAGE
    [(method, path, body)] = _writes(stand)
    assert method == "PUT" and re.fullmatch(rf"{RG}{AUTHZ}/roleAssignments/[0-9a-f-]{{36}}", path)
    assert body == {
        "properties": {
            "roleDefinitionId": f"{SUB}{AUTHZ}/roleDefinitions/{READER}",
            "principalId": ANN,
            "principalType": "User",
        }
    }
    # At the subscription, with a pasted object id: its type is the directory's, as az finds it.
    csrf = _csrf(client.get("/portal/access").text)
    client.post("/portal/access/add", data={"role": OWNER, "principal_id": APP, "csrf_token": csrf})
    (_, path, body) = _writes(stand)[-1]
    assert (
        path.startswith(f"{SUB}{AUTHZ}/roleAssignments/") and body["properties"]["principalType"] == "ServicePrincipal"
    )


def test_without_graph_the_type_is_the_searchs_for_that_id_only(client: PortalClient, stand: Stand) -> None:
    stand.graph_status = 403
    csrf = _csrf(client.get(PAGE).text)
    form = {"role": READER, "principal_id": ANN, "selected_id": ANN, "principal_type": "User", "csrf_token": csrf}
    assert client.post(f"{PAGE}/add", data=form).status_code == 303
    assert _writes(stand)[-1][2]["properties"]["principalType"] == "User"
    # The id was edited after Select: the type found for another principal is not sent; ARM works it out.
    assert client.post(f"{PAGE}/add", data={**form, "principal_id": APP}).status_code == 303
    assert _writes(stand)[-1][2]["properties"] == {
        "roleDefinitionId": f"{SUB}{AUTHZ}/roleDefinitions/{READER}",
        "principalId": APP,
    }


def test_no_csrf_token_or_bad_input_makes_no_arm_call(client: PortalClient, stand: Stand) -> None:
    good = {"role": READER, "principal_id": ANN}
    assert client.post(f"{PAGE}/add", data=good).status_code == 403
    assert client.post(f"{PAGE}/add", data={**good, "csrf_token": "not-it"}).status_code == 403
    assert client.post(f"{PAGE}/remove", data={"id": HERE, "csrf_token": "not-it"}).status_code == 403
    csrf = _csrf(client.get(PAGE).text)
    for bad in (
        {"role": ""},
        {"role": "Reader"},
        {"principal_id": "ann@x"},
        {"selected_id": ANN, "principal_type": "Robot"},
    ):
        answer = client.post(f"{PAGE}/add", data={**good, **bad, "csrf_token": csrf})
        assert answer.status_code == 400 and 'role="alert"' in answer.text, bad
    for wrong in ("/subscriptions/sub-2/providers/Microsoft.Authorization/roleAssignments/" + ANN, RG, "x"):
        assert client.post(f"{PAGE}/remove", data={"id": wrong, "csrf_token": csrf}).status_code == 400
        assert client.get(f"{PAGE}/remove", params={"id": wrong}).status_code == 400
    assert not _writes(stand)


@pytest.mark.parametrize(
    ("status", "code"), [(403, "AuthorizationFailed"), (409, "RoleAssignmentExists"), (400, "PrincipalNotFound")]
)
def test_arms_refusal_of_an_add_is_on_the_page(client: PortalClient, stand: Stand, status: int, code: str) -> None:
    stand.write = (status, code)
    csrf = _csrf(client.get(PAGE).text)
    answer = client.post(f"{PAGE}/add", data={"role": READER, "principal_id": ANN, "csrf_token": csrf})
    assert answer.status_code == status
    assert re.search(rf'role="alert"[^>]*>{code}: {code} said ARM\.<', answer.text)
    # The choice is kept for another try.
    assert f'value="{READER}" selected' in answer.text and f'value="{ANN}"' in answer.text


def test_remove_asks_first_then_deletes_that_assignment(client: PortalClient, stand: Stand) -> None:
    confirm = client.get(f"{PAGE}/remove", params={"id": HERE})
    assert confirm.status_code == 200 and ">Yes</button>" in confirm.text and f'<a href="{PAGE}">No</a>' in confirm.text
    assert "Remove Reader for Ann Lee at" in confirm.text and not _writes(stand)
    done = client.post(f"{PAGE}/remove", data={"id": HERE, "csrf_token": _csrf(confirm.text)})
    assert done.status_code == 303 and done.headers["location"] == PAGE
    assert _writes(stand) == [("DELETE", HERE, None)]
    stand.write = (403, "AuthorizationFailed")
    refused = client.post(f"{PAGE}/remove", data={"id": HERE, "csrf_token": _csrf(confirm.text)})
    assert refused.status_code == 403 and "AuthorizationFailed" in refused.text


def test_a_refused_list_is_arms_message_not_a_500(client: PortalClient, stand: Stand) -> None:
    stand.list_status = 403
    page = client.get("/portal/access")
    assert page.status_code == 403 and "AuthorizationFailed: The client may not read" in page.text


def test_signed_out_is_sent_to_the_home_page(portal: Portal) -> None:  # noqa: F811
    client = PortalClient(Starlette(routes=portal.routes()))
    try:
        assert client.get(PAGE).status_code == 303 and client.get("/portal/access").headers["location"] == "/portal/"
    finally:
        client.close()


def test_a_resource_has_its_own_page_at_its_own_scope(client: PortalClient, stand: Stand) -> None:
    page = "/portal/resourcegroups/rg/providers/Microsoft.KeyVault/vaults/kv/access"
    vault = f"{RG}/providers/Microsoft.KeyVault/vaults/kv"
    shown = client.get(page)
    assert shown.status_code == 200 and "Access control (IAM): Microsoft.KeyVault/vaults kv" in shown.text
    assert ("GET", f"{vault}{AUTHZ}/roleAssignments", None) in stand.arm
    # Both assignments are above the vault: inherited, and neither can be removed from here.
    assert shown.text.count("Inherited: ") == 2 and "Remove Reader" not in shown.text
    csrf = _csrf(shown.text)
    added = client.post(f"{page}/add", data={"role": READER, "principal_id": ANN, "csrf_token": csrf})
    assert added.status_code == 303 and added.headers["location"] == page
    assert _writes(stand)[-1][1].startswith(f"{vault}{AUTHZ}/roleAssignments/")
    slot = client.get("/portal/resourcegroups/rg/providers/Microsoft.Web/sites/app/slots/staging/access")
    assert "Access control (IAM): Microsoft.Web/sites/slots app/staging" in slot.text
    before = len(stand.arm)
    for bad in (
        "Microsoft.KeyVault/vaults",
        "Microsoft.KeyVault/vaults/kv/secrets",
        "Microsoft.KeyVault/vaults/%2e%2e",
    ):
        assert client.get(f"/portal/resourcegroups/rg/providers/{bad}/access").status_code == 400, bad
        answer = client.post(f"/portal/resourcegroups/rg/providers/{bad}/access/add", data={"csrf_token": csrf})
        assert answer.status_code == 400, bad
    assert len(stand.arm) == before


def test_an_unreadable_arm_answer_is_a_502_page(client: PortalClient, portal: Portal) -> None:  # noqa: F811
    async def garbled(
        method: str, path: str, token: str, api: str, params: dict[str, str], body: Any
    ) -> httpx.Response:
        return httpx.Response(200, text="<html>a proxy's page</html>")

    portal.arm_send = garbled
    page = client.get(PAGE)
    assert page.status_code == 502 and "could not be read" in page.text
