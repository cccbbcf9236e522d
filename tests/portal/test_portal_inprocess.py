"""The portal's own rules, in process: session cookie and expiry, CSRF, F19 headers, PKCE redirect.

The token endpoint and ARM are replaced by recorders here (these tests are about the portal's session
logic, not the directory's); the real sign-in runs against a real platform in the browser tests."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from starlette.applications import Starlette

from lanyard.core.clock import FrozenClock
from lanyard.crypto.barrier import Barrier
from lanyard.directory.clients import LANYARD_PORTAL, portal_redirect
from lanyard.portal.routes import Portal
from lanyard.portal.sessions import COOKIE, SessionKeys, SessionStore
from lanyard.storage.db import Store, make_engine, migrate

AUTHORITY = "https://lanyard.test:8443"


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


def session_store(clock: FrozenClock, path: Path) -> SessionStore:
    """Sessions in a real (SQLite) database under a throwaway barrier key."""
    store = Store(make_engine(f"sqlite:///{path / 'portal.db'}"))
    migrate(store.engine)
    return SessionStore(clock, store, SessionKeys.of(Barrier(os.urandom(32))), idle=600, absolute=3600)


@pytest.fixture
def portal(clock: FrozenClock, tmp_path: Path) -> Portal:
    portal = Portal(AUTHORITY, session_store(clock, tmp_path))
    token_requests: list[dict[str, str]] = []
    issued = {"nonce": ""}

    async def post_token(form: dict[str, str]) -> dict[str, Any]:
        token_requests.append(form)
        claims = base64.urlsafe_b64encode(json.dumps({"nonce": issued["nonce"], "name": "Pat"}).encode()).decode()
        id_token = f"e30.{claims.rstrip('=')}.sig"
        return {"access_token": "arm-token", "refresh_token": "refresh", "expires_in": 3600, "id_token": id_token}

    async def arm_get(path: str, token: str) -> httpx.Response:
        assert token == "arm-token"
        if path == "/subscriptions":
            return httpx.Response(200, json={"value": [{"subscriptionId": "sub-1"}]})
        return httpx.Response(200, json={"value": [{"name": "rg-one", "location": "local"}]})

    portal.post_token = post_token
    portal.arm_get = arm_get
    portal.token_requests = token_requests  # type: ignore[attr-defined]
    portal.issued = issued  # type: ignore[attr-defined]
    return portal


class PortalClient:
    """A synchronous face on httpx's ASGI transport that keeps cookies between requests."""

    def __init__(self, app: Starlette) -> None:
        self.loop = asyncio.new_event_loop()
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=AUTHORITY)

    @property
    def cookies(self) -> httpx.Cookies:
        return self.http.cookies

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.loop.run_until_complete(self.http.get(path, **kwargs))

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.loop.run_until_complete(self.http.post(path, **kwargs))

    def close(self) -> None:
        self.loop.run_until_complete(self.http.aclose())
        self.loop.close()


@pytest.fixture
def client(portal: Portal) -> Iterator[PortalClient]:
    client = PortalClient(Starlette(routes=portal.routes()))
    yield client
    client.close()


def _start(client: PortalClient, portal: Portal, nonce: str | None = None) -> str:
    """Starts a sign-in; the stand-in token endpoint will answer with this nonce (the sent one by default)."""
    start = client.get("/portal/signin")
    query = parse_qs(urlsplit(start.headers["location"]).query)
    portal.issued["nonce"] = nonce or query["nonce"][0]  # type: ignore[attr-defined]
    return query["state"][0]


def _sign_in(client: PortalClient, portal: Portal) -> None:
    state = _start(client, portal)
    done = client.get("/portal/callback", params={"code": "a-code", "state": state})
    assert done.status_code == 303


def _csrf(page: str) -> str:
    marker = 'name="csrf_token" value="'
    return page.split(marker, 1)[1].split('"', 1)[0]


def test_pages_carry_the_f19_headers(client: PortalClient) -> None:
    page = client.get("/portal/")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "form-action 'self'" in csp and "unsafe-inline" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["cache-control"] == "no-store"
    assert "<script>" not in page.text and "style=" not in page.text


