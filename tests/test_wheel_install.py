"""The package as a user gets it: the wheel built from this tree, installed with `pip install WHEEL[sdk]`
into a fresh virtual environment, and its own `lanyard` command driving a platform through
`up --detach`, `status`, `doctor`, `logs` and `down`. Nothing here imports the checkout: a module
missing from the wheel, a migration left out of its package data or a broken entry point fails it.

One slow test (a wheel build, a venv and the dependencies from PyPI: about a minute), marked `wheel`
so that `-m "not wheel"` leaves it out locally; CI runs it. Without PyPI it skips, except under CI=true."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lanyard.server.homelock import running_pid
from tests.conftest import machine_trust_env, vault_names_resolve

REPO = Path(__file__).resolve().parent.parent
# What pip prints when it cannot reach an index (DNS, refused, proxy, timeouts, nothing to download).
OFFLINE_SIGNS = (
    "NewConnectionError",
    "Max retries exceeded",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "Connection refused",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "ProxyError",
    "No matching distribution found",
)

pytestmark = [pytest.mark.wheel, pytest.mark.timeout(600)]


def required() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1")


@dataclass
class Installed:
    venv: Path
    wheel: Path

    @property
    def lanyard(self) -> str:
        return str(self.venv / "bin" / "lanyard")

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")


def user_env(venv: Path, **extra: str) -> dict[str, str]:
    """A shell with the venv first on PATH and nothing of this test run's: no LANYARD_* settings, no
    PYTHONPATH or VIRTUAL_ENV that could put the checkout's modules in front of the installed ones."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LANYARD_", "PYTEST_")) and k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    }
    env = machine_trust_env(env)  # pip reaches PyPI with the machine's trust, not a test platform's CA
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    env.update(extra)
    return env


def run(argv: list[str], env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    # cwd "/": not the checkout, whose src/ a `python -m` would otherwise find first
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, cwd="/")


def offline_or_fail(what: str, result: subprocess.CompletedProcess[str]) -> None:
    output = result.stdout + result.stderr
    telling = [line.strip() for line in output.splitlines() if any(sign in line for sign in OFFLINE_SIGNS)]
    if telling and not required():
        pytest.skip(f"{what}: pip cannot reach the package index here ({telling[-1][:200]})")
    pytest.fail(f"{what} failed ({result.returncode}):\n{output[-4000:]}", pytrace=False)


def workload_python() -> str:
    """An interpreter every uid can run: `doctor` runs a workload under a uid of its own with the venv's."""
    found = subprocess.run([str(REPO / "scripts" / "workload-python")], capture_output=True, text=True, check=True)
    return found.stdout.strip()


@pytest.fixture(scope="module")
def installed() -> Iterator[Installed]:
    # Under /tmp and 0755, not pytest's 0700 tmp_path: a workload under another uid runs this venv's python.
    base = Path(tempfile.mkdtemp(prefix="lanyard-wheel-", dir="/tmp"))
    base.chmod(0o755)
    try:
        # Built from a copy of the sources, so that no build/ or stale egg-info of the checkout takes part.
        source = base / "source"
        ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
        shutil.copytree(REPO / "src", source / "src", ignore=ignore)
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(REPO / name, source / name)
        dist = base / "dist"
        env = user_env(base / "venv")
        built = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(source)], env)
        if built.returncode != 0:
            offline_or_fail("pip wheel", built)
        wheels = sorted(dist.glob("lanyard-*.whl"))
        assert len(wheels) == 1, wheels
        venv = base / "venv"
        made = run([workload_python(), "-m", "venv", str(venv)], env)
        assert made.returncode == 0, made.stderr
        got = run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", f"{wheels[0]}[sdk]"], env, timeout=480)
        if got.returncode != 0:
            offline_or_fail("pip install WHEEL[sdk]", got)
        yield Installed(venv=venv, wheel=wheels[0])
    finally:
        shutil.rmtree(base, ignore_errors=True)


def stop_home(home: Path) -> None:
    """Whatever the test left running on its home goes, whether or not it got as far as `down`."""
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


