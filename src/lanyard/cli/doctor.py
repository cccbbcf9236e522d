"""`lanyard doctor`: is this machine ready for apps, and does the platform of this home work end to
end? Each check is what an app or a developer does, with the official SDKs where there is one; each
failure names its fix. Exits 1 when any check fails."""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from lanyard.cli.output import default_output, print_result
from lanyard.config import DEFAULT_ZONE, load_settings
from lanyard.core.errors import ConfigError
from lanyard.server.homelock import running_pid

ARM_SCOPE = "https://management.azure.com/.default"
INSTALL_SDK = "pip install azure-identity azure-keyvault-secrets (or: pip install 'lanyard[sdk]')"
OK, FAIL, SKIP = "ok", "fail", "skip"
TIMEOUT = 15.0


@dataclass
class Check:
    check: str
    status: str
    detail: str
    fix: str = ""


def _first_line(exc: BaseException, limit: int = 240) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 1] + "…"


class Doctor:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.endpoints: dict[str, Any] | None = None
        self.checks: list[Check] = []
        self.dns_ok = False

    def add(self, check: str, status: str, detail: str, fix: str = "") -> Check:
        row = Check(check, status, detail, fix if status == FAIL else "")
        self.checks.append(row)
        return row

    # -- the platform ---------------------------------------------------------------------------

    def platform(self) -> None:
        start = f"start it with `lanyard --home {self.home} up` (or --detach)"
        path = self.home / "endpoints.json"
        pid = running_pid(self.home)
        if pid is None:
            stale = _read_json(path)
            if stale is not None:
                self.add(
                    "platform",
                    FAIL,
                    f"not running on {self.home}: pid {stale.get('pid')} is gone, its endpoints.json is stale",
                    start,
                )
            else:
                self.add("platform", FAIL, f"no platform runs on {self.home}", f"{start}; or pass the --home it uses")
            return
        document = _read_json(path)
        if document is None:
            self.add("platform", FAIL, f"pid {pid} holds the home but is not ready", "wait, or see `lanyard logs`")
            return
        self.endpoints = document
        self.add("platform", OK, f"pid {pid}, {document['authority']}")

    # -- this machine ---------------------------------------------------------------------------

    def vault_names(self) -> None:
        zone = str(self.endpoints.get("dns_zone")) if self.endpoints else _configured_zone(self.home)
        name = f"probe.vault.{zone}"
        try:
            address = socket.getaddrinfo(name, 443, type=socket.SOCK_STREAM)[0][4][0]
        except OSError as exc:
            self.add(
                "vault names resolve",
                FAIL,
                f"{name}: {exc.strerror or exc}",
                "run scripts/ensure-dns as root (installs libnss-myhostname, which resolves *.localhost), "
                f"or point a wildcard DNS record *.vault.{zone} at this machine and set LANYARD_DNS_ZONE",
            )
            return
        self.dns_ok = True
        self.add("vault names resolve", OK, f"{name} -> {address}")

    def python_trust(self) -> None:
        assert self.endpoints is not None
        bundle = str(self.endpoints["ca_bundle"])
        host, port = _host_port(str(self.endpoints["authority"]))
        for variable, reader in (("REQUESTS_CA_BUNDLE", "sync SDKs (requests)"), ("SSL_CERT_FILE", "async SDKs")):
            value = os.environ.get(variable)
            problem = _handshake(host, port, value or bundle)
            name = f"Python trusts the CA ({variable})"
            fix = f"export {variable}={bundle}  (public roots plus the platform CA, for {reader})"
            if problem is None:
                shown = f"{variable}={value}" if value else f"unset here; set to {bundle}"
                self.add(name, OK, f"TLS to {host}:{port} verifies ({shown})")
            else:
                where = f"{variable}={value}" if value else f"the bundle {bundle}"
                self.add(name, FAIL, f"with {where}: {problem}", fix)

    def node(self) -> None:
        assert self.endpoints is not None
        node = shutil.which("node")
        if node is None:
            self.add("node trusts the CA", SKIP, "node is not installed")
            return
        cert = str(self.endpoints["ca_cert"])
        value = os.environ.get("NODE_EXTRA_CA_CERTS")
        script = (
            "require('https').get(process.argv[1], r => { console.log(r.statusCode); process.exit(0) })"
            ".on('error', e => { console.log(e.code || e.message); process.exit(1) })"
        )
        env = {**os.environ, "NODE_EXTRA_CA_CERTS": value or cert}
        try:
            done = subprocess.run(
                [node, "-e", script, self._discovery_url()], env=env, capture_output=True, text=True, timeout=TIMEOUT
            )
        except subprocess.TimeoutExpired:
            self.add("node trusts the CA", FAIL, f"no answer within {TIMEOUT:.0f} s", "see `lanyard logs`")
            return
        shown = f"NODE_EXTRA_CA_CERTS={value}" if value else f"NODE_EXTRA_CA_CERTS={cert}"
        if done.returncode == 0:
            self.add("node trusts the CA", OK, f"HTTPS GET answered {done.stdout.strip()} ({shown})")
        else:
            problem = (done.stdout.strip() or done.stderr.strip() or "failed").splitlines()[-1]
            self.add("node trusts the CA", FAIL, f"{problem} ({shown})", f"export NODE_EXTRA_CA_CERTS={cert}")

    def curl(self) -> None:
        assert self.endpoints is not None
        curl = shutil.which("curl")
        if curl is None:
            self.add("curl trusts the CA", SKIP, "curl is not installed")
            return
        cert = str(self.endpoints["ca_cert"])
        value = os.environ.get("CURL_CA_BUNDLE")
        argv = [curl, "-sS", "-o", os.devnull, "-w", "%{http_code}", "--max-time", str(int(TIMEOUT))]
        argv += [] if value else ["--cacert", cert]
        try:
            done = subprocess.run([*argv, self._discovery_url()], capture_output=True, text=True, timeout=TIMEOUT + 5)
        except subprocess.TimeoutExpired:
            self.add("curl trusts the CA", FAIL, f"no answer within {TIMEOUT:.0f} s", "see `lanyard logs`")
            return
        shown = f"CURL_CA_BUNDLE={value}" if value else f"--cacert {cert}"
        if done.returncode == 0:
            self.add("curl trusts the CA", OK, f"HTTPS GET answered {done.stdout.strip()} ({shown})")
        else:
            problem = (done.stderr.strip() or f"exit {done.returncode}").splitlines()[0]
            self.add(
                "curl trusts the CA",
                FAIL,
                f"{problem} ({shown})",
                f"curl --cacert {cert} ..., or export CURL_CA_BUNDLE={self.endpoints['ca_bundle']}",
            )

    # -- the platform end to end, with the SDKs ---------------------------------------------------

    def sdk(self) -> None:
        assert self.endpoints is not None
        try:
            from azure.identity import ClientSecretCredential
        except ImportError:
            self.add("azure-identity token (directory)", FAIL, "azure-identity is not installed", INSTALL_SDK)
            for name in ("vault read (SecretClient)", "workload token (agent)", "workload vault read"):
                self.add(name, SKIP, "needs azure-identity")
            return
        # The SDK checks below judge the platform, not this shell's trust settings (the rows above do).
        os.environ["REQUESTS_CA_BUNDLE"] = os.environ["SSL_CERT_FILE"] = str(self.endpoints["ca_bundle"])
        admin = self.endpoints["admin"]
        credential = ClientSecretCredential(
            str(self.endpoints["tenant_id"]),
            str(admin["client_id"]),
            str(admin["client_secret"]),
            authority=str(self.endpoints["authority"]),
            disable_instance_discovery=True,
        )
        try:
            token = credential.get_token(ARM_SCOPE)
        except Exception as exc:
            self.add(
                "azure-identity token (directory)",
                FAIL,
                f"ClientSecretCredential: {_first_line(exc)}",
                "the admin app in endpoints.json was refused: see `lanyard logs`",
            )
            for name in ("vault read (SecretClient)", "workload token (agent)", "workload vault read"):
                self.add(name, SKIP, "needs a directory token")
            return
        self.add(
            "azure-identity token (directory)", OK, f"ClientSecretCredential got a token ({len(token.token)} bytes)"
        )
        self.throwaway(credential)

    def throwaway(self, credential: Any) -> None:
        """A resource group with a web app, a vault and a secret the app may get, deleted at the end."""
        import secrets

        from lanyard.cli.context import CliError
        from lanyard.testing.resources import Resources, unique_name

        assert self.endpoints is not None
        group, value = unique_name("doctor"), secrets.token_urlsafe(18)
        resources: Resources | None = None
        try:
            resources = Resources(self.home)
            resources.create_group(group)
            agent = bool(self.endpoints.get("agent"))
            site = resources.create_site(group, unique_name("doctor")) if agent else None
            vault = resources.create_vault(group, unique_name("doctor"), (site.principal_id,) if site else ())
            self.vault_read(credential, vault.uri, value)
            if site is None:
                self.add("workload token (agent)", SKIP, "no agent: the platform runs with --no-agent")
                self.add("workload vault read", SKIP, "no agent")
            else:
                self.workload(site.group, site.name, vault.uri, value)
        except CliError as exc:
            self.add("throwaway resources", FAIL, f"creating {group}: {exc}", "see `lanyard logs`")
        finally:
            if resources is not None:
                try:
                    resources.delete_group(group)
                except CliError as exc:
                    self.add(
                        "cleanup",
                        FAIL,
                        f"deleting {group}: {exc}",
                        f"lanyard --home {self.home} group delete -n {group} -y",
                    )

    def vault_read(self, credential: Any, vault_url: str, value: str) -> None:
        name = "vault read (SecretClient)"
        try:
            from azure.keyvault.secrets import SecretClient
        except ImportError:
            self.add(name, FAIL, "azure-keyvault-secrets is not installed", INSTALL_SDK)
            return
        try:
            client = SecretClient(vault_url, credential)
            client.set_secret("doctor", value)
            read = client.get_secret("doctor").value
        except Exception as exc:
            fix = "vault names do not resolve: see that row" if not self.dns_ok else "see `lanyard logs`"
            self.add(name, FAIL, f"{vault_url}: {_first_line(exc)}", fix)
            return
        if read != value:
            self.add(name, FAIL, f"{vault_url}: read back a different value", "see `lanyard logs`")
            return
        self.add(name, OK, f"set and read a secret in {vault_url}")

    def workload(self, group: str, site: str, vault_url: str, value: str) -> None:
        from lanyard.testing.workload import WorkloadError, call_function

        target = ["webapp", "run", "-g", group, "-n", site]
        try:
            outcome = call_function(
                self.home, target, workload_probe, (vault_url, "doctor"), {}, cwd="/", timeout=120.0, echo=False
            )
        except (WorkloadError, subprocess.TimeoutExpired) as exc:
            self.add(
                "workload token (agent)",
                FAIL,
                f"`lanyard webapp run` as {site}: {_first_line(exc, 400)}",
                f"the interpreter {sys.executable} must be readable by any user (a root agent runs apps under "
                "uids of their own); otherwise see `lanyard logs`",
            )
            self.add("workload vault read", SKIP, "needs a workload token")
            return
        if outcome.get("token") != "ok":
            self.add(
                "workload token (agent)", FAIL, f"DefaultAzureCredential: {outcome.get('token')}", "see `lanyard logs`"
            )
            self.add("workload vault read", SKIP, "needs a workload token")
            return
        self.add("workload token (agent)", OK, f"DefaultAzureCredential in {site} got a token through the agent")
        import hashlib

        if outcome.get("vault") == hashlib.sha256(value.encode()).hexdigest():
            self.add("workload vault read", OK, f"SecretClient in {site} read the secret")
        else:
            fix = "vault names do not resolve: see that row" if not self.dns_ok else "see `lanyard logs`"
            self.add("workload vault read", FAIL, f"SecretClient in {site}: {outcome.get('vault')}", fix)

    def _discovery_url(self) -> str:
        assert self.endpoints is not None
        return f"{self.endpoints['authority']}/{self.endpoints['tenant_id']}/v2.0/.well-known/openid-configuration"

    def run(self) -> list[Check]:
        self.platform()
        self.vault_names()
        if self.endpoints is None:
            for name in (
                "Python trusts the CA",
                "node trusts the CA",
                "curl trusts the CA",
                "azure-identity token (directory)",
                "vault read (SecretClient)",
                "workload token (agent)",
                "workload vault read",
            ):
                self.add(name, SKIP, "the platform is not running")
            return self.checks
        self.python_trust()
        self.node()
        self.curl()
        self.sdk()
        return self.checks


