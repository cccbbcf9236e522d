"""The real azure-identity (sync and async), DefaultAzureCredential and msal ManagedIdentityClient,
unmodified, running as workloads under `lanyard webapp run` and `vm run`, get tokens that verify
against the directory's JWKS with the identity's oid and xms_mirid."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    RunningPlatform,
    app_service_tokens_around,
    app_setting,
    cli_json,
    probe_command,
    probe_results,
    run_cli,
    verify_with_discovery,
)

ARM = "https://management.azure.com"


@pytest.fixture(scope="module")
def apps(platform: RunningPlatform) -> dict[str, Any]:
    home = platform.home
    cli_json(home, "group", "create", "-n", "mi-rg", "-l", "westus")
    uai = cli_json(home, "identity", "create", "-g", "mi-rg", "-n", "mi-uai")
    site = cli_json(home, "webapp", "create", "-g", "mi-rg", "-n", "mi-app", "--assign-identity", "[system]", "mi-uai")
    bare = cli_json(home, "webapp", "create", "-g", "mi-rg", "-n", "mi-bare")
    vm = cli_json(home, "vm", "create", "-g", "mi-rg", "-n", "mi-vm", "--assign-identity", "[system]", "mi-uai")
    return {"uai": uai, "site": site, "bare": bare, "vm": vm}


def run_probe(
    platform: RunningPlatform,
    target: list[str],
    actions: list[dict[str, Any]],
    env: dict[str, str] | None = None,
) -> tuple[int, list[dict[str, Any]], str]:
    result = subprocess.run(
        probe_command(platform.home, target, actions),
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **(env or {})},
    )
    results = probe_results(result.stdout, result.stderr)
    return result.returncode, results, result.stderr


def webapp(name: str = "mi-app") -> list[str]:
    return ["webapp", "run", "-g", "mi-rg", "-n", name]


def vm(*extra: str) -> list[str]:
    return ["vm", "run", "-g", "mi-rg", "-n", "mi-vm", *extra]


claims_of = verify_with_discovery


def ok_values(results: list[dict[str, Any]]) -> list[Any]:
    for r in results:
        assert r["ok"], r["error"]
    return [r["value"] for r in results]


def test_app_service_sync_async_system_and_user(platform: RunningPlatform, apps: dict[str, Any]) -> None:
    site, uai = apps["site"], apps["uai"]
    scope = f"{ARM}/.default"
    actions = [
        {"kind": "azid-sync", "scope": scope},
        {"kind": "azid-sync", "scope": scope, "kwargs": {"client_id": uai["clientId"]}},
        {"kind": "azid-sync", "scope": scope, "kwargs": {"identity_config": {"object_id": uai["principalId"]}}},
        {"kind": "azid-sync", "scope": scope, "kwargs": {"identity_config": {"resource_id": uai["id"]}}},
        {"kind": "azid-async", "scope": scope},
        {"kind": "azid-async", "scope": scope, "kwargs": {"client_id": uai["clientId"]}},
        {"kind": "azid-async", "scope": scope, "kwargs": {"identity_config": {"object_id": uai["principalId"]}}},
        {"kind": "azid-async", "scope": scope, "kwargs": {"identity_config": {"mi_res_id": uai["id"]}}},
    ]
    code, results, stderr = run_probe(platform, webapp(), actions)
    assert code == 0, stderr
    tokens = ok_values(results)
    expected = [(site["identity"]["principalId"], site["id"])] + [(uai["principalId"], uai["id"])] * 3
    for token, (oid, mirid) in zip(tokens, expected * 2, strict=True):
        claims = claims_of(platform, token, ARM)
        assert (claims["oid"], claims["xms_mirid"]) == (oid, mirid)
        assert claims["tid"] == platform.tenant_id and claims["idtyp"] == "app"


def test_default_azure_credential_and_msal(platform: RunningPlatform, apps: dict[str, Any]) -> None:
    uai = apps["uai"]
    actions = [
        {"kind": "dac-sync", "scope": "https://vault.azure.net/.default"},
        {"kind": "dac-async", "scope": "https://vault.azure.net/.default"},
        {"kind": "msal", "resource": "https://vault.azure.net"},
        {"kind": "msal", "resource": "https://vault.azure.net", "client_id": uai["clientId"]},
    ]
    code, results, stderr = run_probe(platform, webapp(), actions)
    assert code == 0, stderr
    dac_sync, dac_async, msal_system, msal_user = ok_values(results)
    system_oid = apps["site"]["identity"]["principalId"]
    for token in (dac_sync, dac_async, msal_system):
        assert claims_of(platform, token, "https://vault.azure.net")["oid"] == system_oid
    assert claims_of(platform, msal_user, "https://vault.azure.net")["oid"] == uai["principalId"]


def test_dac_with_azure_client_id_asks_for_the_user_assigned(platform: RunningPlatform, apps: dict[str, Any]) -> None:
    with app_setting(platform.home, "mi-rg", "mi-app", "AZURE_CLIENT_ID", apps["uai"]["clientId"]):
        _code, results, _stderr = run_probe(platform, webapp(), [{"kind": "dac-sync", "scope": f"{ARM}/.default"}])
    (token,) = ok_values(results)
    assert claims_of(platform, token, ARM)["oid"] == apps["uai"]["principalId"]


def test_legacy_2017_protocol(platform: RunningPlatform, apps: dict[str, Any]) -> None:
    """With only MSI_ENDPOINT/MSI_SECRET, async azure-identity speaks 2017-09-01 (`secret`, `clientid`)."""
    actions = [
        {
            "kind": "raw",
            "base_env": "MSI_ENDPOINT",
            "path": f"?api-version=2017-09-01&resource={ARM}",
            "headers_from_env": {"secret": "MSI_SECRET"},
        },
        {"kind": "unset", "names": ["IDENTITY_ENDPOINT", "IDENTITY_HEADER"]},
        {"kind": "azid-async", "scope": f"{ARM}/.default", "kwargs": {"client_id": apps["uai"]["clientId"]}},
    ]
    _code, results, _stderr = run_probe(platform, webapp(), actions)
    raw, _, token = ok_values(results)
    assert raw["status"] == 200
    assert raw["body"]["expires_on"].endswith("+00:00") and "/" in raw["body"]["expires_on"]
    assert claims_of(platform, token, ARM)["oid"] == apps["uai"]["principalId"]


def test_environment_output_and_exit_code(platform: RunningPlatform, apps: dict[str, Any]) -> None:
    names = [
        "IDENTITY_ENDPOINT",
        "IDENTITY_HEADER",
        "MSI_ENDPOINT",
        "MSI_SECRET",
        "WEBSITE_SITE_NAME",
        "GREETING",
        "REQUESTS_CA_BUNDLE",
        "SSL_CERT_FILE",
        "NODE_EXTRA_CA_CERTS",
    ]
    with app_setting(platform.home, "mi-rg", "mi-app", "GREETING", "hello"):
        code, results, _ = run_probe(
            platform,
            webapp(),
            [{"kind": "env", "names": names}, {"kind": "file-digests", "names": names[-3:]}],
            env={"PROBE_EXIT": "7", "IDENTITY_HEADER": "smuggled"},
        )
    assert code == 7
    env, digests = ok_values(results)
    assert env["WEBSITE_SITE_NAME"] == "mi-app" and env["GREETING"] == "hello"
    assert env["IDENTITY_ENDPOINT"] == env["MSI_ENDPOINT"] == platform.endpoints["agent"]["url"]
    assert env["IDENTITY_HEADER"] == env["MSI_SECRET"] != "smuggled" and len(env["IDENTITY_HEADER"]) >= 43
    # The CA files the platform's environment names are the platform's (copies the workload's uid can
    # read: the originals are in the platform's private home).
    assert env["REQUESTS_CA_BUNDLE"] == env["SSL_CERT_FILE"]
    bundle = hashlib.sha256(Path(platform.endpoints["ca_bundle"]).read_bytes()).hexdigest()
    cert = hashlib.sha256(Path(platform.endpoints["ca_cert"]).read_bytes()).hexdigest()
    assert digests == {"REQUESTS_CA_BUNDLE": bundle, "SSL_CERT_FILE": bundle, "NODE_EXTRA_CA_CERTS": cert}
    # A new start gets a new header.
    _, again, _ = run_probe(platform, webapp(), [{"kind": "env", "names": ["IDENTITY_HEADER"]}])
    assert ok_values(again)[0]["IDENTITY_HEADER"] != env["IDENTITY_HEADER"]


def test_no_identity_env_without_identity_or_when_disabled(platform: RunningPlatform, apps: dict[str, Any]) -> None:
    names = ["IDENTITY_ENDPOINT", "IDENTITY_HEADER", "MSI_ENDPOINT", "WEBSITE_SITE_NAME"]
    _, results, _ = run_probe(platform, webapp("mi-bare"), [{"kind": "env", "names": names}])
    (env,) = ok_values(results)
    assert env["WEBSITE_SITE_NAME"] == "mi-bare" and env["IDENTITY_ENDPOINT"] is None
    with app_setting(platform.home, "mi-rg", "mi-app", "WEBSITE_DISABLE_MSI", "true"):
        _, results, _ = run_probe(platform, webapp(), [{"kind": "env", "names": names}])
    assert ok_values(results)[0]["IDENTITY_ENDPOINT"] is None


def test_app_service_refusals(platform: RunningPlatform, apps: dict[str, Any]) -> None:
    good = f"?api-version=2019-08-01&resource={ARM}"
    hdr = {"X-IDENTITY-HEADER": "IDENTITY_HEADER"}
    actions = [
        {"kind": "raw", "path": good},  # no header
        {"kind": "raw", "path": good, "headers": {"X-IDENTITY-HEADER": "guess"}},
        {"kind": "raw", "path": good + "&client_id=00000000-0000-0000-0000-000000000000", "headers_from_env": hdr},
        {"kind": "raw", "path": good + f"&client_id={apps['uai']['clientId']}&object_id=x", "headers_from_env": hdr},
        {"kind": "raw", "path": f"?api-version=2030-01-01&resource={ARM}", "headers_from_env": hdr},
        {"kind": "raw", "path": "?api-version=2019-08-01&resource=bad%20resource", "headers_from_env": hdr},
        {"kind": "raw", "path": "?api-version=2019-08-01", "headers_from_env": hdr},
        {"kind": "raw", "path": good, "headers_from_env": hdr, "method": "POST"},
        {"kind": "raw", "path": good, "headers_from_env": hdr, "headers": {"X-Forwarded-For": "10.0.0.1"}},
        {"kind": "raw", "path": good, "headers_from_env": hdr, "headers": {"Origin": "https://evil.example"}},
        {"kind": "raw", "path": good, "headers_from_env": hdr},  # the positive control
        {"kind": "env", "names": ["IDENTITY_HEADER", "IDENTITY_ENDPOINT"]},
    ]
    _, results, _ = run_probe(platform, webapp(), actions)
    values = ok_values(results)
    statuses = [v["status"] for v in values[:-1]]
    assert statuses == [401, 401, 400, 400, 400, 400, 400, 405, 400, 400, 200]
    for v in values[:-2]:
        assert set(v["body"]) == {"statusCode", "message", "correlationId"} and v["body"]["statusCode"] == v["status"]
    assert values[2]["body"]["message"].startswith("Unable to load the proper Managed Identity")
    success = values[-2]["body"]
    assert {"access_token", "expires_on", "expires_in", "resource", "token_type", "client_id", "not_before"} <= set(
        success
    )
    assert success["resource"] == ARM and success["expires_on"].isdigit()

    # The header of a process that has exited identifies nothing.
    import httpx

    stolen = values[-1]
    response = httpx.get(
        f"{stolen['IDENTITY_ENDPOINT']}{good}", headers={"X-IDENTITY-HEADER": stolen["IDENTITY_HEADER"]}
    )
    assert response.status_code == 401


def test_imds_with_environment_override(platform: RunningPlatform, apps: dict[str, Any]) -> None:
    uai = apps["uai"]
    token_path = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net"
    base = {"kind": "raw", "base_env": "AZURE_POD_IDENTITY_AUTHORITY_HOST"}
    actions = [
        {"kind": "azid-sync", "scope": f"{ARM}/.default"},
        {"kind": "azid-async", "scope": f"{ARM}/.default", "kwargs": {"client_id": uai["clientId"]}},
        {"kind": "azid-sync", "scope": f"{ARM}/.default", "kwargs": {"identity_config": {"resource_id": uai["id"]}}},
        {"kind": "msal", "resource": ARM},
        {"kind": "dac-sync", "scope": f"{ARM}/.default"},
        {**base, "path": token_path},  # no Metadata header: the SDK probe
        {**base, "path": token_path, "headers": {"Metadata": "true", "X-Forwarded-For": "1.2.3.4"}},
        {
            **base,
            "path": token_path + "&client_id=00000000-0000-0000-0000-000000000000",
            "headers": {"Metadata": "true"},
        },
        {**base, "path": "/metadata/identity/oauth2/token?resource=x", "headers": {"Metadata": "true"}},
        {**base, "path": token_path, "headers": {"Metadata": "true"}},
        # msal-node's spelling, with a trailing slash: the same resource, as on the real IMDS
        {**base, "path": token_path.replace("token?", "token/?"), "headers": {"Metadata": "true"}},
    ]
    code, results, stderr = run_probe(platform, vm(), actions)
    assert code == 0, stderr
    values = ok_values(results)
    vm_oid = apps["vm"]["identity"]["principalId"]
    assert claims_of(platform, values[0], ARM)["oid"] == vm_oid
    assert claims_of(platform, values[1], ARM)["oid"] == uai["principalId"]
    assert claims_of(platform, values[2], ARM)["oid"] == uai["principalId"]
    assert claims_of(platform, values[3], ARM)["xms_mirid"] == apps["vm"]["id"]
    assert claims_of(platform, values[4], ARM)["oid"] == vm_oid
    probe, forwarded, unknown, no_version, success, slashed = values[5:]
    assert slashed["status"] == 200 and slashed["body"]["resource"] == "https://vault.azure.net"
    assert (probe["status"], probe["body"]) == (
        400,
        {"error": "invalid_request", "error_description": "Required metadata header not specified"},
    )
    assert forwarded["status"] == 400
    assert (unknown["status"], unknown["body"]["error_description"]) == (400, "Identity not found")
    assert no_version["status"] == 400 and no_version["body"]["error"] == "invalid_request"
    body = success["body"]
    assert success["status"] == 200 and body["resource"] == "https://vault.azure.net"
    assert all(isinstance(body[k], str) for k in ("expires_in", "expires_on", "not_before"))


needs_root_netns = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="network namespaces need root and iproute2"
)


@needs_root_netns
def test_imds_in_a_network_namespace_without_any_environment(platform: RunningPlatform, apps: dict[str, Any]) -> None:
    """Inside the namespace the metadata service answers at the real 169.254.169.254: no env needed,
    and DefaultAzureCredential's header-less probe is answered at once."""
    before = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
    actions = [
        {"kind": "env", "names": ["AZURE_POD_IDENTITY_AUTHORITY_HOST", "IDENTITY_ENDPOINT"]},
        {"kind": "azid-sync", "scope": f"{ARM}/.default"},
        {"kind": "dac-sync", "scope": f"{ARM}/.default"},
        {"kind": "azid-async", "scope": f"{ARM}/.default", "kwargs": {"client_id": apps["uai"]["clientId"]}},
        {
            "kind": "raw",
            "base": "http://169.254.169.254",
            "path": "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=x",
        },
    ]
    code, results, stderr = run_probe(platform, vm("--netns"), actions)
    assert code == 0, stderr
    env, sync_token, dac_token, async_token, probe = ok_values(results)
    assert env == {"AZURE_POD_IDENTITY_AUTHORITY_HOST": None, "IDENTITY_ENDPOINT": None}
    vm_oid = apps["vm"]["identity"]["principalId"]
    assert claims_of(platform, sync_token, ARM)["oid"] == vm_oid
    assert claims_of(platform, dac_token, ARM)["oid"] == vm_oid
    assert claims_of(platform, async_token, ARM)["oid"] == apps["uai"]["principalId"]
    assert probe["status"] == 400 and probe["ms"] < 1000
    after = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
    assert after <= before  # the namespace is gone with the workload


