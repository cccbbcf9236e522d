"""The platform's lifecycle as a user drives it (`up --detach`, `status`, `logs`, `down`, `scripts/up`),
and the one-line errors for what goes wrong on the way: each provoked for real, its message checked."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lanyard.agent.main import wait_for_agent
from lanyard.server.homelock import running_pid
from tests.conftest import RunningPlatform, cli_json, machine_trust_env, run_cli, vault_names_resolve

REPO = Path(__file__).resolve().parent.parent


def lanyard(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lanyard", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


def stop_home(home: Path) -> None:
    """Whatever a test left running on its home goes, whether or not the test got as far as `down`."""
    pid = running_pid(home)
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while running_pid(home) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    if running_pid(home) is not None:
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "home"
    yield path
    stop_home(path)


def test_up_detach_status_logs_down(home: Path) -> None:
    started = run_cli(home, "up", "--detach", "--port", "0")
    endpoints = json.loads((home / "endpoints.json").read_text())
    pid = endpoints["pid"]
    assert running_pid(home) == pid != os.getpid()
    # The banner, on stdout: where it is, which tenant, how to point the CLI and the SDKs, how to stop it.
    banner = started.stdout
    assert banner.startswith(f"Lanyard is ready (pid {pid}, home {home})")
    for expected in (
        endpoints["authority"],
        endpoints["tenant_id"],
        f"https://<name>.{endpoints['vault_suffix']}",
        f"export LANYARD_HOME={home}",
        f"REQUESTS_CA_BUNDLE={endpoints['ca_bundle']} SSL_CERT_FILE={endpoints['ca_bundle']}",
        f"export AZURE_AUTHORITY_HOST={endpoints['authority']}",
        f"lanyard --home {home} down",
    ):
        assert expected in banner, expected
    assert "WARNING" not in banner and "lanyard is up at" not in started.stderr
    # A first start says what it is doing, on stderr.
    steps = (
        "a new platform in the database sqlite:///",
        "creating the tenant",
        "listening on",
        "starting the host agent",
    )
    for step in (*steps, f"the host agent for this machine joined (host {endpoints['agent']['hostId']})"):
        assert f"lanyard up: {step}" in started.stderr, step

    again = run_cli(home, "up", "--detach", "--port", "0", check=False)
    assert again.returncode == 1 and again.stdout == ""
    assert again.stderr.strip() == (
        f"ERROR: a Lanyard platform is already running on the home {home} (pid {pid}): "
        f"`lanyard --home {home} status` shows it, `lanyard --home {home} down` stops it"
    )
    assert running_pid(home) == pid

    status = cli_json(home, "status")
    assert status["running"] is True and status["ready"] is True and status["pid"] == pid
    assert status["authority"] == endpoints["authority"] and status["agent"]["hostId"]
    assert "lanyard is up at" in run_cli(home, "logs", "-n", "200").stdout
    assert "lanyard up: listening on" in (home / "logs" / "console.log").read_text()

    assert cli_json(home, "down") == {"stopped": True, "pid": pid}
    after = run_cli(home, "status", check=False)
    assert after.returncode == 3 and json.loads(after.stdout)["running"] is False
    assert exited(pid)


def exited(pid: int) -> bool:
    """Gone, or a zombie its new parent (init, once `up --detach` returned) has yet to reap."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state == "Z":
            return True
        time.sleep(0.1)
    return False


