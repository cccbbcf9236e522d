"""Outside OIDC issuers' signing keys, fetched for workload identity federation (docs/federation.md).

Only issuers some federated credential names reach this module, and only those whose host the
operator allowed (FederationSettings). A fetch is bounded in time and size, goes to an address
checked before connecting (the connection is pinned to it: no second DNS answer is used), follows
no redirect, and trusts the system's CAs plus the operator's extra bundle. Keys are cached; a key id
not in the cache refetches at most once per cooldown, and a failed fetch is remembered for as long,
so a dead or hostile issuer costs one bounded attempt per cooldown, never a wait per request.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson
from cryptography.hazmat.primitives.asymmetric import rsa

from lanyard.config import FederationSettings
from lanyard.core.clock import Clock
from lanyard.core.errors import InvalidClient, InvalidRequest
from lanyard.protocol.jose import b64url_decode

MAX_KEYS = 100
_RESOLVER = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="lanyard-oidc-dns")


class IssuerUnavailable(InvalidRequest):
    """The issuer's discovery document or keys could not be had (Entra: AADSTS50166)."""

    def __init__(self, issuer: str, reason: str) -> None:
        super().__init__(50166, f"Request to External OIDC endpoint failed for issuer '{issuer[:200]}': {reason}.")
        self.reason = reason


@dataclass
class _Entry:
    keys: dict[str, rsa.RSAPublicKey] = field(default_factory=dict)
    expires_at: float = 0.0
    attempted_at: float = float("-inf")
    failure: str | None = None  # why the last fetch failed (a new error is raised from it each time)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _public_key(jwk: object) -> tuple[str, rsa.RSAPublicKey] | None:
    """An RSA signing key from a JWK, or None for anything else (other types, encryption keys)."""
    if not isinstance(jwk, dict) or jwk.get("kty") != "RSA" or jwk.get("use", "sig") != "sig":
        return None
    kid, n, e = jwk.get("kid", ""), jwk.get("n"), jwk.get("e")
    if not isinstance(kid, str) or not isinstance(n, str) or not isinstance(e, str) or len(n) > 2048:
        return None
    try:
        numbers = rsa.RSAPublicNumbers(
            int.from_bytes(b64url_decode(e.encode()), "big"), int.from_bytes(b64url_decode(n.encode()), "big")
        )
        key = numbers.public_key()
    except (ValueError, TypeError):
        return None
    return (kid, key) if key.key_size >= 2048 else None