def test_removing_an_identity_stops_it_on_the_next_request(
    platform: RunningPlatform, workload_folder: Path
) -> None:
    home = platform.home
    cli_json(home, "webapp", "create", "-g", "mi-rg", "-n", "mi-revoke", "--assign-identity", "[system]")
    first, second = app_service_tokens_around(
        home,
        webapp("mi-revoke"),
        workload_folder,
        lambda: run_cli(home, "webapp", "identity", "remove", "-g", "mi-rg", "-n", "mi-revoke"),
    )
    assert first["status"] == 200
    assert second["status"] == 400 and "Unable to load" in second["body"]["message"]


def test_run_errors(platform: RunningPlatform) -> None:
    missing = run_cli(platform.home, "webapp", "run", "-g", "mi-rg", "-n", "no-such-app", "--", "true", check=False)
    assert missing.returncode == 1 and "ResourceNotFound" in missing.stderr
    bad_command = run_cli(
        platform.home, "webapp", "run", "-g", "mi-rg", "-n", "mi-app", "--", "/nonexistent/binary", check=False
    )
    assert bad_command.returncode == 1 and "cannot start" in bad_command.stderr


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="Arc key files live in /var/opt/azcmagent/tokens (root)")


@needs_root
def test_arc_challenge_protocol(platform: RunningPlatform, apps: dict[str, Any]) -> None:
    """IDENTITY_ENDPOINT + IMDS_ENDPOINT: the 401 Basic-realm key-file challenge, then the token."""
    uai = apps["uai"]
    base = {"kind": "raw", "base_env": "IDENTITY_ENDPOINT", "headers": {"Metadata": "true"}}
    actions = [
        {"kind": "env", "names": ["IDENTITY_ENDPOINT", "IMDS_ENDPOINT", "IDENTITY_HEADER"]},
        {"kind": "azid-sync", "scope": f"{ARM}/.default"},
        {"kind": "azid-async", "scope": f"{ARM}/.default", "kwargs": {"client_id": uai["clientId"]}},
        {"kind": "msal", "resource": ARM},
        {**base, "path": f"?api-version=2020-06-01&resource={ARM}"},
        {
            **base,
            "path": f"?api-version=2020-06-01&resource={ARM}",
            "headers": {"Metadata": "true", "Authorization": "Basic guessed"},
        },
    ]
    code, results, stderr = run_probe(platform, vm("--arc"), actions)
    assert code == 0, stderr
    env, sync_token, async_token, msal_token, first, guessed = ok_values(results)
    assert env["IDENTITY_ENDPOINT"].endswith("/metadata/identity/oauth2/token") and env["IMDS_ENDPOINT"]
    assert env["IDENTITY_HEADER"] is None
    vm_oid = apps["vm"]["identity"]["principalId"]
    assert claims_of(platform, sync_token, ARM)["oid"] == vm_oid
    assert claims_of(platform, async_token, ARM)["oid"] == uai["principalId"]
    assert claims_of(platform, msal_token, ARM)["oid"] == vm_oid
    assert first["status"] == 401 and guessed["status"] == 401
    assert not list(Path("/var/opt/azcmagent/tokens").glob("*.key"))  # keys are one-use and cleaned up
