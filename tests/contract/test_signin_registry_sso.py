"""Registered applications sign users in with the real msal: a web app (ConfidentialClientApplication)
redeems its code with its secret, a public client (PublicClientApplication) with PKCE only, each only
to a redirect URI registered for it. A browser signed in once is signed in again without its password
(SSO) until it signs out, its password changes or its account is disabled. A user made to change
their password does so on the login page; the password and device-code grants refuse them."""

from __future__ import annotations

import re
import uuid
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from tests.conftest import RunningPlatform, cli_json, run_cli, secret_token, verify_with_discovery
from tests.contract.test_user_signin import complete_device_page, form_fields

AZ_CLI = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
ARM = "https://management.azure.com"
PASSWORD = "Sso-Sign-In-Pa55"
WEB_REDIRECT = "https://web.example/signin-oidc"
pytestmark = pytest.mark.filterwarnings("ignore:This API has been deprecated:DeprecationWarning")


@pytest.fixture(autouse=True)
def realm_discovery_on_port_443(platform: RunningPlatform, monkeypatch: pytest.MonkeyPatch) -> None:
    """As in test_user_signin.py: msal asks user-realm discovery on port 443 (answered 'Managed')."""
    from msal.authority import Authority

    monkeypatch.setattr(Authority, "_domains_without_user_realm_discovery", {urlsplit(platform.authority).hostname})


def new_user(platform: RunningPlatform, *extra: str) -> dict[str, Any]:
    upn = f"sso-{uuid.uuid4().hex[:8]}@sso.example"
    return dict(
        cli_json(
            platform.home, "ad", "user", "create", "--display-name", "Sso User", "--user-principal-name", upn,
            "--password", PASSWORD, *extra,
        )
    )


@pytest.fixture(scope="module")
def web_app(platform: RunningPlatform) -> dict[str, Any]:
    """A registered app with a web redirect, a loopback public-client redirect, and a secret."""
    app = cli_json(
        platform.home, "ad", "app", "create", "--display-name", f"web-{uuid.uuid4().hex[:6]}",
        "--web-redirect-uris", WEB_REDIRECT, "https://web.example/other",  # az's spelling
        "--public-client-redirect-uris", "http://localhost",
    )
    cli_json(platform.home, "ad", "sp", "create", "--id", app["appId"])
    secret = cli_json(platform.home, "ad", "app", "credential", "reset", "--id", app["appId"])["password"]
    return {**app, "secret": secret}


@pytest.fixture(scope="module")
def other_app(platform: RunningPlatform) -> dict[str, Any]:
    app = cli_json(
        platform.home, "ad", "app", "create", "--display-name", f"other-{uuid.uuid4().hex[:6]}",
        "--web-redirect-uris", "https://other.example/cb https://other.example/two",  # quoted works too
    )
    cli_json(platform.home, "ad", "sp", "create", "--id", app["appId"])
    return dict(app)


def authority_of(platform: RunningPlatform) -> str:
    return f"{platform.authority}/{platform.tenant_id}"


