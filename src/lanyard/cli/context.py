"""What every CLI command needs: the home's endpoints.json, the admin credential, an HTTP client.

Like `az`, the CLI reads a profile (endpoints.json) and talks to the platform only over HTTPS.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import httpx

from lanyard.client import ClientSecretCredential, CredentialError
from lanyard.client.credentials import scope_for, tls_context


class CliError(Exception):
    """Printed as one line on stderr; the command exits non-zero."""


def fail(message: str) -> NoReturn:
    raise CliError(message)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2) + "\n")


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
            fail(f"no platform is running for home {home} (no endpoints.json): start it with `lanyard up`")
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
            fail(f"authentication failed: {exc}")

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
            fail(f"cannot reach {url.split('?')[0]}: {type(exc).__name__}")
        if response.status_code not in ok:
            fail(_describe_error(response))
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def graph(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (200, 201, 204)) -> Any:
        base = self.endpoints["graph"]
        return self.call(method, f"{base}/v1.0{path}", resource=base, body=body, ok=ok)


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
