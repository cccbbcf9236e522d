"""What every CLI command needs: the home's endpoints.json, the admin credential, an HTTP client.

Like `az`, the CLI reads a profile (endpoints.json) and talks to the platform only over HTTPS.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import httpx

from lanyard.client import ClientSecretCredential, CredentialError
from lanyard.client.credentials import scope_for, tls_context
from lanyard.server.homelock import LOCK_FILE, running_pid


class CliError(Exception):
    """Printed as one line on stderr; the command exits non-zero."""


def fail(message: str) -> NoReturn:
    raise CliError(message)


def print_json(value: Any) -> None:
    """A command's result: JSON unless the command's -o/--query (cli/output.py) asked otherwise."""
    from lanyard.cli.output import emit

    emit(value)


@dataclass
class Profile:
    home: Path
    endpoints: dict[str, Any]
    _credential: ClientSecretCredential | None = field(default=None, repr=False)
    _http: httpx.Client | None = field(default=None, repr=False)

    @classmethod
    def load(cls, home: Path) -> Profile:
        path = home / "endpoints.json"
        try:
            endpoints = json.loads(path.read_text())
        except FileNotFoundError:
            pid = running_pid(home)
            if pid is not None:
                fail(f"the platform of the home {home} (pid {pid}) is starting or stopping: try again in a moment")
            fail(
                f"no platform is running on the home {home} (no endpoints.json there): start it with "
                f"`lanyard --home {home} up --detach`, or pass the home `lanyard up` used (--home or $LANYARD_HOME)"
            )
        except (OSError, ValueError) as exc:
            fail(f"cannot read {path}: {exc}")
        return cls(home, endpoints)

    @property
    def tenant_id(self) -> str:
        return str(self.endpoints["tenant_id"])

    @property
    def credential(self) -> ClientSecretCredential:
        if self._credential is None:
            admin = self.endpoints["admin"]
            self._credential = ClientSecretCredential(
                self.endpoints["authority"],
                self.tenant_id,
                admin["client_id"],
                admin["client_secret"],
                verify=self.endpoints["ca_cert"],
            )
        return self._credential

    def token(self, resource: str) -> str:
        try:
            return self.credential.get_token(scope_for(resource)).token
        except CredentialError as exc:
            if isinstance(exc.__cause__, httpx.HTTPError):
                self.unreachable(str(self.endpoints["authority"]), exc.__cause__)
            fail(f"authentication failed: {exc}")

    def not_running(self) -> str | None:
        """Why nothing answers, when it is that the platform of this home is gone (a crash or a
        kill leaves endpoints.json behind); None when it may still be running."""
        pid = self.endpoints.get("pid")
        if (self.home / LOCK_FILE).exists():
            gone = running_pid(self.home) is None  # the kernel dropped the lock with the process
        else:
            gone = isinstance(pid, int) and not _alive(pid)  # a home made by hand: only the pid tells
        if not gone:
            return None
        return (
            f"the platform of the home {self.home} is not running (pid {pid} is gone; its endpoints.json "
            f"was left behind): start it with `lanyard --home {self.home} up` (or `up --detach`)"
        )

    def unreachable(self, url: str, exc: httpx.HTTPError) -> NoReturn:
        stopped = self.not_running()
        if stopped:
            fail(stopped)
        host = urlsplit(url).hostname or ""
        if isinstance(exc, httpx.ConnectError) and host and not _resolves(host):
            zone = str(self.endpoints.get("dns_zone") or "lanyard.localhost")
            if host.endswith(f".vault.{zone}"):
                fix = (
                    "make *.localhost resolve with `sudo apt-get install libnss-myhostname` (what scripts/ensure-dns "
                    "in the Lanyard checkout does as root), or point "
                    if zone == "localhost" or zone.endswith(".localhost")
                    else "point "
                )
                fail(
                    f"the vault host {host} does not resolve on this machine: {fix}a wildcard DNS record "
                    f"*.vault.{zone} at the platform (the zone is $LANYARD_DNS_ZONE, default lanyard.localhost)"
                )
            fail(f"the host {host} does not resolve on this machine (from {url.split('?')[0]}): check its DNS")
        fail(f"cannot reach {url.split('?')[0]}: {type(exc).__name__}")

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            self._http = httpx.Client(
                verify=tls_context(self.endpoints["ca_cert"]), timeout=60.0, follow_redirects=False
            )
        return self._http

    def call(
        self, method: str, url: str, *, resource: str, body: Any = None, ok: tuple[int, ...] = (200, 201, 204)
    ) -> Any:
        headers = {"Authorization": f"Bearer {self.token(resource)}"}
        try:
            response = self.http.request(method, url, json=body, headers=headers)
        except httpx.HTTPError as exc:
            self.unreachable(url, exc)
        if response.status_code not in ok:
            fail(_describe_error(response))
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def graph(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (200, 201, 204)) -> Any:
        base = self.endpoints["graph"]
        return self.call(method, f"{base}/v1.0{path}", resource=base, body=body, ok=ok)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _resolves(host: str) -> bool:
    try:
        socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return False
    return True


def _describe_error(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"({response.status_code}) {response.text[:200]}"
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return f"({error.get('code')}) {error.get('message')}"
    if isinstance(error, str):
        return f"({error}) {body.get('error_description', '')}"
    return f"({response.status_code}) {str(body)[:200]}"
