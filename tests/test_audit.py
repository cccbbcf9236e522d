"""The audit trail on a real platform: one record per grant and per refusal, with real clients.

Every class of event is produced the way a user would produce it (azure-identity's
ClientSecretCredential, an App Service workload through the host agent, the vault over HTTPS, ARM
writes through the CLI, a signing-key rotation), then found with `lanyard audit list` and checked
by `lanyard audit verify`. No record may carry a token or a secret.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest

from tests.conftest import (
    ARM_RESOURCE,
    RunningPlatform,
    app_service_tokens_around,
    cli_json,
    credential_for,
    run_cli,
    secret_token,
)

pytestmark = pytest.mark.timeout(300)


def ref(token: str) -> str:
    claims = jwt.decode(token, options={"verify_signature": False})
    return hashlib.sha256(str(claims["uti"]).encode()).hexdigest()[:16]


def audit(home: Path, *args: str) -> list[dict[str, Any]]:
    return list(cli_json(home, "audit", "list", *args))


def eventually(read: Callable[[], list[dict[str, Any]]], match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Agent records reach the platform in shipments (every half second): wait a bounded while."""
    deadline = time.monotonic() + 20
    while True:
        found = [r for r in read() if match(r)]
        if found or time.monotonic() > deadline:
            assert found, "no matching audit record"
            return found[0]
        time.sleep(0.25)


def test_client_secret_token_is_recorded_by_reference(
    platform: RunningPlatform, secret_app: dict[str, Any], admin_credential: Any
) -> None:
    # admin_credential points azure-identity at the platform's CA (REQUESTS_CA_BUNDLE).
    token = credential_for(platform, secret_app).get_token(f"{ARM_RESOURCE}/.default").token
    records = audit(platform.home, "--principal", secret_app["appId"], "--action", "token.issue")
    mine = [r for r in records if r["detail"]["token_ref"] == ref(token)]
    assert len(mine) == 1
    record = mine[0]
    assert record["outcome"] == "granted" and record["resource"] == ARM_RESOURCE
    assert record["app_id"] == secret_app["appId"] and record["detail"]["credential"] == "secret"
    assert token not in json.dumps(records) and secret_app["password"] not in json.dumps(records)


def test_refused_client_secret_is_recorded(platform: RunningPlatform, secret_app: dict[str, Any]) -> None:
    with platform.http() as http:
        response = http.post(
            platform.token_url_v2,
            data={
                "grant_type": "client_credentials",
                "client_id": secret_app["appId"],
                "client_secret": "wrong-secret-value",
                "scope": f"{ARM_RESOURCE}/.default",
            },
        )
    assert response.status_code == 401
    refusal = eventually(
        lambda: audit(platform.home, "--action", "token.refuse"), lambda r: r["detail"]["code"] == 7000215
    )
    assert refusal["outcome"] == "denied" and "wrong-secret-value" not in json.dumps(refusal)


def test_app_service_token_from_the_agent(platform: RunningPlatform, workload_folder: Path) -> None:
    home = platform.home
    cli_json(home, "group", "create", "-n", "audit-rg", "-l", "westus")
    site = cli_json(home, "webapp", "create", "-g", "audit-rg", "-n", "audit-app", "--assign-identity", "[system]")
    first, second = app_service_tokens_around(
        home, ["webapp", "run", "-g", "audit-rg", "-n", "audit-app"], workload_folder, lambda: None
    )
    oid = site["identity"]["principalId"]
    for answer in (first, second):  # the second is a cache hit: recorded all the same
        token = answer["body"]["access_token"] if "body" in answer else answer["access_token"]
        record = eventually(
            lambda: audit(home, "--principal", oid, "--action", "agent.token"),
            lambda r, token=token: r["detail"]["token_ref"] == ref(token),
        )
        assert record["resource"] == site["id"] and record["detail"]["audience"] == ARM_RESOURCE
        assert record["host"] and record["chain"] == f"host:{record['host']}"
        assert token not in json.dumps(record)
    # The agent's own request to the directory is there too, by the identity's certificate.
    minted = audit(home, "--principal", oid, "--action", "token.issue")
    assert minted and all(r["detail"]["credential"] == "certificate" for r in minted)


def test_vault_read_allowed_and_denied(platform: RunningPlatform, secret_app: dict[str, Any]) -> None:
    home = platform.home
    cli_json(home, "group", "create", "-n", "audit-kv-rg", "-l", "westus")
    vault = cli_json(home, "keyvault", "create", "-n", "audit-kv", "-g", "audit-kv-rg")
    cli_json(home, "keyvault", "secret", "set", "--vault-name", "audit-kv", "-n", "s1", "--value", "hunter2-value")
    shown = cli_json(home, "keyvault", "secret", "show", "--vault-name", "audit-kv", "-n", "s1")
    assert shown["value"] == "hunter2-value"
    url = str(vault["properties"]["vaultUri"]).rstrip("/")
    token = secret_token(platform, secret_app["appId"], secret_app["password"], platform.endpoints["vault_audience"])
    with platform.http() as http:
        denied = http.get(f"{url}/secrets/s1?api-version=7.5", headers={"Authorization": f"Bearer {token}"})
    assert denied.status_code == 403
    records = audit(home, "--resource", "audit-kv/secrets/s1")
    outcomes = {(r["action"], r["outcome"], r["principal"]) for r in records}
    admin_oid = platform.endpoints["admin"].get("object_id")
    assert any(a == "vault.secrets.get" and o == "granted" for a, o, _ in outcomes)
    assert any(a == "vault.secrets.put" and o == "granted" for a, o, _ in outcomes)
    denial = eventually(
        lambda: audit(home, "--resource", "audit-kv/secrets/s1", "--action", "vault.secrets.get"),
        lambda r: r["outcome"] == "denied",
    )
    assert denial["app_id"] == secret_app["appId"]
    assert admin_oid is None or any(p == admin_oid for _, _, p in outcomes)
    assert "hunter2-value" not in json.dumps(records)


