"""The real az CLI (azure-cli from PyPI, installed by scripts/ensure-az) pointed at a running platform.

Each `AzCli` has a configuration folder of its own (AZURE_CONFIG_DIR), so tests share no login, cloud or
cache. The platform is registered as a custom cloud through its `/metadata/endpoints` document, as a user
would, and az trusts the platform's CA through REQUESTS_CA_BUNDLE.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
CLOUD_NAME = "Lanyard"
TIMEOUT = 180


def az_executable() -> str | None:
    """$LANYARD_AZ, else the cached venv scripts/ensure-az builds."""
    configured = os.environ.get("LANYARD_AZ")
    candidate = Path(configured) if configured else REPO / ".cache" / "az-venv" / "bin" / "az"
    return str(candidate) if candidate.is_file() and os.access(candidate, os.X_OK) else None


def require_az() -> str:
    """az's path; a skip without it, a failure under CI=true (which installs it through scripts/ensure-az)."""
    found = az_executable()
    if found is not None:
        return found
    message = "the az CLI is not installed: run scripts/ensure-az (or set LANYARD_AZ)"
    if os.environ.get("CI", "").lower() in ("true", "1") or os.environ.get("LANYARD_REQUIRE_AZ") == "1":
        pytest.fail(f"{message} (required here: CI=true or LANYARD_REQUIRE_AZ=1)", pytrace=False)
    pytest.skip(message)


def az_environment(config_dir: Path, ca_bundle: str) -> dict[str, str]:
    """What az needs to reach the platform, and nothing that makes it talk to anyone else."""
    return {
        "AZURE_CONFIG_DIR": str(config_dir),
        "REQUESTS_CA_BUNDLE": ca_bundle,
        # msal would otherwise ask login.microsoftonline.com about our authority (docs/protocols.md §7).
        "AZURE_CORE_INSTANCE_DISCOVERY": "false",
        "AZURE_CORE_COLLECT_TELEMETRY": "false",
        "AZURE_CORE_SURVEY_MESSAGE": "false",
        "AZURE_CORE_NO_COLOR": "true",
        "AZURE_CORE_DISABLE_CONFIRM_PROMPT": "true",
    }


def setup_script(az: str, arm: str) -> str:
    """Shell lines that register and select the platform's cloud (for a workload to run itself)."""
    quoted = shlex.quote(az)
    return (
        f"{quoted} cloud register -n {CLOUD_NAME} --endpoint-resource-manager {shlex.quote(arm)} -o none && "
        f"{quoted} cloud set -n {CLOUD_NAME} -o none"
    )


@dataclass
class AzResult:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout) if self.stdout.strip() else None


class AzCli:
    def __init__(self, az: str, platform: Any, config_dir: Path) -> None:
        self.az = az
        self.platform = platform
        self.config_dir = config_dir
        config_dir.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, **az_environment(config_dir, platform.endpoints["ca_bundle"])}

    def run(self, *args: str, check: bool = True) -> AzResult:
        done = subprocess.run(
            [self.az, *args], capture_output=True, text=True, env=self.env, timeout=TIMEOUT, stdin=subprocess.DEVNULL
        )
        result = AzResult(done.returncode, done.stdout, done.stderr)
        if check and done.returncode != 0:
            shown = " ".join("--password=***" if a.startswith("--password=") else a for a in args)
            raise AssertionError(f"az {shown} failed ({done.returncode}):\n{done.stderr}\n{done.stdout}")
        return result

    def json(self, *args: str) -> Any:
        return self.run(*args, "-o", "json").json()

    def register_cloud(self) -> None:
        arm = self.platform.endpoints["arm"]
        self.run("cloud", "register", "-n", CLOUD_NAME, "--endpoint-resource-manager", arm, "-o", "none")
        self.run("cloud", "set", "-n", CLOUD_NAME, "-o", "none")

    def login_service_principal(self, client_id: str, secret: str) -> Any:
        return self.json(
            "login", "--service-principal", "-u", client_id, f"--password={secret}", "--tenant", self.platform.tenant_id
        )
