"""A person signs in with the real msal and azure-identity, unmodified: resource owner password,
device code (the test completes the device page over HTTPS as a browser would), authorization code
with PKCE through the login page, silent refresh for another resource; and every wrong turn gets
Entra's error (wrong password, disabled account, backoff, replayed code, wrong verifier, bad CSRF)."""

from __future__ import annotations

import base64
import json
import re
import uuid
from html import unescape
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.conftest import RunningPlatform, cli_json, run_cli, verify_with_discovery

AZ_CLI = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
ARM = "https://management.azure.com"
PASSWORD = "Sign-In-Pa55word"
# ROPC is deprecated in msal and azure-identity (still shipped, still what `az login -u -p` uses).
pytestmark = pytest.mark.filterwarnings("ignore:This API has been deprecated:DeprecationWarning")
_INPUT = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


@pytest.fixture(scope="module")
def person(platform: RunningPlatform) -> dict[str, Any]:
    upn = f"sam-{uuid.uuid4().hex[:6]}@signin.example"
    return dict(
        cli_json(
            platform.home, "ad", "user", "create", "--display-name", "Sam Signin",
            "--user-principal-name", upn, "--password", PASSWORD,
        )
    )


@pytest.fixture(autouse=True)
def realm_discovery_on_port_443(platform: RunningPlatform, monkeypatch: pytest.MonkeyPatch) -> None:
    """msal's password flow first asks `https://{host}/common/userrealm/...` on port 443 whatever the
    authority's port (msal 1.39 keeps only the host name); the test platform listens on a random port.
    msal remembers per host that realm discovery answered 404 ("managed, go on"); the set it keeps is
    given that answer here, as a platform on 443 would have given it (its /common/userrealm answers
    "Managed", checked below; test_az_user_signin.py runs msal and azure-identity against a platform on
    443 with nothing pre-seeded)."""
    from msal.authority import Authority

    host = urlsplit(platform.authority).hostname
    monkeypatch.setattr(Authority, "_domains_without_user_realm_discovery", {host})


def test_user_realm_says_managed_for_any_name(platform: RunningPlatform) -> None:
    with platform.http() as http:
        known = http.get(f"{platform.authority}/common/userrealm/someone@signin.example?api-version=1.0").json()
        other = http.get(f"{platform.authority}/common/userrealm/x@elsewhere.example?api-version=1.0").json()
    assert known["account_type"] == other["account_type"] == "Managed"


