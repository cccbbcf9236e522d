"""The Key Vault data plane over HTTPS, routed by host name ({vault}.vault.{zone}:{port}).

Authentication comes first, before the body is read: the SDK's first request is body-less and must
get the challenge, not an empty secret (docs/protocols.md §4.2).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from lanyard.audit.record import Event, outcome_of
from lanyard.audit.writer import NULL_AUDITOR, Auditor
from lanyard.core.body import read_capped
from lanyard.core.cache import FeedCache
from lanyard.core.errors import AuditUnavailable
from lanyard.observe.metrics import cache_stats
from lanyard.protocol.bearer import InvalidToken, bearer_token, normalize_audience
from lanyard.protocol.keyvault import VaultError, challenge, check_api_version
from lanyard.protocol.verify import TokenVerifier
from lanyard.storage.feed import RESET, Change
from lanyard.vault.service import Caller, Vault, VaultService

log = logging.getLogger("lanyard.vault")
MAX_BODY = 256 * 1024
MAX_PAGE = 25
# Validated tokens are reused until they expire, or until the key set changes (a revoked key's
# tokens must fail on the next request), whichever comes first; the TTL bounds a missed change.
VALIDATED_TTL = 60.0
VALIDATED_SIZE = 50_000


def _headers(scope: Scope) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        out.setdefault(name.lower(), value)
    return out


class VaultApp:
    def __init__(
        self,
        service: VaultService,
        verifier: TokenVerifier,
        audience: str,
        authorization_uri: str,
        settle: Callable[[], Awaitable[bool]] | None = None,
        audit: Auditor = NULL_AUDITOR,
    ) -> None:
        self.service = service
        self.audit = audit
        self.settle = settle
        self.verifier = verifier
        self.audiences = frozenset({normalize_audience(audience)})
        self.challenge = challenge(authorization_uri, audience).encode()
        self._validated: FeedCache[str, dict[str, Any]] = FeedCache(
            VALIDATED_SIZE, VALIDATED_TTL, service.clock, cache_stats("vault_validated_tokens")
        )

    def apply(self, changes: Sequence[Change]) -> None:
        if any(c.kind in ("signing_keys", "tenants", RESET) for c in changes):
            self._validated.clear()

    async def _send(self, send: Send, status: int, body: Any, challenge: bool = False) -> None:
        payload = b"" if body is None else orjson.dumps(body)
        headers = [
            (b"content-type", b"application/json; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"content-length", str(len(payload)).encode()),
        ]
        if challenge:
            headers.append((b"www-authenticate", self.challenge))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    def _caller(self, headers: dict[bytes, bytes]) -> Caller:
        token = bearer_token(headers.get(b"authorization", b"").decode("latin-1"))
        if token is None:
            raise VaultError(401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.")
        now = self.service.clock.now()
        claims = self._validated.get(token)
        if claims is None or float(claims["exp"]) <= now:
            epoch = self._validated.epoch()
            try:
                claims = self.verifier.verify(token, self.audiences)
            except InvalidToken as exc:
                raise VaultError(401, "Unauthorized", f"AKV10022: Invalid token: {exc}.") from exc
            self._validated.put(token, claims, epoch)
        return Caller(claims["oid"], claims["appid"], claims["tid"])

    async def _body(self, receive: Receive) -> Any:
        raw = await read_capped(
            receive, MAX_BODY, lambda: VaultError(400, "BadParameter", "The request body is too large.")
        )
        if not raw.strip():
            return None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise VaultError(400, "BadParameter", "The request body is not valid JSON.") from exc

    def _event(self, vault: str, caller: Caller | None, method: str, path: str, status: int | None) -> Event:
        parts = [p for p in path.split("/") if p]
        operation = f"vault.{(parts[0].lower() if parts else 'vault')[:20]}.{method.lower()[:10]}"
        return Event(
            operation,
            "request" if status is None else outcome_of(status),
            caller.object_id if caller else None,
            caller.app_id if caller else None,
            f"{vault}/{'/'.join(parts)}"[:1200],
            None,
            {"status": status} if status is not None else {},
        )

    async def _record(self, event: Event) -> None:
        """A secret value, or a change, is answered only once its record was accepted."""
        if not self.audit.enabled:
            return
        try:
            await self.audit.record(event)
        except AuditUnavailable as exc:
            raise VaultError(
                503, "ServiceUnavailable", "The audit trail is unavailable; nothing was returned. Retry shortly."
            ) from exc

    async def __call__(self, scope: Scope, receive: Receive, send: Send, vault_name: str) -> None:
        headers = _headers(scope)
        try:
            caller = self._caller(headers)
        except VaultError as exc:
            if self.audit.enabled:
                self.audit.note(self._event(vault_name, None, scope["method"], scope["path"], exc.status))
            await self._send(send, exc.status, exc.body(), challenge=True)
            return
        try:
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
            api_version = check_api_version(query.get("api-version"))
            vault = self.service.vault(vault_name)
            if vault is None:
                raise VaultError(404, "VaultNotFound", f"The vault '{vault_name[:64]}' does not exist.")
            method = scope["method"]
            fast = self._cached_read(vault, caller, method, scope["path"])
            if fast is not None:
                await self._record(self._event(vault_name, caller, method, scope["path"], 200))
                await self._send(send, 200, fast)
                return
            body = await self._body(receive) if method in ("PUT", "PATCH", "POST") else None
            if method != "GET":
                await self._record(self._event(vault_name, caller, method, scope["path"], None))
            status, result = await run_in_threadpool(
                self._dispatch, vault, caller, method, scope["path"], body, query, api_version
            )
            await self._record(self._event(vault_name, caller, method, scope["path"], status))
            if self.settle is not None and method != "GET":
                await self.settle()  # every node serves the new value once we answer
        except VaultError as exc:
            if exc.status in (401, 403) and self.audit.enabled:
                self.audit.note(self._event(vault_name, caller, scope["method"], scope["path"], exc.status))
            if exc.status >= 500:
                log.error("vault %s failed: %s", vault_name, exc.code)
            await self._send(send, exc.status, exc.body(), challenge=exc.status == 401)
            return
        await self._send(send, status, result)

    def _cached_read(self, vault: Vault, caller: Caller, method: str, path: str) -> dict[str, Any] | None:
        """The hot path, GET /secrets/{name}[/{version}], answered on the event loop when nothing in it
        needs storage: no thread hop, no GIL contention between pool threads."""
        if method != "GET":
            return None
        parts = [p for p in path.split("/") if p]
        if len(parts) not in (2, 3) or parts[0].lower() != "secrets" or (len(parts) == 3 and parts[2] == "versions"):
            return None
        return self.service.cached_get(vault, caller, parts[1], parts[2] if len(parts) == 3 else None)

    def _page(
        self,
        vault: Vault,
        path: str,
        query: dict[str, str],
        api_version: str,
        fetch: Callable[[int, int], tuple[list[dict[str, Any]], bool]],
    ) -> tuple[int, Any]:
        try:
            top = min(int(query.get("maxresults") or MAX_PAGE), MAX_PAGE)
            skip = int(query.get("$skiptoken") or 0)
        except ValueError as exc:
            raise VaultError(400, "BadParameter", "maxresults and $skiptoken must be integers.") from exc
        if top < 1 or skip < 0:
            raise VaultError(400, "BadParameter", "maxresults must be 1-25.")
        items, more = fetch(skip, top)
        link = f"{vault.base_url}{path}?api-version={api_version}&$skiptoken={skip + top}&maxresults={top}"
        return 200, {"value": items, "nextLink": link if more else None}

    def _dispatch(
        self, vault: Vault, caller: Caller, method: str, path: str, body: Any, query: dict[str, str], api_version: str
    ) -> tuple[int, Any]:
        s = self.service
        parts = [p for p in path.split("/") if p]
        collection = parts[0].lower() if parts else ""
        route = (method, collection, len(parts))
        if collection == "secrets":
            if route == ("GET", "secrets", 1):
                return self._page(
                    vault, "/secrets", query, api_version, lambda k, t: s.list_secrets(vault, caller, k, t)
                )
            if route == ("POST", "secrets", 2) and parts[1].lower() == "restore":
                return 200, s.restore(vault, caller, body)
            if len(parts) == 2:
                name = parts[1]
                handlers: dict[str, Callable[[], Any]] = {
                    "PUT": lambda: s.set(vault, caller, name, body),
                    "GET": lambda: s.get(vault, caller, name, None),
                    "DELETE": lambda: s.delete(vault, caller, name),
                    "PATCH": lambda: s.update(vault, caller, name, None, body),
                }
                if method in handlers:
                    return 200, handlers[method]()
            if len(parts) == 3:
                name, tail = parts[1], parts[2]
                if method == "GET" and tail.lower() == "versions":
                    return self._page(
                        vault,
                        f"/secrets/{name}/versions",
                        query,
                        api_version,
                        lambda k, t: s.list_versions(vault, caller, name, k, t),
                    )
                if method == "POST" and tail.lower() == "backup":
                    return 200, s.backup(vault, caller, name)
                if method == "GET":
                    return 200, s.get(vault, caller, name, tail)
                if method == "PATCH":
                    return 200, s.update(vault, caller, name, tail, body)
        if collection == "deletedsecrets":
            if route == ("GET", "deletedsecrets", 1):
                return self._page(
                    vault, "/deletedsecrets", query, api_version, lambda k, t: s.list_deleted(vault, caller, k, t)
                )
            if len(parts) == 2 and method == "GET":
                return 200, s.get_deleted(vault, caller, parts[1])
            if len(parts) == 2 and method == "DELETE":
                s.purge(vault, caller, parts[1])
                return 204, None
            if len(parts) == 3 and method == "POST" and parts[2].lower() == "recover":
                return 200, s.recover(vault, caller, parts[1])
        if method not in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            raise VaultError(405, "MethodNotAllowed", "The request method is not supported by this vault.")
        raise VaultError(404, "NotFound", "The requested operation is not supported by this vault.")


class HostRouter:
    """Sends {vault}.vault.{zone}[:port] to the vault, everything else to the main app."""

    def __init__(self, main: ASGIApp, vault: VaultApp, zone: str, ports: tuple[int, ...]) -> None:
        self.main = main
        self.vault = vault
        self.suffixes = (*(f".vault.{zone}:{port}".encode() for port in ports), f".vault.{zone}".encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = b""
            for name, value in scope["headers"]:
                if name == b"host":
                    host = value.lower()
                    break
            for suffix in self.suffixes:
                if host.endswith(suffix) and len(host) > len(suffix):
                    label = host[: -len(suffix)].decode("latin-1")
                    if "." not in label:
                        await self.vault(scope, receive, send, label)
                        return
        await self.main(scope, receive, send)