def test_arm_write_and_denial(platform: RunningPlatform, secret_app: dict[str, Any]) -> None:
    home = platform.home
    cli_json(home, "group", "create", "-n", "audit-arm-rg", "-l", "westus")
    writes = audit(home, "--resource", "/resourcegroups/audit-arm-rg", "--action", "arm.write")
    assert [r["outcome"] for r in writes][-2:] == ["request", "granted"]
    assert writes[-1]["detail"]["status"] in (200, 201) and writes[-1]["detail"]["method"] == "PUT"
    # A principal without any role: the write is refused, and the refusal is on record.
    token = secret_token(platform, secret_app["appId"], secret_app["password"], ARM_RESOURCE)
    subscription = platform.endpoints["subscription_id"]
    path = f"/subscriptions/{subscription}/resourcegroups/audit-denied-rg"
    with platform.http() as http:
        response = http.put(
            f"{platform.endpoints['arm'].rstrip('/')}{path}?api-version=2021-04-01",
            json={"location": "westus"},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert response.status_code == 403
    denied = audit(home, "--resource", "audit-denied-rg", "--principal", secret_app["appId"])
    assert [(r["action"], r["outcome"]) for r in denied] == [("arm.write", "request"), ("arm.write", "denied")]
    # `--query` and `-o tsv` shape the same list as az does.
    shaped = run_cli(home, "audit", "list", "--resource", "audit-denied-rg", "--query", "[].outcome", "-o", "tsv")
    assert shaped.stdout.split() == ["request", "denied"]


def test_key_rotation_is_a_credential_event(platform: RunningPlatform) -> None:
    home = platform.home
    rotated = cli_json(home, "keys", "rotate")
    try:
        records = audit(home, "--action", "credential.signing_key.rotate")
        assert any(r["resource"] == rotated["kid"] for r in records)
        assert records[-1]["principal"] is None or records[-1]["outcome"] == "granted"
    finally:
        run_cli(home, "keys", "revoke", rotated["kid"], check=False)  # a pending key: unpublish it again
    revoked = audit(home, "--action", "credential.signing_key.revoke")
    assert any(r["resource"] == rotated["kid"] for r in revoked)


def test_chains_verify(platform: RunningPlatform, secret_app: dict[str, Any]) -> None:
    secret_token(platform, secret_app["appId"], secret_app["password"], ARM_RESOURCE)
    result = cli_json(platform.home, "audit", "verify")
    assert result["verified"] is True and result["records"] > 0


def test_audit_is_admin_only_and_not_on_the_change_feed(platform: RunningPlatform, secret_app: dict[str, Any]) -> None:
    token = secret_token(platform, secret_app["appId"], secret_app["password"], ARM_RESOURCE)
    with platform.http() as http:
        response = http.get(
            f"{platform.endpoints['arm'].rstrip('/')}/lanyard/v1/audit", headers={"Authorization": f"Bearer {token}"}
        )
        anonymous = http.get(f"{platform.endpoints['arm'].rstrip('/')}/lanyard/v1/audit")
        bad = http.get(
            f"{platform.endpoints['arm'].rstrip('/')}/lanyard/v1/audit?since=yesterday",
            headers={"Authorization": f"Bearer {token}"},
        )
    assert response.status_code == 403 and response.json()["error"]["code"] == "AuthorizationFailed"
    assert anonymous.status_code == 401
    assert bad.status_code in (400, 403)
    from lanyard.storage.feed import FEED_KEYS

    assert "audit" not in FEED_KEYS


def test_newest_first_pages_backwards_and_a_bad_order_is_refused(
    platform: RunningPlatform, secret_app: dict[str, Any]
) -> None:
    """`order=newest` (the portal's view, `lanyard audit list --newest-first`): descending, continued with
    `before` from nextLink, the same records as oldest first; any other order is InvalidParameter."""
    for _ in range(3):
        secret_token(platform, secret_app["appId"], secret_app["password"], ARM_RESOURCE)
    oldest = audit(platform.home, "--principal", secret_app["appId"])
    newest = audit(platform.home, "--principal", secret_app["appId"], "--newest-first")
    assert len(oldest) >= 3 and newest == list(reversed(oldest))
    assert audit(platform.home, "--principal", secret_app["appId"], "--newest-first", "--top", "1") == newest[:1]
    admin = platform.endpoints["admin"]
    token = secret_token(platform, admin["client_id"], admin["client_secret"], ARM_RESOURCE)
    with platform.http() as http:
        url = f"{platform.endpoints['arm']}/lanyard/v1/audit"
        query = {"principal": secret_app["appId"], "order": "newest", "top": "2"}
        page = http.get(url, params=query, headers={"Authorization": f"Bearer {token}"}).json()
        assert "before=" in page["nextLink"] and "after=" not in page["nextLink"]
        following = http.get(page["nextLink"], headers={"Authorization": f"Bearer {token}"}).json()
        assert [r["seq"] for r in page["value"] + following["value"]][:3] == [r["seq"] for r in newest[:3]]
        bad = http.get(url, params={"order": "sideways"}, headers={"Authorization": f"Bearer {token}"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "InvalidParameter"
