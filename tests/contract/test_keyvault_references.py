"""Key Vault references in app settings: `webapp run` gives the process the secret's value, read by the
agent with the app's identity (system-assigned, or the user-assigned one keyVaultReferenceIdentity
names); a reference that cannot be resolved stays literal and the real azure-mgmt-web client reads
why at config/configreferences/appsettings; a rotated secret reaches the next start; the value is in
no log, no audit record and no control-plane answer."""

from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.web import WebSiteManagementClient
from azure.mgmt.web.models import ManagedServiceIdentity, Site, UserAssignedIdentity

from tests.conftest import RunningPlatform, cli_json, credential_for, probe_command, probe_results, run_cli

GROUP = "kvr-rg"


@pytest.fixture(scope="module")
def web(platform: RunningPlatform, admin_credential: Any) -> WebSiteManagementClient:
    return WebSiteManagementClient(
        admin_credential, platform.endpoints["subscription_id"], base_url=platform.endpoints["arm"]
    )


@pytest.fixture(scope="module")
def refs(platform: RunningPlatform, web: WebSiteManagementClient) -> dict[str, Any]:
    """Two apps with a system-assigned identity and the same UAI: kvr-sys resolves with its system
    identity, kvr-uai names the UAI as its keyVaultReferenceIdentity. The open vault grants `get` to
    kvr-sys's system identity and to the UAI only; the closed vault grants nobody."""
    home = platform.home
    cli_json(home, "group", "create", "-n", GROUP, "-l", "westus")
    uai = cli_json(home, "identity", "create", "-g", GROUP, "-n", "kvr-identity")
    sys_app = cli_json(
        home, "webapp", "create", "-g", GROUP, "-n", "kvr-sys", "--assign-identity", "[system]", "kvr-identity"
    )
    identity = ManagedServiceIdentity(
        type="SystemAssigned, UserAssigned", user_assigned_identities={uai["id"]: UserAssignedIdentity()}
    )
    uai_app = web.web_apps.begin_create_or_update(
        GROUP, "kvr-uai", Site(location="westus", identity=identity, key_vault_reference_identity=uai["id"])
    ).result()
    values = {"open": f"open-{secrets.token_hex(12)}", "closed": f"closed-{secrets.token_hex(12)}"}
    for vault in ("kvr-open", "kvr-closed"):
        cli_json(home, "keyvault", "create", "-n", vault, "-g", GROUP)
    cli_json(
        home, "keyvault", "secret", "set", "--vault-name", "kvr-open", "-n", "db-password", "--value", values["open"]
    )
    cli_json(
        home,
        "keyvault",
        "secret",
        "set",
        "--vault-name",
        "kvr-closed",
        "-n",
        "db-password",
        "--value",
        values["closed"],
    )
    for oid in (sys_app["identity"]["principalId"], uai["principalId"]):
        run_cli(home, "keyvault", "set-policy", "-n", "kvr-open", "--object-id", oid, "--secret-permissions", "get")
    return {
        "uai": uai,
        "sys": sys_app,
        "uai_app": uai_app,
        "values": values,
        "suffix": platform.endpoints["vault_suffix"],
    }


def set_settings(web: WebSiteManagementClient, app: str, settings: dict[str, str]) -> None:
    """Replace the app's settings as a whole, so each test starts from its own."""
    web.web_apps.update_application_settings(GROUP, app, {"properties": settings})


def start(platform: RunningPlatform, app: str, names: list[str]) -> tuple[dict[str, str | None], str]:
    """One start of the app: what its process sees for `names`, and what the run printed to stderr."""
    command = probe_command(platform.home, ["webapp", "run", "-g", GROUP, "-n", app], [{"kind": "env", "names": names}])
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    (seen,) = probe_results(result.stdout, result.stderr)
    assert seen["ok"], seen
    return dict(seen["value"]), result.stderr


def uri_ref(suffix: str, vault: str, name: str = "db-password", version: str | None = None) -> str:
    tail = f"/{version}" if version else ""
    return f"@Microsoft.KeyVault(SecretUri=https://{vault}.{suffix}/secrets/{name}{tail})"


def statuses(web: WebSiteManagementClient, app: str) -> dict[str, Any]:
    return {r.name: r.properties for r in web.web_apps.get_app_settings_key_vault_references(GROUP, app)}


