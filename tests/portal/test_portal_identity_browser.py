"""The app's Identity page in a real Chromium: a Contributor on a group turns the system-assigned identity
On (the principal id on the page is the one the real az CLI shows), adds a user-assigned identity found by
search and removes it again after a Yes; a Reader pressing Save sees ARM's AuthorizationFailed and the site
is unchanged. Screenshots go to reports/portal/."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RunningPlatform, cli_json
from tests.portal.people import SHOTS, grant, person, sign_in
from tests.support.azcli import AzCli, require_az


@pytest.fixture
def az(platform: RunningPlatform, tmp_path: Path) -> AzCli:
    """az signed in as the admin application, in a config folder of its own."""
    cli = AzCli(require_az(), platform, tmp_path / "azure")
    cli.register_cloud()
    admin = platform.endpoints["admin"]
    cli.login_service_principal(admin["client_id"], admin["client_secret"])
    return cli


def test_identity_page_system_and_user_assigned(platform: RunningPlatform, chromium: Any, az: AzCli) -> None:
    rg = f"ident-rg-{uuid.uuid4().hex[:6]}"
    app = f"ident-app-{uuid.uuid4().hex[:6]}"
    group = cli_json(platform.home, "group", "create", "-n", rg, "-l", "westus")
    cli_json(platform.home, "appservice", "plan", "create", "-g", rg, "-n", f"{app}-plan")
    cli_json(platform.home, "webapp", "create", "-g", rg, "-n", app, "-p", f"{app}-plan")
    uai = cli_json(platform.home, "identity", "create", "-g", rg, "-n", f"{app}-uai")
    contributor = person(platform, "Cora Contributor", "Contributor", group["id"])
    reader = person(platform, "Rex Reader", "Reader", group["id"])
    SHOTS.mkdir(parents=True, exist_ok=True)

    context, page = sign_in(chromium, platform, contributor)
    page.get_by_role("link", name=rg).click()
    page.get_by_role("link", name=f"Identity of {app}").click()
    assert page.get_by_role("heading", name=f"Identity of {app}").is_visible()
    assert page.get_by_label("Off", exact=True).is_checked()
    page.get_by_label("On", exact=True).check()
    page.get_by_role("button", name="Save").click()
    principal = page.locator("#principal-id").inner_text().strip()
    assert az.json("webapp", "identity", "show", "-g", rg, "-n", app)["principalId"] == principal
    assert page.get_by_label("On", exact=True).is_checked()
    assert page.get_by_role("heading", name="Azure role assignments").is_visible()
    page.screenshot(path=str(SHOTS / "identity-system-on.png"), full_page=True)

    page.get_by_role("link", name="User assigned").click()
    page.get_by_label("Search identities by name").fill(f"{app}-u")
    page.get_by_role("button", name="Search").click()
    page.get_by_role("button", name=f"Add {app}-uai").click()
    assert page.get_by_role("cell", name=uai["id"]).is_visible()
    shown = az.json("webapp", "identity", "show", "-g", rg, "-n", app)
    assert shown["type"] == "SystemAssigned, UserAssigned" and shown["principalId"] == principal
    assert [k.lower() for k in shown["userAssignedIdentities"]] == [uai["id"].lower()]
    page.screenshot(path=str(SHOTS / "identity-user-added.png"), full_page=True)
    page.get_by_role("link", name=f"Remove {app}-uai").click()
    assert page.get_by_role("dialog").is_visible()
    page.screenshot(path=str(SHOTS / "identity-remove-confirm.png"), full_page=True)
    page.get_by_role("button", name="Yes").click()
    assert page.get_by_text("No user-assigned identities.").is_visible()
    shown = az.json("webapp", "identity", "show", "-g", rg, "-n", app)
    assert shown["type"] == "SystemAssigned" and not shown.get("userAssignedIdentities")
    context.close()

    context, page = sign_in(chromium, platform, reader)
    page.goto(f"{platform.authority}/portal/resourcegroups/{rg}/sites/{app}/identity")
    assert page.locator("#principal-id").inner_text().strip() == principal
    page.get_by_label("Off", exact=True).check()
    page.get_by_role("button", name="Save").click()
    assert "AuthorizationFailed" in page.get_by_role("alert").inner_text()
    page.screenshot(path=str(SHOTS / "identity-reader-refused.png"), full_page=True)
    assert az.json("webapp", "identity", "show", "-g", rg, "-n", app)["principalId"] == principal
    context.close()


def test_identity_page_of_a_slot_and_a_function_app(platform: RunningPlatform, chromium: Any, az: AzCli) -> None:
    tag = uuid.uuid4().hex[:6]
    rg, app, func = f"ident-rg-{tag}", f"slot-app-{tag}", f"func-{tag}"
    group = cli_json(platform.home, "group", "create", "-n", rg, "-l", "westus")
    cli_json(platform.home, "webapp", "create", "-g", rg, "-n", app)
    cli_json(platform.home, "webapp", "deployment", "slot", "create", "-g", rg, "-n", app, "--slot", "stage")
    cli_json(platform.home, "functionapp", "create", "-g", rg, "-n", func)
    contributor = person(platform, "Sol Slots", "Contributor", group["id"])

    context, page = sign_in(chromium, platform, contributor)
    page.get_by_role("link", name=rg).click()
    page.get_by_role("link", name=f"Identity of {app}", exact=True).click()
    page.get_by_role("link", name="Identity of slot stage").click()
    assert page.get_by_role("heading", name=f"Identity of {app} (slot stage)").is_visible()
    page.get_by_label("On", exact=True).check()
    page.get_by_role("button", name="Save").click()
    principal = page.locator("#principal-id").inner_text().strip()
    assert az.json("webapp", "identity", "show", "-g", rg, "-n", app, "--slot", "stage")["principalId"] == principal
    # The app itself keeps no identity (az prints an empty block for it).
    assert (az.json("webapp", "identity", "show", "-g", rg, "-n", app) or {}).get("principalId") is None
    # A role given to the slot's identity elsewhere shows on its page, by the role's name.
    grant(platform, principal, "Reader", group["id"])
    page.reload()
    assert page.get_by_role("cell", name="Reader", exact=True).is_visible()
    assert page.get_by_role("cell", name=group["id"], exact=True).is_visible()
    page.screenshot(path=str(SHOTS / "identity-slot-role-assignments.png"), full_page=True)

    page.get_by_role("link", name=f"Resource group {rg}").click()
    page.get_by_role("link", name=f"Identity of {func}").click()
    page.get_by_label("On", exact=True).check()
    page.get_by_role("button", name="Save").click()
    principal = page.locator("#principal-id").inner_text().strip()
    assert az.json("functionapp", "identity", "show", "-g", rg, "-n", func)["principalId"] == principal
    context.close()