def test_sign_in_redirects_to_authorize_with_pkce_state_and_nonce(client: PortalClient, portal: Portal) -> None:
    start = client.get("/portal/signin")
    assert start.status_code == 302
    target = urlsplit(start.headers["location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == f"{AUTHORITY}/organizations/oauth2/v2.0/authorize"
    query = {k: v[0] for k, v in parse_qs(target.query).items()}
    assert query["client_id"] == LANYARD_PORTAL
    assert query["redirect_uri"] == portal_redirect(AUTHORITY) == f"{AUTHORITY}/portal/callback"
    assert query["code_challenge_method"] == "S256" and query["state"] and query["nonce"]
    cookie = start.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    lowered = cookie.lower()
    assert "secure" in lowered and "httponly" in lowered and "samesite=lax" in lowered and "path=/" in lowered
    # The verifier sent with the code is the one the challenge was made from.
    portal.issued["nonce"] = query["nonce"]  # type: ignore[attr-defined]
    client.get("/portal/callback", params={"code": "c", "state": query["state"]})
    verifier = portal.token_requests[0]["code_verifier"]  # type: ignore[attr-defined]
    digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    assert digest == query["code_challenge"]


def test_a_callback_with_another_state_is_refused(client: PortalClient, portal: Portal) -> None:
    client.get("/portal/signin")
    answer = client.get("/portal/callback", params={"code": "a-code", "state": "forged"})
    assert answer.status_code == 400
    assert "did not start here" in answer.text
    assert portal.token_requests == []  # type: ignore[attr-defined]


def test_signed_in_home_lists_resource_groups_and_renews_the_session_id(client: PortalClient, portal: Portal) -> None:
    client.get("/portal/signin")
    before = client.cookies.get(COOKIE)
    _sign_in(client, portal)
    assert client.cookies.get(COOKIE) != before
    page = client.get("/portal/")
    assert "rg-one" in page.text and "Sign out" in page.text and "Pat" in page.text
    assert 'href="/portal/resourcegroups/rg-one"' in page.text
    assert "arm-token" not in page.text and "refresh" not in page.text


def test_a_post_without_or_with_a_wrong_csrf_token_is_403(client: PortalClient, portal: Portal) -> None:
    _sign_in(client, portal)
    assert client.post("/portal/signout", data={}).status_code == 403
    assert client.post("/portal/signout", data={"csrf_token": "wrong"}).status_code == 403
    assert "Sign out" in client.get("/portal/").text  # still signed in: nothing happened


def test_sign_out_with_the_token_ends_the_session(client: PortalClient, portal: Portal) -> None:
    _sign_in(client, portal)
    sid = client.cookies.get(COOKIE)
    token = _csrf(client.get("/portal/").text)
    assert client.post("/portal/signout", data={"csrf_token": token}).status_code == 303
    assert portal.sessions.get(sid) is None


def test_an_idle_session_expires(client: PortalClient, portal: Portal, clock: FrozenClock) -> None:
    _sign_in(client, portal)
    clock.advance(599)
    assert "Sign out" in client.get("/portal/").text
    clock.advance(601)
    page = client.get("/portal/")
    assert "Sign out" not in page.text and "Sign in" in page.text


def test_a_busy_session_still_ends_at_its_absolute_lifetime(
    client: PortalClient, portal: Portal, clock: FrozenClock
) -> None:
    _sign_in(client, portal)
    for _ in range(6):
        clock.advance(590)
        assert "Sign out" in client.get("/portal/").text
    clock.advance(590)
    assert "Sign out" not in client.get("/portal/").text


def test_an_oversized_form_is_refused_not_read(client: PortalClient, portal: Portal) -> None:
    _sign_in(client, portal)
    answer = client.post(
        "/portal/signout",
        content=b"csrf_token=" + b"x" * (70 * 1024),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 403
    assert "Sign out" in client.get("/portal/").text


def test_an_id_token_with_another_nonce_signs_no_one_in(client: PortalClient, portal: Portal) -> None:
    state = _start(client, portal, nonce="someone-elses")
    answer = client.get("/portal/callback", params={"code": "a-code", "state": state})
    assert answer.status_code == 400
    assert "Sign out" not in client.get("/portal/").text


def test_creating_a_group_needs_the_csrf_token_and_a_valid_name(client: PortalClient, portal: Portal) -> None:
    puts: list[str] = []

    async def arm_put(path: str, token: str, body: dict[str, Any]) -> httpx.Response:
        puts.append(path)
        return httpx.Response(201, json={"name": path.rsplit("/", 1)[1]})

    portal.arm_put = arm_put
    _sign_in(client, portal)
    token = _csrf(client.get("/portal/").text)
    assert client.post("/portal/resourcegroups", data={"name": "rg-two", "location": "westus"}).status_code == 403
    bad = client.post("/portal/resourcegroups", data={"csrf_token": token, "name": "a/b", "location": "westus"})
    assert bad.status_code == 400 and "A resource group needs a name" in bad.text
    assert puts == []
    good = client.post("/portal/resourcegroups", data={"csrf_token": token, "name": "rg-two", "location": "westus"})
    assert good.status_code == 303 and puts == ["/subscriptions/sub-1/resourcegroups/rg-two"]
