"""The portal in a real Chromium (Debian's /usr/bin/chromium driven by Playwright; no browser download):
a Reader signs in through the login page, sees their resource group, and signs out. Screenshots go to
reports/portal/."""

from __future__ import annotations

import uuid
from typing import Any

from tests.conftest import RunningPlatform, cli_json
from tests.portal.people import SHOTS, person, sign_in


def test_a_reader_signs_in_sees_their_group_and_signs_out(platform: RunningPlatform, chromium: Any) -> None:
    rg = f"browser-rg-{uuid.uuid4().hex[:6]}"
    group = cli_json(platform.home, "group", "create", "-n", rg, "-l", "westus")
    upn = person(platform, "Bea Browser", "Reader", group["id"])
    SHOTS.mkdir(parents=True, exist_ok=True)
    context, page = sign_in(chromium, platform, upn)
    assert page.get_by_role("link", name=rg).is_visible()
    assert page.get_by_text("Bea Browser").is_visible()
    page.screenshot(path=str(SHOTS / "signed-in-home.png"), full_page=True)
    (cookie,) = [c for c in context.cookies() if c["name"] == "__Host-lanyard-portal"]
    assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    # A Reader may look but not create: ARM's own refusal is on the page, and nothing was made.
    page.get_by_label("Name").fill(f"{rg}-new")
    page.get_by_role("button", name="Create").click()
    assert page.get_by_role("alert").is_visible()
    assert "AuthorizationFailed" in page.get_by_role("alert").inner_text()
    page.screenshot(path=str(SHOTS / "reader-refused.png"), full_page=True)
    assert f"{rg}-new" not in {g["name"] for g in cli_json(platform.home, "group", "list")}
    page.goto(f"{platform.authority}/portal/")
    page.get_by_role("link", name=rg).click()
    assert page.get_by_role("heading", name=f"Resource group {rg}").is_visible()
    page.screenshot(path=str(SHOTS / "resource-group.png"), full_page=True)
    page.get_by_role("button", name="Sign out").click()
    assert page.get_by_role("link", name="Sign in").is_visible()
    context.close()
