"""Start `lanyard up` on the server core and enrol the benchmark's apps through its CLI.

Contract relied on: `lanyard up --home H --port 0` runs in the foreground until SIGTERM and writes
H/endpoints.json once ready; `lanyard --home H ad sp create-for-rbac --name N [--create-cert]`
prints az-shaped JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchkit.harness import REPO_DIR, Server, wait_http, wait_until
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


def start_lanyard(home: Path, logdir: Path) -> Lanyard:
    server = Server(
        "lanyard", [str(lanyard_binary()), "up", "--home", str(home), "--port", "0"], logdir / "lanyard.log"
    ).start()
    try:
        endpoints = _wait_endpoints(home / "endpoints.json", server)
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


def _wait_endpoints(path: Path, server: Server) -> dict[str, Any]:
    def written() -> bool:
        if not server.alive():
            raise CheckFailed(f"lanyard up exited before it was ready:\n{server.log_tail()}")
        return path.exists()

    try:
        wait_until(written, READY_TIMEOUT_S, str(path))
        # The file may be observed mid-write; a short retry loop covers that.
        endpoints: dict[str, Any] = {}

        def parsed() -> bool:
            endpoints.update(_read_json(path))
            return bool(endpoints)

        wait_until(parsed, 5, f"{path} to parse")
    except TimeoutError as exc:
        raise CheckFailed(f"lanyard up never became ready: {exc}\n{server.log_tail()}") from exc
    missing = {"tenant_id", "authority", "ca_cert", "admin"} - set(endpoints)
    if missing:
        raise CheckFailed(f"endpoints.json lacks {sorted(missing)}")
    return endpoints


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _create_sp(home: Path, name: str, cert: bool) -> dict[str, Any]:
    cmd = [str(lanyard_binary()), "--home", str(home), "ad", "sp", "create-for-rbac", "--name", name]
    if cert:
        cmd.append("--create-cert")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise CheckFailed(f"{' '.join(cmd[1:])} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    app = _first_json_object(done.stdout)
    wanted = {"appId", "fileWithCertAndPrivateKey"} if cert else {"appId", "password"}
    if not wanted <= set(app):
        raise CheckFailed(f"create-for-rbac printed {sorted(app)}, expected {sorted(wanted)}")
    return app


def _first_json_object(text: str) -> dict[str, Any]:
    """Tolerate log lines around the JSON the CLI prints: decode from each '{' until one parses."""
    decoder = json.JSONDecoder()
    for start in (i for i, ch in enumerate(text) if ch == "{"):
        try:
            value, _ = decoder.raw_decode(text[start:])
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    raise CheckFailed(f"create-for-rbac printed no JSON object: {text[:300]!r}")
