"""`lanyard doctor` as a user runs it: against the shared platform (every check passes, exit 0), and
broken setups (a CA bundle variable naming another file, no platform, a stale endpoints.json, no
azure-identity) that exit 1 and name the fix."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RunningPlatform, cli_json, vault_names_resolve

PLATFORM_CHECKS = {
    "platform",
    "vault names resolve",
    "Python trusts the CA (REQUESTS_CA_BUNDLE)",
    "Python trusts the CA (SSL_CERT_FILE)",
    "node trusts the CA",
    "curl trusts the CA",
    "azure-identity token (directory)",
    "vault read (SecretClient)",
    "workload token (agent)",
    "workload vault read",
}
SYSTEM_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def trusting_env(platform: RunningPlatform, **overrides: str) -> dict[str, str]:
    """The environment the README tells a developer to set, plus `overrides`."""
    bundle = platform.endpoints["ca_bundle"]
    env = {
        **os.environ,
        "REQUESTS_CA_BUNDLE": bundle,
        "SSL_CERT_FILE": bundle,
        "CURL_CA_BUNDLE": bundle,
        "NODE_EXTRA_CA_CERTS": platform.ca_cert,
    }
    env.update(overrides)
    return env


def doctor(home: Path, *args: str, env: dict[str, str] | None = None, python: list[str] | None = None) -> Any:
    return subprocess.run(
        [*(python or [sys.executable, "-m", "lanyard"]), "--home", str(home), "doctor", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd="/",
    )


def rows(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, str]]:
    return {row["check"]: row for row in json.loads(result.stdout)}


@pytest.mark.skipif(not vault_names_resolve(), reason="*.vault.lanyard.localhost does not resolve: scripts/ensure-dns")
def test_every_check_passes_on_a_working_platform(platform: RunningPlatform) -> None:
    result = doctor(platform.home, "-o", "json", env=trusting_env(platform))
    assert result.returncode == 0, result.stdout + result.stderr
    found = rows(result)
    assert set(found) == PLATFORM_CHECKS
    tools = {"node trusts the CA": "node", "curl trusts the CA": "curl"}
    expected_skips = {name for name, tool in tools.items() if shutil.which(tool) is None}  # not installed here
    for name, row in found.items():
        assert row["status"] == ("skip" if name in expected_skips else "ok"), row
        assert row["fix"] == ""
    assert "got a token through the agent" in found["workload token (agent)"]["detail"]
    # The throwaway group, app and vault are gone, and no secret reached the output.
    groups = [g["name"] for g in cli_json(platform.home, "group", "list")]
    assert not [g for g in groups if g.startswith("doctor-")], groups
    assert platform.endpoints["admin"]["client_secret"] not in result.stdout + result.stderr


def test_a_ca_bundle_variable_naming_another_file_fails_with_the_fix(platform: RunningPlatform) -> None:
    if not Path(SYSTEM_BUNDLE).exists():
        pytest.skip(f"no system bundle at {SYSTEM_BUNDLE} to point REQUESTS_CA_BUNDLE at")
    result = doctor(platform.home, env=trusting_env(platform, REQUESTS_CA_BUNDLE=SYSTEM_BUNDLE))
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["Check", "Status", "Detail", "Fix"] and set(lines[1]) <= {"-", " "}
    row = next(line for line in lines if line.startswith("Python trusts the CA (REQUESTS_CA_BUNDLE)"))
    assert " fail " in row and "certificate not trusted" in row
    assert f"export REQUESTS_CA_BUNDLE={platform.endpoints['ca_bundle']}" in row
    ssl_row = next(line for line in lines if line.startswith("Python trusts the CA (SSL_CERT_FILE)"))
    assert " ok " in ssl_row  # only the variable that is wrong fails
    assert "1 check(s) failed: Python trusts the CA (REQUESTS_CA_BUNDLE)" in result.stderr


def test_no_platform_on_the_home_fails_with_how_to_start_it(tmp_path: Path) -> None:
    result = doctor(tmp_path, "-o", "json")
    assert result.returncode == 1
    found = rows(result)
    assert found["platform"]["status"] == "fail"
    assert found["platform"]["detail"] == f"no platform runs on {tmp_path}"
    assert f"lanyard --home {tmp_path} up" in found["platform"]["fix"]
    assert found["azure-identity token (directory)"] == {
        "check": "azure-identity token (directory)",
        "status": "skip",
        "detail": "the platform is not running",
        "fix": "",
    }


def test_a_stale_endpoints_file_is_named_as_such(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (tmp_path / "endpoints.json").write_text(json.dumps({"pid": gone.pid, "authority": "https://localhost:1"}))
    result = doctor(tmp_path, "-o", "json")
    assert result.returncode == 1
    platform_row = rows(result)["platform"]
    assert platform_row["detail"] == f"not running on {tmp_path}: pid {gone.pid} is gone, its endpoints.json is stale"
    assert f"lanyard --home {tmp_path} up" in platform_row["fix"]


def test_without_azure_identity_it_says_to_install_it(platform: RunningPlatform) -> None:
    # None in sys.modules makes `import azure.identity` raise ImportError, as when it is not installed.
    hide = "import sys; sys.modules['azure.identity'] = None; from lanyard.cli.main import main; main()"
    result = doctor(platform.home, "-o", "json", env=trusting_env(platform), python=[sys.executable, "-c", hide])
    assert result.returncode == 1, result.stderr
    found = rows(result)
    assert found["azure-identity token (directory)"]["status"] == "fail"
    assert found["azure-identity token (directory)"]["detail"] == "azure-identity is not installed"
    assert found["azure-identity token (directory)"]["fix"].startswith("pip install azure-identity")
    assert found["workload token (agent)"]["status"] == "skip"
    assert "Traceback" not in result.stderr
