"""Signing keys that roll themselves, on a real `lanyard up` in compressed time (docs/security.md F9).

A key signs for ROTATION seconds and its successor is published LEAD seconds before it signs. While
they roll, a bounded load mints tokens and verifies each with PyJWKClient (its own JWK-set cache), with
the vault and with ARM; one emergency revocation happens in the middle.

Time is compressed for the verifier too. PyJWKClient keeps a key set 300 s and refetches on an
unknown kid at most every 30 s (its cooldown), so a real deployment needs a publish lead above 30 s
(the default is 2 days); here the lead is 1 s, so the verifier's cooldown is LEAD / 2.
"""

from __future__ import annotations

import base64
import json
import signal
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.conftest import RunningPlatform, app_service_tokens_around, cli_json, run_cli, start_platform

ROTATION, LEAD = 3.0, 1.0
ROTATIONS = 20
ARM = "https://management.azure.com"
pytestmark = pytest.mark.timeout(400)


def kid_of(token: str) -> str:
    header = token.split(".", 1)[0]
    return str(json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"])


@pytest.fixture(scope="module")
def rolling(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    env = {"LANYARD_KEY_ROTATION_PERIOD": str(ROTATION), "LANYARD_KEY_PUBLISH_LEAD": str(LEAD)}
    running = start_platform(tmp_path_factory.mktemp("rolling"), "--no-agent", env=env)
    yield running
    running.stop()


class Load:
    """Mint, then verify three ways; every failure is kept with the key that signed the token."""

    def __init__(self, platform: RunningPlatform, vault_url: str) -> None:
        self.platform = platform
        self.vault_url = vault_url
        admin = platform.endpoints["admin"]
        self.form = {
            "grant_type": "client_credentials",
            "client_id": admin["client_id"],
            "client_secret": admin["client_secret"],
        }
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.verified: dict[str, int] = {}  # kid -> tokens verified everywhere
        self.failures: list[tuple[str, str]] = []
        discovery = f"{platform.authority}/{platform.tenant_id}/v2.0/.well-known/openid-configuration"
        with platform.http() as http:
            self.jwks_uri = http.get(discovery).json()["jwks_uri"]
        self.context = ssl.create_default_context(cafile=platform.ca_cert)

    def mint(self, http: httpx.Client, resource: str) -> str:
        response = http.post(self.platform.token_url_v2, data={**self.form, "scope": f"{resource}/.default"})
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def run(self) -> None:
        verifier = jwt.PyJWKClient(self.jwks_uri, ssl_context=self.context, cooldown_duration=LEAD / 2)
        issuer = f"{self.platform.authority}/{self.platform.tenant_id}/"
        audience = self.platform.endpoints["vault_audience"]
        with self.platform.http() as http:
            while not self.stop.is_set():
                arm_token, vault_token = self.mint(http, ARM), self.mint(http, audience)
                kid = kid_of(arm_token)
                try:
                    key = verifier.get_signing_key_from_jwt(arm_token)
                    jwt.decode(arm_token, key.key, algorithms=["RS256"], audience=ARM, issuer=issuer)
                    subscriptions = http.get(
                        f"{self.platform.authority}/subscriptions?api-version=2022-12-01",
                        headers={"Authorization": f"Bearer {arm_token}"},
                    )
                    assert subscriptions.status_code == 200, f"ARM {subscriptions.status_code}"
                    secret = http.get(self.vault_url, headers={"Authorization": f"Bearer {vault_token}"})
                    assert secret.status_code == 200, f"vault {secret.status_code}"
                except Exception as exc:
                    with self.lock:
                        self.failures.append((kid, f"{type(exc).__name__}: {exc}"[:200]))
                    continue
                with self.lock:
                    self.verified[kid] = self.verified.get(kid, 0) + 1
                time.sleep(0.02)


def test_keys_roll_under_load_and_a_revoked_key_is_refused_at_once(rolling: RunningPlatform) -> None:
    home = rolling.home
    cli_json(home, "group", "create", "-n", "rot-rg", "-l", "westus")
    cli_json(home, "keyvault", "create", "-g", "rot-rg", "-n", "rotkv")
    vault_url = f"https://rotkv.{rolling.endpoints['vault_suffix']}/secrets/s?api-version=7.4"
    load = Load(rolling, vault_url)
    with rolling.http() as http:
        put = http.put(
            vault_url,
            json={"value": "v"},
            headers={"Authorization": f"Bearer {load.mint(http, load.platform.endpoints['vault_audience'])}"},
        )
        assert put.status_code == 200, put.text
        # A token signed by the key active now: it is revoked below, once that key has retired.
        doomed_arm = load.mint(http, ARM)
        doomed_vault = load.mint(http, rolling.endpoints["vault_audience"])
    doomed = kid_of(doomed_arm)
    workers = [threading.Thread(target=load.run) for _ in range(2)]
    for w in workers:
        w.start()
    jwks_url = load.jwks_uri
    seen_active: set[str] = set()
    revoked_at: float | None = None
    deadline = time.monotonic() + ROTATIONS * ROTATION * 3 + 60
    try:
        while len(seen_active) < ROTATIONS + 1 and time.monotonic() < deadline:
            keys = cli_json(home, "keys", "list")
            active = [k["kid"] for k in keys if k["state"] == "active"]
            assert len(active) == 1, keys  # never two
            seen_active.update(active)
            with rolling.http() as http:
                published = {k["kid"] for k in http.get(jwks_url).json()["keys"]}
            # The key set holds the active key and every retired key whose tokens may be alive.
            alive = {k["kid"] for k in keys if k["state"] in ("pending", "active", "retired")}
            assert set(active) <= published and alive - {doomed if revoked_at else ""} <= published | {""}
            if revoked_at is None and len(seen_active) >= ROTATIONS // 2:
                assert doomed not in active
                run_cli(home, "keys", "revoke", doomed)
                revoked_at = time.monotonic()
                with rolling.http() as http:
                    assert doomed not in {k["kid"] for k in http.get(jwks_url).json()["keys"]}
                    arm = http.get(
                        f"{rolling.authority}/subscriptions?api-version=2022-12-01",
                        headers={"Authorization": f"Bearer {doomed_arm}"},
                    )
                    secret = http.get(vault_url, headers={"Authorization": f"Bearer {doomed_vault}"})
                assert arm.status_code == 401 and secret.status_code == 401, (arm.text, secret.text)
                fresh = jwt.PyJWKClient(jwks_url, ssl_context=load.context)
                with pytest.raises(jwt.PyJWKClientError):
                    fresh.get_signing_key_from_jwt(doomed_arm)
            time.sleep(0.3)
    finally:
        load.stop.set()
        for w in workers:
            w.join(timeout=60)
    assert len(seen_active) >= ROTATIONS + 1, f"only {len(seen_active) - 1} rotations happened"
    assert revoked_at is not None
    assert load.failures == [], load.failures[:5]
    assert len(load.verified) >= ROTATIONS // 2, load.verified  # tokens of many keys, all verified


def test_revoking_unknown_or_active_keys_and_double_scheduling_are_refused(rolling: RunningPlatform) -> None:
    unknown = run_cli(rolling.home, "keys", "revoke", "no-such-kid", check=False)
    assert unknown.returncode == 1 and "SigningKeyNotFound" in unknown.stderr
    active = next(k["kid"] for k in cli_json(rolling.home, "keys", "list") if k["state"] == "active")
    refused = run_cli(rolling.home, "keys", "revoke", active, check=False)
    # The key may have rolled between listing and revoking; then it is retired and revocable.
    assert ("CannotRevokeActiveKey" in refused.stderr) or refused.returncode == 0


def test_a_restart_in_the_middle_of_a_rotation_resumes_it(tmp_path: Path) -> None:
    env = {"LANYARD_KEY_ROTATION_PERIOD": "86400", "LANYARD_KEY_PUBLISH_LEAD": "4"}
    first = start_platform(tmp_path / "h", "--no-agent", env=env)
    try:
        scheduled = cli_json(first.home, "keys", "rotate")
        assert scheduled["state"] == "pending"
        again = run_cli(first.home, "keys", "rotate", check=False)
        assert again.returncode == 1 and "RotationAlreadyScheduled" in again.stderr
    finally:
        assert first.stop(signal.SIGTERM) == 0
    time.sleep(4.5)  # the pending key is due while no process runs
    second = start_platform(tmp_path / "h", "--no-agent", env=env)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            keys: list[dict[str, Any]] = cli_json(second.home, "keys", "list")
            if any(k["kid"] == scheduled["kid"] and k["state"] == "active" for k in keys):
                break
            time.sleep(0.2)
        assert [k["kid"] for k in keys if k["state"] == "active"] == [scheduled["kid"]]
        assert sum(1 for k in keys if k["state"] == "retired") == 1
    finally:
        second.stop()


def test_agents_drop_the_tokens_a_revoked_key_signed(tmp_path: Path, workload_folder: Path) -> None:
    """The agent caches tokens; when the key that signed them is revoked it must not hand them out."""
    running = start_platform(tmp_path / "agented")
    try:
        home = running.home
        cli_json(home, "group", "create", "-n", "drop-rg", "-l", "westus")
        cli_json(home, "webapp", "create", "-g", "drop-rg", "-n", "drop-app", "--assign-identity", "[system]")
        old = next(k["kid"] for k in cli_json(home, "keys", "list") if k["state"] == "active")

        def revoke_the_signing_key() -> None:
            cli_json(home, "keys", "rotate", "--immediate")
            cli_json(home, "keys", "revoke", old)  # returns once every agent applied it

        first, second = app_service_tokens_around(
            home, ["webapp", "run", "-g", "drop-rg", "-n", "drop-app"], workload_folder, revoke_the_signing_key
        )
        assert first["status"] == 200 and second["status"] == 200
        assert kid_of(first["body"]["access_token"]) == old
        assert kid_of(second["body"]["access_token"]) != old, "the agent served a token of a revoked key"
    finally:
        running.stop()
