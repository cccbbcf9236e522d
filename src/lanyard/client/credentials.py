"""Service-principal credentials against a Lanyard (or any Entra-compatible) authority."""

from __future__ import annotations

import ssl
import threading
import time
from typing import Any, NamedTuple

import httpx

# Refresh this long before expiry, as azure-identity does (DEFAULT_REFRESH_OFFSET).
REFRESH_OFFSET = 300


class AccessToken(NamedTuple):
    """Field-compatible with ``azure.core.credentials.AccessToken``."""

    token: str
    expires_on: int


class CredentialError(Exception):
    """The authority refused, or could not be reached. Never carries a secret or a token."""


def tls_context(verify: str | bool | ssl.SSLContext) -> ssl.SSLContext | bool:
    """A CA file path becomes an SSL context (httpx no longer takes paths)."""
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    return verify


def scope_for(resource: str) -> str:
    return resource if resource.endswith("/.default") else f"{resource}/.default"


class ClientSecretCredential:
    def __init__(
        self,
        authority: str,
        tenant_id: str,
        client_id: str,
        client_secret: str,
        *,
        verify: str | bool | ssl.SSLContext = True,
        timeout: float = 30.0,
    ) -> None:
        self._token_url = f"{authority.rstrip('/')}/{tenant_id}/oauth2/v2.0/token"
        self._client_id = client_id
        self._secret = client_secret
        self._http = httpx.Client(verify=tls_context(verify), timeout=timeout, follow_redirects=False)
        self._cache: dict[str, AccessToken] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ClientSecretCredential(client_id={self._client_id!r})"

    def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        if len(scopes) != 1:
            raise CredentialError("exactly one scope is required")
        scope = scopes[0]
        with self._lock:
            cached = self._cache.get(scope)
            if cached and cached.expires_on - time.time() > REFRESH_OFFSET:
                return cached
            token = self._request(scope)
            self._cache[scope] = token
            return token

    def _request(self, scope: str) -> AccessToken:
        form = {
            "grant_type": "client_credentials",
            "client_id": self._client_id,
            "client_secret": self._secret,
            "scope": scope,
        }
        try:
            response = self._http.post(self._token_url, data=form)
        except httpx.HTTPError as exc:
            raise CredentialError(f"cannot reach the authority at {self._token_url}: {type(exc).__name__}") from exc
        try:
            body = response.json()
        except ValueError as exc:
            raise CredentialError(f"the authority answered {response.status_code} without JSON") from exc
        if response.status_code != 200 or "access_token" not in body:
            raise CredentialError(str(body.get("error_description") or body.get("error") or response.status_code))
        return AccessToken(body["access_token"], int(time.time()) + int(body["expires_in"]))

    def close(self) -> None:
        self._http.close()
