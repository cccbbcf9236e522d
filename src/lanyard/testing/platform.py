"""A real platform for a test session: `lanyard up --home DIR --port 0` in a child process, ready once
its endpoints.json names that child; apps and vaults made on it; stopped with SIGTERM at the end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from lanyard.testing import workload
from lanyard.testing.resources import Resources, Site, Vault, unique_name

STARTUP_TIMEOUT = 90.0
UID_BASE = 910_000_000  # above the agent's default range (900000000-900099999)
UID_SLICE = 1_000
MAX_HOME_LENGTH = 80  # HOME/agent/control.sock must fit a unix socket address (107 bytes)


class PlatformError(RuntimeError):
    """The platform did not start: carries the tail of its log."""


@dataclass
class App:
    """A web app with a system-assigned identity, placed on the platform's own host agent."""

    platform: LanyardPlatform
    site: Site

    @property
    def name(self) -> str:
        return self.site.name

    @property
    def resource_group(self) -> str:
        return self.site.group

    @property
    def principal_id(self) -> str:
        return self.site.principal_id

    @property
    def id(self) -> str:
        return self.site.id

    @property
    def target(self) -> list[str]:
        return ["webapp", "run", "-g", self.site.group, "-n", self.site.name]

    def run(
        self,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        input: bytes | str | None = None,
        timeout: float = 180.0,
        check: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """COMMAND as this app; stdout and stderr as text. `check=True` raises on a non-zero exit."""
        return workload.run_command(
            self.platform.home, self.target, command, env=env, cwd=cwd, input=input, timeout=timeout, check=check
        )

    def call(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """func(*args, **kwargs) as this app (a top-level function; arguments pickled, the return value
        JSON); an exception inside comes back as WorkloadError with the app's traceback."""
        return workload.call_function(self.platform.home, self.target, func, args, kwargs)


@dataclass
class LanyardVault:
    """A vault with one secret; `readers` may get secrets."""

    vault: Vault
    secret_name: str
    secret_value: str

    @property
    def name(self) -> str:
        return self.vault.name

    @property
    def url(self) -> str:
        return self.vault.uri

    @property
    def id(self) -> str:
        return self.vault.id


@dataclass
class LanyardPlatform:
    home: Path
    process: subprocess.Popen[bytes]
    endpoints: dict[str, Any] = field(default_factory=dict)
    _resources: Resources | None = field(default=None, repr=False)

    @property
    def authority(self) -> str:
        return str(self.endpoints["authority"])

    @property
    def tenant_id(self) -> str:
        return str(self.endpoints["tenant_id"])

    @property
    def subscription_id(self) -> str:
        return str(self.endpoints["subscription_id"])

    @property
    def ca_cert(self) -> str:
        return str(self.endpoints["ca_cert"])

    @property
    def ca_bundle(self) -> str:
        """Public roots plus the platform CA: what REQUESTS_CA_BUNDLE / SSL_CERT_FILE should name."""
        return str(self.endpoints["ca_bundle"])

    @property
    def env(self) -> dict[str, str]:
        """For code run outside a workload: the CLI's home and the SDKs' trust."""
        return {"LANYARD_HOME": str(self.home), "REQUESTS_CA_BUNDLE": self.ca_bundle, "SSL_CERT_FILE": self.ca_bundle}

    @property
    def resources(self) -> Resources:
        if self._resources is None:
            self._resources = Resources(self.home)
        return self._resources

    def cli(self, *args: str, check: bool = True) -> Any:
        """`lanyard --home HOME ARGS...`; its JSON output (None when it printed nothing)."""
        result = subprocess.run(
            [sys.executable, "-m", "lanyard", "--home", str(self.home), *args],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"lanyard {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        return json.loads(result.stdout) if result.stdout.strip() else None

    def create_app(self, name: str | None = None, resource_group: str | None = None) -> App:
        group = resource_group or unique_name("rg")
        self.resources.create_group(group)
        return App(self, self.resources.create_site(group, name or unique_name("app")))

    def create_vault(
        self,
        *,
        readers: Sequence[App | str] = (),
        secret_name: str = "db-password",  # noqa: S107 - a name, not a value
        secret_value: str | None = None,
        name: str | None = None,
        resource_group: str | None = None,
    ) -> LanyardVault:
        import secrets as random

        group = resource_group or unique_name("rg")
        self.resources.create_group(group)
        oids = tuple(r.principal_id if isinstance(r, App) else r for r in readers)
        vault = self.resources.create_vault(group, name or unique_name("kv"), oids)
        value = secret_value if secret_value is not None else random.token_urlsafe(24)
        self.resources.set_secret(vault, secret_name, value)
        return LanyardVault(vault, secret_name, value)

    def delete(self, resource: App | LanyardVault) -> None:
        group = resource.resource_group if isinstance(resource, App) else resource.vault.group
        self.resources.delete_group(group)

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def workload_uids(worker: str | None) -> str:
    """A uid range of this session's own, so two platforms on one machine (xdist workers, or two
    pytest runs) never hand the same uid to two different apps."""
    index = int(worker[2:]) if worker and worker.startswith("gw") and worker[2:].isdigit() else None
    slot = (index + 1) if index is not None else 1_000 + os.getpid() % 100_000
    first = UID_BASE + slot * UID_SLICE
    return f"{first}-{first + UID_SLICE - 1}"


def start(
    home: Path,
    *extra: str,
    env: Mapping[str, str] | None = None,
    timeout: float = STARTUP_TIMEOUT,
    log_name: str = "pytest-platform.log",
    port: int = 0,
    launcher: Sequence[str] = (),
) -> LanyardPlatform:
    """Start `lanyard up` on `home` (created, made private) and wait until it serves. `launcher` runs the
    command through another (e.g. `ip netns exec NS`, which execs it, so the pid is still lanyard's)."""
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o700)
    child_env = {**os.environ, **(env or {})}
    if os.geteuid() == 0 and "LANYARD_WORKLOAD_UIDS" not in child_env:
        child_env["LANYARD_WORKLOAD_UIDS"] = workload_uids(child_env.get("PYTEST_XDIST_WORKER"))
    log_path = home / log_name
    log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 - the child writes to it for its whole life
    try:
        process = subprocess.Popen(
            [*launcher, sys.executable, "-m", "lanyard", "up", "--home", str(home), "--port", str(port), *extra],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_env,
        )
    finally:
        log.close()
    platform = LanyardPlatform(home, process)
    endpoints = home / "endpoints.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise PlatformError(f"lanyard up exited with {process.returncode}:\n{_tail(log_path)}")
        try:
            document = json.loads(endpoints.read_text())
        except (OSError, ValueError):
            document = {}  # not written yet, or being replaced
        if document.get("pid") == process.pid:
            platform.endpoints = document
            return platform
        time.sleep(0.05)
    platform.stop()
    raise PlatformError(f"lanyard up was not ready within {timeout:.0f} s:\n{_tail(log_path)}")


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
