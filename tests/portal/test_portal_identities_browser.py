"""The user-assigned identity pages in a real Chromium against a real platform: a Contributor on a group
creates an identity from the list page and sees the client and principal ids `lanyard identity show`
prints, its role assignment by role name, adds a federated credential (a bad issuer first: ARM's
refusal on the page), deletes it after Yes, and deletes the identity after Yes. A Reader on the group
sees the identity but every save is ARM's AuthorizationFailed on the page and nothing changes.
Screenshots go to reports/portal/."""

from __future__ import annotations

import uuid
from typing import Any

from tests.conftest import RunningPlatform, cli_json, run_cli
from tests.portal.people import SHOTS, grant, person, sign_in

ISSUER = "https://token.actions.githubusercontent.com"


def _credentials(platform: RunningPlatform, rg: str, name: str) -> list[str]:
    listed = cli_json(platform.home, "identity", "federated-credential", "list", "-g", rg, "--identity-name", name)
    return sorted(str(c["name"]) for c in listed)


def _identity_names(platform: RunningPlatform, rg: str) -> list[str]:
    return sorted(str(i["name"]) for i in cli_json(platform.home, "identity", "list", "-g", rg))


def test_identity_pages_create_federate_and_delete(platform: RunningPlatform, chromium: Any) -> None:
    tag = uuid.uuid4().hex[:6]
    rg, name, fic = f"uai-rg-{tag}", f"uai-{tag}", f"fic-{tag}"
    group = cli_json(platform.home, "group", "create", "-n", rg, "-l", "westus")
    contributor = person(platform, "Ida Identity", "Contributor", group["id"])
    reader = person(platform, "Remy Reader", "Reader", group["id"])
    SHOTS.mkdir(parents=True, exist_ok=True)

    context, page = sign_in(chromium, platform, contributor)
    page.get_by_role("link", name="Managed identities").click()
    assert page.get_by_role("heading", name="Managed identities").is_visible()
    page.get_by_label("Resource group", exact=True).select_option(rg)
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_role("button", name="Create identity").click()
    assert page.get_by_role("heading", name=f"Managed identity {name}").is_visible()
    shown = cli_json(platform.home, "identity", "show", "-g", rg, "-n", name)
    assert shown["location"] == "westus"  # the group's, as the form left it empty
    assert page.locator("#client-id").inner_text().strip() == shown["clientId"]
    assert page.locator("#principal-id").inner_text().strip() == shown["principalId"]
    assert page.locator("#tenant-id").inner_text().strip() == shown["tenantId"]
    assert page.locator("#resource-id").inner_text().strip() == shown["id"]

    # Its role assignments, by role name (made with the CLI, seen in the portal).
    grant(platform, shown["principalId"], "Reader", group["id"])
    page.reload()
    assert page.get_by_role("cell", name="Reader", exact=True).is_visible()
    assert page.get_by_role("cell", name=group["id"], exact=True).is_visible()

    # The list shows it, with the same ids and a link back to its page.
    page.get_by_role("link", name="Managed identities").click()
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name=f"Identity {name}"))
    assert shown["clientId"] in row.inner_text() and shown["principalId"] in row.inner_text()
    page.screenshot(path=str(SHOTS / "uai-list.png"), full_page=True)
    page.get_by_role("link", name=f"Identity {name}").click()

    # A federated credential: ARM's own validation first, then a good one (audience left at its default).
    page.get_by_label("Credential name").fill(fic)
    page.get_by_label("Issuer").fill("http://plain.example")
    page.get_by_label("Subject").fill("repo:octo/app:ref:refs/heads/main")
    assert page.get_by_label("Audiences").input_value() == "api://AzureADTokenExchange"
    page.get_by_role("button", name="Add credential").click()
    assert "must be an https URL" in page.get_by_role("alert").inner_text()
    assert _credentials(platform, rg, name) == []
    page.get_by_label("Issuer").fill(ISSUER)
    page.get_by_role("button", name="Add credential").click()
    assert page.get_by_role("cell", name=fic, exact=True).is_visible()
    made = cli_json(
        platform.home, "identity", "federated-credential", "show", "-g", rg, "--identity-name", name, "-n", fic
    )
    assert made["issuer"] == ISSUER and made["subject"] == "repo:octo/app:ref:refs/heads/main"
    assert made["audiences"] == ["api://AzureADTokenExchange"]
    page.screenshot(path=str(SHOTS / "uai-federated-added.png"), full_page=True)
    context_reader, page_reader = sign_in(chromium, platform, reader)

    # The Reader sees it all; every save is refused by ARM, on the page, and nothing changes.
    page_reader.get_by_role("link", name="Managed identities").click()
    page_reader.get_by_label("Resource group", exact=True).select_option(rg)
    page_reader.get_by_label("Name", exact=True).fill(f"{name}-r")
    page_reader.get_by_role("button", name="Create identity").click()
    assert "AuthorizationFailed" in page_reader.get_by_role("alert").inner_text()
    page_reader.screenshot(path=str(SHOTS / "uai-reader-refused.png"), full_page=True)
    assert _identity_names(platform, rg) == [name]
    page_reader.goto(f"{platform.authority}/portal/resourcegroups/{rg}/identities/{name}")
    assert page_reader.locator("#client-id").inner_text().strip() == shown["clientId"]
    assert page_reader.get_by_role("cell", name=fic, exact=True).is_visible()
    page_reader.get_by_label("Credential name").fill(f"{fic}-r")
    page_reader.get_by_label("Issuer").fill(ISSUER)
    page_reader.get_by_label("Subject").fill("repo:octo/app:ref:refs/heads/dev")
    page_reader.get_by_role("button", name="Add credential").click()
    assert "AuthorizationFailed" in page_reader.get_by_role("alert").inner_text()
    page_reader.get_by_role("link", name=f"Delete credential {fic}").click()
    page_reader.get_by_role("button", name="Yes").click()
    assert "AuthorizationFailed" in page_reader.get_by_role("alert").inner_text()
    page_reader.get_by_role("link", name="Delete identity").click()
    page_reader.get_by_role("button", name="Yes").click()
    assert "AuthorizationFailed" in page_reader.get_by_role("alert").inner_text()
    assert _credentials(platform, rg, name) == [fic] and _identity_names(platform, rg) == [name]
    context_reader.close()

    # The Contributor deletes the credential, then the identity, each after a Yes.
    page.get_by_role("link", name=f"Delete credential {fic}").click()
    assert page.get_by_role("dialog").is_visible()
    page.screenshot(path=str(SHOTS / "uai-federated-confirm.png"), full_page=True)
    assert _credentials(platform, rg, name) == [fic]  # asking is not deleting
    page.get_by_role("button", name="Yes").click()
    assert page.get_by_role("cell", name="No federated credentials.").is_visible()
    assert _credentials(platform, rg, name) == []
    page.get_by_role("link", name="Delete identity").click()
    page.get_by_role("link", name="No", exact=True).click()
    assert _identity_names(platform, rg) == [name]
    page.get_by_role("link", name="Delete identity").click()
    page.get_by_role("button", name="Yes").click()
    page.wait_for_url(f"{platform.authority}/portal/identities")
    assert not page.get_by_role("link", name=f"Identity {name}").count()
    assert _identity_names(platform, rg) == []
    gone = run_cli(platform.home, "identity", "show", "-g", rg, "-n", name, check=False)
    assert gone.returncode != 0
    context.close()
