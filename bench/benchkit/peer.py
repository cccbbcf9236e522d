"""Node `oidc-provider`, installed from the npm registry into bench/.cache (gitignored), run as the
side-by-side peer for token minting (G3)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from benchkit.harness import CACHE_DIR, Server, free_port, log, self_signed_tls, wait_http
from benchkit.services import TokenService
from benchkit.tokens import ARM_SCOPE, CertCredential

OIDC_PROVIDER_SPEC = "oidc-provider@9"
NODE_DIR = CACHE_DIR / "node"
SCRIPTS = Path(__file__).resolve().parent / "node"
ARM_RESOURCE = "https://management.azure.com"


def node_binary() -> str | None:
    return shutil.which("node")


def _node_version(node: str) -> str:
    done = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=10, check=False)
    return done.stdout.strip() or "?"


def ensure_oidc_provider() -> tuple[Path | None, str]:
    """Install oidc-provider once into the cache; returns (path to its entry module, version or reason)."""
    package_dir = NODE_DIR / "node_modules" / "oidc-provider"
    if not (package_dir / "package.json").exists():
        if shutil.which("npm") is None:
            return None, "npm not found"
        NODE_DIR.mkdir(parents=True, exist_ok=True)
        if not (NODE_DIR / "package.json").exists():
            (NODE_DIR / "package.json").write_text('{"private": true}\n')
        log(f"installing {OIDC_PROVIDER_SPEC} into {NODE_DIR}")
        try:
            subprocess.run(
                ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", OIDC_PROVIDER_SPEC],
                cwd=NODE_DIR,
                capture_output=True,
                text=True,
                timeout=300,
                check=True,
            )
        except (subprocess.SubprocessError, OSError) as exc:
            return None, f"npm install {OIDC_PROVIDER_SPEC} failed: {exc}"
    meta = json.loads((package_dir / "package.json").read_text())
    return package_dir / meta.get("main", "lib/index.js"), str(meta.get("version", "?"))


@dataclass
class Peer:
    server: Server
    service: TokenService


def start_peer(module: Path, workdir: Path, logdir: Path) -> Peer:
    """Start oidc-provider over https on the server core, with one client per auth method."""
    node = node_binary()
    assert node is not None
    keys = workdir / "peer"
    tls_cert, tls_key = self_signed_tls(keys, "tls")
    _, signing_key = self_signed_tls(keys, "signing")
    client_cert, client_key = self_signed_tls(keys, "client")
    port = free_port()
    issuer = f"https://127.0.0.1:{port}"
    secret_client = ("bench-secret-client", "bench-secret-value-0123456789abcdef")
    config = {
        "module": str(module),
        "port": port,
        "issuer": issuer,
        "tls_cert": str(tls_cert),
        "tls_key": str(tls_key),
        "signing_key": str(signing_key),
        "resource": ARM_RESOURCE,
        "scope": ARM_SCOPE,
        "secret_client": {"client_id": secret_client[0], "client_secret": secret_client[1]},
        "jwt_client": {"client_id": "bench-jwt-client", "public_key": str(client_cert)},
    }
    config_path = keys / "config.json"
    config_path.write_text(json.dumps(config))
    # Production mode, as a deployed provider would run (Koa and oidc-provider skip dev-only work).
    env = {**os.environ, "NODE_ENV": "production"}
    server = Server(
        "oidc-provider",
        [node, str(SCRIPTS / "oidc_provider.mjs"), str(config_path)],
        logdir / "oidc-provider.log",
        env=env,
        cwd=keys,
    ).start()
    try:
        wait_http(f"{issuer}/.well-known/openid-configuration", 30, server)
    except Exception:
        server.stop()
        raise
    notes = [
        "oidc-provider: https, NODE_ENV=production, in-memory adapter with replay detection off "
        "(Lanyard does not reject a reused client-assertion jti either)"
    ]
    if "Unsupported runtime" in server.log_tail():
        notes.append(f"oidc-provider warns that node {_node_version(node)} is not a supported runtime")
    credential = CertCredential.from_pem("bench-jwt-client", client_cert.read_bytes() + client_key.read_bytes())
    service = TokenService(
        label="oidc-provider",
        token_endpoint=f"{issuer}/token",
        jwks_url=f"{issuer}/jwks",
        discovery_url=f"{issuer}/.well-known/openid-configuration",
        secret_client=secret_client,
        cert_client=credential,
        notes=notes,
    )
    return Peer(server, service)