def test_the_installed_wheel_runs_up_status_doctor_logs_down(installed: Installed, home: Path) -> None:
    if not vault_names_resolve() and not required():
        pytest.skip(
            "*.vault.lanyard.localhost does not resolve here (doctor checks it): run scripts/ensure-dns as root"
        )
    env = user_env(installed.venv)

    # The command on PATH is the venv's, and the package it runs is the installed one, plugin included.
    where = run(
        [
            installed.python,
            "-c",
            "import importlib.metadata as m, json, lanyard; "
            "print(json.dumps([lanyard.__file__, m.version('lanyard'), "
            "[e.value for e in m.entry_points(group='pytest11') if e.name == 'lanyard'], "
            "[e.value for e in m.entry_points(group='console_scripts') if e.name == 'lanyard']]))",
        ],
        env,
    )
    assert where.returncode == 0, where.stderr
    module_file, version, plugins, scripts = json.loads(where.stdout)
    assert Path(module_file).is_relative_to(installed.venv) and not Path(module_file).is_relative_to(REPO)
    assert installed.wheel.name.startswith(f"lanyard-{version}-")
    assert plugins == ["lanyard.testing.plugin"] and scripts == ["lanyard.cli.main:main"]
    assert shutil.which("lanyard", path=env["PATH"]) == installed.lanyard

    lanyard = [installed.lanyard, "--home", str(home)]
    started = run([*lanyard, "up", "--detach", "--port", "0"], env)
    assert started.returncode == 0, started.stdout + started.stderr
    endpoints = json.loads((home / "endpoints.json").read_text())
    pid = endpoints["pid"]
    assert started.stdout.startswith(f"Lanyard is ready (pid {pid}, home {home})"), started.stdout
    assert endpoints["authority"] in started.stdout and f"lanyard --home {home} down" in started.stdout
    assert "lanyard up: creating the tenant" in started.stderr
    # The detached platform itself runs from the venv.
    assert Path(f"/proc/{pid}/exe").resolve() == Path(installed.python).resolve()

    status = run([*lanyard, "status"], env)
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert shown["running"] is True and shown["ready"] is True and shown["pid"] == pid
    assert shown["version"] == version and shown["authority"] == endpoints["authority"]
    assert [n["live"] for n in shown["nodes"]] == [True] and shown["agent"]["hostId"]

    bundle = endpoints["ca_bundle"]
    trusting = user_env(
        installed.venv,
        REQUESTS_CA_BUNDLE=bundle,
        SSL_CERT_FILE=bundle,
        CURL_CA_BUNDLE=bundle,
        NODE_EXTRA_CA_CERTS=endpoints["ca_cert"],
    )
    checked = run([*lanyard, "doctor", "-o", "json"], trusting, timeout=300)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    rows = {row["check"]: row for row in json.loads(checked.stdout)}
    optional = {"node trusts the CA": "node", "curl trusts the CA": "curl"}
    for name, row in rows.items():
        absent = name in optional and shutil.which(optional[name]) is None
        assert row["status"] == ("skip" if absent else "ok"), row
    # The SDK extra is there: the official clients got a token from the directory, through the agent
    # for a workload, and read a secret.
    for name in ("azure-identity token (directory)", "workload token (agent)", "vault read (SecretClient)"):
        assert rows[name]["status"] == "ok", rows[name]
    assert endpoints["admin"]["client_secret"] not in checked.stdout + checked.stderr

    logs = run([*lanyard, "logs", "-n", "200"], env)
    assert logs.returncode == 0, logs.stderr
    assert f"lanyard is up at {endpoints['authority']}" in logs.stdout

    stopped = run([*lanyard, "down"], env)
    assert stopped.returncode == 0, stopped.stderr
    assert json.loads(stopped.stdout) == {"stopped": True, "pid": pid}
    after = run([*lanyard, "status"], env)
    assert after.returncode == 3 and json.loads(after.stdout)["running"] is False
    assert running_pid(home) is None and not (home / "endpoints.json").exists()
