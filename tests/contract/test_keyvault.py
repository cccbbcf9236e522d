"""The real azure-keyvault-secrets client, unmodified, against the vault: as an app with its managed
identity (DefaultAzureCredential, sync and async), and every secrets operation as an operator.
Access follows access policies or RBAC on the very next request."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.keyvault.secrets import SecretClient

from tests.conftest import RunningPlatform, cli_json, probe_command, probe_results, run_cli

KV_APP = ["webapp", "run", "-g", "kv-rg", "-n", "kv-app"]


@pytest.fixture(scope="module")
def kv(platform: RunningPlatform) -> dict[str, Any]:
    home = platform.home
    cli_json(home, "group", "create", "-n", "kv-rg", "-l", "westus")
    uai = cli_json(home, "identity", "create", "-g", "kv-rg", "-n", "kv-uai")
    app = cli_json(home, "webapp", "create", "-g", "kv-rg", "-n", "kv-app", "--assign-identity", "[system]", "kv-uai")
    policy_vault = cli_json(home, "keyvault", "create", "-n", "kv-policy", "-g", "kv-rg")
    rbac_vault = cli_json(
        home, "keyvault", "create", "-n", "kv-rbac", "-g", "kv-rg", "--enable-rbac-authorization", "true"
    )
    for vault in ("kv-policy", "kv-rbac"):
        if vault == "kv-rbac":
            cli_json(
                home,
                "role",
                "assignment",
                "create",
                "--assignee",
                platform.endpoints["admin"]["client_id"],
                "--role",
                "Key Vault Secrets Officer",
                "--scope",
                rbac_vault["id"],
            )
        cli_json(
            home, "keyvault", "secret", "set", "--vault-name", vault, "-n", "db-password", "--value", f"pw-{vault}"
        )
    return {
        "uai": uai,
        "app": app,
        "policy": policy_vault,
        "rbac": rbac_vault,
        "system_oid": app["identity"]["principalId"],
    }


def vault_url(vault: dict[str, Any]) -> str:
    return str(vault["properties"]["vaultUri"]).rstrip("/")


def run_app(platform: RunningPlatform, actions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    result = subprocess.run(probe_command(platform.home, KV_APP, actions), capture_output=True, text=True, timeout=180)
    return probe_results(result.stdout, result.stderr)


def test_vault_resource_shape(kv: dict[str, Any], platform: RunningPlatform) -> None:
    props = kv["policy"]["properties"]
    assert props["vaultUri"] == f"https://kv-policy.{platform.endpoints['vault_suffix']}/"
    assert props["tenantId"] == platform.tenant_id and props["enableSoftDelete"] is True
    assert props["enableRbacAuthorization"] is False and kv["rbac"]["properties"]["enableRbacAuthorization"]


def test_app_reads_secret_with_access_policy_sync_and_async(platform: RunningPlatform, kv: dict[str, Any]) -> None:
    url = vault_url(kv["policy"])
    get = [
        {"kind": "kv-get", "vault": url, "name": "db-password"},
        {"kind": "kv-get-async", "vault": url, "name": "db-password"},
    ]
    denied = run_app(platform, get)
    assert not denied[0]["ok"] and "does not have secrets get permission" in denied[0]["error"]
    assert not denied[1]["ok"] and "Forbidden" in denied[1]["error"]
    run_cli(
        platform.home,
        "keyvault",
        "set-policy",
        "-n",
        "kv-policy",
        "--object-id",
        kv["system_oid"],
        "--secret-permissions",
        "get",
        "list",
    )
    allowed = run_app(platform, get)
    assert [r.get("value") for r in allowed] == ["pw-kv-policy", "pw-kv-policy"], allowed
    run_cli(platform.home, "keyvault", "delete-policy", "-n", "kv-policy", "--object-id", kv["system_oid"])
    again = run_app(platform, get)
    assert not again[0]["ok"] and not again[1]["ok"]


def test_user_assigned_identity_reads_with_its_own_policy(platform: RunningPlatform, kv: dict[str, Any]) -> None:
    url = vault_url(kv["policy"])
    run_cli(
        platform.home,
        "keyvault",
        "set-policy",
        "-n",
        "kv-policy",
        "--object-id",
        kv["uai"]["principalId"],
        "--secret-permissions",
        "get",
    )
    try:
        (as_user,) = run_app(
            platform,
            [{"kind": "kv-get", "vault": url, "name": "db-password", "mi": {"client_id": kv["uai"]["clientId"]}}],
        )
        assert as_user == {"ok": True, "value": "pw-kv-policy"}
        (as_system,) = run_app(platform, [{"kind": "kv-get", "vault": url, "name": "db-password"}])
        assert not as_system["ok"]  # the system identity has no policy
    finally:
        run_cli(platform.home, "keyvault", "delete-policy", "-n", "kv-policy", "--object-id", kv["uai"]["principalId"])


def test_rbac_changes_apply_to_the_very_next_request(
    platform: RunningPlatform, kv: dict[str, Any], workload_folder: Path
) -> None:
    """One app process, one SecretClient (its token cached): grant, read, revoke, denied."""
    url, home = vault_url(kv["rbac"]), platform.home
    step = [workload_folder / f"step{i}" for i in range(3)]
    get = {"kind": "kv-get", "vault": url, "name": "db-password"}
    actions = [
        {**get, "mark": str(step[0])},
        {"kind": "wait-file", "path": str(step[1])},
        {**get, "mark": str(step[2])},
        {"kind": "wait-file", "path": str(workload_folder / "step3")},
        get,
    ]
    process = subprocess.Popen(
        probe_command(home, KV_APP, actions), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )

    def wait_for(path: Path) -> None:
        deadline = time.monotonic() + 60
        while not path.exists():
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.05)

    try:
        wait_for(step[0])
        assignment = cli_json(
            home,
            "role",
            "assignment",
            "create",
            "--assignee",
            kv["system_oid"],
            "--role",
            "Key Vault Secrets User",
            "--scope",
            kv["rbac"]["id"],
        )
        step[1].write_text("go")
        wait_for(step[2])
        run_cli(home, "role", "assignment", "delete", "--ids", assignment["id"])
        (workload_folder / "step3").write_text("go")
        stdout, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    results = probe_results(stdout)
    before, _, granted, _, revoked = results
    assert (not before["ok"] and "ForbiddenByRbac" in before["error"]) or "not authorized" in before["error"]
    assert granted == {"ok": True, "value": "pw-kv-rbac"}
    assert not revoked["ok"] and "not authorized" in revoked["error"]


@pytest.mark.parametrize("scope_kind", ["group", "subscription"])
def test_rbac_inherited_from_group_and_subscription(
    platform: RunningPlatform, kv: dict[str, Any], scope_kind: str
) -> None:
    scope = (
        f"/subscriptions/{platform.endpoints['subscription_id']}/resourceGroups/kv-rg"
        if scope_kind == "group"
        else f"/subscriptions/{platform.endpoints['subscription_id']}"
    )
    assignment = cli_json(
        platform.home,
        "role",
        "assignment",
        "create",
        "--assignee",
        kv["system_oid"],
        "--role",
        "Key Vault Secrets User",
        "--scope",
        scope,
    )
    try:
        (result,) = run_app(platform, [{"kind": "kv-get", "vault": vault_url(kv["rbac"]), "name": "db-password"}])
        assert result == {"ok": True, "value": "pw-kv-rbac"}
    finally:
        run_cli(platform.home, "role", "assignment", "delete", "--ids", assignment["id"])


def test_reader_role_cannot_read_values(platform: RunningPlatform, kv: dict[str, Any]) -> None:
    assignment = cli_json(
        platform.home,
        "role",
        "assignment",
        "create",
        "--assignee",
        kv["system_oid"],
        "--role",
        "Key Vault Reader",
        "--scope",
        kv["rbac"]["id"],
    )
    try:
        (result,) = run_app(platform, [{"kind": "kv-get", "vault": vault_url(kv["rbac"]), "name": "db-password"}])
        assert not result["ok"] and "getSecret" in result["error"]
    finally:
        run_cli(platform.home, "role", "assignment", "delete", "--ids", assignment["id"])


def test_every_secrets_operation(platform: RunningPlatform, kv: dict[str, Any], admin_credential: Any) -> None:
    client = SecretClient(vault_url(kv["policy"]), admin_credential)
    first = client.set_secret("ops", "v1", content_type="text/plain", tags={"a": "b"})
    second = client.set_secret("ops", "v2")
    assert client.get_secret("ops").value == "v2"
    assert client.get_secret("ops", first.properties.version).value == "v1"
    updated = client.update_secret_properties("ops", first.properties.version, enabled=False, tags={"x": "y"})
    assert updated.enabled is False and updated.tags == {"x": "y"}
    with pytest.raises(HttpResponseError) as disabled:
        client.get_secret("ops", first.properties.version)
    assert disabled.value.status_code == 403
    assert "ops" in [p.name for p in client.list_properties_of_secrets()]
    versions = {p.version for p in client.list_properties_of_secret_versions("ops")}
    assert versions == {first.properties.version, second.properties.version}

    backup = client.backup_secret("ops")
    deleted = client.begin_delete_secret("ops").result()
    assert deleted.recovery_id and deleted.scheduled_purge_date and deleted.deleted_date
    assert client.get_deleted_secret("ops").name == "ops"
    assert "ops" in [d.name for d in client.list_deleted_secrets()]
    with pytest.raises(ResourceNotFoundError):
        client.get_secret("ops")
    with pytest.raises(ResourceExistsError):
        client.set_secret("ops", "while deleted")
    recovered = client.begin_recover_deleted_secret("ops").result()
    assert recovered.name == "ops" and client.get_secret("ops").value == "v2"

    client.begin_delete_secret("ops").wait()
    client.purge_deleted_secret("ops")
    with pytest.raises(ResourceNotFoundError):
        client.get_deleted_secret("ops")
    restored = client.restore_secret_backup(backup)
    assert restored.name == "ops" and client.get_secret("ops").value == "v2"
    with pytest.raises(ResourceExistsError):
        client.restore_secret_backup(backup)
    # Paging: more secrets than one page.
    for i in range(30):
        client.set_secret(f"page-{i}", str(i))
    assert sum(1 for p in client.list_properties_of_secrets() if p.name.startswith("page-")) == 30


def test_cli_secret_commands(platform: RunningPlatform, kv: dict[str, Any]) -> None:
    home = platform.home
    set_ = cli_json(home, "keyvault", "secret", "set", "--vault-name", "kv-policy", "-n", "cli-secret", "--value", "x")
    assert set_["value"] == "x" and set_["id"].startswith(vault_url(kv["policy"]))
    assert (
        len(cli_json(home, "keyvault", "secret", "list-versions", "--vault-name", "kv-policy", "-n", "cli-secret")) == 1
    )
    deleted = cli_json(home, "keyvault", "secret", "delete", "--vault-name", "kv-policy", "-n", "cli-secret")
    assert deleted["recoveryId"].endswith("/deletedsecrets/cli-secret")
    assert cli_json(home, "keyvault", "secret", "show-deleted", "--vault-name", "kv-policy", "-n", "cli-secret")
    assert [
        d["id"]
        for d in cli_json(home, "keyvault", "secret", "list-deleted", "--vault-name", "kv-policy")
        if "cli-secret" in d["id"]
    ]
    cli_json(home, "keyvault", "secret", "recover", "--vault-name", "kv-policy", "-n", "cli-secret")
    assert cli_json(home, "keyvault", "secret", "show", "--vault-name", "kv-policy", "-n", "cli-secret")["value"] == "x"
    cli_json(home, "keyvault", "secret", "delete", "--vault-name", "kv-policy", "-n", "cli-secret")
    run_cli(home, "keyvault", "secret", "purge", "--vault-name", "kv-policy", "-n", "cli-secret")
    missing = run_cli(home, "keyvault", "secret", "show", "--vault-name", "kv-policy", "-n", "cli-secret", check=False)
    assert missing.returncode == 1 and "SecretNotFound" in missing.stderr
    assert any(v["name"] == "kv-policy" for v in cli_json(home, "keyvault", "list"))
    duplicate = run_cli(home, "keyvault", "create", "-n", "kv-policy", "-g", "kv-rg", check=False)
    assert duplicate.returncode == 0  # same group: an update, as in ARM
    cli_json(home, "group", "create", "-n", "kv-rg2", "-l", "westus")
    clash = run_cli(home, "keyvault", "create", "-n", "kv-policy", "-g", "kv-rg2", check=False)
    assert clash.returncode == 1 and "VaultAlreadyExists" in clash.stderr