@pytest.fixture
def ca_bundle(platform: RunningPlatform, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", platform.endpoints["ca_bundle"])


class Browser:
    """One browser: a cookie jar kept across requests, redirects not followed (we read them)."""

    def __init__(self, platform: RunningPlatform) -> None:
        self.platform = platform
        self.http = platform.http()

    def get(self, url: str) -> httpx.Response:
        return self.http.get(url)

    def sign_in(self, page: httpx.Response, upn: str, password: str, **extra: str) -> httpx.Response:
        assert page.status_code == 200, page.text
        fields = form_fields(page.text)
        action = re.search(r'<form method="post" action="([^"]+)"', page.text)
        assert action is not None
        return self.http.post(
            f"{self.platform.authority}{unescape(action.group(1))}",
            data={**fields, "username": upn, "password": password, **extra},
        )

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def browser(platform: RunningPlatform) -> Any:
    b = Browser(platform)
    yield b
    b.close()


def authorize_url(platform: RunningPlatform, client_id: str, redirect_uri: str, **extra: str) -> str:
    query = {
        "client_id": client_id, "response_type": "code", "redirect_uri": redirect_uri,
        "scope": f"{ARM}/.default openid offline_access", "state": "st-1",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "code_challenge_method": "S256",
        **extra,
    }
    return f"{platform.authority}/{platform.tenant_id}/oauth2/v2.0/authorize?{urlencode(query)}"


def code_of(response: httpx.Response) -> str:
    assert response.status_code == 302, response.text
    return parse_qs(urlsplit(response.headers["location"]).query)["code"][0]


# -- the registry -------------------------------------------------------------------------------


def test_graph_keeps_redirect_uris_and_refuses_bad_ones_without_half_saving(
    platform: RunningPlatform, web_app: dict[str, Any]
) -> None:
    shown = cli_json(platform.home, "ad", "app", "show", "--id", web_app["appId"])
    assert shown["web"]["redirectUris"] == [WEB_REDIRECT, "https://web.example/other"]
    assert shown["publicClient"]["redirectUris"] == ["http://localhost"]
    assert shown["spa"]["redirectUris"] == [] and shown["isFallbackPublicClient"] is None
    for bad in ("http://web.example/cb", "https://web.example/*", "https://web.example/cb#x", "not a uri"):
        refused = run_cli(
            platform.home, "ad", "app", "update", "--id", web_app["appId"], "--web-redirect-uris", bad,
            "--is-fallback-public-client", "true", check=False,
        )
        assert refused.returncode != 0 and "redirectUris" in refused.stderr, refused.stderr
    again = cli_json(platform.home, "ad", "app", "show", "--id", web_app["appId"])
    assert again["web"] == shown["web"] and again["isFallbackPublicClient"] is None
    # Graph directly: spa redirect URIs on POST, one list replaced on PATCH, the others kept
    admin = platform.endpoints["admin"]
    graph = platform.endpoints["graph"]
    token = secret_token(platform, admin["client_id"], admin["client_secret"], graph)
    headers = {"Authorization": f"Bearer {token}"}
    with platform.http() as http:
        made = http.post(f"{graph}/v1.0/applications", headers=headers, json={
            "displayName": f"spa-{uuid.uuid4().hex[:6]}", "spa": {"redirectUris": ["https://spa.example/"]},
            "publicClient": {"redirectUris": ["myapp://auth"]}, "isFallbackPublicClient": True})
        assert made.status_code == 201, made.text
        assert made.json()["spa"]["redirectUris"] == ["https://spa.example/"]
        assert made.json()["isFallbackPublicClient"] is True
        patched = http.patch(f"{graph}/v1.0/applications/{made.json()['id']}", headers=headers,
                             json={"spa": {"redirectUris": ["https://spa.example/app"]}})
        assert patched.status_code == 204
        got = http.get(f"{graph}/v1.0/applications/{made.json()['id']}", headers=headers).json()
        assert got["spa"]["redirectUris"] == ["https://spa.example/app"]
        assert got["publicClient"]["redirectUris"] == ["myapp://auth"]
        refused = http.post(f"{graph}/v1.0/applications", headers=headers, json={
            "displayName": "never-made", "web": {"redirectUris": ["ftp://x.example/"]}})
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "Request_BadRequest"
        listed = http.get(f"{graph}/v1.0/applications?$filter=displayName eq 'never-made'", headers=headers).json()
        assert listed["value"] == []


def test_web_app_signs_a_user_in_with_msal_confidential_client(
    platform: RunningPlatform, web_app: dict[str, Any], browser: Browser, ca_bundle: None
) -> None:
    import msal

    person = new_user(platform)
    app = msal.ConfidentialClientApplication(
        web_app["appId"], client_credential=web_app["secret"], authority=authority_of(platform),
        instance_discovery=False,
    )
    flow = app.initiate_auth_code_flow([f"{ARM}/.default"], redirect_uri=WEB_REDIRECT, response_mode="form_post")
    page = browser.get(flow["auth_uri"])
    assert web_app["displayName"] in page.text
    signed_in = browser.sign_in(page, person["userPrincipalName"], PASSWORD)
    assert signed_in.status_code == 200 and f'action="{WEB_REDIRECT}"' in signed_in.text
    result = app.acquire_token_by_auth_code_flow(flow, form_fields(signed_in.text))
    assert "access_token" in result, result.get("error_description")
    claims = verify_with_discovery(platform, result["access_token"], ARM)
    assert claims["oid"] == person["id"] and claims["appid"] == web_app["appId"] and claims["appidacr"] == "1"


def test_web_app_with_a_certificate_redeems_its_code_with_an_assertion(
    platform: RunningPlatform, browser: Browser, ca_bundle: None
) -> None:
    import msal
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    made = cli_json(platform.home, "ad", "sp", "create-for-rbac", "--name", f"cert-web-{uuid.uuid4().hex[:6]}",
                    "--create-cert")
    run_cli(platform.home, "ad", "app", "update", "--id", made["appId"], "--web-redirect-uris", WEB_REDIRECT)
    pem = Path(made["fileWithCertAndPrivateKey"]).read_text()
    thumbprint = x509.load_pem_x509_certificate(pem.encode()).fingerprint(hashes.SHA1()).hex()
    person = new_user(platform)
    app = msal.ConfidentialClientApplication(
        made["appId"], client_credential={"private_key": pem, "thumbprint": thumbprint},
        authority=authority_of(platform), instance_discovery=False,
    )
    flow = app.initiate_auth_code_flow([f"{ARM}/.default"], redirect_uri=WEB_REDIRECT, response_mode="form_post")
    signed_in = browser.sign_in(browser.get(flow["auth_uri"]), person["userPrincipalName"], PASSWORD)
    result = app.acquire_token_by_auth_code_flow(flow, form_fields(signed_in.text))
    assert "access_token" in result, result.get("error_description")
    claims = verify_with_discovery(platform, result["access_token"], ARM)
    assert claims["oid"] == person["id"] and claims["appid"] == made["appId"] and claims["appidacr"] == "2"


def test_a_web_redirect_code_needs_the_client_secret(
    platform: RunningPlatform, web_app: dict[str, Any], browser: Browser
) -> None:
    person = new_user(platform)
    page = browser.get(authorize_url(platform, web_app["appId"], WEB_REDIRECT))
    code = code_of(browser.sign_in(page, person["userPrincipalName"], PASSWORD))
    redeem = {"grant_type": "authorization_code", "client_id": web_app["appId"], "code": code,
              "redirect_uri": WEB_REDIRECT, "code_verifier": "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
              "scope": f"{ARM}/.default"}
    with platform.http() as http:
        public = http.post(platform.token_url_v2, data=redeem)
        assert public.status_code == 401 and public.json()["error"] == "invalid_client"
        assert public.json()["error_codes"] == [7000218]
        # nothing was spent: the same code with the secret is still good
        ok = http.post(platform.token_url_v2, data={**redeem, "client_secret": web_app["secret"]})
        assert ok.status_code == 200, ok.text
        # a password grant without a credential needs isFallbackPublicClient
        ropc = http.post(platform.token_url_v2, data={
            "grant_type": "password", "client_id": web_app["appId"], "username": person["userPrincipalName"],
            "password": PASSWORD, "scope": f"{ARM}/.default"})
        assert ropc.status_code == 401 and ropc.json()["error_codes"] == [7000218]


def test_public_client_of_a_registered_app_uses_pkce_on_any_loopback_port(
    platform: RunningPlatform, web_app: dict[str, Any], browser: Browser, ca_bundle: None
) -> None:
    import msal

    person = new_user(platform)
    app = msal.PublicClientApplication(web_app["appId"], authority=authority_of(platform), instance_discovery=False)
    flow = app.initiate_auth_code_flow(
        [f"{ARM}/.default"], redirect_uri="http://localhost:53117/", response_mode="form_post"
    )
    signed_in = browser.sign_in(browser.get(flow["auth_uri"]), person["userPrincipalName"], PASSWORD)
    assert signed_in.status_code == 200, signed_in.text
    result = app.acquire_token_by_auth_code_flow(flow, form_fields(signed_in.text))
    assert "access_token" in result, result.get("error_description")
    claims = verify_with_discovery(platform, result["access_token"], ARM)
    assert claims["oid"] == person["id"] and claims["appidacr"] == "0"


SPA_REDIRECT = "https://spa.example/app"
VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"  # the challenge authorize_url sends


def test_a_single_page_app_redeems_its_code_only_cross_origin(
    platform: RunningPlatform, web_app: dict[str, Any], browser: Browser
) -> None:
    """Entra's SPA rules: a code sent to a `spa` redirect and its refresh tokens are redeemed only by a
    browser's cross-origin request (an Origin header; AADSTS9002327 otherwise, nothing spent), no other
    code is (AADSTS9002326), and the token endpoint answers CORS: a preflight, and `*` on the answer.
    The SPA's refresh token says how long it has left (24 hours, not extended; in-process test)."""
    admin, graph = platform.endpoints["admin"], platform.endpoints["graph"]
    token = secret_token(platform, admin["client_id"], admin["client_secret"], graph)
    with platform.http() as http:
        made = http.post(f"{graph}/v1.0/applications", headers={"Authorization": f"Bearer {token}"}, json={
            "displayName": f"spa-{uuid.uuid4().hex[:6]}", "spa": {"redirectUris": [SPA_REDIRECT]}})
        assert made.status_code == 201, made.text
    app_id = made.json()["appId"]
    cli_json(platform.home, "ad", "sp", "create", "--id", app_id)
    person = new_user(platform)
    code = code_of(browser.sign_in(browser.get(authorize_url(platform, app_id, SPA_REDIRECT)),
                                   person["userPrincipalName"], PASSWORD))
    redeem = {"grant_type": "authorization_code", "client_id": app_id, "code": code, "redirect_uri": SPA_REDIRECT,
              "code_verifier": VERIFIER, "scope": f"{ARM}/.default offline_access"}
    origin = {"Origin": "https://spa.example"}
    with platform.http() as http:
        preflight = http.options(platform.token_url_v2, headers={
            **origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"})
        assert preflight.status_code == 204 and preflight.headers["access-control-allow-origin"] == "*"
        assert "POST" in preflight.headers["access-control-allow-methods"]
        assert preflight.headers["access-control-allow-headers"] == "content-type"
        same_site = http.post(platform.token_url_v2, data=redeem)
        assert same_site.status_code == 400 and same_site.json()["error_codes"] == [9002327], same_site.text
        assert same_site.headers["access-control-allow-origin"] == "*"
        ok = http.post(platform.token_url_v2, data=redeem, headers=origin)  # the same code: not spent above
        assert ok.status_code == 200, ok.text
        body = ok.json()
        assert 86000 < body["refresh_token_expires_in"] <= 86400 and ok.headers["access-control-allow-origin"] == "*"
        assert verify_with_discovery(platform, body["access_token"], ARM)["oid"] == person["id"]
        refresh = {"grant_type": "refresh_token", "client_id": app_id, "refresh_token": body["refresh_token"],
                   "scope": f"{ARM}/.default"}
        assert http.post(platform.token_url_v2, data=refresh).json()["error_codes"] == [9002327]
        again = http.post(platform.token_url_v2, data=refresh, headers=origin)
        assert again.status_code == 200 and again.json()["refresh_token_expires_in"] <= body["refresh_token_expires_in"]

        # A public client's code redeemed cross-origin: refused, and not spent either.
        public_code = code_of(browser.get(authorize_url(platform, web_app["appId"], "http://localhost:8400/")))
        public = {**redeem, "client_id": web_app["appId"], "code": public_code, "redirect_uri": "http://localhost:8400/"}
        cross = http.post(platform.token_url_v2, data=public, headers=origin)
        assert cross.status_code == 400 and cross.json()["error_codes"] == [9002326], cross.text
        assert http.post(platform.token_url_v2, data=public).status_code == 200


def test_unregistered_missing_and_foreign_redirects_are_refused_on_the_page(
    platform: RunningPlatform, web_app: dict[str, Any], other_app: dict[str, Any], browser: Browser
) -> None:
    for redirect in (
        "https://evil.example/signin-oidc",  # not registered
        "",  # missing
        "https://other.example/cb",  # registered, for another app
        WEB_REDIRECT + "/",  # not exactly the registered one
        "https://web.example:8443/signin-oidc",  # another port: only public-client http://localhost ignores it
        "http://127.0.0.1:5000/",  # loopback, but only http://localhost was registered
    ):
        page = browser.get(authorize_url(platform, web_app["appId"], redirect))
        assert page.status_code == 400 and "AADSTS50011" in page.text and "location" not in page.headers, redirect
    # a first-party client still may not use a registered app's web redirect
    page = browser.get(authorize_url(platform, AZ_CLI, WEB_REDIRECT))
    assert page.status_code == 400 and "AADSTS50011" in page.text
    unknown = browser.get(authorize_url(platform, str(uuid.uuid4()), WEB_REDIRECT))
    assert unknown.status_code == 400 and "AADSTS700016" in unknown.text


# -- SSO ----------------------------------------------------------------------------------------


def test_sso_session_skips_the_password_until_sign_out(
    platform: RunningPlatform, web_app: dict[str, Any], browser: Browser
) -> None:
    person = new_user(platform)
    page = browser.get(authorize_url(platform, AZ_CLI, "http://localhost:8400/"))
    signed_in = browser.sign_in(page, person["userPrincipalName"], PASSWORD)
    cookie = next(c for c in signed_in.headers.get_list("set-cookie") if c.startswith("__Host-lanyard-sso="))
    flags = [f.strip().lower() for f in cookie.split(";")]
    assert {"secure", "httponly", "samesite=lax", "path=/"} <= set(flags) and not any(
        f.startswith("domain=") for f in flags
    )
    code_of(signed_in)
    # another client, same browser: no login page
    silent = browser.get(authorize_url(platform, web_app["appId"], WEB_REDIRECT, prompt="none"))
    assert "code=" in silent.headers["location"] and "state=st-1" in silent.headers["location"]
    assert code_of(browser.get(authorize_url(platform, AZ_CLI, "http://localhost:8400/", prompt="consent")))
    # prompt=select_account (az login sends it): Entra's "Pick an account", the session's or another
    picker = browser.get(authorize_url(platform, AZ_CLI, "http://localhost:8400/", prompt="select_account"))
    assert picker.status_code == 200 and 'id="pick-account"' in picker.text and 'name="password"' not in picker.text
    assert person["userPrincipalName"] in picker.text
    action = re.search(r'action="([^"]+)"', picker.text)
    assert action is not None
    target = f"{platform.authority}{unescape(action[1])}"
    picked = browser.http.post(target, data=form_fields(picker.text))
    assert "state=st-1" in picked.headers["location"] and code_of(picked)
    forged = {k: v for k, v in form_fields(picker.text).items() if k != "csrf_token"}
    assert browser.http.post(target, data=forged).status_code == 403
    another = re.search(r'id="use-another" href="([^"]+)"', picker.text)
    assert another is not None
    login = browser.get(f"{platform.authority}{unescape(another[1])}")
    assert login.status_code == 200 and 'name="password"' in login.text
    # prompt=login, or another user named: the password is asked again
    again = browser.get(authorize_url(platform, AZ_CLI, "http://localhost:8400/", prompt="login"))
    assert again.status_code == 200 and 'name="password"' in again.text
    other = browser.get(authorize_url(platform, AZ_CLI, "http://localhost:8400/", login_hint="x@sso.example"))
    assert other.status_code == 200 and 'name="password"' in other.text
    # sign out: back to the registered post-logout URI; the old cookie, replayed, is worth nothing
    old = browser.http.cookies.get("__Host-lanyard-sso")
    logout = browser.get(
        f"{platform.authority}/{platform.tenant_id}/oauth2/v2.0/logout?"
        + urlencode({"post_logout_redirect_uri": WEB_REDIRECT, "client_id": web_app["appId"], "state": "bye"})
    )
    assert logout.status_code == 302 and logout.headers["location"] == f"{WEB_REDIRECT}?state=bye"
    assert any(c.startswith('__Host-lanyard-sso=""') or "max-age=0" in c.lower()
               for c in logout.headers.get_list("set-cookie"))
    with platform.http() as replay:
        replay.cookies.set("__Host-lanyard-sso", old)
        answer = replay.get(authorize_url(platform, AZ_CLI, "http://localhost:8400/", prompt="none"))
    location = answer.headers["location"]
    assert answer.status_code == 302 and "error=login_required" in location and "AADSTS50058" in location


def test_prompt_none_without_a_session_and_unregistered_sign_out_targets(
    platform: RunningPlatform, web_app: dict[str, Any], browser: Browser
) -> None:
    none = browser.get(authorize_url(platform, web_app["appId"], WEB_REDIRECT, prompt="none"))
    query = parse_qs(urlsplit(none.headers["location"]).query)
    assert none.status_code == 302 and query["error"] == ["login_required"] and query["state"] == ["st-1"]
    assert "code" not in query
    bad_prompt = browser.get(authorize_url(platform, web_app["appId"], WEB_REDIRECT, prompt="sideways"))
    assert bad_prompt.status_code == 302 and "error=invalid_request" in bad_prompt.headers["location"]
    base = f"{platform.authority}/{platform.tenant_id}/oauth2/v2.0/logout?"
    for params in (
        {"post_logout_redirect_uri": "https://evil.example/", "client_id": web_app["appId"]},
        {"post_logout_redirect_uri": WEB_REDIRECT},  # no client named: nowhere to check it
    ):
        refused = browser.get(base + urlencode(params))
        assert refused.status_code == 400 and "location" not in refused.headers and "AADSTS50011" in refused.text
    plain = browser.get(base)
    assert plain.status_code == 200 and 'id="signed-out"' in plain.text


def test_password_change_and_disable_end_the_sso_session(platform: RunningPlatform, browser: Browser) -> None:
    for change in (["--password", PASSWORD + "x"], ["--account-enabled", "false"]):
        person = new_user(platform)
        page = browser.get(authorize_url(platform, AZ_CLI, "http://localhost:8400/", prompt="login"))
        code_of(browser.sign_in(page, person["userPrincipalName"], PASSWORD))
        assert code_of(browser.get(authorize_url(platform, AZ_CLI, "http://localhost:8400/")))
        run_cli(platform.home, "ad", "user", "update", "--id", person["id"], *change)
        after = browser.get(authorize_url(platform, AZ_CLI, "http://localhost:8400/", prompt="none"))
        assert "error=login_required" in after.headers["location"], change


# -- forced password change ---------------------------------------------------------------------


def test_forced_password_change_on_the_login_page(platform: RunningPlatform, browser: Browser) -> None:
    person = new_user(platform, "--force-change-password-next-sign-in")
    upn = person["userPrincipalName"]
    with platform.http() as http:
        ropc = http.post(platform.token_url_v2, data={
            "grant_type": "password", "client_id": AZ_CLI, "username": upn, "password": PASSWORD,
            "scope": f"{ARM}/.default"})
    body = ropc.json()
    assert ropc.status_code == 400 and body["error"] == "invalid_grant" and body["error_codes"] == [50055]
    assert body["suberror"] == "user_password_expired" and "access_token" not in body
    page = browser.get(authorize_url(platform, AZ_CLI, "http://localhost:8400/"))
    change = browser.sign_in(page, upn, PASSWORD)
    assert change.status_code == 200 and 'name="new_password"' in change.text and "location" not in change.headers
    assert "__Host-lanyard-sso" not in change.headers.get("set-cookie", "")
    new = "Brand-New-Pa55"

    def submit(**values: str) -> httpx.Response:
        return browser.sign_in(change, upn, values.pop("password", PASSWORD), **values)

    weak = submit(new_password="weakweak", confirm_password="weakweak")
    assert weak.status_code == 200 and "complexity" in weak.text and "location" not in weak.headers
    mismatch = submit(new_password=new, confirm_password=new + "!")
    assert mismatch.status_code == 200 and "don't match" in unescape(mismatch.text)
    same = submit(new_password=PASSWORD, confirm_password=PASSWORD)
    assert same.status_code == 200 and "reuse your current password" in unescape(same.text)
    wrong_current = submit(password="Not-The-Pa55", new_password=new, confirm_password=new)
    assert wrong_current.status_code == 200 and "incorrect" in wrong_current.text
    fields = {**form_fields(change.text), "username": upn, "password": PASSWORD, "new_password": new,
              "confirm_password": new}
    fields.pop("csrf_token")
    action = re.search(r'action="([^"]+)"', change.text)
    assert action is not None
    forged = browser.http.post(f"{platform.authority}{unescape(action.group(1))}", data=fields)
    assert forged.status_code == 403
    # none of those changed anything: the old password is still the one, still to be changed
    with platform.http() as http:
        still = http.post(platform.token_url_v2, data={
            "grant_type": "password", "client_id": AZ_CLI, "username": upn, "password": PASSWORD,
            "scope": f"{ARM}/.default"})
        assert still.json()["error_codes"] == [50055]
    done = submit(new_password=new, confirm_password=new)
    assert code_of(done)
    with platform.http() as http:
        ok = http.post(platform.token_url_v2, data={
            "grant_type": "password", "client_id": AZ_CLI, "username": upn, "password": new,
            "scope": f"{ARM}/.default"})
        assert ok.status_code == 200, ok.text
        old = http.post(platform.token_url_v2, data={
            "grant_type": "password", "client_id": AZ_CLI, "username": upn, "password": PASSWORD,
            "scope": f"{ARM}/.default"})
        assert old.json()["error_codes"] == [50126]


def test_forced_password_change_refuses_the_device_code(platform: RunningPlatform, ca_bundle: None) -> None:
    import msal

    person = new_user(platform, "--force-change-password-next-sign-in")
    app = msal.PublicClientApplication(AZ_CLI, authority=authority_of(platform), instance_discovery=False)
    flow = app.initiate_device_flow(scopes=[f"{ARM}/.default"])
    page = complete_device_page(platform, flow["user_code"], person["userPrincipalName"], PASSWORD)
    assert page.status_code == 200 and "expired and must be changed" in page.text and 'id="done"' not in page.text
    poll = {"grant_type": "urn:ietf:params:oauth:grant-type:device_code", "client_id": AZ_CLI,
            "device_code": flow["device_code"]}
    with platform.http() as http:
        answer = http.post(platform.token_url_v2, data=poll)
    assert answer.status_code == 400 and answer.json()["error_codes"] == [50055]
    assert "access_token" not in answer.json()


def test_a_signed_in_browser_approves_a_device_code_after_confirming_the_app(
    platform: RunningPlatform, browser: Browser
) -> None:
    """With an SSO session the device page asks for the code, then names the application and the
    account ("Are you trying to sign in to ...?") before Continue approves it; no password. "Use
    another account" is the password form, and a browser without a session gets it too."""
    person = new_user(platform)
    upn = person["userPrincipalName"]
    code_of(browser.sign_in(browser.get(authorize_url(platform, AZ_CLI, "http://localhost:8400/")), upn, PASSWORD))
    with platform.http() as http:
        started = http.post(f"{platform.authority}/organizations/oauth2/v2.0/devicecode",
                            data={"client_id": AZ_CLI, "scope": f"{ARM}/.default offline_access"}).json()
    page = browser.get(f"{platform.authority}/devicelogin")
    assert page.status_code == 200 and f'id="signed-in-as">{upn}' in page.text and 'name="password"' not in page.text
    other = browser.get(f"{platform.authority}/devicelogin?other=1")
    assert 'name="password"' in other.text and "signed-in-as" not in other.text
    with platform.http() as stranger:
        assert 'name="password"' in stranger.get(f"{platform.authority}/devicelogin").text

    fields = form_fields(page.text)
    confirm = browser.http.post(f"{platform.authority}/devicelogin", data={**fields, "otc": started["user_code"]})
    assert confirm.status_code == 200 and 'id="confirm"' in confirm.text, confirm.text
    assert "Microsoft Azure CLI" in unescape(confirm.text) and upn in confirm.text
    poll = {"grant_type": "urn:ietf:params:oauth:grant-type:device_code", "client_id": AZ_CLI,
            "device_code": started["device_code"]}
    with platform.http() as http:
        assert http.post(platform.token_url_v2, data=poll).json()["error"] == "authorization_pending"
        done = browser.http.post(f"{platform.authority}/devicelogin", data=form_fields(confirm.text))
        assert done.status_code == 200 and 'id="done"' in done.text, done.text
        token = http.post(platform.token_url_v2, data=poll).json()
    assert verify_with_discovery(platform, token["access_token"], ARM)["oid"] == person["id"]
    forged = {k: v for k, v in form_fields(confirm.text).items() if k != "csrf_token"}
    assert browser.http.post(f"{platform.authority}/devicelogin", data=forged).status_code == 403
