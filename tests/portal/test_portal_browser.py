"""The portal in a real Chromium (Debian's /usr/bin/chromium driven by Playwright; no browser download):
a Reader signs in through the login page, sees their resource group, and signs out. Screenshots go to
reports/portal/."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RunningPlatform, cli_json

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[2] / "reports" / "portal"
PASSWORD = "Browser-Pa55word"


@pytest.fixture
def browser() -> Any:
    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed at /usr/bin/chromium (apt-get install -y chromium)")
        pytest.skip("chromium is not installed at /usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield launched
        launched.close()


def test_a_reader_signs_in_sees_their_group_and_signs_out(platform: RunningPlatform, browser: Any) -> None:
    upn = f"bea-{uuid.uuid4().hex[:6]}@portal.example"
    person = cli_json(
        platform.home,
        "ad",
        "user",
        "create",
        "--display-name",
        "Bea Browser",
        "--user-principal-name",
        upn,
        "--password",
        PASSWORD,
    )
    rg = f"browser-rg-{uuid.uuid4().hex[:6]}"
    group = cli_json(platform.home, "group", "create", "-n", rg, "-l", "westus")
    cli_json(
        platform.home,
        "role",
        "assignment",
        "create",
        "--assignee",
        person["id"],
        "--role",
        "Reader",
        "--scope",
        group["id"],
    )
    SHOTS.mkdir(parents=True, exist_ok=True)
    # The platform's CA is not in Chromium's store here; the TLS itself is covered by the httpx tests.
    context = browser.new_context(ignore_https_errors=True)
    page = context.new_page()
    page.goto(f"{platform.authority}/portal/")
    page.get_by_role("link", name="Sign in").click()
    page.locator('input[name="username"]').fill(upn)
    page.locator('input[name="password"]').fill(PASSWORD)
    page.locator('input[name="password"]').press("Enter")
    page.wait_for_url(f"{platform.authority}/portal/")
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
