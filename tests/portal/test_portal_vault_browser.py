"""The vault page in a real Chromium: a Contributor on the group gives themselves an access policy, sets a
secret, reveals it, then gives a web app's system-assigned identity a `get` policy; the app, run with
`lanyard webapp run`, reads the secret with the unmodified azure-keyvault-secrets client. Removing the
policy in the portal takes the access away again. Screenshots go to reports/portal/."""

from __future__ import annotations

import subprocess
import uuid
from typing import Any

from tests.conftest import RunningPlatform, cli_json, probe_command, probe_results, run_cli
from tests.portal.people import SHOTS, person, sign_in


def _read_secret(platform: RunningPlatform, rg: str, app: str, url: str, name: str) -> dict[str, Any]:
    actions = [{"kind": "kv-get", "vault": url, "name": name}]
    target = ["webapp", "run", "-g", rg, "-n", app]
    done = subprocess.run(probe_command(platform.home, target, actions), capture_output=True, text=True, timeout=180)
    (result,) = probe_results(done.stdout, done.stderr)
    return dict(result)


def test_vault_policies_secrets_and_the_app_reading_one(platform: RunningPlatform, chromium: Any) -> None:
    tag = uuid.uuid4().hex[:6]
    rg, app, vault = f"kvp-rg-{tag}", f"kvp-app-{tag}", f"kvp-{tag}"
    group = cli_json(platform.home, "group", "create", "-n", rg, "-l", "westus")
    made = cli_json(platform.home, "webapp", "create", "-g", rg, "-n", app, "--assign-identity", "[system]")
    app_oid = made["identity"]["principalId"]
    url = str(cli_json(platform.home, "keyvault", "create", "-n", vault, "-g", rg)["properties"]["vaultUri"]).rstrip(
        "/"
    )
    upn = person(platform, "Vera Vault", "Contributor", group["id"])
    reader = person(platform, "Rhea Reader", "Reader", group["id"])
    me = cli_json(platform.home, "ad", "user", "show", "--id", upn)["id"]
    SHOTS.mkdir(parents=True, exist_ok=True)

    context, page = sign_in(chromium, platform, upn)
    page.get_by_role("link", name=rg).click()
    page.get_by_role("link", name=f"Vault {vault}").click()
    assert page.get_by_role("heading", name=f"Key vault {vault}").is_visible()
    # Not on the access policies yet: the data plane says so, on the page.
    assert "Forbidden" in page.get_by_role("status").inner_text()
    page.get_by_label("Object id").fill(me)
    page.get_by_label("set", exact=True).check()
    page.get_by_label("delete", exact=True).check()
    page.get_by_role("button", name="Add access policy").click()
    assert page.get_by_role("cell", name=me, exact=True).is_visible()
    page.get_by_label("Secret name").fill("db-password")
    page.get_by_label("Secret value").fill(f"pw-{tag}")
    page.get_by_role("button", name="Set secret").click()
    assert page.get_by_role("cell", name="db-password", exact=True).is_visible()
    assert f"pw-{tag}" not in page.content()
    page.get_by_role("button", name="Reveal db-password").click()
    assert page.locator("#revealed-value").inner_text() == f"pw-{tag}"
    page.screenshot(path=str(SHOTS / "vault-revealed.png"), full_page=True)

    denied = _read_secret(platform, rg, app, url, "db-password")
    assert not denied["ok"] and "does not have secrets get permission" in denied["error"]
    page.get_by_label("Object id").fill(app_oid)
    page.get_by_label("list", exact=True).uncheck()
    page.get_by_role("button", name="Add access policy").click()
    assert page.get_by_role("cell", name=app_oid, exact=True).is_visible()
    page.screenshot(path=str(SHOTS / "vault-app-policy.png"), full_page=True)
    allowed = _read_secret(platform, rg, app, url, "db-password")
    assert allowed.get("value") == f"pw-{tag}", allowed

    page.get_by_role("button", name=f"Remove policy of {app_oid}").click()
    assert (
        page.get_by_role("cell", name=me, exact=True).is_visible()
        and not page.get_by_role("cell", name=app_oid, exact=True).count()
    )
    assert not _read_secret(platform, rg, app, url, "db-password")["ok"]

    # Delete, after a Yes; No first leaves it.
    page.get_by_role("link", name="Delete secret db-password").click()
    assert "Delete secret db-password" in page.get_by_role("dialog").inner_text()
    page.get_by_role("dialog").get_by_role("link", name="No").click()
    assert page.get_by_role("cell", name="db-password", exact=True).is_visible()
    page.get_by_role("link", name="Delete secret db-password").click()
    page.get_by_role("dialog").get_by_role("button", name="Yes").click()
    assert not page.get_by_role("cell", name="db-password", exact=True).count()
    gone = run_cli(platform.home, "keyvault", "secret", "show", "--vault-name", vault, "-n", "db-password", check=False)
    assert gone.returncode != 0 and "SecretNotFound" in gone.stderr
    context.close()

    # A Reader sees the policies but cannot change them: ARM's refusal is on the page, nothing written.
    before = cli_json(platform.home, "keyvault", "show", "-n", vault)["properties"]["accessPolicies"]
    context, page = sign_in(chromium, platform, reader)
    page.goto(f"{platform.authority}/portal/resourcegroups/{rg}/vaults/{vault}")
    assert page.get_by_role("cell", name=me, exact=True).is_visible()
    page.get_by_label("Object id").fill(app_oid)
    page.get_by_role("button", name="Add access policy").click()
    assert "AuthorizationFailed" in page.get_by_role("alert").inner_text()
    page.screenshot(path=str(SHOTS / "vault-reader-refused.png"), full_page=True)
    assert cli_json(platform.home, "keyvault", "show", "-n", vault)["properties"]["accessPolicies"] == before
    context.close()