@pytest.fixture
def msal_app(platform: RunningPlatform, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", platform.endpoints["ca_bundle"])
    import msal

    return msal.PublicClientApplication(
        AZ_CLI, authority=f"{platform.authority}/{platform.tenant_id}", instance_discovery=False
    )


def check_user_token(platform: RunningPlatform, token: str, person: dict[str, Any], audience: str) -> dict[str, Any]:
    claims = verify_with_discovery(platform, token, audience)
    assert claims["oid"] == person["id"] and claims["tid"] == platform.tenant_id
    assert claims["upn"] == claims["preferred_username"] == person["userPrincipalName"]
    assert claims["name"] == "Sam Signin" and claims["idtyp"] == "user"
    assert claims["scp"] == "user_impersonation" and claims["appid"] == AZ_CLI and claims["appidacr"] == "0"
    return claims


def form_fields(html: str) -> dict[str, str]:
    return {name: unescape(value) for name, value in _INPUT.findall(html)}


def test_password_sign_in_then_silent_refresh_for_another_resource(
    platform: RunningPlatform, person: dict[str, Any], msal_app: Any
) -> None:
    result = msal_app.acquire_token_by_username_password(person["userPrincipalName"], PASSWORD, scopes=[f"{ARM}/.default"])
    assert "access_token" in result, result.get("error_description")
    check_user_token(platform, result["access_token"], person, ARM)
    assert result["id_token_claims"]["preferred_username"] == person["userPrincipalName"]
    assert result["id_token_claims"]["oid"] == person["id"]
    info = json.loads(base64.urlsafe_b64decode(result["client_info"] + "=="))
    assert info == {"uid": person["id"], "utid": platform.tenant_id}
    (account,) = msal_app.get_accounts(username=person["userPrincipalName"])
    assert account["home_account_id"] == f"{person['id']}.{platform.tenant_id}"
    vault = platform.endpoints["vault_audience"]
    silent = msal_app.acquire_token_silent([f"{vault}/.default"], account=account)
    assert silent and "access_token" in silent, silent
    check_user_token(platform, silent["access_token"], person, vault)


def test_wrong_password_unknown_user_and_disabled_account(platform: RunningPlatform, msal_app: Any) -> None:
    upn = f"dora-{uuid.uuid4().hex[:6]}@signin.example"
    user = cli_json(platform.home, "ad", "user", "create", "--display-name", "Dora", "--user-principal-name", upn,
                    "--password", PASSWORD)
    wrong = msal_app.acquire_token_by_username_password(upn, "Wrong-Pa55word", scopes=[f"{ARM}/.default"])
    nobody = msal_app.acquire_token_by_username_password(
        f"nobody-{uuid.uuid4().hex[:6]}@signin.example", PASSWORD, scopes=[f"{ARM}/.default"]
    )
    for refused in (wrong, nobody):
        assert refused["error"] == "invalid_grant" and refused["error_codes"] == [50126]
    assert wrong["error_description"].split(" Trace ID")[0] == nobody["error_description"].split(" Trace ID")[0]
    run_cli(platform.home, "ad", "user", "update", "--id", upn, "--account-enabled", "false")
    # disabled: said only to whoever knows the password
    disabled = msal_app.acquire_token_by_username_password(upn, PASSWORD, scopes=[f"{ARM}/.default"])
    assert disabled["error"] == "invalid_grant" and disabled["error_codes"] == [50057]
    still_wrong = msal_app.acquire_token_by_username_password(upn, "Wrong-Pa55word", scopes=[f"{ARM}/.default"])
    assert still_wrong["error_codes"] == [50126]
    assert user["id"]


def test_wrong_passwords_back_off(platform: RunningPlatform, msal_app: Any) -> None:
    upn = f"bo-{uuid.uuid4().hex[:6]}@signin.example"
    cli_json(platform.home, "ad", "user", "create", "--display-name", "Bo", "--user-principal-name", upn,
             "--password", PASSWORD)
    codes = [
        msal_app.acquire_token_by_username_password(upn, f"Wrong-{i}-Pass", scopes=[f"{ARM}/.default"])["error_codes"]
        for i in range(5)
    ]
    assert codes == [[50126]] * 5
    # The right password now waits too: nothing tells a guesser it was right.
    locked = msal_app.acquire_token_by_username_password(upn, PASSWORD, scopes=[f"{ARM}/.default"])
    assert locked["error"] == "invalid_grant" and locked["error_codes"] == [50053]


def complete_device_page(platform: RunningPlatform, user_code: str, upn: str, password: str) -> httpx.Response:
    with platform.http() as http:
        page = http.get(f"{platform.authority}/devicelogin")
        assert page.status_code == 200
        csrf = form_fields(page.text)["csrf_token"]
        return http.post(
            f"{platform.authority}/devicelogin",
            data={"csrf_token": csrf, "otc": user_code.lower(), "username": upn, "password": password},
        )


def test_device_code_flow(platform: RunningPlatform, person: dict[str, Any], msal_app: Any) -> None:
    flow = msal_app.initiate_device_flow(scopes=[f"{ARM}/.default"])
    assert "user_code" in flow, flow
    assert flow["verification_uri"] == f"{platform.authority}/devicelogin"
    poll = {"grant_type": "urn:ietf:params:oauth:grant-type:device_code", "client_id": AZ_CLI,
            "device_code": flow["device_code"]}
    with platform.http() as http:
        pending = http.post(platform.token_url_v2, data=poll)
    assert pending.status_code == 400 and pending.json()["error"] == "authorization_pending"
    wrong = complete_device_page(platform, flow["user_code"], person["userPrincipalName"], "Not-The-Pa55word")
    assert wrong.status_code == 200 and "Your account or password is incorrect." in wrong.text
    done = complete_device_page(platform, flow["user_code"], person["userPrincipalName"], PASSWORD)
    assert done.status_code == 200 and 'id="done"' in done.text and "Microsoft Azure CLI" in done.text
    result = msal_app.acquire_token_by_device_flow(flow)
    assert "access_token" in result, result.get("error_description")
    check_user_token(platform, result["access_token"], person, ARM)
    with platform.http() as http:
        again = http.post(platform.token_url_v2, data=poll)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    reused = complete_device_page(platform, flow["user_code"], person["userPrincipalName"], PASSWORD)
    assert reused.status_code == 400 and "expired or is not valid" in reused.text


def sign_in_on_page(
    platform: RunningPlatform, auth_uri: str, upn: str, password: str, *, csrf: bool = True
) -> httpx.Response:
    with platform.http() as http:
        page = http.get(auth_uri)
        assert page.status_code == 200, page.text
        fields = form_fields(page.text)
        if not csrf:
            fields.pop("csrf_token")
        action = re.search(r'<form method="post" action="([^"]+)"', page.text)
        assert action is not None
        return http.post(f"{platform.authority}{unescape(action.group(1))}", data={**fields, "username": upn,
                                                                                   "password": password})


def test_authorization_code_with_pkce_through_the_login_page(
    platform: RunningPlatform, person: dict[str, Any], msal_app: Any
) -> None:
    flow = msal_app.initiate_auth_code_flow(
        [f"{ARM}/.default"], redirect_uri="http://localhost:8400/", response_mode="form_post"
    )
    with platform.http() as http:
        page = http.get(flow["auth_uri"])
    csp = page.headers["content-security-policy"]
    assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp and "script-src" not in csp
    assert page.headers["x-frame-options"] == "DENY" and "no-store" in page.headers["cache-control"]
    cookie = page.headers["set-cookie"]
    assert cookie.startswith("__Host-lanyard-csrf=") and all(
        flag in cookie.lower() for flag in ("secure", "httponly", "samesite=strict")
    )
    forged = sign_in_on_page(platform, flow["auth_uri"], person["userPrincipalName"], PASSWORD, csrf=False)
    assert forged.status_code == 403 and "location" not in forged.headers
    wrong = sign_in_on_page(platform, flow["auth_uri"], person["userPrincipalName"], "Wrong-Pa55word")
    assert wrong.status_code == 200 and "Your account or password is incorrect." in wrong.text
    signed_in = sign_in_on_page(platform, flow["auth_uri"], person["userPrincipalName"], PASSWORD)
    # form_post: a page whose form (sent by our one script file) posts the code to the redirect URI
    assert signed_in.status_code == 200, signed_in.text
    assert '<form method="post" action="http://localhost:8400/"' in signed_in.text
    csp = signed_in.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "form-action 'self' http://localhost:8400" in csp
    auth_response = form_fields(signed_in.text)
    result = msal_app.acquire_token_by_auth_code_flow(flow, auth_response)
    assert "access_token" in result, result.get("error_description")
    check_user_token(platform, result["access_token"], person, ARM)
    sent_nonce = parse_qs(urlsplit(flow["auth_uri"]).query)["nonce"][0]
    assert result["id_token_claims"]["nonce"] == sent_nonce
    # The code once more: refused, and the refresh token it gave is revoked with it.
    redeem = {"grant_type": "authorization_code", "client_id": AZ_CLI, "code": auth_response["code"],
              "redirect_uri": "http://localhost:8400/", "code_verifier": flow["code_verifier"],
              "scope": f"{ARM}/.default openid offline_access"}
    with platform.http() as http:
        replay = http.post(platform.token_url_v2, data=redeem)
        assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
        assert replay.json()["error_codes"] == [54005]
        refresh = http.post(platform.token_url_v2, data={"grant_type": "refresh_token", "client_id": AZ_CLI,
                                                         "refresh_token": result["refresh_token"],
                                                         "scope": f"{ARM}/.default"})
        assert refresh.status_code == 400 and refresh.json()["error_codes"] == [50173]


def test_wrong_pkce_verifier_and_unvetted_redirect(
    platform: RunningPlatform, person: dict[str, Any], msal_app: Any
) -> None:
    # response_mode query: the code comes back in the redirect (msal warns about query; it is Entra's default)
    with pytest.warns(UserWarning, match="form_post"):
        flow = msal_app.initiate_auth_code_flow([f"{ARM}/.default"], redirect_uri="http://localhost:8400/")
    signed_in = sign_in_on_page(platform, flow["auth_uri"], person["userPrincipalName"], PASSWORD)
    code = parse_qs(urlsplit(signed_in.headers["location"]).query)["code"][0]
    with platform.http() as http:
        wrong = http.post(platform.token_url_v2, data={
            "grant_type": "authorization_code", "client_id": AZ_CLI, "code": code,
            "redirect_uri": "http://localhost:8400/", "code_verifier": "x" * 43, "scope": f"{ARM}/.default",
        })
        assert wrong.status_code == 400 and wrong.json()["error_codes"] == [50148]
        # A code is never sent to an address the client may not use: the page says so instead.
        evil = flow["auth_uri"].replace("localhost%3A8400", "evil.example")
        page = http.get(evil)
        assert page.status_code == 400 and "AADSTS50011" in page.text and "location" not in page.headers
        no_pkce = re.sub(r"&code_challenge=[^&]+", "", flow["auth_uri"])
        refused = http.get(no_pkce)
        assert refused.status_code == 302 and "error=invalid_request" in refused.headers["location"]


def test_refresh_tokens_rotate_and_are_bound_to_their_client(
    platform: RunningPlatform, person: dict[str, Any]
) -> None:
    with platform.http() as http:
        first = http.post(platform.token_url_v2, data={
            "grant_type": "password", "client_id": AZ_CLI, "username": person["userPrincipalName"],
            "password": PASSWORD, "scope": f"{ARM}/.default offline_access openid",
        }).json()
        refresh = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"], "scope": f"{ARM}/.default"}
        other = http.post(platform.token_url_v2, data={**refresh, "client_id": "1950a258-227b-4e31-a9cf-717495945fc2"})
        assert other.status_code == 400 and other.json()["error"] == "invalid_grant"
        second = http.post(platform.token_url_v2, data={**refresh, "client_id": AZ_CLI}).json()
        assert second["refresh_token"] != first["refresh_token"]
        check_user_token(platform, second["access_token"], person, ARM)
        # A new password ends every refresh token of the user.
        run_cli(platform.home, "ad", "user", "update", "--id", person["id"], "--password", PASSWORD + "!")
        try:
            after = http.post(platform.token_url_v2, data={**refresh, "client_id": AZ_CLI,
                                                           "refresh_token": second["refresh_token"]})
            assert after.status_code == 400 and after.json()["error_codes"] == [50173]
        finally:
            run_cli(platform.home, "ad", "user", "update", "--id", person["id"], "--password", PASSWORD)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # UsernamePasswordCredential is deprecated
def test_azure_identity_username_password_credential(
    platform: RunningPlatform, person: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", platform.endpoints["ca_bundle"])
    from azure.identity import UsernamePasswordCredential

    credential = UsernamePasswordCredential(
        AZ_CLI, person["userPrincipalName"], PASSWORD, tenant_id=platform.tenant_id,
        authority=platform.authority, disable_instance_discovery=True,
    )
    token = credential.get_token(f"{ARM}/.default")
    check_user_token(platform, token.token, person, ARM)


def test_v1_endpoint_password_grant_with_resource(platform: RunningPlatform, person: dict[str, Any]) -> None:
    with platform.http() as http:
        answer = http.post(platform.token_url_v1, data={
            "grant_type": "password", "client_id": AZ_CLI, "username": person["userPrincipalName"],
            "password": PASSWORD, "resource": ARM,
        })
        app_only = http.post(platform.token_url_v1, data={
            "grant_type": "client_credentials", "client_id": AZ_CLI, "client_secret": "x", "resource": ARM,
        })
    body = answer.json()
    assert answer.status_code == 200 and body["resource"] == ARM and isinstance(body["expires_in"], str)
    assert body["refresh_token"] and body["id_token"]
    check_user_token(platform, body["access_token"], person, ARM)
    # A first-party public client is never an application of the tenant: no app-only token for it.
    assert app_only.status_code in (400, 401) and app_only.json()["error"] in ("unauthorized_client", "invalid_client")
