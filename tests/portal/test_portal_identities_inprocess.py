"""The user-assigned identity pages' own rules, in process with a small stand-in for ARM that keeps what is
written: bad names are a message and no write; a POST without the CSRF token is a 403 and no call; ARM's
refusal (a Reader's AuthorizationFailed, a bad issuer) is on the page with ARM's status and nothing is
stored; deletes go through a Yes/No page."""

# The fixtures are imported from test_portal_inprocess and named again as parameters.
# ruff: noqa: F811
from __future__ import annotations

from typing import Any

import httpx
import pytest

from lanyard.portal.routes import Portal
from tests.portal.test_portal_inprocess import PortalClient, _csrf, _sign_in, client, clock, portal  # noqa: F401

SUB = "/subscriptions/sub-1"
UAI_TYPE = "Microsoft.ManagedIdentity/userAssignedIdentities"
PAGE = "/portal/resourcegroups/rg/identities/one"
ONE = f"{SUB}/resourceGroups/rg/providers/{UAI_TYPE}/one"


class FakeArm:
    """Resource groups rg (northeurope) and other; identities and their credentials as written. With
    `refuse`, every write is ARM's 403 AuthorizationFailed (a Reader)."""

    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.refuse_group_lists = False
        self.calls: list[tuple[str, str, Any]] = []
        self.identities: dict[str, dict[str, Any]] = {}
        self.credentials: dict[str, dict[str, Any]] = {}

    def writes(self) -> list[tuple[str, str, Any]]:
        return [c for c in self.calls if c[0] != "GET"]

    def add_identity(self, group: str, name: str) -> dict[str, Any]:
        rid = f"{SUB}/resourceGroups/{group}/providers/{UAI_TYPE}/{name}"
        self.identities[rid] = {
            "id": rid,
            "name": name,
            "type": UAI_TYPE,
            "location": "northeurope",
            "properties": {"clientId": f"client-{name}", "principalId": f"principal-{name}", "tenantId": "tenant-1"},
        }
        return self.identities[rid]

    async def send(
        self, method: str, path: str, token: str, api: str, params: dict[str, str], body: Any
    ) -> httpx.Response:
        self.calls.append((method, path, body))
        if method != "GET" and self.refuse:
            error = {"code": "AuthorizationFailed", "message": f"The client does not have authorization on {path}."}
            return httpx.Response(403, json={"error": error})
        groups = {"rg": "northeurope", "other": "westus"}
        if path == f"{SUB}/resourcegroups":
            return httpx.Response(200, json={"value": [{"name": g, "location": loc} for g, loc in groups.items()]})
        if path.lower().startswith(f"{SUB}/resourcegroups/") and path.count("/") == 4:
            group = path.rsplit("/", 1)[1]
            if group not in groups:
                return httpx.Response(404, json={"error": {"code": "ResourceGroupNotFound", "message": group}})
            return httpx.Response(200, json={"name": group, "location": groups[group]})
        if path == f"{SUB}/resources":
            assert params["$filter"] == f"resourceType eq '{UAI_TYPE}'"
            listed = [{k: v for k, v in i.items() if k != "properties"} for i in self.identities.values()]
            return httpx.Response(200, json={"value": listed})
        if path.endswith(f"/providers/{UAI_TYPE}") and self.refuse_group_lists:
            error = {"code": "AuthorizationFailed", "message": "The client may not list identities here."}
            return httpx.Response(403, json={"error": error})
        if path.endswith(f"/providers/{UAI_TYPE}"):
            prefix = path.removesuffix(f"/providers/{UAI_TYPE}")
            return httpx.Response(200, json={"value": [i for k, i in self.identities.items() if k.startswith(prefix)]})
        if "/roleAssignments" in path:
            return httpx.Response(200, json={"value": []})
        if "/federatedIdentityCredentials" in path:
            owner, _, fic = path.partition("/federatedIdentityCredentials")
            if not fic:
                mine = [c for k, c in self.credentials.items() if k.startswith(owner + "/")]
                return httpx.Response(200, json={"value": mine})
            if method == "PUT":
                if not str(body["properties"]["issuer"]).startswith("https://"):
                    error = {"code": "BadRequest", "message": "issuer must be an https URL."}
                    return httpx.Response(400, json={"error": error})
                self.credentials[path] = {"name": path.rsplit("/", 1)[1], **body}
                return httpx.Response(201, json=self.credentials[path])
            if method == "DELETE":
                self.credentials.pop(path, None)
                return httpx.Response(200)
        if path in self.identities or method == "PUT":
            if method == "PUT":
                parts = path.split("/")
                made = self.add_identity(parts[4], parts[-1])
                made["location"] = body["location"]
                return httpx.Response(201, json=made)
            if method == "DELETE":
                del self.identities[path]
                return httpx.Response(200)
            return httpx.Response(200, json=self.identities[path])
        return httpx.Response(404, json={"error": {"code": "ResourceNotFound", "message": f"{path} was not found."}})


