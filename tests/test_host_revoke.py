"""`lanyard host revoke`: a host is thrown out at once. Its agent's next call is refused, its
placements are gone, and the identity keys it held stop working at the token endpoint."""

from __future__ import annotations

import json
import signal
import sqlite3
import sys
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from lanyard.client.assertion import CertificateKey
from lanyard.crypto.barrier import Barrier, load_kek
from tests.conftest import RunningPlatform, cli_json, run_cli
from tests.test_standalone_agent import start_agent, wait_ready

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
AGENT_AUDIENCE = "api://lanyard-host-agent"


def identity_key(platform: RunningPlatform, app_id: str) -> tuple[str, CertificateKey]:
    """The platform-held key of an identity: what an agent hosting it holds."""
    with sqlite3.connect(platform.home / "lanyard.db") as db:
        key_id, cert_der, sealed = db.execute(
            "SELECT key_id, cert_der, sealed_private_key FROM credentials WHERE app_id = ? "
            "AND sealed_private_key IS NOT NULL ORDER BY created_at DESC LIMIT 1",
            (app_id,),
        ).fetchone()
    key_pem = Barrier(load_kek(platform.home, None)).open(sealed, context=f"credential:{key_id}")
    cert_pem = x509.load_der_x509_certificate(cert_der).public_bytes(serialization.Encoding.PEM)
    return key_id, CertificateKey.from_pem(cert_pem, key_pem)


def assertion_grant(platform: RunningPlatform, client_id: str, key: CertificateKey, resource: str) -> httpx.Response:
    form = {
        "grant_type": "client_credentials",
        "client_id": client_id,
        "client_assertion_type": JWT_BEARER,
        "client_assertion": key.assertion(client_id, platform.token_url_v2),
        "scope": f"{resource}/.default",
    }
    with platform.http() as http:
        return http.post(platform.token_url_v2, data=form)


def test_a_revoked_host_is_refused_and_the_keys_it_held_stop_working(platform: RunningPlatform, tmp_path: Path) -> None:
    home = platform.home
    if platform.database is not None:
        pytest.skip("reads the SQLite store of the home to find the keys the host holds")
    token = cli_json(home, "host", "join-token", "create", "--name", "doomed-host")["token"]
    agent_home = tmp_path / "doomed"
    process = start_agent(platform, agent_home, token)
    try:
        wait_ready(agent_home, process)
        cli_json(home, "group", "create", "-n", "revoke-rg", "-l", "westus")
        site = cli_json(
            home, "webapp", "create", "-g", "revoke-rg", "-n", "revoke-app", "--assign-identity", "[system]"
        )
        app_id = cli_json(home, "ad", "sp", "show", "--id", site["identity"]["principalId"])["appId"]
        ran = run_cli(
            home,
            "webapp",
            "run",
            "-g",
            "revoke-rg",
            "-n",
            "revoke-app",
            "--agent-home",
            str(agent_home),
            "--",
            sys.executable,
            "-c",
            "print('placed')",
        )
        assert "placed" in ran.stdout
        held_id, held = identity_key(platform, app_id)
        assert assertion_grant(platform, app_id, held, "https://management.azure.com").status_code == 200

        host = json.loads((agent_home / "host.json").read_text())
        host_key = CertificateKey.from_pem(
            (agent_home / "host.pem").read_bytes(), (agent_home / "host-key.pem").read_bytes()
        )
        host_grant = assertion_grant(platform, host["clientId"], host_key, AGENT_AUDIENCE)
        assert host_grant.status_code == 200
        host_token = host_grant.json()["access_token"]

        revoked = cli_json(home, "host", "revoke", host["hostId"])
        assert revoked["revoked"] is True and revoked["placementsRemoved"] == 1

        assert host["hostId"] not in [h["hostId"] for h in cli_json(home, "host", "list")]
        # The agent's next call is refused, with the token it already had and for a new one.
        with platform.http() as http:
            bindings = http.get(
                f"{platform.authority}/lanyard/v1/agent/bindings", headers={"Authorization": f"Bearer {host_token}"}
            )
        assert bindings.status_code == 403, bindings.text
        again = assertion_grant(platform, host["clientId"], host_key, AGENT_AUDIENCE)
        assert again.status_code in (400, 401) and again.json()["error"] in ("unauthorized_client", "invalid_client")
        # The identity key that host held no longer works; the identity itself has a new one.
        refused = assertion_grant(platform, app_id, held, "https://management.azure.com")
        assert refused.status_code == 401 and "AADSTS700027" in refused.json()["error_description"]
        new_id, _new = identity_key(platform, app_id)
        assert new_id != held_id
        # Unknown hosts get a clear error.
        missing = run_cli(home, "host", "revoke", "no-such-host", check=False)
        assert missing.returncode == 1 and "HostNotFound" in missing.stderr
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
