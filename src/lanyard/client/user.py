"""A signed-in user's credential: sign in once (password or device code), then tokens for any
resource from the refresh token, which rotates on every use and is written back (0600) each time."""

from __future__ import annotations

import json
import os
import ssl
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from lanyard.client.credentials import REFRESH_OFFSET, AccessToken, CredentialError, tls_context

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
SIGN_IN_SCOPE = "openid profile offline_access"


def _write_private(path: Path, data: bytes) -> None:
    """Atomically, and never readable by anyone else even for a moment."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class UserSignIn:
    """The token endpoint as a public client: one HTTP client, the authority's errors as CredentialError."""

    def __init__(
        self, authority: str, tenant_id: str, client_id: str, verify: str | bool | ssl.SSLContext = True
    ) -> None:
        self.authority = authority.rstrip("/")
        self.tenant_id = tenant_id
        self.client_id = client_id
        self._base = f"{self.authority}/{tenant_id}/oauth2/v2.0"
        self._http = httpx.Client(verify=tls_context(verify), timeout=30.0, follow_redirects=False)

    def _post(self, path: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        try:
            response = self._http.post(f"{self._base}/{path}", data={"client_id": self.client_id, **form})
        except httpx.HTTPError as exc:
            raise CredentialError(f"cannot reach the authority at {self._base}: {type(exc).__name__}") from exc
        if response.status_code == 200 and not response.content:
            return 200, {}
        try:
            body = response.json()
        except ValueError as exc:
            raise CredentialError(f"the authority answered {response.status_code} without JSON") from exc
        return response.status_code, body if isinstance(body, dict) else {}

    @staticmethod
    def _refused(body: dict[str, Any]) -> CredentialError:
        return CredentialError(str(body.get("error_description") or body.get("error") or "sign-in refused"))

    def password(self, username: str, password: str) -> dict[str, Any]:
        status, body = self._post(
            "token", {"grant_type": "password", "username": username, "password": password, "scope": SIGN_IN_SCOPE}
        )
        if status != 200:
            raise self._refused(body)
        return body

    def device_code(
        self,
        tell: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
        sleep: Callable[[float], None] = time.sleep,
    ) -> dict[str, Any]:
        status, flow = self._post("devicecode", {"scope": SIGN_IN_SCOPE})
        if status != 200:
            raise self._refused(flow)
        tell(str(flow["message"]))
        deadline = time.monotonic() + float(flow["expires_in"])
        interval = max(1.0, float(flow.get("interval", 5)))
        while time.monotonic() < deadline:
            sleep(interval)
            status, body = self._post(
                "token", {"grant_type": DEVICE_CODE_GRANT, "device_code": str(flow["device_code"])}
            )
            if status == 200:
                return body
            if body.get("error") == "slow_down":
                interval += 5
            elif body.get("error") != "authorization_pending":
                raise self._refused(body)
        raise CredentialError("the device code expired before anyone signed in with it")

    def refresh(self, refresh_token: str, scope: str) -> dict[str, Any]:
        status, body = self._post(
            "token", {"grant_type": "refresh_token", "refresh_token": refresh_token, "scope": scope}
        )
        if status != 200:
            raise self._refused(body)
        return body

    def revoke(self, refresh_token: str) -> None:
        status, body = self._post("revoke", {"token": refresh_token})
        if status != 200:
            raise self._refused(body)

    def close(self) -> None:
        self._http.close()


class UserCredential:
    """azure-core's get_token protocol for a user whose session (refresh token) is kept in a file."""

    def __init__(self, session_file: Path, signin: UserSignIn) -> None:
        self.session_file = session_file
        self.signin = signin
        self._cache: dict[str, AccessToken] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"UserCredential(session_file={str(self.session_file)!r})"

    @staticmethod
    def save(session_file: Path, response: dict[str, Any], username: str, object_id: str, client_id: str) -> None:
        session = {
            "username": username,
            "object_id": object_id,
            "client_id": client_id,
            "refresh_token": response["refresh_token"],
        }
        _write_private(session_file, json.dumps(session).encode())

    def session(self) -> dict[str, Any]:
        try:
            data = json.loads(self.session_file.read_text())
        except (OSError, ValueError) as exc:
            raise CredentialError(f"no usable sign-in in {self.session_file}: run `lanyard login`") from exc
        if not isinstance(data, dict) or not isinstance(data.get("refresh_token"), str):
            raise CredentialError(f"no usable sign-in in {self.session_file}: run `lanyard login`")
        return data

    def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        if len(scopes) != 1:
            raise CredentialError("exactly one scope is required")
        scope = scopes[0]
        with self._lock:
            cached = self._cache.get(scope)
            if cached and cached.expires_on - time.time() > REFRESH_OFFSET:
                return cached
            session = self.session()
            body = self.signin.refresh(session["refresh_token"], scope)
            # The old token is retired the moment the new one is issued: keep the new one first.
            _write_private(self.session_file, json.dumps({**session, "refresh_token": body["refresh_token"]}).encode())
            token = AccessToken(body["access_token"], int(time.time()) + int(body["expires_in"]))
            self._cache[scope] = token
            return token