def test_system_identity_resolves_both_syntaxes(
    platform: RunningPlatform, refs: dict[str, Any], web: WebSiteManagementClient
) -> None:
    by_uri = uri_ref(refs["suffix"], "kvr-open")
    by_name = "@Microsoft.KeyVault(VaultName=kvr-open;SecretName=db-password)"
    set_settings(web, "kvr-sys", {"BY_URI": by_uri, "BY_NAME": by_name, "PLAIN": "as-is"})
    seen, _ = start(platform, "kvr-sys", ["BY_URI", "BY_NAME", "PLAIN"])
    assert seen == {"BY_URI": refs["values"]["open"], "BY_NAME": refs["values"]["open"], "PLAIN": "as-is"}
    found = statuses(web, "kvr-sys")
    assert set(found) == {"BY_URI", "BY_NAME"}  # PLAIN is no reference
    for name, text in (("BY_URI", by_uri), ("BY_NAME", by_name)):
        props = found[name]
        assert props.status == "Resolved" and props.reference == text and props.source == "KeyVault"
        assert props.vault_name == "kvr-open" and props.secret_name == "db-password" and props.secret_version is None
        assert props.identity_type.type == "SystemAssigned"
        assert props.active_version and len(props.active_version) == 32
    one = web.web_apps.get_app_setting_key_vault_reference(GROUP, "kvr-sys", "BY_NAME")
    assert one.name == "BY_NAME" and one.properties.status == "Resolved"
    assert one.id.endswith("/config/configreferences/appsettings/BY_NAME")
    with pytest.raises(ResourceNotFoundError):
        web.web_apps.get_app_setting_key_vault_reference(GROUP, "kvr-sys", "PLAIN")


def test_key_vault_reference_identity_names_the_uai(
    platform: RunningPlatform, refs: dict[str, Any], web: WebSiteManagementClient
) -> None:
    """kvr-uai's system identity has no access policy: only its UAI can read the secret."""
    assert web.web_apps.get(GROUP, "kvr-uai").key_vault_reference_identity == refs["uai"]["id"]
    set_settings(web, "kvr-uai", {"DB": uri_ref(refs["suffix"], "kvr-open")})
    seen, _ = start(platform, "kvr-uai", ["DB"])
    assert seen == {"DB": refs["values"]["open"]}
    props = statuses(web, "kvr-uai")["DB"]
    assert props.status == "Resolved" and props.identity_type.type == "UserAssigned"
    assert [k.lower() for k in props.identity_type.user_assigned_identities] == [refs["uai"]["id"].lower()]


def test_unresolvable_references_stay_literal_with_their_status(
    platform: RunningPlatform, refs: dict[str, Any], web: WebSiteManagementClient
) -> None:
    suffix = refs["suffix"]
    settings = {
        "DENIED": uri_ref(suffix, "kvr-closed"),  # no access policy for the app's identity
        "NO_SECRET": uri_ref(suffix, "kvr-open", "no-such-secret"),
        "NO_VERSION": uri_ref(suffix, "kvr-open", version="0" * 32),
        "NO_VAULT": "@Microsoft.KeyVault(VaultName=kvr-nowhere;SecretName=db-password)",
        "FOREIGN": "@Microsoft.KeyVault(SecretUri=https://elsewhere.example.com/secrets/db-password)",
        "MALFORMED": "@Microsoft.KeyVault(VaultName=kvr-open)",
        "BAD_URI": "@Microsoft.KeyVault(SecretUri=http://kvr-open/not-secrets/x)",
    }
    set_settings(web, "kvr-sys", settings)
    seen, stderr = start(platform, "kvr-sys", list(settings))
    assert seen == settings  # every one exactly as written
    expected = {
        "DENIED": "AccessToKeyVaultDenied",
        "NO_SECRET": "SecretNotFound",
        "NO_VERSION": "SecretVersionNotFound",
        "NO_VAULT": "VaultNotFound",
        "FOREIGN": "VaultNotFound",
        "MALFORMED": "InvalidSyntax",
        "BAD_URI": "InvalidSyntax",
    }
    found = statuses(web, "kvr-sys")
    assert {name: props.status for name, props in found.items()} == expected
    assert all(props.details and "not able to be resolved" in props.details for props in found.values())
    assert found["DENIED"].vault_name == "kvr-closed" and found["NO_VERSION"].secret_version == "0" * 32
    # The run says the same, setting by setting, on its stderr.
    for name, status in expected.items():
        assert f"app setting {name}: Key Vault reference not resolved ({status})" in stderr, stderr


def test_a_slot_without_identity_is_msi_not_enabled(
    platform: RunningPlatform, refs: dict[str, Any], web: WebSiteManagementClient
) -> None:
    """A slot is an app of its own: without an identity its references cannot resolve, at start or in
    its configreferences."""
    cli_json(platform.home, "webapp", "deployment", "slot", "create", "-g", GROUP, "-n", "kvr-sys", "--slot", "stage")
    reference = uri_ref(refs["suffix"], "kvr-open")
    web.web_apps.update_application_settings_slot(GROUP, "kvr-sys", "stage", {"properties": {"DB": reference}})
    command = probe_command(
        platform.home,
        ["webapp", "run", "-g", GROUP, "-n", "kvr-sys", "--slot", "stage"],
        [{"kind": "env", "names": ["DB"]}],
    )
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    (seen,) = probe_results(result.stdout, result.stderr)
    assert seen["value"] == {"DB": reference}
    assert "app setting DB: Key Vault reference not resolved (MSINotEnabled)" in result.stderr
    (status,) = web.web_apps.get_app_settings_key_vault_references_slot(GROUP, "kvr-sys", "stage")
    assert status.name == "DB" and status.properties.status == "MSINotEnabled"
    assert "/slots/stage/config/configreferences/appsettings/DB" in status.id


