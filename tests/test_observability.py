"""Access logs, the platform log and /metrics on real platforms: the shared one (an agent, one
process) and one with --workers 2 (metrics summed over both processes)."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import (
    ARM_RESOURCE,
    RunningPlatform,
    cli_json,
    probe_command,
    probe_results,
    secret_token,
    start_platform,
)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def admin_token(platform: RunningPlatform) -> str:
    admin = platform.endpoints["admin"]
    return secret_token(platform, admin["client_id"], admin["client_secret"], ARM_RESOURCE)


def scrape(platform: RunningPlatform, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with platform.http() as http:
        return http.get(f"{platform.authority}/metrics", headers=headers)


def access_lines(path: Path, want: Callable[[dict[str, Any]], bool], count: int = 1) -> list[dict[str, Any]]:
    """The access log's lines that `want`, once at least `count` of them were written (lines reach
    the file from a background writer a fraction of a second after the response)."""
    deadline = time.monotonic() + 10
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        if path.exists():
            found = [line for line in map(json.loads, path.read_text().splitlines()) if want(line)]
            if len(found) >= count:
                return found
        time.sleep(0.05)
    raise AssertionError(f"{len(found)} of {count} expected access-log lines in {path}")


def test_metrics_need_read_on_the_platform_subscription(platform: RunningPlatform, secret_app: dict[str, Any]) -> None:
    anonymous = scrape(platform, None)
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "AuthenticationFailed"
    # An application (or a workload's identity) without a role on the subscription sees nothing.
    no_role = scrape(platform, secret_token(platform, secret_app["appId"], secret_app["password"], ARM_RESOURCE))
    assert no_role.status_code == 403 and no_role.json()["error"]["code"] == "AuthorizationFailed"
    assert "lanyard_" not in no_role.text

    token = admin_token(platform)
    before = scrape(platform, token)
    assert before.status_code == 200 and before.headers["content-type"].startswith("text/plain")
    samples = parse(before.text)
    issued = dict(grant="client_credentials", credential="secret", principal="application")
    start = value(samples, "lanyard_tokens_issued_total", **issued)
    assert start >= 2
    assert value(samples, "lanyard_denials_total", kind="authz", family="admin") >= 1
    assert value(samples, "lanyard_denials_total", kind="unauthenticated", family="admin") >= 1
    assert value(samples, "lanyard_http_request_duration_seconds_count", family="token") >= 2
    assert value(samples, "lanyard_cache_requests_total", cache="clients", result="miss") >= 1

    secret_token(platform, secret_app["appId"], secret_app["password"], ARM_RESOURCE)
    with platform.http() as http:
        wrong = http.post(
            platform.token_url_v2,
            data={
                "grant_type": "client_credentials",
                "client_id": secret_app["appId"],
                "client_secret": "not-the-secret",
                "scope": f"{ARM_RESOURCE}/.default",
            },
        )
    assert wrong.status_code == 401
    after = parse(scrape(platform, token).text)
    assert value(after, "lanyard_tokens_issued_total", **issued) == start + 1
    assert value(after, "lanyard_token_errors_total", error="invalid_client") >= 1
    assert value(after, "lanyard_cache_requests_total", cache="clients", result="hit") >= 1
    assert value(after, "lanyard_denials_total", kind="unauthenticated", family="token") >= 1
    assert value(after, "lanyard_change_feed_lag_seconds_count") >= 1
    assert ("lanyard_audit_failures_total", ()) in after  # the audit log's counter is exported


def test_access_log_has_each_request_without_its_secrets(platform: RunningPlatform, secret_app: dict[str, Any]) -> None:
    marker = "qv-" + secret_app["appId"][:8]
    with platform.http() as http:
        answer = http.post(
            f"{platform.token_url_v2}?client_secret={marker}-query&api-version=1.0",
            data={
                "grant_type": "client_credentials",
                "client_id": secret_app["appId"],
                "client_secret": f"{marker}-body",
                "scope": f"{ARM_RESOURCE}/.default",
            },
        )
    assert answer.status_code == 401
    path = platform.home / "logs" / "access.log"
    token_path = f"/{platform.tenant_id}/oauth2/v2.0/token"
    # msal's user-realm lookups (other suites on this platform) also end in api-version=1.0
    (line,) = access_lines(
        path, lambda line: line.get("path") == token_path and line.get("query", "").endswith("api-version=1.0")
    )
    assert line["method"] == "POST" and line["path"] == f"/{platform.tenant_id}/oauth2/v2.0/token"
    assert line["status"] == 401 and line["family"] == "token" and line["ms"] > 0
    assert line["query"] == "client_secret=REDACTED&api-version=1.0"
    assert line["peer"].startswith(("127.0.0.1:", "::1:")) and line["host"].startswith("localhost:")
    assert marker not in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_platform_log_file(platform: RunningPlatform) -> None:
    path = platform.home / "logs" / "lanyard.log"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "lanyard is up at" in path.read_text()
    shown = subprocess.run(
        [sys.executable, "-m", "lanyard", "--home", str(platform.home), "logs", "-n", "500"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0 and "lanyard is up at" in shown.stdout


@pytest.fixture(scope="module")
def obs_app(platform: RunningPlatform) -> dict[str, Any]:
    cli_json(platform.home, "group", "create", "-n", "obs-rg", "-l", "westus")
    return dict(
        cli_json(platform.home, "webapp", "create", "-g", "obs-rg", "-n", "obs-app", "--assign-identity", "[system]")
    )


def agent_metrics(socket_path: str) -> Samples:
    with httpx.Client(transport=httpx.HTTPTransport(uds=socket_path), timeout=10) as http:
        response = http.get("http://agent/metrics")
    assert response.status_code == 200
    return parse(response.text)


def test_agent_metrics_only_on_its_private_socket(platform: RunningPlatform, obs_app: dict[str, Any]) -> None:
    agent = platform.endpoints["agent"]
    socket_path = agent["metrics"]
    assert stat.S_IMODE(Path(socket_path).stat().st_mode) == 0o600
    # The loopback listener every workload reaches has no metrics.
    loopback = httpx.get(agent["url"].replace("/msi/token", "/metrics"), timeout=10)
    assert loopback.status_code != 200 and "lanyard_agent" not in loopback.text

    before = agent_metrics(socket_path)
    request = {
        "kind": "raw",
        "path": f"?api-version=2019-08-01&resource={ARM_RESOURCE}&client_secret=leak-probe",
        "headers_from_env": {"X-IDENTITY-HEADER": "IDENTITY_HEADER"},
    }
    env_action = {"kind": "env", "names": ["IDENTITY_HEADER"]}
    result = subprocess.run(
        probe_command(
            platform.home, ["webapp", "run", "-g", "obs-rg", "-n", "obs-app"], [request, request, env_action]
        ),
        capture_output=True,
        text=True,
        timeout=180,
    )
    first, second, env = (r["value"] for r in probe_results(result.stdout, result.stderr))
    assert first["status"] == second["status"] == 200, first
    after = agent_metrics(socket_path)
    assert (
        value(after, "lanyard_agent_token_cache_hits_total")
        >= value(before, "lanyard_agent_token_cache_hits_total") + 1
    )
    assert (
        value(after, "lanyard_agent_responses_total", protocol="appservice", status="200")
        >= value(before, "lanyard_agent_responses_total", protocol="appservice", status="200") + 2
    )
    assert value(after, "lanyard_agent_request_duration_seconds_count", protocol="appservice") >= 2

    path = platform.home / "agent" / "logs" / "access.log"
    lines = access_lines(path, lambda line: "client_secret=REDACTED" in line.get("query", ""), count=2)
    for line in lines[-2:]:
        assert line["family"] == "appservice" and line["path"] == "/msi/token" and line["status"] == 200
        if "caller" in line:  # the caller attestation found the workload's process
            assert set(line["caller"]) == {"pid", "uid", "exe"} and line["caller"]["pid"] > 1
    text = path.read_text()
    assert "leak-probe" not in text and env["IDENTITY_HEADER"] not in text
    assert first["body"]["access_token"] not in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_workers_metrics_cover_every_process(tmp_path: Path) -> None:
    running = start_platform(tmp_path / "home", "--workers", "2", "--no-agent")
    try:
        admin = running.endpoints["admin"]
        token = admin_token(running)
        for _ in range(20):  # a new connection each: the kernel spreads them over both workers
            secret_token(running, admin["client_id"], admin["client_secret"], ARM_RESOURCE)
        issued = dict(grant="client_credentials", credential="secret", principal="application")
        seen = set()
        for _ in range(6):
            samples = parse(scrape(running, token).text)
            seen.add(value(samples, "lanyard_tokens_issued_total", **issued))
        assert seen == {21.0}  # whichever worker answers, it counts both
        files = list((running.home / "metrics").glob("counter_*.db"))
        assert len(files) >= 2  # both processes counted something
        token_path = f"/{running.tenant_id}/oauth2/v2.0/token"
        lines = access_lines(running.home / "logs" / "access.log", lambda line: line["path"] == token_path, 21)
        assert len(lines) == 21  # both workers append to the one access log
    finally:
        running.stop()
