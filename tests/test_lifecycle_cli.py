"""`lanyard status` and `lanyard down` find the platform of a home by its lock."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_cli, start_platform


def test_status_then_down_then_status(tmp_path: Path) -> None:
    running = start_platform(tmp_path / "h")
    try:
        shown = run_cli(running.home, "status")
        report = json.loads(shown.stdout)
        assert report["running"] is True and report["ready"] is True and report["pid"] == running.process.pid
        assert report["authority"] == running.authority and report["tenantId"] == running.tenant_id
        assert [n["pid"] for n in report["nodes"] if n["live"]] == [running.process.pid]
        assert report["agent"]["hostId"] in [h["hostId"] for h in report["hosts"]]
        stopped = json.loads(run_cli(running.home, "down").stdout)
        assert stopped == {"stopped": True, "pid": running.process.pid}
        assert running.process.wait(timeout=30) == 0
        assert not (running.home / "endpoints.json").exists()
        after = run_cli(running.home, "status", check=False)
        assert after.returncode == 3 and json.loads(after.stdout)["running"] is False
        again = json.loads(run_cli(running.home, "down").stdout)
        assert again["stopped"] is False and "no platform is running" in again["reason"]
    finally:
        running.stop()
