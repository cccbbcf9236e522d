"""Managed-identity certificates renew themselves under load, in compressed time: a workload asking
for a token for a new resource every 100 ms never sees a failure, and after the grace period the old
certificate is refused by the token endpoint."""

from __future__ import annotations

import sqlite3
import subprocess
import time
from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from lanyard.client.assertion import CertificateKey
from lanyard.crypto.barrier import Barrier, load_kek
from tests.conftest import RunningPlatform, cli_json, probe_command, probe_results, start_platform

RENEW_AFTER, GRACE = 2.0, 2.0
LOOP_SECONDS = 26.0
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def renewing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    env = {"LANYARD_IDENTITY_CERT_RENEW_AFTER": str(RENEW_AFTER), "LANYARD_IDENTITY_CERT_GRACE": str(GRACE)}
    running = start_platform(tmp_path_factory.mktemp("renewing"), env=env)
    yield running
    running.stop()


def platform_credentials(platform: RunningPlatform, app_id: str) -> list[tuple[str, bytes, bytes, float, float]]:
    with sqlite3.connect(platform.home / "lanyard.db") as db:
        return list(
            db.execute(
                "SELECT key_id, cert_der, sealed_private_key, created_at, end_at FROM credentials "
                "WHERE app_id = ? AND sealed_private_key IS NOT NULL ORDER BY created_at",
                (app_id,),
            )
        )


def test_renewals_under_load_fail_no_request_and_the_old_certificate_is_refused(renewing: RunningPlatform) -> None:
    home = renewing.home
    cli_json(home, "group", "create", "-n", "renew-rg", "-l", "westus")
    site = cli_json(home, "webapp", "create", "-g", "renew-rg", "-n", "renew-app", "--assign-identity", "[system]")
    principal_id = site["identity"]["principalId"]
    sp = cli_json(home, "ad", "sp", "show", "--id", principal_id)
    app_id = sp["appId"]
    loop = {"kind": "azid-loop", "resource": "https://renewal-target-", "seconds": LOOP_SECONDS, "interval": 0.1}
    run = subprocess.run(
        probe_command(home, ["webapp", "run", "-g", "renew-rg", "-n", "renew-app"], [loop]),
        capture_output=True,
        text=True,
        timeout=LOOP_SECONDS + 90,
    )
    (result,) = probe_results(run.stdout, run.stderr)
    assert result["ok"], result
    value = result["value"]
    assert value["failures"] == [], value["failures"][:3]
    assert value["ok"] >= 100, value

    credentials = platform_credentials(renewing, app_id)
    print(f"renewal: {len(credentials) - 1} renewals, {value['ok']} tokens for new resources, 0 failures")
    assert len(credentials) - 1 >= 10, f"only {len(credentials) - 1} renewals"
    now = time.time()
    live = [c for c in credentials if c[4] > now]
    assert 1 <= len(live) <= 2, "more than the newest certificate and one in its grace period are valid"

    # The oldest certificate ended a grace period after its successor came: sign with it anyway.
    key_id, cert_der, sealed, _created, end_at = credentials[0]
    assert end_at < now
    barrier = Barrier(load_kek(home, None))
    key_pem = barrier.open(sealed, context=f"credential:{key_id}")
    cert_pem = x509.load_der_x509_certificate(cert_der).public_bytes(serialization.Encoding.PEM)
    old = CertificateKey.from_pem(cert_pem, key_pem)
    form = {
        "grant_type": "client_credentials",
        "client_id": app_id,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": old.assertion(app_id, renewing.token_url_v2),
        "scope": "https://management.azure.com/.default",
    }
    with renewing.http() as http:
        refused = http.post(renewing.token_url_v2, data=form)
    assert refused.status_code == 401, refused.text
    body = refused.json()
    assert body["error"] == "invalid_client" and "AADSTS700027" in body["error_description"]