@pytest.fixture
def arm(portal: Portal) -> FakeArm:
    fake = FakeArm()
    portal.arm_send = fake.send
    return fake


def test_the_list_shows_each_identity_with_its_ids_and_a_link(
    client: PortalClient, portal: Portal, arm: FakeArm
) -> None:
    arm.add_identity("rg", "one")
    arm.add_identity("other", "two")
    _sign_in(client, portal)
    assert 'href="/portal/identities"' in client.get("/portal/").text
    page = client.get("/portal/identities")
    assert page.status_code == 200
    for text in ("client-one", "principal-one", "client-two", "principal-two", "northeurope", PAGE):
        assert text in page.text
    assert 'href="/portal/resourcegroups/other/identities/two"' in page.text
    assert "arm-token" not in page.text


def test_an_identity_readable_only_on_its_own_is_read_on_its_own(
    client: PortalClient, portal: Portal, arm: FakeArm
) -> None:
    arm.add_identity("rg", "one")
    arm.refuse_group_lists = True
    _sign_in(client, portal)
    page = client.get("/portal/identities")
    assert page.status_code == 200 and "client-one" in page.text and "principal-one" in page.text
    assert ("GET", ONE, None) in arm.calls


def test_create_puts_the_identity_in_the_groups_location(client: PortalClient, portal: Portal, arm: FakeArm) -> None:
    _sign_in(client, portal)
    csrf = _csrf(client.get("/portal/identities").text)
    made = client.post("/portal/identities", data={"group": "rg", "name": "one", "location": "", "csrf_token": csrf})
    assert made.status_code == 303 and made.headers["location"] == PAGE
    assert arm.writes() == [("PUT", ONE, {"location": "northeurope"})]
    page = client.get(PAGE)
    assert page.status_code == 200 and "client-one" in page.text and "principal-one" in page.text
    assert "tenant-1" in page.text and ONE in page.text
    chosen = client.post(
        "/portal/identities", data={"group": "other", "name": "two", "location": "eastus", "csrf_token": csrf}
    )
    assert chosen.status_code == 303 and arm.writes()[-1][2] == {"location": "eastus"}


def test_bad_names_are_a_message_and_no_write(client: PortalClient, portal: Portal, arm: FakeArm) -> None:
    arm.add_identity("rg", "one")
    _sign_in(client, portal)
    csrf = _csrf(client.get("/portal/identities").text)
    for name in ("ab", "-starts-with-hyphen", "has space", "x" * 129, "dot.ted"):
        bad = client.post("/portal/identities", data={"group": "rg", "name": name, "csrf_token": csrf})
        assert bad.status_code == 400 and "3 to 128 letters" in bad.text and 'role="alert"' in bad.text
    assert client.post("/portal/identities", data={"group": "", "name": "fine", "csrf_token": csrf}).status_code == 400
    odd = client.post("/portal/identities", data={"group": "rg", "name": "fine", "location": "a b", "csrf_token": csrf})
    assert odd.status_code == 400
    for fic in ("ab", "_x-starts-badly", "no/slash"):
        bad = client.post(
            f"{PAGE}/federated",
            data={"name": fic, "issuer": "https://issuer.example", "subject": "s", "csrf_token": csrf},
        )
        assert bad.status_code == 400 and "3 to 120 letters" in bad.text
    assert client.get(f"{PAGE}/federated/delete", params={"name": "a/b"}).status_code == 400
    assert not arm.writes()


def test_posts_without_the_csrf_token_are_403_and_make_no_call(
    client: PortalClient,
    portal: Portal,
    arm: FakeArm,
) -> None:
    arm.add_identity("rg", "one")
    _sign_in(client, portal)
    arm.calls.clear()
    for path, data in (
        ("/portal/identities", {"group": "rg", "name": "fresh"}),
        (f"{PAGE}/delete", {}),
        (f"{PAGE}/federated", {"name": "fic1", "issuer": "https://i.example", "subject": "s"}),
        (f"{PAGE}/federated/delete", {"name": "fic1"}),
    ):
        assert client.post(path, data=data).status_code == 403
        assert client.post(path, data={**data, "csrf_token": "not-it"}).status_code == 403
    assert not arm.calls and ONE in arm.identities


