"""The portal against a real platform over HTTPS: it signs a person in through the directory's own
login page (code + PKCE) and shows what ARM lets that person see; its client id accepts no other
redirect URI. Driven with httpx as a browser would (the Chromium tests are not written yet)."""

from __future__ import annotations

import re
import uuid
from html import unescape
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from lanyard.directory.clients import LANYARD_PORTAL
from tests.conftest import RunningPlatform, cli_json
from tests.portal.people import grant

PASSWORD = "Portal-Pa55word"
_INPUT = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


@pytest.fixture(scope="module")
def reader(platform: RunningPlatform) -> dict[str, Any]:
    upn = f"pat-{uuid.uuid4().hex[:6]}@portal.example"
    person = cli_json(
        platform.home,
        "ad",
        "user",
        "create",
        "--display-name",
        "Pat Portal",
        "--user-principal-name",
        upn,
        "--password",
        PASSWORD,
    )
    rg = f"portal-rg-{uuid.uuid4().hex[:6]}"
    group = cli_json(platform.home, "group", "create", "-n", rg, "-l", "westus")
    grant(platform, person["id"], "Reader", group["id"])
    return {"upn": upn, "rg": rg}


def _sign_in(platform: RunningPlatform, http: httpx.Client, upn: str) -> httpx.Response:
    start = http.get(f"{platform.authority}/portal/signin")
    assert start.status_code == 302
    page = http.get(start.headers["location"])
    assert page.status_code == 200, page.text
    fields = {name: unescape(value) for name, value in _INPUT.findall(page.text)}
    action = re.search(r'<form method="post" action="([^"]+)"', page.text)
    assert action is not None
    done = http.post(
        f"{platform.authority}{unescape(action.group(1))}", data={**fields, "username": upn, "password": PASSWORD}
    )
    assert done.status_code == 302, done.text
    callback = done.headers["location"]
    assert callback.startswith(f"{platform.authority}/portal/callback?")
    landed = http.get(callback)
    assert landed.status_code == 303, landed.text
    return http.get(f"{platform.authority}/portal/")


def test_a_person_signs_in_and_sees_what_arm_lets_them_see(platform: RunningPlatform, reader: dict[str, Any]) -> None:
    with platform.http() as http:
        home = _sign_in(platform, http, reader["upn"])
        assert home.status_code == 200, home.text
        assert reader["rg"] in home.text and "Sign out" in home.text and "Pat Portal" in home.text
        group = http.get(f"{platform.authority}/portal/resourcegroups/{reader['rg']}")
        assert group.status_code == 200 and f"Resource group {reader['rg']}" in group.text, group.text
        assert "unsafe-inline" not in home.headers["content-security-policy"]
        assert home.headers["cache-control"] == "no-store"
        token = re.search(r'name="csrf_token" value="([^"]+)"', home.text)
        assert token is not None
        forged = http.post(f"{platform.authority}/portal/signout", data={})
        assert forged.status_code == 403
        out = http.post(f"{platform.authority}/portal/signout", data={"csrf_token": token.group(1)})
        assert out.status_code == 303
        assert "Sign out" not in http.get(f"{platform.authority}/portal/").text


def test_the_portal_client_accepts_only_its_own_callback(platform: RunningPlatform) -> None:
    query = {
        "client_id": LANYARD_PORTAL,
        "response_type": "code",
        "scope": "openid",
        "code_challenge": "x" * 43,
        "code_challenge_method": "S256",
        "state": "s",
    }
    with platform.http() as http:
        for uri in (
            "http://localhost:8400/",
            "https://evil.example/portal/callback",
            f"{platform.authority}/portal/callback/other",
        ):
            page = http.get(
                f"{platform.authority}/organizations/oauth2/v2.0/authorize?" + urlencode({**query, "redirect_uri": uri})
            )
            assert page.status_code == 400 and "AADSTS50011" in page.text and "location" not in page.headers
        ours = http.get(
            f"{platform.authority}/organizations/oauth2/v2.0/authorize?"
            + urlencode({**query, "redirect_uri": f"{platform.authority}/portal/callback"})
        )
        assert ours.status_code == 200, ours.text
