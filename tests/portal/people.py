"""People for the portal's browser tests: a user with a role at a scope, signed in in Chromium through
the directory's login page. Screenshots go to reports/portal/."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from tests.conftest import RunningPlatform, cli_json

SHOTS = Path(__file__).resolve().parents[2] / "reports" / "portal"
PASSWORD = "Portal-People-Pa55"


def person(platform: RunningPlatform, name: str, role: str | None = None, scope: str | None = None) -> str:
    """A new user named `name` (with `role` at `scope` when given); their user principal name."""
    upn = f"{name.split()[0].lower()}-{uuid.uuid4().hex[:6]}@portal.example"
    made = cli_json(
        platform.home, "ad", "user", "create", "--display-name", name, "--user-principal-name", upn,
        "--password", PASSWORD,
    )  # fmt: skip
    if role is not None and scope is not None:
        grant(platform, made["id"], role, scope)
    return upn


def grant(platform: RunningPlatform, principal: str, role: str, scope: str) -> dict[str, Any]:
    """A role assignment made with the CLI (as the admin): what a test sets up before the browser."""
    return dict(
        cli_json(platform.home, "role", "assignment", "create", "--assignee", principal, "--role", role,
                 "--scope", scope)
    )  # fmt: skip


def sign_in(chromium: Any, platform: RunningPlatform, upn: str) -> tuple[Any, Any]:
    """A fresh browser context signed in to the portal as `upn`: (context, page on the home page)."""
    # The platform's CA is not in Chromium's store here; the TLS itself is covered by the httpx tests.
    context = chromium.new_context(ignore_https_errors=True)
    page = context.new_page()
    page.goto(f"{platform.authority}/portal/")
    page.get_by_role("link", name="Sign in").click()
    page.locator('input[name="username"]').fill(upn)
    page.locator('input[name="password"]').fill(PASSWORD)
    page.locator('input[name="password"]').press("Enter")
    page.wait_for_url(f"{platform.authority}/portal/")
    return context, page
