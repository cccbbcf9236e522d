"""A second host agent joins with a one-time token, like one on another machine, and serves workloads
placed on its host; the token cannot be used twice; a managed identity given a role automates the
control plane through it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RunningPlatform, cli_json, run_cli


def start_agent(platform: RunningPlatform, home: Path, token: str | None) -> subprocess.Popen[bytes]:
    argv = [
        sys.executable,
        "-m",
        "lanyard",
        "agent",
        "--home",
        str(home),
        "--server",
        platform.authority,
        "--ca",
        platform.ca_cert,
        "--ca-bundle",
        platform.endpoints["ca_bundle"],
        "--name",
        "second-host",
    ]
    if token:
        argv += ["--join", token]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_ready(home: Path, process: subprocess.Popen[bytes]) -> dict[str, Any]:
    from lanyard.agent.main import wait_for_agent

    info = wait_for_agent(home, process.pid, timeout=60)
    if info is None:
        process.kill()
        raise AssertionError(process.communicate()[1].decode())
    return info


@pytest.fixture(scope="module")
def second_agent(platform: RunningPlatform, tmp_path_factory: pytest.TempPathFactory) -> Any:
    home = tmp_path_factory.mktemp("agent2")
    token = cli_json(platform.home, "host", "join-token", "create", "--name", "second-host")["token"]
    process = start_agent(platform, home, token)
    info = wait_ready(home, process)
    yield {"home": home, "info": info, "token": token, "process": process}
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)


def test_join_token_is_single_use(platform: RunningPlatform, second_agent: dict[str, Any], tmp_path: Path) -> None:
    again = start_agent(platform, tmp_path / "third", second_agent["token"])
    _, stderr = again.communicate(timeout=60)
    assert again.returncode != 0 and b"InvalidJoinToken" in stderr
    hosts = cli_json(platform.home, "host", "list")
    assert "second-host" in [h["name"] for h in hosts]
    assert len({h["hostId"] for h in hosts}) == len(hosts) >= 2


def test_agent_restarts_without_a_token(platform: RunningPlatform, tmp_path: Path) -> None:
    token = cli_json(platform.home, "host", "join-token", "create")["token"]
    home = tmp_path / "restart"
    first = start_agent(platform, home, token)
    info = wait_ready(home, first)
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=30) == 0
    second = start_agent(platform, home, None)
    try:
        assert wait_ready(home, second)["hostId"] == info["hostId"]
        assert (home / "host-key.pem").stat().st_mode & 0o777 == 0o600
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)


def test_workload_on_the_second_host_and_managed_identity_automation(
    platform: RunningPlatform, second_agent: dict[str, Any]
) -> None:
    home = platform.home
    cli_json(home, "group", "create", "-n", "agent2-rg", "-l", "westus")
    app = cli_json(home, "webapp", "create", "-g", "agent2-rg", "-n", "agent2-app", "--assign-identity", "[system]")
    group_id = f"/subscriptions/{platform.endpoints['subscription_id']}/resourceGroups/agent2-rg"
    cli_json(
        home,
        "role",
        "assignment",
        "create",
        "--assignee",
        app["identity"]["principalId"],
        "--role",
        "Contributor",
        "--scope",
        group_id,
    )
    script = (
        "import os\n"
        "from azure.identity import ManagedIdentityCredential\n"
        "from azure.mgmt.msi import ManagedServiceIdentityClient\n"
        f"c = ManagedServiceIdentityClient(ManagedIdentityCredential(), '{platform.endpoints['subscription_id']}',"
        f" base_url='{platform.endpoints['arm']}')\n"
        "u = c.user_assigned_identities.create_or_update('agent2-rg', 'made-by-an-app', {'location': 'westus'})\n"
        "print('CREATED', u.principal_id, os.environ['IDENTITY_ENDPOINT'])\n"
        "try:\n"
        "    c.user_assigned_identities.create_or_update('mi-rg-elsewhere', 'nope', {'location': 'westus'})\n"
        "except Exception as e:\n"
        "    print('DENIED', getattr(e, 'status_code', None))\n"
    )
    result = run_cli(
        home,
        "webapp",
        "run",
        "-g",
        "agent2-rg",
        "-n",
        "agent2-app",
        "--agent-home",
        str(second_agent["home"]),
        "--",
        sys.executable,
        "-c",
        script,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "CREATED" in result.stdout and second_agent["info"]["url"] in result.stdout
    assert "DENIED 403" in result.stdout
    assert cli_json(home, "identity", "show", "-g", "agent2-rg", "-n", "made-by-an-app")["principalId"]


def test_agent_refuses_unplaced_workloads(platform: RunningPlatform, second_agent: dict[str, Any]) -> None:
    """Placement is checked by the agent too: a workload the control plane never placed here gets nothing."""
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(second_agent["info"]["socket"])
    request = {
        "kind": "appservice",
        "resourceId": "/subscriptions/x/resourceGroups/y/providers/Microsoft.Web/sites/z",
        "argv": ["true"],
        "env": {},
        "cwd": "/",
    }
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        socket.send_fds(sock, [json.dumps(request).encode()], [devnull, devnull, devnull])
        reply = json.loads(sock.recv(4096).decode().splitlines()[0])
    finally:
        os.close(devnull)
        sock.close()
    assert "not placed on this host" in reply["error"]


def alive(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def test_workloads_do_not_outlive_their_agent(
    platform: RunningPlatform, tmp_path: Path, workload_folder: Path
) -> None:
    import time

    token = cli_json(platform.home, "host", "join-token", "create")["token"]
    home = tmp_path / "short-lived"
    agent = start_agent(platform, home, token)
    wait_ready(home, agent)
    cli_json(platform.home, "group", "create", "-n", "outlive-rg", "-l", "westus")
    cli_json(platform.home, "webapp", "create", "-g", "outlive-rg", "-n", "outlive-app")
    pid_file = workload_folder / "pid"  # written by the workload, under its own uid
    runner = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lanyard",
            "--home",
            str(platform.home),
            "webapp",
            "run",
            "-g",
            "outlive-rg",
            "-n",
            "outlive-app",
            "--agent-home",
            str(home),
            "--",
            "sh",
            "-c",
            f"echo $$ > {pid_file}; exec sleep 600",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not (pid_file.exists() and pid_file.read_text().strip()):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        workload = int(pid_file.read_text())
        os.kill(workload, 0)  # alive
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=30) == 0
        deadline = time.monotonic() + 10
        while alive(workload):
            assert time.monotonic() < deadline, "the workload outlived its agent"
            time.sleep(0.05)
    finally:
        runner.kill()
        if agent.poll() is None:
            agent.kill()
