"""The agent's only way to the platform: HTTPS to the directory and the bindings API."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import Any

import httpx
from cachetools import LRUCache

from lanyard.client.assertion import ASSERTION_LIFETIME, CertificateKey
from lanyard.core.clock import Clock, SystemClock
from lanyard.protocol.msi import IssuedToken

AGENT_AUDIENCE = "api://lanyard-host-agent"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class UpstreamError(Exception):
    """The directory refused or could not be reached. `status` is what the agent should answer."""

    def __init__(self, message: str, status: int = 503) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class HostIdentity:
    host_id: str
    client_id: str
    tenant_id: str
    authority: str
    key: CertificateKey


class Upstream:
    def __init__(self, host: HostIdentity, ca_file: str, clock: Clock | None = None) -> None:
        self.host = host
        self.clock: Clock = clock or SystemClock()
        self.token_url = f"{host.authority}/{host.tenant_id}/oauth2/v2.0/token"
        context = ssl.create_default_context(cafile=ca_file)
        # Several small clients instead of one big one: httpcore's pool scans every connection against
        # every queued request on each event, which at 32 in flight was most of the agent's CPU in a
        # boot storm (py-spy); eight clients of four connections cut that scan 8x.
        self._clients = [
            httpx.AsyncClient(
                verify=context,
                timeout=35.0,
                follow_redirects=False,
                limits=httpx.Limits(max_connections=4, max_keepalive_connections=4),
            )
            for _ in range(8)
        ]
        self._next = 0
        self._http = self._clients[0]
        # Mints in flight: beyond this, queueing here is cheaper than in httpx's pool.
        self._in_flight = asyncio.Semaphore(32)
        # Bounded, least recently used out first: identities come and go for as long as the agent runs.
        self._assertions: LRUCache[tuple[str, str], tuple[str, float]] = LRUCache(100_000)
        self._host_token: tuple[str, float] | None = None
        self._host_lock = asyncio.Lock()

    def _assertion(self, key: CertificateKey, client_id: str) -> str:
        """One signed assertion per identity, reused for half its life: in a boot storm, signing a new
        one for every mint was a quarter of the agent's CPU (py-spy). The directory, like Entra, accepts
        an assertion until it expires."""
        now = self.clock.now()
        cached = self._assertions.get((client_id, key.x5t))
        if cached is not None and cached[1] - now > ASSERTION_LIFETIME / 2:
            return cached[0]
        assertion = key.assertion(client_id, self.token_url, now)
        self._assertions[(client_id, key.x5t)] = (assertion, now + ASSERTION_LIFETIME)
        return assertion

    async def _token(self, key: CertificateKey, client_id: str, resource: str) -> dict[str, Any]:
        form = {
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_assertion_type": JWT_BEARER,
            "client_assertion": self._assertion(key, client_id),
            # `X/.default` keeps a trailing slash in X: the directory issues aud exactly as asked.
            "scope": f"{resource}/.default",
        }
        try:
            async with self._in_flight:
                self._next = (self._next + 1) % len(self._clients)
                response = await self._clients[self._next].post(self.token_url, data=form)
        except httpx.HTTPError as exc:
            raise UpstreamError(f"the directory is unreachable ({type(exc).__name__})") from exc
        try:
            body = response.json()
        except ValueError as exc:
            raise UpstreamError(f"the directory answered {response.status_code} without JSON") from exc
        if response.status_code != 200 or "access_token" not in body:
            description = str(body.get("error_description", body.get("error", "")))[:300]
            status = 400 if response.status_code in (400, 401) else 503
            raise UpstreamError(f"the directory refused the token request: {description}", status)
        return dict(body)

    async def identity_token(self, key: CertificateKey, client_id: str, resource: str) -> IssuedToken:
        now = int(self.clock.now())
        body = await self._token(key, client_id, resource)
        expires_in = int(body.get("expires_in", 0))
        return IssuedToken(body["access_token"], now + expires_in, now, client_id)

    def use_host(self, host: HostIdentity) -> None:
        """A renewed host credential: sign the next host assertion with it."""
        self.host = host
        self._host_token = None

    async def host_token(self) -> str:
        async with self._host_lock:
            if self._host_token and self._host_token[1] - self.clock.now() > 300:
                return self._host_token[0]
            body = await self._token(self.host.key, self.host.client_id, AGENT_AUDIENCE)
            self._host_token = (body["access_token"], self.clock.now() + int(body.get("expires_in", 0)))
            return self._host_token[0]

    async def bindings(self, etag: str | None, wait: float) -> dict[str, Any] | None:
        """One long poll: the new bindings, or None when nothing changed within `wait` seconds."""
        params = {"wait": str(wait)}
        if etag:
            params["etag"] = etag
        token = await self.host_token()
        try:
            response = await self._http.get(
                f"{self.host.authority}/lanyard/v1/agent/bindings",
                params=params,
                headers={"Authorization": f"Bearer {token}"},
                timeout=wait + 10,
            )
        except httpx.HTTPError as exc:
            raise UpstreamError(f"the bindings API is unreachable ({type(exc).__name__})") from exc
        if response.status_code == 304:
            return None
        if response.status_code != 200:
            if response.status_code == 401:
                self._host_token = None
            raise UpstreamError(f"the bindings API answered {response.status_code}: {response.text[:200]}")
        return dict(response.json())

    async def platform_call(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> httpx.Response:
        """One call to a /lanyard/v1/agent route, signed in as this host."""
        token = await self.host_token()
        try:
            response = await self._http.request(
                method,
                f"{self.host.authority}{path}",
                json=body,
                headers={"Authorization": f"Bearer {token}"},
                timeout=timeout,
            )
        except httpx.HTTPError as exc:
            raise UpstreamError(f"{path} is unreachable ({type(exc).__name__})") from exc
        if response.status_code == 401:
            self._host_token = None
        return response

    async def workload_token(self, resource_id: str) -> dict[str, Any]:
        """A projected service-account token for a workload of this host (AKS-style runs)."""
        response = await self.platform_call("POST", "/lanyard/v1/agent/workloadToken", {"resourceId": resource_id})
        try:
            body = response.json()
        except ValueError as exc:
            raise UpstreamError(f"the workload token API answered {response.status_code} without JSON") from exc
        if response.status_code != 200 or not isinstance(body, dict):
            message = str((body.get("error") or {}).get("message", "")) if isinstance(body, dict) else ""
            raise UpstreamError(f"the workload token API answered {response.status_code}: {message[:200]}")
        return body

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()
