"""`lanyard kek rotate`: every sealed value moves to a new key-encryption key while reads go on, client
secrets keep working (their pepper outlives the KEK), and a node with only the old key then refuses
to start with one clear line."""

from __future__ import annotations

import base64
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

from lanyard.crypto.barrier import Barrier
from tests.conftest import cli_json, secret_token, start_platform

SECRETS = 20


def new_kek() -> tuple[bytes, str]:
    raw = os.urandom(32)
    return raw, base64.b64encode(raw).decode()


def sealed_blobs(home: Path) -> list[bytes]:
    with sqlite3.connect(home / "lanyard.db") as db:
        blobs = [r[0] for r in db.execute("SELECT sealed FROM platform_state WHERE sealed IS NOT NULL")]
        blobs += [r[0] for r in db.execute("SELECT sealed_private_key FROM signing_keys")]
        blobs += [
            r[0] for r in db.execute("SELECT sealed_private_key FROM credentials WHERE sealed_private_key IS NOT NULL")
        ]
        blobs += [r[0] for r in db.execute("SELECT sealed_value FROM vault_secret_versions")]
    return [bytes(b) for b in blobs if b]


def test_kek_rotation_reseals_everything_under_load(tmp_path: Path) -> None:
    old_raw, old = new_kek()
    new_raw, new = new_kek()
    home = tmp_path / "h"
    first = start_platform(home, "--no-agent", env={"LANYARD_KEK": old})
    try:
        cli_json(home, "group", "create", "-n", "kek-rg", "-l", "westus")
        cli_json(home, "keyvault", "create", "-g", "kek-rg", "-n", "kekkv")
        app = cli_json(home, "ad", "sp", "create-for-rbac", "--name", "kek-app")
        cli_json(home, "identity", "create", "-g", "kek-rg", "-n", "kek-id")  # a platform-held identity key
        for i in range(SECRETS):
            cli_json(home, "keyvault", "secret", "set", "--vault-name", "kekkv", "-n", f"s{i}", "--value", f"value-{i}")
    finally:
        first.stop()
    old_id = Barrier(old_raw).active_id
    assert all(Barrier.kek_id_of(b) == old_id for b in sealed_blobs(home))

    # Every node restarted with the new key active and the old one still readable.
    both = start_platform(home, "--no-agent", env={"LANYARD_KEK": new, "LANYARD_KEK_PREVIOUS": old})
    try:
        audience = both.endpoints["vault_audience"]
        admin = both.endpoints["admin"]
        stop = threading.Event()
        failures: list[str] = []
        reads = [0]

        def read_forever() -> None:
            token = secret_token(both, admin["client_id"], admin["client_secret"], audience)
            with both.http() as http:
                while not stop.is_set():
                    i = reads[0] % SECRETS
                    got = http.get(
                        f"https://kekkv.{both.endpoints['vault_suffix']}/secrets/s{i}?api-version=7.4",
                        headers={"Authorization": f"Bearer {token}"},
                    )
                    if got.status_code != 200 or got.json()["value"] != f"value-{i}":
                        failures.append(f"{got.status_code} {got.text[:100]}")
                    reads[0] += 1

        reader = threading.Thread(target=read_forever)
        reader.start()
        try:
            rotated = cli_json(home, "kek", "rotate")
        finally:
            stop.set()
            reader.join(timeout=60)
        assert failures == [] and reads[0] > 0, failures[:3]
        assert rotated["resealed"] >= SECRETS + 3 and rotated["remaining"] == 0, rotated
        new_id = Barrier(new_raw).active_id
        assert rotated["activeKekId"] == new_id.hex()
        assert all(Barrier.kek_id_of(b) == new_id for b in sealed_blobs(home)), "a value is still under the old KEK"
        assert secret_token(both, app["appId"], app["password"], "https://management.azure.com")
    finally:
        both.stop()

    # The old key is no longer needed ...
    after = start_platform(home, "--no-agent", env={"LANYARD_KEK": new})
    try:
        value = cli_json(home, "keyvault", "secret", "show", "--vault-name", "kekkv", "-n", "s7")["value"]
        assert value == "value-7"
        assert secret_token(after, app["appId"], app["password"], "https://management.azure.com")  # the pepper survived
    finally:
        after.stop()
    # ... and a node that has only the old one says so, in one line.
    refused = subprocess.run(
        [sys.executable, "-m", "lanyard", "up", "--home", str(home), "--port", "0", "--no-agent"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "LANYARD_KEK": old},
    )
    assert refused.returncode == 1
    assert "key-encryption key does not open" in refused.stderr and "kek rotate" in refused.stderr
    assert len([line for line in refused.stderr.splitlines() if line.strip()]) == 1, refused.stderr