def test_access_granted_later_and_a_rotated_secret_reach_the_next_start(
    platform: RunningPlatform, refs: dict[str, Any], web: WebSiteManagementClient
) -> None:
    home = platform.home
    set_settings(web, "kvr-sys", {"DB": uri_ref(refs["suffix"], "kvr-closed")})
    oid = refs["sys"]["identity"]["principalId"]
    try:
        assert start(platform, "kvr-sys", ["DB"])[0]["DB"] == uri_ref(refs["suffix"], "kvr-closed")
        run_cli(home, "keyvault", "set-policy", "-n", "kvr-closed", "--object-id", oid, "--secret-permissions", "get")
        assert statuses(web, "kvr-sys")["DB"].status == "Resolved"
        assert start(platform, "kvr-sys", ["DB"])[0]["DB"] == refs["values"]["closed"]
        rotated = f"rotated-{secrets.token_hex(12)}"
        cli_json(
            home, "keyvault", "secret", "set", "--vault-name", "kvr-closed", "-n", "db-password", "--value", rotated
        )
        assert start(platform, "kvr-sys", ["DB"])[0]["DB"] == rotated
        # A pinned version keeps its value through the rotation.
        versions = cli_json(
            home, "keyvault", "secret", "list-versions", "--vault-name", "kvr-closed", "-n", "db-password"
        )
        first = min(versions, key=lambda v: v["attributes"]["created"])["id"].rsplit("/", 1)[1]
        set_settings(web, "kvr-sys", {"DB": uri_ref(refs["suffix"], "kvr-closed", version=first)})
        assert start(platform, "kvr-sys", ["DB"])[0]["DB"] == refs["values"]["closed"]
    finally:
        run_cli(home, "keyvault", "delete-policy", "-n", "kvr-closed", "--object-id", oid)


def test_values_are_in_no_log_audit_record_or_answer(
    platform: RunningPlatform, refs: dict[str, Any], web: WebSiteManagementClient
) -> None:
    value = refs["values"]["open"]
    reference = uri_ref(refs["suffix"], "kvr-open")
    set_settings(web, "kvr-sys", {"DB": reference})
    seen, stderr = start(platform, "kvr-sys", ["DB"])
    assert seen["DB"] == value and value not in stderr
    answers = [
        run_cli(platform.home, "webapp", "config", "appsettings", "list", "-g", GROUP, "-n", "kvr-sys").stdout,
        run_cli(platform.home, "webapp", "show", "-g", GROUP, "-n", "kvr-sys").stdout,
        json.dumps(web.web_apps.list_application_settings(GROUP, "kvr-sys").properties),
        json.dumps([r.as_dict() for r in web.web_apps.get_app_settings_key_vault_references(GROUP, "kvr-sys")]),
        run_cli(platform.home, "audit", "list", check=False).stdout,
    ]
    assert reference in answers[0] and reference in answers[2]
    for answer in answers:
        assert value not in answer
    # Every log, audit journal and database file the platform and its agent keep, byte for byte.
    files = [p for p in Path(platform.home).rglob("*") if p.is_file() and not p.is_symlink()]
    assert any(p.name == "server.log" for p in files)
    leaked = [str(p) for p in files if value.encode() in p.read_bytes()]
    assert leaked == []


def test_reading_statuses_needs_what_listing_settings_needs(
    platform: RunningPlatform, refs: dict[str, Any], web: WebSiteManagementClient, secret_app: dict[str, Any]
) -> None:
    """A Reader sees the app but not its settings' text, so not their references either."""
    set_settings(web, "kvr-sys", {"DB": uri_ref(refs["suffix"], "kvr-open")})
    group = cli_json(platform.home, "group", "show", "-n", GROUP)
    assignment = cli_json(
        platform.home,
        "role",
        "assignment",
        "create",
        "--assignee",
        secret_app["appId"],
        "--role",
        "Reader",
        "--scope",
        group["id"],
    )
    try:
        reader = WebSiteManagementClient(
            credential_for(platform, secret_app),
            platform.endpoints["subscription_id"],
            base_url=platform.endpoints["arm"],
        )
        assert reader.web_apps.get(GROUP, "kvr-sys").name == "kvr-sys"
        with pytest.raises(HttpResponseError) as listed:
            list(reader.web_apps.get_app_settings_key_vault_references(GROUP, "kvr-sys"))
        with pytest.raises(HttpResponseError) as one:
            reader.web_apps.get_app_setting_key_vault_reference(GROUP, "kvr-sys", "DB")
        for denied in (listed.value, one.value):
            assert denied.status_code == 403 and denied.error is not None and denied.error.code == "AuthorizationFailed"
    finally:
        run_cli(platform.home, "role", "assignment", "delete", "--ids", assignment["id"])
