"""A home belongs to one running platform: a second `lanyard up` on it refuses and touches nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import RunningPlatform, cli_json


def test_a_second_up_on_a_busy_home_refuses_and_the_first_keeps_serving(platform: RunningPlatform) -> None:
    endpoints = platform.home / "endpoints.json"
    before = endpoints.read_bytes()
    agent_socket = platform.endpoints.get("agent", {}).get("socket")
    second = subprocess.run(
        [sys.executable, "-m", "lanyard", "up", "--home", str(platform.home), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 1
    assert f"pid {platform.process.pid}" in second.stderr and "already running" in second.stderr
    assert endpoints.read_bytes() == before
    if agent_socket:
        assert Path(agent_socket).exists()
    assert platform.process.poll() is None
    account = cli_json(platform.home, "account", "show")
    assert account["tenantId"] == platform.tenant_id