class IssuerKeys:
    def __init__(self, settings: FederationSettings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self._entries: dict[str, _Entry] = {}
        self._entries_lock = threading.Lock()
        context = ssl.create_default_context()
        if settings.ca_bundle is not None:
            context.load_verify_locations(cafile=str(settings.ca_bundle))
        self._context = context
        # Tests count fetches through this; nothing else reads it.
        self.fetches = 0

    def _entry(self, issuer: str) -> _Entry:
        with self._entries_lock:
            entry = self._entries.get(issuer)
            if entry is None:
                if len(self._entries) >= 10_000:
                    self._entries.clear()  # bounded: issuers come from credentials, so this is far away
                entry = self._entries[issuer] = _Entry()
            return entry

    def key(self, issuer: str, kid: str | None) -> rsa.RSAPublicKey:
        """The issuer's signing key `kid` (or its only key when the token names none)."""
        entry = self._entry(issuer)
        deadline = self.settings.fetch_timeout * 3
        if not entry.lock.acquire(timeout=deadline):
            raise IssuerUnavailable(issuer, "another fetch of its keys is still running")
        try:
            now = self.clock.now()
            found = self._select(entry, kid) if now < entry.expires_at else None
            if found is not None:
                return found
            if now - entry.attempted_at < self.settings.refetch_cooldown:
                if entry.failure is not None:
                    raise IssuerUnavailable(issuer, entry.failure)
                stale = self._select(entry, kid)
                if stale is not None and now < entry.expires_at:
                    return stale
                raise _unknown_key(kid)
            entry.attempted_at = now
            try:
                entry.keys = self._fetch_keys(issuer)
            except IssuerUnavailable as exc:
                entry.failure = exc.reason
                raise
            entry.failure = None
            entry.expires_at = now + self.settings.cache_seconds
            found = self._select(entry, kid)
            if found is None:
                raise _unknown_key(kid)
            return found
        finally:
            entry.lock.release()

    @staticmethod
    def _select(entry: _Entry, kid: str | None) -> rsa.RSAPublicKey | None:
        if kid is None:
            return next(iter(entry.keys.values())) if len(entry.keys) == 1 else None
        return entry.keys.get(kid)

    # -- fetching -----------------------------------------------------------------------------

    def _fetch_keys(self, issuer: str) -> dict[str, rsa.RSAPublicKey]:
        self.fetches += 1
        started = time.monotonic()
        discovery = self._get_json(issuer, issuer.rstrip("/") + "/.well-known/openid-configuration", started)
        if discovery.get("issuer") != issuer:
            raise IssuerUnavailable(issuer, "its discovery document names a different issuer")
        jwks_uri = discovery.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise IssuerUnavailable(issuer, "its discovery document has no jwks_uri")
        jwks = self._get_json(issuer, jwks_uri, started)
        raw_keys = jwks.get("keys")
        if not isinstance(raw_keys, list):
            raise IssuerUnavailable(issuer, "its key set has no keys array")
        keys: dict[str, rsa.RSAPublicKey] = {}
        for jwk in raw_keys[:MAX_KEYS]:
            parsed = _public_key(jwk)
            if parsed is not None:
                keys[parsed[0]] = parsed[1]
        if not keys:
            raise IssuerUnavailable(issuer, "its key set has no usable RSA signing key")
        return keys

    def _address(self, issuer: str, host: str, port: int, remaining: float) -> str:
        future = _RESOLVER.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
        try:
            infos = future.result(timeout=max(remaining, 0.1))
        except concurrent.futures.TimeoutError as exc:
            raise IssuerUnavailable(issuer, f"resolving {host[:100]} took too long") from exc
        except OSError as exc:
            raise IssuerUnavailable(issuer, f"{host[:100]} does not resolve") from exc
        addresses = [str(info[4][0]) for info in infos]
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%")[0])
            if ip.is_unspecified or ip.is_multicast:
                raise IssuerUnavailable(issuer, f"{host[:100]} resolves to an address that is never fetched")
            internal = ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_reserved
            if internal and not self.settings.allow_private:
                raise IssuerUnavailable(
                    issuer,
                    f"{host[:100]} resolves to an internal address, and the platform does not fetch from "
                    "those (LANYARD_FEDERATION_ALLOW_PRIVATE)",
                )
        if not addresses:
            raise IssuerUnavailable(issuer, f"{host[:100]} does not resolve")
        return addresses[0]

    def _get_json(self, issuer: str, url: str, started: float) -> dict[str, object]:
        try:
            parts = urlsplit(url)
            port = parts.port or 443
        except ValueError as exc:
            raise IssuerUnavailable(issuer, "a URL it names is malformed") from exc
        host = parts.hostname or ""
        if parts.scheme != "https" or not host:
            raise IssuerUnavailable(issuer, "a URL it names is not https")
        if not self.settings.allows_host(host, port):
            raise IssuerUnavailable(
                issuer,
                f"the platform's operator has not allowed {host[:100]}:{port} (LANYARD_FEDERATION_ALLOWED_ISSUERS)",
            )
        budget = self.settings.fetch_timeout
        address = self._address(issuer, host, port, budget - (time.monotonic() - started))
        shown = f"[{address}]" if ":" in address else address
        pinned = urlunsplit(("https", f"{shown}:{port}", parts.path or "/", parts.query, ""))
        limit = self.settings.max_document_bytes
        remaining: Callable[[], float] = lambda: budget - (time.monotonic() - started)  # noqa: E731
        try:
            with httpx.Client(verify=self._context, timeout=max(remaining(), 0.1), follow_redirects=False) as http:
                request = http.build_request(
                    "GET",
                    pinned,
                    headers={"Host": parts.netloc.rsplit("@", 1)[-1], "Accept": "application/json"},
                    extensions={"sni_hostname": host},
                )
                response = http.send(request, stream=True)
                try:
                    if response.status_code != 200:
                        raise IssuerUnavailable(issuer, f"{host[:100]} answered {response.status_code}")
                    declared = response.headers.get("content-length")
                    if declared is not None and declared.isdigit() and int(declared) > limit:
                        raise IssuerUnavailable(issuer, f"a document is larger than {limit} bytes")
                    body = bytearray()
                    for chunk in response.iter_bytes():
                        body += chunk
                        if len(body) > limit:
                            raise IssuerUnavailable(issuer, f"a document is larger than {limit} bytes")
                        if remaining() <= 0:
                            raise IssuerUnavailable(issuer, "fetching its documents took too long")
                finally:
                    response.close()
        except httpx.TimeoutException as exc:
            raise IssuerUnavailable(issuer, "fetching its documents took too long") from exc
        except httpx.HTTPError as exc:
            raise IssuerUnavailable(issuer, f"{host[:100]} could not be reached ({type(exc).__name__})") from exc
        try:
            document = orjson.loads(bytes(body))
        except orjson.JSONDecodeError as exc:
            raise IssuerUnavailable(issuer, "a document is not JSON") from exc
        if not isinstance(document, dict):
            raise IssuerUnavailable(issuer, "a document is not a JSON object")
        return document


def _unknown_key(kid: str | None) -> InvalidClient:
    shown = "" if kid is None else f" '{kid[:64]}'"
    return InvalidClient(
        700027, f"Client assertion failed signature validation. [Reason - The key{shown} was not found.]"
    )
