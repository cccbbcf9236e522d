"""The portal with the keyboard alone, in a real Chromium: sign in by typing, reach the skip link, a
resource group, an app's Identity page and its Save with Tab, turn the system identity On with the
arrow keys and Save with Enter. Every focused control shows a visible outline."""

from __future__ import annotations

import uuid
from typing import Any

from tests.conftest import RunningPlatform, cli_json
from tests.portal.people import PASSWORD, SHOTS, person

MAX_TABS = 60


def _tab_to(page: Any, text: str) -> None:
    """Press Tab until the focused element's accessible text is `text` (a link or a button)."""
    for _ in range(MAX_TABS):
        page.keyboard.press("Tab")
        focused = page.evaluate(
            "() => { const e = document.activeElement;"
            " return (e.getAttribute('aria-label') || e.innerText || e.value || '').trim(); }"
        )
        if focused == text:
            outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
            assert outline not in ("", "none"), f"{text!r} has no visible focus"
            return
    raise AssertionError(f"{text!r} is not reachable with Tab")


def test_sign_in_and_turn_the_system_identity_on_with_the_keyboard(platform: RunningPlatform, chromium: Any) -> None:
    tag = uuid.uuid4().hex[:6]
    rg, app = f"kb-rg-{tag}", f"kb-app-{tag}"
    group = cli_json(platform.home, "group", "create", "-n", rg, "-l", "westus")
    cli_json(platform.home, "webapp", "create", "-g", rg, "-n", app)
    upn = person(platform, "Kim Keys", "Contributor", group["id"])
    context = chromium.new_context(ignore_https_errors=True)
    page = context.new_page()
    page.goto(f"{platform.authority}/portal/")
    _tab_to(page, "Sign in")
    page.keyboard.press("Enter")
    page.wait_for_selector('input[name="username"]')
    page.keyboard.type(upn)  # the login page focuses the name field
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{platform.authority}/portal/")

    _tab_to(page, "Skip to main content")
    page.keyboard.press("Enter")
    _tab_to(page, rg)
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/portal/resourcegroups/{rg}")
    _tab_to(page, f"Identity of {app}")
    page.keyboard.press("Enter")
    page.wait_for_url("**/identity")
    _tab_to(page, "Save")
    page.keyboard.press("Shift+Tab")  # back to the Status radio group: Off is checked and focused
    page.keyboard.press("ArrowDown")  # On
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    page.wait_for_selector("#principal-id")
    shown = cli_json(platform.home, "webapp", "identity", "show", "-g", rg, "-n", app)
    assert page.locator("#principal-id").inner_text().strip() == shown["principalId"]
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "keyboard-identity-on.png"), full_page=True)
    context.close()
