"""The Access control (IAM) page in a real Chromium against a real platform: an Owner of a group gives
another person Reader on it through the page (found by name in the directory, Select, Add), the CLI sees the assignment, that person then sees the
group on their own home page; the Owner removes it after a Yes; a Reader pressing Add sees ARM's
AuthorizationFailed and nothing is made. Screenshots go to reports/portal/."""

from __future__ import annotations

import uuid
from typing import Any

from tests.conftest import RunningPlatform, cli_json
from tests.portal.people import PASSWORD, SHOTS, person, sign_in


def _assignments(platform: RunningPlatform, principal: str, scope: str) -> list[tuple[str, str]]:
    """(role name, scope) of the principal's assignments at the scope, as the CLI lists them."""
    found = cli_json(platform.home, "role", "assignment", "list", "--assignee", principal, "--scope", scope)
    return [(str(a["roleDefinitionName"]), str(a["scope"]).lower()) for a in found]


def test_an_owner_grants_and_removes_reader_and_a_reader_is_refused(
    platform: RunningPlatform,
    chromium: Any,
) -> None:
    tag = uuid.uuid4().hex[:6]
    rg = f"iam-rg-{tag}"
    group = cli_json(platform.home, "group", "create", "-n", rg, "-l", "westus")
    app = f"iam-app-{tag}"
    cli_json(platform.home, "webapp", "create", "-g", rg, "-n", app)
    scope = str(group["id"])
    owner = person(platform, "Olga Owner", "Owner", scope)
    reader = person(platform, "Rhea Reader", "Reader", scope)
    guest_upn = f"gus-{tag}@portal.example"
    guest_name = f"Gus Guest {tag}"
    guest = cli_json(
        platform.home,
        "ad",
        "user",
        "create",
        "--display-name",
        guest_name,
        "--user-principal-name",
        guest_upn,
        "--password",
        PASSWORD,
    )["id"]
    assert _assignments(platform, guest, scope) == []
    SHOTS.mkdir(parents=True, exist_ok=True)

    # The guest can see no group yet.
    context, page = sign_in(chromium, platform, guest_upn)
    assert not page.get_by_role("link", name=rg).count()
    context.close()

    context, page = sign_in(chromium, platform, owner)
    # The subscription's IAM page: an Owner of one group may not list there, and ARM says so on the page.
    page.get_by_role("link", name="Access control (IAM) of the subscription").click()
    assert page.get_by_role("heading", name="Access control (IAM): subscription").is_visible()
    assert "AuthorizationFailed" in page.get_by_role("alert").inner_text()
    page.goto(f"{platform.authority}/portal/")
    page.get_by_role("link", name=rg).click()
    # One resource's IAM page, from the group page: the group's Owner assignment is inherited there.
    page.get_by_role("link", name=f"Access control of {app}").click()
    assert page.get_by_role("heading", name=f"Access control (IAM): Microsoft.Web/sites {app}").is_visible()
    assert page.get_by_role("row").filter(has_text="Olga Owner").filter(has_text="Inherited").count() == 1
    page.go_back()
    page.get_by_role("link", name="Access control (IAM)", exact=True).click()
    assert page.get_by_role("heading", name=f"Access control (IAM): resource group {rg}").is_visible()
    mine = page.get_by_role("row").filter(has_text="Owner").filter(has_text="This scope")
    assert mine.count() == 1
    # An object id the directory does not know is ARM's PrincipalNotFound, on the page.
    page.get_by_label("Role", exact=True).select_option(label="Reader")
    page.get_by_label("Principal object id").fill(str(uuid.uuid4()))
    page.get_by_role("button", name="Add", exact=True).click()
    assert "PrincipalNotFound" in page.get_by_role("alert").inner_text()
    # The person is found by name in the directory (Graph, with the Owner's own delegated token).
    page.get_by_label("Find a user, group or service principal by name").fill(guest_name[:8])
    page.get_by_role("button", name="Search").click()
    found = page.get_by_role("row").filter(has_text=guest_name)
    assert found.count() == 1 and guest_upn in found.inner_text()
    page.screenshot(path=str(SHOTS / "access-search.png"), full_page=True)
    page.get_by_role("button", name=f"Select {guest_name}").click()
    assert any(f"Selected: {guest_name} (User)" in n for n in page.get_by_role("status").all_inner_texts())
    assert page.get_by_label("Principal object id").input_value() == guest
    page.get_by_label("Role", exact=True).select_option(label="Reader")
    page.get_by_role("button", name="Add", exact=True).click()
    added = page.get_by_role("row").filter(has_text=guest_name)
    assert added.count() == 1
    cells = added.get_by_role("cell").all_inner_texts()
    assert guest_name in cells[0] and cells[1:4] == ["User", "Reader", "This scope"], cells
    page.screenshot(path=str(SHOTS / "access-added.png"), full_page=True)
    assert _assignments(platform, guest, scope) == [("Reader", scope.lower())]

    # Adding the same again is ARM's RoleAssignmentExists, on the page.
    page.get_by_label("Role", exact=True).select_option(label="Reader")
    page.get_by_label("Principal object id").fill(guest)
    page.get_by_role("button", name="Add", exact=True).click()
    assert "RoleAssignmentExists" in page.get_by_role("alert").inner_text()

    guest_context, guest_page = sign_in(chromium, platform, guest_upn)
    assert guest_page.get_by_role("link", name=rg).is_visible()
    guest_context.close()

    page.goto(f"{platform.authority}/portal/resourcegroups/{rg}/access")
    page.get_by_role("link", name=f"Remove Reader for {guest_name}").click()
    dialog = page.get_by_role("dialog")
    assert "Remove Reader for" in dialog.inner_text()
    page.screenshot(path=str(SHOTS / "access-remove-confirm.png"), full_page=True)
    dialog.get_by_role("button", name="Yes").click()
    assert page.get_by_role("heading", name=f"Access control (IAM): resource group {rg}").is_visible()
    assert not page.get_by_role("row").filter(has_text=guest_name).count()
    assert _assignments(platform, guest, scope) == []
    context.close()

    # A Reader sees the list but may not add: ARM's refusal is on the page and nothing is made.
    context, page = sign_in(chromium, platform, reader)
    page.goto(f"{platform.authority}/portal/resourcegroups/{rg}/access")
    assert page.get_by_role("row").filter(has_text="Owner").filter(has_text="This scope").count() == 1
    page.get_by_label("Role", exact=True).select_option(label="Reader")
    page.get_by_label("Principal object id").fill(guest)
    page.get_by_role("button", name="Add", exact=True).click()
    assert "AuthorizationFailed" in page.get_by_role("alert").inner_text()
    page.screenshot(path=str(SHOTS / "access-reader-refused.png"), full_page=True)
    assert _assignments(platform, guest, scope) == []
    context.close()
