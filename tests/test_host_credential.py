"""A host agent renews its own credential before it expires, signed in with the current one; the
workloads it runs never notice, and the old certificate stops working when it ends."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from cryptography import x509

from lanyard.client.assertion import CertificateKey
from tests.conftest import RunningPlatform, cli_json, run_cli
from tests.test_host_revoke import AGENT_AUDIENCE, assertion_grant
from tests.test_standalone_agent import start_agent, wait_ready

LIFETIME = 20.0  # renewed with half of it left: every ~10 s


def test_the_agent_renews_its_credential_and_keeps_serving(platform: RunningPlatform, tmp_path: Path) -> None:
    home = platform.home
    token = cli_json(home, "host", "join-token", "create", "--name", "renewing-host")["token"]
    agent_home = tmp_path / "renewing"
    os.environ["LANYARD_HOST_CERT_LIFETIME"] = str(LIFETIME)
    try:
        process = start_agent(platform, agent_home, token)
    finally:
        del os.environ["LANYARD_HOST_CERT_LIFETIME"]
    try:
        wait_ready(agent_home, process)
        host = json.loads((agent_home / "host.json").read_text())
        first_pem = (agent_home / "host.pem").read_bytes()
        first = CertificateKey.from_pem(first_pem, (agent_home / "host-key.pem").read_bytes())
        seen = {first_pem}
        deadline = time.monotonic() + 3 * LIFETIME
        while len(seen) < 3 and time.monotonic() < deadline:
            seen.add((agent_home / "host.pem").read_bytes())
            time.sleep(0.2)
        assert len(seen) >= 3, "the agent did not renew its credential twice"
        # It still works: the platform knows it, and a workload placed on it runs with its identity.
        cli_json(home, "group", "create", "-n", "hostcred-rg", "-l", "westus")
        cli_json(home, "webapp", "create", "-g", "hostcred-rg", "-n", "hostcred-app", "--assign-identity", "[system]")
        script = (
            "from azure.identity import ManagedIdentityCredential\n"
            "print('TOKEN', len(ManagedIdentityCredential().get_token('https://management.azure.com/.default').token))"
        )
        ran = run_cli(
            home,
            "webapp",
            "run",
            "-g",
            "hostcred-rg",
            "-n",
            "hostcred-app",
            "--agent-home",
            str(agent_home),
            "--",
            sys.executable,
            "-c",
            script,
        )
        assert "TOKEN" in ran.stdout
        # Once the first certificate's lifetime is over, it is refused.
        ends = x509.load_pem_x509_certificate(first_pem).not_valid_after_utc.timestamp()
        time.sleep(max(0.0, ends - time.time() + 1))
        refused = assertion_grant(platform, host["clientId"], first, AGENT_AUDIENCE)
        assert refused.status_code == 401 and "AADSTS700027" in refused.json()["error_description"]
        current = CertificateKey.from_pem(
            (agent_home / "host.pem").read_bytes(), (agent_home / "host-key.pem").read_bytes()
        )
        assert assertion_grant(platform, host["clientId"], current, AGENT_AUDIENCE).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