def test_arms_refusal_is_on_the_page_with_its_status_and_nothing_changes(
    client: PortalClient,
    portal: Portal,
    arm: FakeArm,
) -> None:
    arm.add_identity("rg", "one")
    arm.refuse = True
    _sign_in(client, portal)
    csrf = _csrf(client.get("/portal/identities").text)
    made = client.post("/portal/identities", data={"group": "rg", "name": "fresh", "csrf_token": csrf})
    assert made.status_code == 403 and "AuthorizationFailed" in made.text and 'role="alert"' in made.text
    assert 'value="fresh"' in made.text  # the form keeps what was typed
    gone = client.post(f"{PAGE}/delete", data={"csrf_token": csrf})
    assert gone.status_code == 403 and "AuthorizationFailed" in gone.text and "client-one" in gone.text
    fic = client.post(
        f"{PAGE}/federated", data={"name": "fic1", "issuer": "https://i.example", "subject": "s", "csrf_token": csrf}
    )
    assert fic.status_code == 403 and "AuthorizationFailed" in fic.text
    assert ONE in arm.identities and not arm.credentials and len(arm.identities) == 1


def test_federated_credentials_add_validate_and_delete_after_yes(
    client: PortalClient,
    portal: Portal,
    arm: FakeArm,
) -> None:
    arm.add_identity("rg", "one")
    _sign_in(client, portal)
    page = client.get(PAGE)
    assert 'value="api://AzureADTokenExchange"' in page.text and "No federated credentials." in page.text
    csrf = _csrf(page.text)
    form = {"name": "gh-main", "issuer": "http://plain.example", "subject": "repo:o/r:ref:refs/heads/main"}
    refused = client.post(f"{PAGE}/federated", data={**form, "audiences": "", "csrf_token": csrf})
    assert refused.status_code == 400 and "BadRequest: issuer must be an https URL." in refused.text
    assert 'value="http://plain.example"' in refused.text and not arm.credentials
    form["issuer"] = "https://token.actions.githubusercontent.com"
    added = client.post(f"{PAGE}/federated", data={**form, "audiences": "", "csrf_token": csrf})
    assert added.status_code == 303 and added.headers["location"] == PAGE
    fic_path = f"{ONE}/federatedIdentityCredentials/gh-main"
    assert arm.credentials[fic_path]["properties"] == {
        "issuer": "https://token.actions.githubusercontent.com",
        "subject": "repo:o/r:ref:refs/heads/main",
        "audiences": ["api://AzureADTokenExchange"],
    }
    page = client.get(PAGE)
    assert "repo:o/r:ref:refs/heads/main" in page.text and "Delete credential gh-main" in page.text
    confirm = client.get(f"{PAGE}/federated/delete", params={"name": "gh-main"})
    assert confirm.status_code == 200 and ">Yes</button>" in confirm.text and f'<a href="{PAGE}">No</a>' in confirm.text
    assert fic_path in arm.credentials  # asking is not deleting
    done = client.post(f"{PAGE}/federated/delete", data={"name": "gh-main", "csrf_token": _csrf(confirm.text)})
    assert done.status_code == 303 and fic_path not in arm.credentials
    assert ("DELETE", fic_path, None) in arm.calls


def test_deleting_the_identity_asks_first_then_goes_back_to_the_list(
    client: PortalClient,
    portal: Portal,
    arm: FakeArm,
) -> None:
    arm.add_identity("rg", "one")
    _sign_in(client, portal)
    confirm = client.get(f"{PAGE}/delete")
    assert confirm.status_code == 200 and "Delete one?" in confirm.text and ">Yes</button>" in confirm.text
    assert ONE in arm.identities
    done = client.post(f"{PAGE}/delete", data={"csrf_token": _csrf(confirm.text)})
    assert done.status_code == 303 and done.headers["location"] == "/portal/identities"
    assert ONE not in arm.identities
    assert "No user-assigned identities you can read." in client.get("/portal/identities").text


def test_a_missing_identity_is_arms_404_on_the_page(client: PortalClient, portal: Portal, arm: FakeArm) -> None:
    _sign_in(client, portal)
    page = client.get("/portal/resourcegroups/rg/identities/nobody")
    assert page.status_code == 404 and "ResourceNotFound" in page.text and 'role="alert"' in page.text


def test_signed_out_pages_redirect_home(client: PortalClient, arm: FakeArm) -> None:
    assert client.get("/portal/identities").status_code == 303
    assert client.get(PAGE).status_code == 303
    assert not arm.calls
