"""IMDS and Arc as the real ones answer, in the details clients read: `getplatformmetadata` is a fast
404 on a v1 host (with or without Metadata: MSAL.NET's discovery reads 400 as "IMDSv2 here"), the
caller's x-ms-client-request-id comes back on every answer, every token field is a string, and on Arc
each user-assigned selector the real msal and azure-identity send is honoured and echoed (they refuse
a token whose echo is missing or different)."""

from __future__ import annotations

import os
import subprocess
from typing import Any

import pytest

from tests.conftest import RunningPlatform, cli_json, probe_command, probe_results, verify_with_discovery

ARM = "https://management.azure.com"
TOKEN = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net"
REQUEST_ID = "5f0d8e4e-2c1b-4c3a-9a51-6f5a3c2e7b10"


@pytest.fixture(scope="module")
def machine(platform: RunningPlatform) -> dict[str, Any]:
    home = platform.home
    cli_json(home, "group", "create", "-n", "imds-rg", "-l", "westus")
    uai = cli_json(home, "identity", "create", "-g", "imds-rg", "-n", "imds-uai")
    other = cli_json(home, "identity", "create", "-g", "imds-rg", "-n", "imds-other")  # assigned to nothing
    vm = cli_json(home, "vm", "create", "-g", "imds-rg", "-n", "imds-vm", "--assign-identity", "[system]", "imds-uai")
    return {"uai": uai, "other": other, "vm": vm}


def run(platform: RunningPlatform, extra: list[str], actions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    target = ["vm", "run", "-g", "imds-rg", "-n", "imds-vm", *extra]
    result = subprocess.run(probe_command(platform.home, target, actions), capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    return probe_results(result.stdout, result.stderr)


def test_imds_v1_host_details(platform: RunningPlatform, machine: dict[str, Any]) -> None:
    base = {"kind": "raw", "base_env": "AZURE_POD_IDENTITY_AUTHORITY_HOST", "want_headers": ["x-ms-client-request-id"]}
    metadata = {"Metadata": "true", "x-ms-client-request-id": REQUEST_ID}
    v2 = "/metadata/identity/getplatformmetadata?cred-api-version=2.0"
    actions = [
        {**base, "path": v2, "headers": {"x-ms-correlation-id": REQUEST_ID}},  # MSAL.NET's probe: no Metadata
        {**base, "path": f"{v2}&client_id={machine['uai']['clientId']}", "headers": metadata},
        {**base, "path": "/metadata/identity/issuecredential?cred-api-version=2.0", "headers": metadata},
        {**base, "path": TOKEN},  # the v1 probe: 400
        {**base, "path": TOKEN, "headers": metadata},
        {**base, "path": TOKEN + "&client_id=00000000-0000-0000-0000-000000000000", "headers": metadata},
        {**base, "path": TOKEN, "headers": {"Metadata": "true", "x-ms-client-request-id": "not an id!"}},
        {"kind": "msal", "resource": ARM, "identity": {"resource_id": machine["uai"]["id"]}},
    ]
    probe_v2, with_header, issue, probe_v1, success, unknown, odd, msal_token = run(platform, [], actions)
    for answer in (probe_v2, with_header, issue):
        assert answer["ok"] and answer["value"]["status"] == 404, answer
        assert answer["value"]["body"]["error"] == "not_found"
    assert probe_v2["value"]["headers"]["x-ms-client-request-id"] is None  # none was sent
    assert with_header["value"]["headers"]["x-ms-client-request-id"] == REQUEST_ID
    assert probe_v1["value"]["status"] == 400
    token = success["value"]
    assert token["status"] == 200 and token["headers"]["x-ms-client-request-id"] == REQUEST_ID
    assert all(isinstance(v, str) for v in token["body"].values()), token["body"]
    assert set(token["body"]) >= {"access_token", "expires_in", "expires_on", "not_before", "resource", "token_type"}
    assert unknown["value"]["status"] == 400 and unknown["value"]["headers"]["x-ms-client-request-id"] == REQUEST_ID
    assert odd["value"]["status"] == 200 and odd["value"]["headers"]["x-ms-client-request-id"] is None
    assert msal_token["ok"], msal_token
    claims = verify_with_discovery(platform, msal_token["value"], ARM)
    assert claims["oid"] == machine["uai"]["principalId"]


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="Arc key files live in /var/opt/azcmagent/tokens (root)")


@needs_root
def test_arc_user_assigned_selectors_are_honoured_and_echoed(
    platform: RunningPlatform, machine: dict[str, Any]
) -> None:
    """msal 1.39 and azure-identity 1.27 send client_id, msi_res_id or object_id to Arc and fail closed
    unless the answer echoes the same identity; each gets the UAI's token here."""
    uai, other = machine["uai"], machine["other"]
    scope = f"{ARM}/.default"
    selectors: list[dict[str, str]] = [
        {"client_id": uai["clientId"]},
        {"resource_id": uai["id"]},
        {"object_id": uai["principalId"]},
    ]
    actions: list[dict[str, Any]] = []
    for selector in selectors:
        actions.append({"kind": "msal", "resource": ARM, "identity": selector})
        actions.append({"kind": "azid-sync", "scope": scope, "kwargs": {"identity_config": selector}})
        actions.append({"kind": "azid-async", "scope": scope, "kwargs": {"identity_config": selector}})
    actions += [
        {"kind": "msal", "resource": ARM, "identity": {"client_id": other["clientId"]}},  # not this machine's
        {"kind": "azid-sync", "scope": scope, "kwargs": {"client_id": other["clientId"]}},
        {"kind": "msal", "resource": ARM},  # system-assigned: no echo to check
        {
            "kind": "raw",
            "path": f"?api-version=2020-06-01&resource={ARM}",
            "headers": {"Metadata": "true", "x-ms-client-request-id": REQUEST_ID},
            "want_headers": ["x-ms-client-request-id", "www-authenticate"],
        },
    ]
    results = run(platform, ["--arc"], actions)
    for result in results[:9]:
        assert result["ok"], result
        assert verify_with_discovery(platform, result["value"], ARM)["oid"] == uai["principalId"]
    refused_msal, refused_azid, system, challenge = results[9:]
    assert not refused_msal["ok"] and not refused_azid["ok"]
    assert "Identity not found" in refused_msal["error"] and "Identity not found" in refused_azid["error"]
    assert verify_with_discovery(platform, system["value"], ARM)["oid"] == machine["vm"]["identity"]["principalId"]
    first = challenge["value"]
    assert first["status"] == 401 and first["headers"]["www-authenticate"].startswith("Basic realm=")
    assert first["headers"]["x-ms-client-request-id"] == REQUEST_ID
