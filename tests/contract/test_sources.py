"""Every App Service-style source the official clients detect, served by the agent: `webapp run
--platform ml|cloudshell|containerapps` gives the workload that platform's environment, and the real
azure-identity (sync and async) and msal ManagedIdentityClient, unmodified, get tokens with it that
verify against the directory's JWKS with the identity's oid."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import RunningPlatform, cli_json, probe_command, probe_results, verify_with_discovery

ARM = "https://management.azure.com"
SCOPE = f"{ARM}/.default"
VARIABLES = [
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "IDENTITY_SERVER_THUMBPRINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "DEFAULT_IDENTITY_CLIENT_ID",
    "WEBSITE_SITE_NAME",
    "CONTAINER_APP_NAME",
    "AZUREPS_HOST_ENVIRONMENT",
]


@pytest.fixture(scope="module")
def apps(platform: RunningPlatform) -> dict[str, Any]:
    home = platform.home
    cli_json(home, "group", "create", "-n", "src-rg", "-l", "westus")
    uai = cli_json(home, "identity", "create", "-g", "src-rg", "-n", "src-uai")
    site = cli_json(
        home, "webapp", "create", "-g", "src-rg", "-n", "src-app", "--assign-identity", "[system]", "src-uai"
    )
    return {"uai": uai, "site": site, "system_oid": site["identity"]["principalId"]}


def run_as(platform: RunningPlatform, source: str, actions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    target = ["webapp", "run", "-g", "src-rg", "-n", "src-app", "--platform", source]
    result = subprocess.run(
        probe_command(platform.home, target, actions), capture_output=True, text=True, timeout=180, env=dict(os.environ)
    )
    assert result.returncode == 0, result.stderr
    return probe_results(result.stdout, result.stderr)


def ok(results: list[dict[str, Any]]) -> list[Any]:
    for r in results:
        assert r["ok"], r["error"]
    return [r["value"] for r in results]


def oid_of(platform: RunningPlatform, token: str) -> str:
    return str(verify_with_discovery(platform, token, ARM)["oid"])


def clients(uai: dict[str, Any], sdk_names_user: bool = True) -> list[dict[str, Any]]:
    """System-assigned, then user-assigned by client id, in each real client."""
    actions: list[dict[str, Any]] = [
        {"kind": "azid-sync", "scope": SCOPE},
        {"kind": "azid-async", "scope": SCOPE},
        {"kind": "msal", "resource": ARM},
    ]
    if sdk_names_user:
        actions += [
            {"kind": "azid-sync", "scope": SCOPE, "kwargs": {"client_id": uai["clientId"]}},
            {"kind": "azid-async", "scope": SCOPE, "kwargs": {"client_id": uai["clientId"]}},
            {"kind": "msal", "resource": ARM, "client_id": uai["clientId"]},
        ]
    return actions


def test_azure_ml(platform: RunningPlatform, apps: dict[str, Any]) -> None:
    uai = apps["uai"]
    ml = {"base_env": "MSI_ENDPOINT", "headers_from_env": {"secret": "MSI_SECRET"}}
    results = run_as(
        platform,
        "ml",
        [
            {"kind": "env", "names": VARIABLES},
            *clients(uai),
            # .NET, node and Go name the system-assigned identity by DEFAULT_IDENTITY_CLIENT_ID.
            {
                "kind": "raw",
                **ml,
                "path": f"?api-version=2017-09-01&resource={ARM}",
                "query_from_env": {"clientid": "DEFAULT_IDENTITY_CLIENT_ID"},
            },
            {"kind": "raw", **ml, "path": f"?api-version=2017-09-01&resource={ARM}&object_id={uai['principalId']}"},
            {"kind": "raw", **ml, "path": f"?api-version=2019-08-01&resource={ARM}"},
            {
                "kind": "raw",
                "base_env": "MSI_ENDPOINT",
                "path": f"?api-version=2017-09-01&resource={ARM}",
                "headers_from_env": {"X-IDENTITY-HEADER": "MSI_SECRET"},
            },
        ],
    )
    env, *tokens = ok(results[:7])
    assert env["MSI_ENDPOINT"] and env["MSI_SECRET"] and env["DEFAULT_IDENTITY_CLIENT_ID"]
    # Only the pair ML gives: with IDENTITY_* present, every client would speak App Service instead.
    assert env["IDENTITY_ENDPOINT"] is None and env["IDENTITY_HEADER"] is None and env["WEBSITE_SITE_NAME"] is None
    assert [oid_of(platform, t) for t in tokens] == [apps["system_oid"]] * 3 + [uai["principalId"]] * 3
    default, by_object_id, wrong_version, wrong_header = ok(results[7:])
    assert default["status"] == 200, default
    assert oid_of(platform, default["body"]["access_token"]) == apps["system_oid"]
    # Epoch seconds, not the 2017 date string: MSAL does int(expires_on).
    assert int(default["body"]["expires_on"]) > time.time()
    assert default["body"]["token_type"] == "Bearer" and default["body"]["resource"] == ARM
    assert by_object_id["status"] == 400 and "client id" in by_object_id["body"]["message"]
    assert wrong_version["status"] == 400 and "2017-09-01" in wrong_version["body"]["message"]
    assert wrong_header["status"] == 401


def test_cloud_shell(platform: RunningPlatform, apps: dict[str, Any]) -> None:
    shell = {"base_env": "MSI_ENDPOINT", "method": "POST"}
    results = run_as(
        platform,
        "cloudshell",
        [
            {"kind": "env", "names": VARIABLES},
            {"kind": "azid-sync", "scope": SCOPE},
            {"kind": "azid-async", "scope": SCOPE},
            # Every SDK refuses a user-assigned identity on Cloud Shell before it asks.
            {"kind": "azid-sync", "scope": SCOPE, "kwargs": {"client_id": apps["uai"]["clientId"]}},
            {"kind": "raw", **shell, "headers": {"Metadata": "true"}, "data": {"resource": ARM}},
            {"kind": "raw", "base_env": "MSI_ENDPOINT", "method": "PUT", "headers": {"Metadata": "true"}},
            {"kind": "raw", **shell, "data": {"resource": ARM}},
            {"kind": "raw", **shell, "headers": {"Metadata": "true"}, "data": {}},
            {
                "kind": "raw",
                **shell,
                "headers": {"Metadata": "true"},
                "data": {"resource": ARM, "client_id": apps["uai"]["clientId"]},
            },
            {"kind": "raw", **shell, "headers": {"Metadata": "true"}, "data": {"resource": "x" * 10000}},
            # msal4j's spelling: GET with the resource in the query, which the real endpoint answers too.
            {"kind": "raw", "base_env": "MSI_ENDPOINT", "path": f"?resource={ARM}", "headers": {"Metadata": "true"}},
            {"kind": "raw", "base_env": "MSI_ENDPOINT", "headers": {"Metadata": "true"}},
            {"kind": "raw", "base_env": "MSI_ENDPOINT", "path": f"?resource={ARM}"},
        ],
    )
    env, sync_token, async_token = ok(results[:3])
    assert env["MSI_ENDPOINT"] and env["AZUREPS_HOST_ENVIRONMENT"].startswith("cloud-shell")
    assert env["MSI_SECRET"] is None and env["IDENTITY_ENDPOINT"] is None and env["IDENTITY_HEADER"] is None
    assert [oid_of(platform, t) for t in (sync_token, async_token)] == [apps["system_oid"]] * 2
    assert not results[3]["ok"] and "cloud shell" in results[3]["error"].lower()
    raw_ok, put, no_metadata, no_resource, user_assigned, oversized, get_ok, get_bare, get_no_metadata = ok(results[4:])
    assert raw_ok["status"] == 200, raw_ok
    # The legacy azure-identity client caches under "resource" and needs it back.
    assert raw_ok["body"]["resource"] == ARM and int(raw_ok["body"]["expires_in"]) > 0
    assert oid_of(platform, raw_ok["body"]["access_token"]) == apps["system_oid"]
    assert get_ok["status"] == 200 and get_ok["body"]["resource"] == ARM, get_ok
    assert oid_of(platform, get_ok["body"]["access_token"]) == apps["system_oid"]
    refusals = (
        (put, 405),
        (no_metadata, 400),
        (no_resource, 400),
        (user_assigned, 400),
        (oversized, 413),
        (get_bare, 400),
        (get_no_metadata, 400),
    )
    for answer, status in refusals:
        assert answer["status"] == status, answer
        assert set(answer["body"]["error"]) == {"code", "message"}  # Cloud Shell's nested error shape
    assert "user-assigned" in user_assigned["body"]["error"]["message"]


def test_cloud_shell_endpoint_refuses_a_process_outside_the_run(
    platform: RunningPlatform, apps: dict[str, Any], workload_folder: Path
) -> None:
    """No secret on Cloud Shell: its per-run listener is guarded by caller attestation alone."""
    leak, stop = workload_folder / "leak", workload_folder / "stop"
    actions = [
        {"kind": "write-env", "names": ["MSI_ENDPOINT"], "path": str(leak)},
        {"kind": "wait-file", "path": str(stop)},
    ]
    target = ["webapp", "run", "-g", "src-rg", "-n", "src-app", "--platform", "cloudshell"]
    process = subprocess.Popen(
        probe_command(platform.home, target, actions), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while not leak.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert leak.exists(), process.communicate(timeout=30)
        time.sleep(0.05)
        endpoint = json.loads(leak.read_text())["MSI_ENDPOINT"]
        response = httpx.post(endpoint, data={"resource": ARM}, headers={"Metadata": "true"}, timeout=10)
        assert response.status_code == 401, response.text
        assert "not part of this workload" in response.json()["error"]["message"]
        assert "access_token" not in response.text
    finally:
        stop.write_text("stop")
        process.communicate(timeout=60)
    # The listener dies with the run.
    with pytest.raises(httpx.TransportError):
        httpx.post(endpoint, data={"resource": ARM}, headers={"Metadata": "true"}, timeout=5)


def test_container_apps(platform: RunningPlatform, apps: dict[str, Any]) -> None:
    uai = apps["uai"]
    app = {"headers_from_env": {"X-IDENTITY-HEADER": "IDENTITY_HEADER"}}
    results = run_as(
        platform,
        "containerapps",
        [
            {"kind": "env", "names": VARIABLES},
            *clients(uai),
            {"kind": "raw", **app, "path": f"?api-version=2019-08-01&resource={ARM}&mi_res_id={uai['id']}"},
            {"kind": "raw", **app, "path": f"?api-version=2017-09-01&resource={ARM}"},
            {
                "kind": "raw",
                "path": f"?api-version=2019-08-01&resource={ARM}",
                "headers_from_env": {"secret": "IDENTITY_HEADER"},
            },
        ],
    )
    env, *tokens = ok(results[:7])
    assert env["IDENTITY_ENDPOINT"] and env["IDENTITY_HEADER"] and env["CONTAINER_APP_NAME"] == "src-app"
    assert env["MSI_ENDPOINT"] is None and env["MSI_SECRET"] is None and env["WEBSITE_SITE_NAME"] is None
    assert [oid_of(platform, t) for t in tokens] == [apps["system_oid"]] * 3 + [uai["principalId"]] * 3
    by_resource_id, legacy, secret_header = ok(results[7:])
    assert by_resource_id["status"] == 200
    assert oid_of(platform, by_resource_id["body"]["access_token"]) == uai["principalId"]
    assert legacy["status"] == 400 and "2019-08-01" in legacy["body"]["message"]
    assert secret_header["status"] == 401


def test_app_service_keeps_both_pairs(platform: RunningPlatform, apps: dict[str, Any]) -> None:
    """The default platform is unchanged: App Service sets IDENTITY_* and the 2017 MSI_* pair."""
    (env,) = ok(run_as(platform, "appservice", [{"kind": "env", "names": VARIABLES}]))
    assert env["IDENTITY_ENDPOINT"] == env["MSI_ENDPOINT"] and env["IDENTITY_HEADER"] == env["MSI_SECRET"]
    assert env["WEBSITE_SITE_NAME"] == "src-app" and env["DEFAULT_IDENTITY_CLIENT_ID"] is None


def test_service_fabric(platform: RunningPlatform, apps: dict[str, Any]) -> None:
    fabric = {"tls_unverified": True}
    secret = {"headers_from_env": {"secret": "IDENTITY_HEADER"}}
    results = run_as(
        platform,
        "servicefabric",
        [
            {"kind": "env", "names": VARIABLES},
            {"kind": "peer-thumbprint"},
            # MSAL Python (and azure-identity sync on it) pins the thumbprint strictly, with no CA fallback.
            {"kind": "azid-sync", "scope": SCOPE},
            {"kind": "azid-async", "scope": SCOPE},
            {"kind": "msal", "resource": ARM},
            # MSAL.NET's 2020-05-01 and its user-assigned selector, principalId (an object id).
            {
                "kind": "raw",
                **fabric,
                **secret,
                "path": f"?api-version=2020-05-01&resource={ARM}&principalId={apps['uai']['principalId']}",
            },
            {"kind": "raw", **fabric, "path": f"?api-version=2019-07-01-preview&resource={ARM}"},
            {
                "kind": "raw",
                **fabric,
                "path": f"?api-version=2019-07-01-preview&resource={ARM}",
                "headers": {"secret": "not-the-secret"},
            },
            {"kind": "raw", **fabric, **secret, "path": "?api-version=2019-07-01-preview"},
            {"kind": "raw", **fabric, **secret, "path": f"?api-version=2019-08-01&resource={ARM}"},
            {
                "kind": "raw",
                **fabric,
                **secret,
                "path": f"?api-version=2019-07-01-preview&resource={ARM}&client_id={apps['uai']['clientId']}",
            },
            {
                "kind": "raw",
                **fabric,
                **secret,
                "path": f"?api-version=2020-05-01&resource={ARM}&principalId=00000000-0000-0000-0000-000000000000",
            },
            # azure-identity refuses a user-assigned identity on Service Fabric itself.
            {"kind": "azid-sync", "scope": SCOPE, "kwargs": {"client_id": apps["uai"]["clientId"]}},
        ],
    )
    env, served, *tokens = ok(results[:5])
    assert env["IDENTITY_ENDPOINT"].startswith("https://") and env["IDENTITY_HEADER"]
    assert env["IDENTITY_SERVER_THUMBPRINT"] == served
    assert env["MSI_ENDPOINT"] is None and env["WEBSITE_SITE_NAME"] is None
    assert [oid_of(platform, t) for t in tokens] == [apps["system_oid"]] * 3
    user, no_secret, wrong_secret, no_resource, bad_version, client_id, unknown = ok(results[5:12])
    assert user["status"] == 200, user
    assert oid_of(platform, user["body"]["access_token"]) == apps["uai"]["principalId"]
    assert user["body"]["token_type"] == "Bearer" and int(user["body"]["expires_on"]) > time.time()
    expected = [
        (no_secret, 401, "SecretHeaderNotFound"),
        (wrong_secret, 401, "SecretHeaderNotFound"),
        (no_resource, 400, "ArgumentNullOrEmpty"),
        (bad_version, 400, "InvalidApiVersion"),
        (client_id, 400, "UserAssignedNotSupported"),
        (unknown, 404, "ManagedIdentityNotFound"),
    ]
    for answer, status, code in expected:
        assert (answer["status"], answer["body"]["error"]["code"]) == (status, code), answer
    assert not results[12]["ok"]


def test_service_fabric_clients_refuse_another_certificate(platform: RunningPlatform, apps: dict[str, Any]) -> None:
    """The pin is what the clients trust: the same endpoint under another thumbprint gets no token (and the
    secret is never sent to it)."""
    results = run_as(
        platform,
        "servicefabric",
        [
            {"kind": "set-env", "values": {"IDENTITY_SERVER_THUMBPRINT": "00" * 20}},
            {"kind": "msal", "resource": ARM},
            {"kind": "azid-sync", "scope": SCOPE},
        ],
    )
    assert results[0]["ok"]
    for refused in results[1:]:
        assert not refused["ok"] and "thumbprint does not match" in refused["error"], refused


def test_service_fabric_key_stays_in_the_agent_home(platform: RunningPlatform) -> None:
    keys = list(platform.home.rglob("servicefabric.key"))
    assert keys, "the agent made no Service Fabric key"
    for key in keys:
        assert key.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("source", ["appservice", "containerapps", "ml", "servicefabric", "cloudshell"])
def test_no_endpoint_when_the_identity_is_off(source: str) -> None:
    """No identity (or WEBSITE_DISABLE_MSI): the runner passes no header and no URL, and no platform
    names an endpoint, so every client finds no managed identity instead of a dead one."""
    from lanyard.agent.sources import environment

    env = environment(source, {"siteName": "a", "resourceGroup": "g"}, None, None, (), None)
    assert not {"IDENTITY_ENDPOINT", "IDENTITY_HEADER", "MSI_ENDPOINT", "MSI_SECRET"} & env.keys()


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ({"api-version": "2019-07-01-preview"}, "ArgumentNullOrEmpty"),
        ({"api-version": "2019-07-01-preview", "resource": "a b"}, "InvalidResource"),
        ({"api-version": "", "resource": ARM}, "InvalidApiVersion"),
        ({"api-version": "2020-05-01", "resource": ARM, "mi_res_id": "/x"}, "UserAssignedNotSupported"),
    ],
)
def test_service_fabric_refusals_name_their_code(query: dict[str, str], code: str) -> None:
    from lanyard.agent.servicefabric import parse_fabric
    from lanyard.protocol.msi import MsiError

    with pytest.raises(MsiError) as refused:
        parse_fabric(query)
    assert (refused.value.status, refused.value.error) == (400, code)
