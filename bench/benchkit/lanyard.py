"""Start `lanyard up` and drive its CLI: enrol the benchmark's apps, create identities and workloads.

Contract relied on: `lanyard up --home H --port 0` runs in the foreground until SIGTERM and writes
H/endpoints.json (with its pid, and an `agent` entry for the host agent it runs as a child) once
ready; `lanyard --home H <az-shaped command>` prints az-shaped JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchkit.harness import REPO_DIR, SERVER_CORE, Server, run_queue_wait_s, wait_http
from benchkit.services import TokenService
from benchkit.tokens import CertCredential, CheckFailed

CLI_DIR = REPO_DIR / "src" / "lanyard" / "cli"
READY_TIMEOUT_S = 60.0


def lanyard_binary() -> Path:
    """$LANYARD_BIN if set (another build or a stand-in), else the entry point beside the running
    interpreter (the repo's venv), else the repo's venv."""
    if os.environ.get("LANYARD_BIN"):
        return Path(os.environ["LANYARD_BIN"])
    beside = Path(sys.executable).parent / "lanyard"
    return beside if beside.exists() else REPO_DIR / ".venv" / "bin" / "lanyard"


def unavailable_reason() -> str | None:
    """Lanyard counts as 'not built yet' (skip, don't fail) until its CLI can enrol an app."""
    if not lanyard_binary().exists():
        return f"{lanyard_binary()} not found (is the package installed in the venv?)"
    if os.environ.get("LANYARD_BIN"):
        return None
    sources = CLI_DIR.glob("*.py")
    if not any("create-for-rbac" in path.read_text(errors="replace") for path in sources):
        return f"{CLI_DIR} has no create-for-rbac yet"
    return None


@dataclass
class Lanyard:
    server: Server
    endpoints: dict[str, Any]
    service: TokenService

    @property
    def ca(self) -> str:
        """The CA that issued the server certificate: what a client must trust to verify it."""
        return str(self.endpoints.get("ca_cert") or self.endpoints["ca_bundle"])


@dataclass(frozen=True)
class StartTiming:
    """Seconds from starting `lanyard up` to each milestone (G9). The two inner ones split the
    total into the server's own boot and the agent's; None when not observed (too fast to see)."""

    ready_s: float  # endpoints.json names this process and its agent
    agent_spawned_s: float | None  # the agent child process exists: the server is listening
    agent_ready_s: float | None  # the agent wrote its agent.json
    # Time the server and the agent spent runnable but without a CPU while starting: other work on
    # a shared machine, not the start-up's own.
    run_queue_wait_s: float = 0.0


def start_platform(
    home: Path,
    logdir: Path,
    core: int | str = SERVER_CORE,
    require_agent: bool = True,
    log_name: str = "lanyard",
    env: dict[str, str] | None = None,
) -> tuple[Server, dict[str, Any], StartTiming]:
    """`lanyard up` on `core` (the agent it forks inherits it), waited for until ready."""
    # A file left by a process that died uncleanly must never look like readiness.
    (home / "endpoints.json").unlink(missing_ok=True)
    cmd = [str(lanyard_binary()), "up", "--home", str(home), "--port", "0"]
    server = Server(
        "lanyard", cmd, logdir / f"{log_name}.log", core=core, env={**os.environ, **env} if env else None
    )
    started = time.perf_counter()
    server.start()
    try:
        endpoints, timing = _watch_start(home, server, started, require_agent)
    except Exception:
        server.stop()
        raise
    missing = {"tenant_id", "authority", "ca_cert", "admin", "pid"} - set(endpoints)
    if missing:
        server.stop()
        raise CheckFailed(f"endpoints.json lacks {sorted(missing)}")
    return server, endpoints, timing


def start_lanyard(
    home: Path, logdir: Path, env: dict[str, str] | None = None, log_name: str = "lanyard"
) -> Lanyard:
    server, endpoints, _ = start_platform(home, logdir, require_agent=False, log_name=log_name, env=env)
    try:
        base = f"{endpoints['authority'].rstrip('/')}/{endpoints['tenant_id']}"
        wait_http(f"{base}/v2.0/.well-known/openid-configuration", READY_TIMEOUT_S, server)
        cert_app = _create_sp(home, "bench-cert", cert=True)
        secret_app = _create_sp(home, "bench-secret", cert=False)
    except Exception:
        server.stop()
        raise
    credential = CertCredential.from_pem(cert_app["appId"], Path(cert_app["fileWithCertAndPrivateKey"]).read_bytes())
    service = TokenService(
        label="lanyard",
        token_endpoint=f"{base}/oauth2/v2.0/token",
        jwks_url=f"{base}/discovery/v2.0/keys",
        discovery_url=f"{base}/v2.0/.well-known/openid-configuration",
        secret_client=(secret_app["appId"], secret_app["password"]),
        cert_client=credential,
    )
    return Lanyard(server, endpoints, service)


def _watch_start(home: Path, server: Server, started: float, require_agent: bool) -> tuple[dict[str, Any], StartTiming]:
    """Poll every 2 ms (a small cost next to a ~1 s start) for readiness and the milestones on the
    way. The endpoints file is written atomically, but it must name this process: a stale one
    from an earlier start of the same home does not count."""
    spawned: float | None = None
    agent_ready: float | None = None
    agent_file = home / "agent" / "agent.json"  # written by the agent itself; only for the breakdown
    while time.perf_counter() - started < READY_TIMEOUT_S:
        if not server.alive():
            raise CheckFailed(f"lanyard up exited before it was ready:\n{server.log_tail()}")
        if spawned is None and _children(server.pid):
            spawned = time.perf_counter() - started
        if agent_ready is None and agent_file.exists():
            agent_ready = time.perf_counter() - started
        endpoints = _read_json(home / "endpoints.json")
        if endpoints.get("pid") == server.pid and ("agent" in endpoints or not require_agent):
            ready = time.perf_counter() - started
            waited = run_queue_wait_s(server.pid) + run_queue_wait_s(int(endpoints.get("agent", {}).get("pid", 0)))
            return endpoints, StartTiming(ready, spawned, agent_ready, waited)
        time.sleep(0.002)
    raise CheckFailed(f"lanyard up was not ready within {READY_TIMEOUT_S:.0f}s:\n{server.log_tail()}")


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def cli(home: Path, *args: str) -> dict[str, Any]:
    """Run one CLI command against this home and return the JSON object it prints."""
    cmd = [str(lanyard_binary()), "--home", str(home), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise CheckFailed(f"lanyard {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return _first_json_object(done.stdout, " ".join(args[:3]))


def _create_sp(home: Path, name: str, cert: bool) -> dict[str, Any]:
    app = cli(home, "ad", "sp", "create-for-rbac", "--name", name, *(["--create-cert"] if cert else []))
    wanted = {"appId", "fileWithCertAndPrivateKey"} if cert else {"appId", "password"}
    if not wanted <= set(app):
        raise CheckFailed(f"create-for-rbac printed {sorted(app)}, expected {sorted(wanted)}")
    return app


def _first_json_object(text: str, what: str) -> dict[str, Any]:
    """Tolerate log lines around the JSON the CLI prints: decode from each '{' until one parses."""
    decoder = json.JSONDecoder()
    for start in (i for i, ch in enumerate(text) if ch == "{"):
        try:
            value, _ = decoder.raw_decode(text[start:])
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    raise CheckFailed(f"{what} printed no JSON object: {text[:300]!r}")
