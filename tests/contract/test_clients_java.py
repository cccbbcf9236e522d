"""The real azure-identity for Java (azure-sdk-bom 1.3.8, on msal4j), unmodified: ManagedIdentityCredential
as a workload on App Service and on a VM (IMDS through AZURE_POD_IDENTITY_AUTHORITY_HOST, and at
169.254.169.254 in a network namespace), system-assigned and user-assigned by client id, resource id and
object id, several cases in one JVM; and ClientSecretCredential against the platform's authority, trusting the
platform's CA through a truststore the test builds with the JDK's keytool. Each token verifies against the
directory's JWKS with the identity's oid."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RunningPlatform, app_and_vm_with_identities, cli_json, client_in_workload, token_oids
from tests.support.clients import ClientProgram, outcomes

ARM = "https://management.azure.com"
SCOPE = f"{ARM}/.default"


@pytest.fixture(scope="module")
def apps(platform: RunningPlatform) -> dict[str, Any]:
    return app_and_vm_with_identities(platform.home, "java")


def every_selector(uai: dict[str, Any]) -> list[dict[str, Any]]:
    """System-assigned, the user-assigned identity by client id, resource id and object id, and an identity
    the resource does not have."""
    system = {"credential": "managed-identity", "scope": SCOPE}
    return [
        system,
        {**system, "client_id": uai["clientId"]},
        {**system, "resource_id": uai["id"]},
        {**system, "object_id": uai["principalId"]},
        {**system, "client_id": "00000000-0000-0000-0000-000000000000"},
    ]


def assert_every_selector(platform: RunningPlatform, results: list[dict[str, Any]], system_oid: str, uai: Any) -> None:
    assert token_oids(platform, results[:4], ARM) == [system_oid] + [uai["principalId"]] * 3
    assert "token" not in results[4] and results[4]["message"], results[4]


def test_managed_identity_on_app_service(
    platform: RunningPlatform, apps: dict[str, Any], java_client: ClientProgram
) -> None:
    target = ["webapp", "run", "-g", "java-rg", "-n", "java-app"]
    results = client_in_workload(platform.home, target, java_client, every_selector(apps["uai"]))
    assert_every_selector(platform, results, apps["site_oid"], apps["uai"])


def test_managed_identity_on_container_apps(
    platform: RunningPlatform, apps: dict[str, Any], java_client: ClientProgram
) -> None:
    target = ["webapp", "run", "-g", "java-rg", "-n", "java-app", "--platform", "containerapps"]
    results = client_in_workload(platform.home, target, java_client, every_selector(apps["uai"]))
    assert_every_selector(platform, results, apps["site_oid"], apps["uai"])


def test_managed_identity_on_cloud_shell(
    platform: RunningPlatform, apps: dict[str, Any], java_client: ClientProgram
) -> None:
    """msal4j asks Cloud Shell with GET and `resource` in the query; a user-assigned id it refuses itself."""
    system, by_client_id = every_selector(apps["uai"])[:2]
    target = ["webapp", "run", "-g", "java-rg", "-n", "java-app", "--platform", "cloudshell"]
    token, refused = client_in_workload(platform.home, target, java_client, [system, by_client_id])
    assert token_oids(platform, [token], ARM) == [apps["site_oid"]]
    assert "token" not in refused and "not supported in CLOUD_SHELL" in refused["message"], refused


def test_managed_identity_on_a_vm_through_the_pod_identity_host(
    platform: RunningPlatform, apps: dict[str, Any], java_client: ClientProgram
) -> None:
    """msal4j appends `//metadata/identity/oauth2/token` (two slashes) to AZURE_POD_IDENTITY_AUTHORITY_HOST
    and names a resource id `mi_res_id`."""
    target = ["vm", "run", "-g", "java-rg", "-n", "java-vm"]
    results = client_in_workload(platform.home, target, java_client, every_selector(apps["uai"]))
    assert_every_selector(platform, results, apps["vm_oid"], apps["uai"])


def test_managed_identity_on_a_vm_at_the_link_local_address(
    platform: RunningPlatform, apps: dict[str, Any], java_client: ClientProgram
) -> None:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")
    target = ["vm", "run", "-g", "java-rg", "-n", "java-vm", "--netns"]
    results = client_in_workload(platform.home, target, java_client, every_selector(apps["uai"]))
    assert_every_selector(platform, results, apps["vm_oid"], apps["uai"])


def truststore(platform: RunningPlatform, java: str, folder: Path) -> Path:
    """The platform's CA in a PKCS12 truststore, made by the JDK's own keytool (a trusted-certificate entry)."""
    store = folder / "lanyard-truststore.p12"
    keytool = Path(java).parent / "keytool"
    store_options = ["-keystore", str(store), "-storetype", "PKCS12", "-storepass", "lanyard-test"]
    subprocess.run(
        [str(keytool), "-importcert", "-noprompt", "-alias", "lanyard-ca", "-file", platform.ca_cert, *store_options],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return store


def test_client_secret_credential(
    platform: RunningPlatform, secret_app: dict[str, Any], java_client: ClientProgram, tmp_path: Path
) -> None:
    java, *rest = java_client.argv
    store = truststore(platform, java, tmp_path)
    trust = [f"-Djavax.net.ssl.trustStore={store}", "-Djavax.net.ssl.trustStoreType=PKCS12"]
    trust.append("-Djavax.net.ssl.trustStorePassword=lanyard-test")
    case = {
        "credential": "client-secret",
        "scope": SCOPE,
        "authority": platform.authority,
        "tenant_id": platform.tenant_id,
        "client_id": secret_app["appId"],
    }
    cases = [case, {**case, "scope": "https://vault.azure.net/.default"}]

    def run(secret: str, run_cases: list[dict[str, Any]], trusted: bool = True) -> list[dict[str, Any]]:
        program = ClientProgram("java", (java, *(trust if trusted else []), *rest))
        env = {**os.environ, "AZURE_CLIENT_SECRET": secret}
        result = subprocess.run(program.command(run_cases), capture_output=True, text=True, timeout=180, env=env)
        assert result.returncode == 0, result.stderr
        return outcomes(result.stdout, result.stderr, len(run_cases))

    arm, vault = run(secret_app["password"], cases)
    principal = cli_json(platform.home, "ad", "sp", "show", "--id", secret_app["appId"])["id"]
    assert token_oids(platform, [arm], ARM) == [principal]
    assert token_oids(platform, [vault], "https://vault.azure.net") == [principal]
    (refused,) = run("not-the-secret", [case])
    assert "token" not in refused and "AADSTS7000215" in refused["message"], refused
    assert "not-the-secret" not in refused["message"]
    # The truststore is what makes the platform trusted: without it the JVM's own roots refuse the authority.
    (untrusted,) = run(secret_app["password"], [case], trusted=False)
    assert "token" not in untrusted, untrusted