def test_up_detach_says_why_it_died(home: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        died = run_cli(home, "up", "--detach", "--port", str(port), "--no-agent", check=False)
    finally:
        taken.close()
    assert died.returncode == 1 and died.stdout == ""
    # What it said on the way is relayed as it came; then one line of why, with the console log's last lines.
    first, *rest = died.stderr[died.stderr.index("ERROR: lanyard up (pid ") :].splitlines()
    assert first.endswith(f"exited with code 1 before it was ready; the last lines of {home}/logs/console.log:")
    assert any(f"cannot listen on port {port}" in line for line in rest), died.stderr
    assert running_pid(home) is None


def test_up_detach_gives_up_after_wait(home: Path) -> None:
    late = run_cli(home, "up", "--detach", "--port", "0", "--no-agent", "--wait", "1", check=False)
    assert late.returncode == 1
    assert "was not ready within 1 s, so it was stopped (a slower machine may need --wait)" in late.stderr
    assert running_pid(home) is None and not (home / "endpoints.json").exists()


def test_unresolvable_vault_host_and_a_platform_that_is_gone(home: Path) -> None:
    # .invalid never resolves (RFC 6761): vault URLs of this platform cannot be reached by name.
    zone = {"LANYARD_DNS_ZONE": "lanyard.invalid"}
    assert lanyard("--home", str(home), "up", "--detach", "--port", "0", "--no-agent", env=zone).returncode == 0
    shown = run_cli(home, "keyvault", "secret", "show", "--vault-name", "nosuch", "-n", "x", check=False)
    assert shown.returncode == 1
    assert shown.stderr.strip() == (
        "ERROR: the vault host nosuch.vault.lanyard.invalid does not resolve on this machine: point a wildcard "
        "DNS record *.vault.lanyard.invalid at the platform (the zone is $LANYARD_DNS_ZONE, default lanyard.localhost)"
    )

    # Killed outright, it leaves endpoints.json behind: the CLI says the platform is gone, not ConnectError.
    pid = json.loads((home / "endpoints.json").read_text())["pid"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while running_pid(home) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (home / "endpoints.json").exists()
    for command in (("group", "list"), ("keyvault", "secret", "show", "--vault-name", "v", "-n", "x")):
        gone = run_cli(home, *command, check=False)
        assert gone.returncode == 1
        assert gone.stderr.strip() == (
            f"ERROR: the platform of the home {home} is not running (pid {pid} is gone; its endpoints.json was left "
            f"behind): start it with `lanyard --home {home} up` (or `up --detach`)"
        )


def test_no_platform_on_the_home(tmp_path: Path) -> None:
    missing = run_cli(tmp_path / "empty", "group", "list", check=False)
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        f"ERROR: no platform is running on the home {tmp_path / 'empty'} (no endpoints.json there): start it with "
        f"`lanyard --home {tmp_path / 'empty'} up --detach`, or pass the home `lanyard up` used (--home or $LANYARD_HOME)"
    )


def test_home_forms_and_a_relative_home(tmp_path: Path) -> None:
    for form in (["--home", "rel"], ["--home=rel"]):
        shown = lanyard(*form, "status", cwd=tmp_path)
        assert shown.returncode == 3 and json.loads(shown.stdout)["home"] == str(tmp_path / "rel"), form
    relative = lanyard("--home", "rel", "status", env={"LANYARD_HOME": "ignored"}, cwd=tmp_path)
    assert json.loads(relative.stdout)["home"] == str(tmp_path / "rel")
    from_env = lanyard("status", env={"LANYARD_HOME": "envrel"}, cwd=tmp_path)
    assert json.loads(from_env.stdout)["home"] == str(tmp_path / "envrel")


@pytest.mark.skipif(not vault_names_resolve(), reason="the demo reads a vault: run scripts/ensure-dns as root")
def test_scripts_up_with_home_equals_relative_detached_runs_the_demo(tmp_path: Path) -> None:
    home = tmp_path / "rel"
    try:
        result = subprocess.run(
            [str(REPO / "scripts" / "up"), "--home=rel", "--port", "0", "--detach"],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
            env=machine_trust_env({k: v for k, v in os.environ.items() if k != "LANYARD_HOME"}),
        )
        assert result.returncode == 0, result.stderr
        assert f"Lanyard is ready (pid {running_pid(home)}, home {home})" in result.stdout
        assert "[app] read secret 'db-password'" in result.stdout, result.stdout + result.stderr
        assert not (REPO / "rel").exists()
    finally:
        stop_home(home)


def test_agent_without_home_uses_its_default(tmp_path: Path) -> None:
    ran = lanyard(
        "agent", "--server", "https://127.0.0.1:1", "--ca", str(tmp_path / "ca.pem"), env={"HOME": str(tmp_path)}
    )
    assert ran.returncode == 1 and "Missing option" not in ran.stderr
    assert ran.stderr.strip().endswith("this agent has not joined a platform yet: pass --join TOKEN and --server URL")
    assert (tmp_path / ".lanyard-agent").is_dir()


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="an agent under another uid needs root and setpriv"
)
def test_vm_run_netns_on_an_agent_that_is_not_root(platform: RunningPlatform) -> None:
    folder = Path(tempfile.mkdtemp(prefix="lanyard-nonroot-agent-"))
    try:
        for name in ("ca.pem", "ca-bundle.pem"):
            shutil.copy(platform.home / "tls" / name, folder / name)
            (folder / name).chmod(0o644)  # the CA is public; the copy keeps the home's 0600
        agent_home = folder / "agent"
        agent_home.mkdir()
        shutil.chown(agent_home, 65534, 65534)
        folder.chmod(0o755)
        token = cli_json(platform.home, "host", "join-token", "create", "--name", "nonroot-host")["token"]
        argv = [sys.executable, "-m", "lanyard", "agent", "--home", str(agent_home), "--server", platform.authority]
        argv += ["--ca", str(folder / "ca.pem"), "--ca-bundle", str(folder / "ca-bundle.pem"), "--name", "nonroot-host"]
        with open(folder / "agent.err", "wb") as err:
            agent = subprocess.Popen(
                ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", *argv],
                stdout=subprocess.DEVNULL,
                stderr=err,
                env={**os.environ, "LANYARD_JOIN_TOKEN": token, "HOME": str(folder)},
            )
        try:
            info = wait_for_agent(agent_home, agent.pid, timeout=60)
            assert info is not None, (folder / "agent.err").read_text()[-3000:]
            run_cli(platform.home, "group", "create", "-n", "devx-rg", "-l", "westus")
            run_cli(platform.home, "vm", "create", "-g", "devx-rg", "-n", "devx-vm", "--assign-identity", "[system]")
            ran = run_cli(
                platform.home,
                *("vm", "run", "-g", "devx-rg", "-n", "devx-vm", "--agent-home", str(agent_home), "--netns"),
                *("--", "true"),
                check=False,
            )
        finally:
            agent.send_signal(signal.SIGTERM)
            agent.wait(timeout=30)
        assert ran.returncode == 1
        assert ran.stderr.strip().splitlines()[-1] == (
            "ERROR: --netns needs root or CAP_NET_ADMIN (with CAP_SYS_ADMIN, for `ip netns add`), and this host "
            "agent runs as uid 65534 without them: start the platform as root (sudo lanyard up), or drop --netns "
            "(the VM then finds its metadata service through AZURE_POD_IDENTITY_AUTHORITY_HOST)"
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