def workload_probe(vault_url: str, name: str) -> dict[str, str]:
    """Runs inside the throwaway app, as any app would: a token, then a secret (only its hash leaves)."""
    import hashlib

    from azure.identity import DefaultAzureCredential
    from azure.keyvault.secrets import SecretClient

    with DefaultAzureCredential() as credential:
        try:
            credential.get_token(ARM_SCOPE)
        except Exception as exc:
            return {"token": f"{type(exc).__name__}: {_first_line(exc)}"}
        try:
            secret = SecretClient(vault_url, credential).get_secret(name).value or ""
        except Exception as exc:
            return {"token": "ok", "vault": f"{type(exc).__name__}: {_first_line(exc)}"}
    return {"token": "ok", "vault": hashlib.sha256(secret.encode()).hexdigest()}


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _configured_zone(home: Path) -> str:
    try:
        return load_settings(home=str(home)).dns_zone
    except ConfigError:
        return DEFAULT_ZONE


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "localhost", parts.port or 443


def _handshake(host: str, port: int, cafile: str) -> str | None:
    """None when a TLS handshake to host:port verifies against `cafile`; else what went wrong."""
    try:
        context = ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        return f"cannot load {cafile}: {getattr(exc, 'strerror', None) or exc}"
    try:
        with (
            socket.create_connection((host, port), timeout=TIMEOUT) as raw,
            context.wrap_socket(raw, server_hostname=host),
        ):
            return None
    except ssl.SSLCertVerificationError as exc:
        return f"certificate not trusted: {exc.verify_message}"
    except (OSError, ssl.SSLError) as exc:
        return f"cannot connect to {host}:{port}: {getattr(exc, 'strerror', None) or exc}"


@click.command("doctor")
@click.pass_context
@default_output("table")
def doctor(ctx: click.Context) -> None:
    """Check this machine and the platform of this home: vault names resolve; Python, node and curl
    trust the CA; azure-identity gets a token; an app gets one through the agent; a vault read works
    (in a throwaway resource group, deleted after). Exits 1 when a check fails."""
    home: Path = ctx.find_root().obj["home"]
    checks = Doctor(home).run()
    print_result([asdict(c) for c in checks], columns=("check", "status", "detail", "fix"))
    failed = [c.check for c in checks if c.status == FAIL]
    if failed:
        sys.stderr.write(f"lanyard doctor: {len(failed)} check(s) failed: {', '.join(failed)}\n")
        sys.exit(1)
