"""A host holds the keys of the identities it runs. When an identity leaves that host (detached from
the app, the app unplaced or deleted), the copy the host holds must stop working at once."""

from __future__ import annotations

import json
import ssl
import time
import uuid
from typing import Any

import httpx

from lanyard.client.assertion import CertificateKey
from tests.conftest import RunningPlatform, cli_json, run_cli

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def host_bindings(platform: RunningPlatform) -> dict[str, Any]:
    """What the local agent sees, fetched with the agent's own host credential."""
    agent_home = platform.home / "agent"
    host = json.loads((agent_home / "host.json").read_text())
    key = CertificateKey.from_pem((agent_home / "host.pem").read_bytes(), (agent_home / "host-key.pem").read_bytes())
    with httpx.Client(verify=ssl.create_default_context(cafile=platform.ca_cert)) as http:
        token = http.post(
            platform.token_url_v2,
            data={
                "grant_type": "client_credentials",
                "client_id": host["clientId"],
                "client_assertion_type": JWT_BEARER,
                "client_assertion": key.assertion(host["clientId"], platform.token_url_v2),
                "scope": "api://lanyard-host-agent/.default",
            },
        ).json()["access_token"]
        return dict(
            http.get(
                f"{platform.authority}/lanyard/v1/agent/bindings", headers={"Authorization": f"Bearer {token}"}
            ).json()
        )


def mint_with(platform: RunningPlatform, identity: dict[str, Any]) -> int:
    key = CertificateKey.from_pem(identity["certificate"], identity["privateKey"])
    with platform.http() as http:
        response = http.post(
            platform.token_url_v2,
            data={
                "grant_type": "client_credentials",
                "client_id": identity["clientId"],
                "client_assertion_type": JWT_BEARER,
                "client_assertion": key.assertion(identity["clientId"], platform.token_url_v2),
                "scope": f"api://revocation-{uuid.uuid4()}/.default",
            },
        )
    return response.status_code


def identity_in(bindings: dict[str, Any], object_id: str) -> dict[str, Any] | None:
    for workload in bindings["workloads"]:
        for identity in workload["identities"]:
            if identity["objectId"] == object_id:
                return dict(identity)
    return None


def wait_for_identity(platform: RunningPlatform, object_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = identity_in(host_bindings(platform), object_id)
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError("the identity never reached the host's bindings")


def test_detached_identity_key_stops_working(platform: RunningPlatform) -> None:
    home = platform.home
    cli_json(home, "group", "create", "-n", "revoke-rg", "-l", "westus")
    uai = cli_json(home, "identity", "create", "-g", "revoke-rg", "-n", "revoke-uai")
    cli_json(home, "webapp", "create", "-g", "revoke-rg", "-n", "revoke-app", "--assign-identity", "revoke-uai")
    run_cli(home, "webapp", "run", "-g", "revoke-rg", "-n", "revoke-app", "--", "true")  # places it here
    held = wait_for_identity(platform, uai["principalId"])
    assert mint_with(platform, held) == 200  # the positive control
    cli_json(home, "webapp", "identity", "remove", "-g", "revoke-rg", "-n", "revoke-app", "--identities", "revoke-uai")
    assert mint_with(platform, held) == 401  # the copy the host kept is dead
    assert identity_in(host_bindings(platform), uai["principalId"]) is None


def test_deleting_the_app_revokes_the_hosts_copy(platform: RunningPlatform) -> None:
    home = platform.home
    cli_json(home, "group", "create", "-n", "revoke2-rg", "-l", "westus")
    uai = cli_json(home, "identity", "create", "-g", "revoke2-rg", "-n", "revoke2-uai")
    cli_json(home, "webapp", "create", "-g", "revoke2-rg", "-n", "revoke2-app", "--assign-identity", "revoke2-uai")
    run_cli(home, "webapp", "run", "-g", "revoke2-rg", "-n", "revoke2-app", "--", "true")
    held = wait_for_identity(platform, uai["principalId"])
    assert mint_with(platform, held) == 200
    run_cli(home, "webapp", "delete", "-g", "revoke2-rg", "-n", "revoke2-app")
    assert mint_with(platform, held) == 401
    assert cli_json(home, "identity", "show", "-g", "revoke2-rg", "-n", "revoke2-uai")["principalId"]
