"""The host-agent and audit pages in process, with a recording stand-in for the platform's operator API
(/lanyard/v1/...): every call carries the person's token; a POST without the CSRF token is a 403 with no
call; Remove is a confirmation first and the DELETE only after Yes; the join token is only in the answer
to its POST; the API's refusal and its 400 for a bad filter are on the page with the API's status;
paging follows the API's continuation."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from lanyard.audit.api import _time
from lanyard.core.errors import ArmError
from lanyard.portal.routes import Portal, PortalError
from tests.portal.test_portal_inprocess import PortalClient, _csrf, _sign_in, client, clock, portal  # noqa: F401

HOST = {"hostId": "6f1c0d1e-0000-4000-8000-000000000001", "name": "edge-1", "principalId": "p-1", "placements": []}
SITE = "/subscriptions/sub-1/resourceGroups/rg/providers/Microsoft.Web/sites/app"
REFUSAL = {"code": "AuthorizationFailed", "message": "The client 'x' does not have authorization to perform action"}
RECORDS = [
    {"chain": "platform", "seq": n, "at": 1796169600.0 + n, "action": "token.issue", "outcome": "granted"}
    | {"principal": "p-1", "app_id": "a-1", "resource": "https://management.azure.com", "host": None}
    | {"detail": {"token_ref": f"ref{n}", "credential": "certificate"}}
    for n in range(1, 4)
]


class OperatorApi:
    """Answers like /lanyard/v1 would; `refuse` makes every call an AuthorizationFailed 403."""

    def __init__(self, refuse: bool = False) -> None:
        self.calls: list[tuple[str, str, dict[str, str], Any]] = []
        self.refuse = refuse
        self.hosts = [dict(HOST, placements=[SITE])]

    async def __call__(self, method: str, path: str, token: str, params: dict[str, str], body: Any) -> httpx.Response:
        assert token == "arm-token"
        self.calls.append((method, path, params, body))
        if self.refuse:
            return httpx.Response(403, json={"error": REFUSAL})
        if path == "/lanyard/v1/hosts":
            return httpx.Response(200, json={"value": self.hosts})
        if path.endswith("/placements"):
            return httpx.Response(200, json={"hostId": HOST["hostId"], "resourceId": "placed"})
        if method == "DELETE":
            self.hosts = []
            return httpx.Response(200, json={"hostId": HOST["hostId"], "name": "edge-1", "revoked": True})
        if path == "/lanyard/v1/joinTokens":
            return httpx.Response(200, json={"token": "lyj_secret-join-token", "expiresInSeconds": 3600})
        if path == "/lanyard/v1/audit":
            try:  # the API's own parsing of the time filters
                _time(params.get("since"), "since")
                _time(params.get("until"), "until")
            except ArmError as exc:
                return httpx.Response(exc.status_value, json=exc.body())
            assert params["order"] == "newest"
            before, top = int(params.get("before", "999")), int(params["top"])
            page = [r for r in reversed(RECORDS) if r["seq"] < before][:top]
            body: dict[str, Any] = {"value": page}
            if page and page[-1]["seq"] > RECORDS[0]["seq"]:
                body["nextLink"] = f"https://platform.test/lanyard/v1/audit?top={top}&before={page[-1]['seq']}"
            return httpx.Response(200, json=body)
        return httpx.Response(404, json={"error": {"code": "NotFound", "message": path}})


@pytest.fixture
def api(portal: Portal) -> OperatorApi:  # noqa: F811
    stand_in = OperatorApi()
    portal.operator_send = stand_in
    return stand_in


def test_hosts_page_lists_what_the_api_returns(client: PortalClient, portal: Portal, api: OperatorApi) -> None:  # noqa: F811
    _sign_in(client, portal)
    home = client.get("/portal/")
    assert 'href="/portal/hosts"' in home.text and 'href="/portal/audit"' in home.text
    page = client.get("/portal/hosts")
    assert page.status_code == 200
    assert "edge-1" in page.text and HOST["hostId"] in page.text and SITE in page.text
    assert api.calls == [("GET", "/lanyard/v1/hosts", {}, None)]
    for url in ("/portal/hosts", "/portal/audit", f"/portal/hosts/{HOST['hostId']}/remove"):
        shown = client.get(url)
        assert "<script" not in shown.text and "style=" not in shown.text
        assert "unsafe-inline" not in shown.headers["content-security-policy"]


def test_remove_is_a_confirmation_then_a_delete(client: PortalClient, portal: Portal, api: OperatorApi) -> None:  # noqa: F811
    _sign_in(client, portal)
    url = f"/portal/hosts/{HOST['hostId']}/remove"
    confirm = client.get(url)
    assert (
        confirm.status_code == 200
        and ">Yes</button>" in confirm.text
        and '<a href="/portal/hosts">No</a>' in confirm.text
    )
    assert not [c for c in api.calls if c[0] == "DELETE"]
    assert client.post(url, data={"csrf_token": "not-it"}).status_code == 403
    assert client.post(url, data={}).status_code == 403
    assert not [c for c in api.calls if c[0] == "DELETE"]
    done = client.post(url, data={"csrf_token": _csrf(confirm.text)})
    assert done.status_code == 303 and done.headers["location"] == "/portal/hosts?removed=edge-1"
    assert [c for c in api.calls if c[0] == "DELETE"] == [("DELETE", f"/lanyard/v1/hosts/{HOST['hostId']}", {}, None)]
    after = client.get(done.headers["location"])
    assert "Host edge-1 was removed." in after.text and "No hosts are listed." in after.text
    missing = client.get("/portal/hosts/nope/remove")
    assert missing.status_code == 404 and "was not found" in missing.text


def test_join_token_is_shown_once(client: PortalClient, portal: Portal, api: OperatorApi) -> None:  # noqa: F811
    _sign_in(client, portal)
    csrf = _csrf(client.get("/portal/hosts").text)
    assert client.post("/portal/hosts/jointokens", data={"name": "edge-2"}).status_code == 403
    assert not [c for c in api.calls if c[0] == "POST"]
    bad = client.post("/portal/hosts/jointokens", data={"name": "x" * 129, "csrf_token": csrf})
    assert bad.status_code == 400 and not [c for c in api.calls if c[0] == "POST"]
    made = client.post("/portal/hosts/jointokens", data={"name": "edge-2", "csrf_token": csrf})
    assert made.status_code == 200 and "lyj_secret-join-token" in made.text
    assert made.headers["cache-control"] == "no-store"
    assert [c for c in api.calls if c[0] == "POST"] == [("POST", "/lanyard/v1/joinTokens", {}, {"name": "edge-2"})]
    assert "lyj_secret-join-token" not in client.get("/portal/hosts").text


def test_a_refusal_is_the_apis_message_and_status(client: PortalClient, portal: Portal) -> None:  # noqa: F811
    api = OperatorApi(refuse=True)
    portal.operator_send = api
    _sign_in(client, portal)
    for url in ("/portal/hosts", "/portal/audit"):
        page = client.get(url)
        assert page.status_code == 403 and 'role="alert"' in page.text and "AuthorizationFailed" in page.text
    csrf = _csrf(client.get("/portal/hosts").text)
    refused = client.post("/portal/hosts/jointokens", data={"csrf_token": csrf})
    assert refused.status_code == 403 and "AuthorizationFailed" in refused.text and "lyj_" not in refused.text
    removed = client.post(f"/portal/hosts/{HOST['hostId']}/remove", data={"csrf_token": csrf})
    assert removed.status_code == 403 and "AuthorizationFailed" in removed.text


def test_audit_filters_and_paging_follow_the_api(client: PortalClient, portal: Portal, api: OperatorApi) -> None:  # noqa: F811
    _sign_in(client, portal)
    first = client.get("/portal/audit", params={"principal": "p-1", "action": "token.issue", "top": "2"})
    assert first.status_code == 200
    assert api.calls[-1] == (
        "GET",
        "/lanyard/v1/audit",
        {"principal": "p-1", "action": "token.issue", "top": "2", "order": "newest"},
        None,
    )
    assert "ref3" in first.text and "ref2" in first.text and "ref1" not in first.text  # newest first
    assert first.text.index("ref3") < first.text.index("ref2")
    assert "2026-12-02T00:00:03Z" in first.text
    link = first.text.split('">Next page</a>')[0].rsplit('href="', 1)[1].replace("&amp;", "&")
    assert parse_qs(urlsplit(link).query) == {
        "principal": ["p-1"],
        "action": ["token.issue"],
        "top": ["2"],
        "before": ["2"],
    }
    second = client.get(link)
    assert "ref1" in second.text and "ref3" not in second.text and ">Next page</a>" not in second.text
    assert api.calls[-1][2]["before"] == "2" and "First page" in second.text


def test_bad_audit_filters_are_a_400_message(client: PortalClient, portal: Portal, api: OperatorApi) -> None:  # noqa: F811
    _sign_in(client, portal)
    bad = client.get("/portal/audit", params={"since": "yesterday"})
    assert bad.status_code == 400 and 'role="alert"' in bad.text
    assert "InvalidParameter: since must be an ISO 8601 time or epoch seconds." in bad.text
    calls = len(api.calls)
    for params in ({"top": "0"}, {"top": "many"}, {"before": "x"}, {"principal": "p" * 1201}):
        page = client.get("/portal/audit", params=params)
        assert page.status_code == 400 and 'role="alert"' in page.text
    assert len(api.calls) == calls


def test_operator_call_reaches_only_the_operator_api(portal: Portal, api: OperatorApi) -> None:  # noqa: F811
    session = portal.sessions.create()
    for path in ("/lanyard/v1/agent/bindings", "/lanyard/v1/join", "/subscriptions/sub-1", "/lanyard/v1/hosts/a/b"):
        with pytest.raises(PortalError):
            asyncio.run(portal.operator_call("GET", path, session))
    assert not api.calls


def test_signed_out_is_sent_to_sign_in(client: PortalClient, api: OperatorApi) -> None:  # noqa: F811
    for url in ("/portal/hosts", "/portal/audit", f"/portal/hosts/{HOST['hostId']}/remove"):
        answer = client.get(url)
        assert answer.status_code == 303 and answer.headers["location"] == "/portal/"
    assert client.post("/portal/hosts/jointokens", data={"name": "x"}).status_code == 403
    assert not api.calls


def test_an_unreadable_answer_is_a_502_page(client: PortalClient, portal: Portal) -> None:  # noqa: F811
    async def send(method: str, path: str, token: str, params: dict[str, str], body: Any) -> httpx.Response:
        return httpx.Response(200, text="<html>not json</html>")

    portal.operator_send = send
    _sign_in(client, portal)
    for url in ("/portal/hosts", "/portal/audit"):
        page = client.get(url)
        assert page.status_code == 502 and "could not be read" in page.text
    csrf = _csrf(client.get("/portal/hosts").text)
    made = client.post("/portal/hosts/jointokens", data={"csrf_token": csrf})
    assert made.status_code == 502 and "could not be read" in made.text


def test_placing_is_one_put_and_taking_off_one_delete(client: PortalClient, portal: Portal, api: OperatorApi) -> None:  # noqa: F811
    _sign_in(client, portal)
    csrf = _csrf(client.get("/portal/hosts").text)
    url = f"/portal/hosts/{HOST['hostId']}/placements"
    site = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/app"
    assert client.post(url, data={"resource_id": site}).status_code == 403
    for bad in ("app", "/subscriptions/s/resourceGroups/rg", f"{site}/../../x", ""):
        refused = client.post(url, data={"resource_id": bad, "csrf_token": csrf})
        assert refused.status_code == 400 and "A placement names" in refused.text
    assert not [c for c in api.calls if c[1].endswith("/placements")]
    assert client.post(url, data={"resource_id": site, "csrf_token": csrf}).status_code == 303
    assert api.calls[-1] == ("PUT", f"/lanyard/v1/hosts/{HOST['hostId']}/placements", {}, {"resourceId": site})
    off = client.post(f"{url}/remove", data={"resource_id": site, "csrf_token": csrf})
    assert off.status_code == 303
    assert api.calls[-1] == ("DELETE", f"/lanyard/v1/hosts/{HOST['hostId']}/placements", {"resourceId": site}, None)
