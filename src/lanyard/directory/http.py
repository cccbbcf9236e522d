"""HTTP surface of the directory: token endpoints, discovery documents, JWKS.

Every failure on these routes is rendered as an OAuth error body (RFC 6749 §5.2, Entra-style).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from lanyard.audit.record import Event, token_ref, unverified_claims
from lanyard.audit.writer import NULL_AUDITOR, Auditor
from lanyard.core.body import declared_length, read_capped
from lanyard.core.errors import AuditUnavailable, InvalidRequest, OAuthError
from lanyard.directory.limits import ClientLimits
from lanyard.directory.service import WORKLOAD_ISSUER_PATH, Directory
from lanyard.directory.signin import SignIn
from lanyard.directory.workload_issuer import JWKS_PATH, discovery_document
from lanyard.observe import metrics
from lanyard.protocol import discovery
from lanyard.protocol.oauth2 import (
    MAX_FORM_BYTES,
    USER_GRANTS,
    is_guid,
    parse_form,
    parse_token_request,
    parse_user_grant,
)

NO_STORE = {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"}
# The token endpoint answers browsers cross-origin as Entra does (a single-page app redeems its code
# with fetch); which redemptions a cross-origin request may make is the sign-in's rule (AADSTS9002326/7).
CORS = {"Access-Control-Allow-Origin": "*"}
PREFLIGHT = {
    **CORS,
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Max-Age": "86400",
}
# Discovery documents and keys may be cached by clients, briefly: keys roll.
CACHEABLE = {"Cache-Control": "max-age=300, private"}
_ALIASES = frozenset({"common", "organizations", "consumers"})


class InvalidTenant(OAuthError):
    error = "invalid_tenant"


class TemporarilyUnavailable(OAuthError):
    error = "temporarily_unavailable"
    status = 503


def json_response(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def oauth_error(exc: OAuthError) -> Response:
    retry_after = getattr(exc, "retry_after", None)
    return json_response(exc.body(), exc.status, {**NO_STORE, "Retry-After": retry_after} if retry_after else NO_STORE)


class DirectoryRoutes:
    def __init__(
        self,
        directory: Directory,
        audit: Auditor = NULL_AUDITOR,
        limits: ClientLimits | None = None,
        signin: SignIn | None = None,
    ) -> None:
        self.directory = directory
        self.signin = signin
        self.authority = directory.config.authority
        self.audit = audit
        self.limits = limits or ClientLimits.unlimited()

    async def _record_issued(self, request: Request, tenant: str, endpoint: str, token: str) -> None:
        """No token leaves unless its record was accepted (docs/security.md, "The audit trail")."""
        claims = unverified_claims(token)
        token_id = claims.get("uti") or claims.get("jti")
        client = request.client
        event = Event(
            "token.issue",
            "granted",
            claims.get("oid"),
            claims.get("appid"),
            claims.get("aud"),
            None,
            {
                "token_ref": token_ref(str(token_id)) if token_id else None,
                "credential": "secret" if claims.get("appidacr") == "1" else "certificate",
                "endpoint": endpoint,
                "tenant": tenant,
                "exp": claims.get("exp"),
                "client": f"{client.host}:{client.port}" if client else None,
            },
        )
        try:
            await self.audit.record(event)
        except AuditUnavailable as exc:
            raise TemporarilyUnavailable(
                90033, "A transient error has occurred (the audit trail is unavailable). Please try again."
            ) from exc

    def _tenant(self, request: Request, *, allow_alias: bool) -> str:
        tenant = str(request.path_params["tenant"]).lower()
        if allow_alias and tenant in _ALIASES:
            return tenant
        if not is_guid(tenant) or not self.directory.has_tenant(tenant):
            raise InvalidTenant(
                90002,
                f"Tenant '{tenant[:64]}' not found. Check to make sure you have the correct tenant ID and "
                "are signing into the correct cloud.",
            )
        return tenant

    async def token(self, request: Request, endpoint: Literal["v1", "v2"]) -> Response:
        if request.method == "OPTIONS":
            return self._preflight(request)
        response = await self._token(request, endpoint)
        response.headers.update(CORS)
        return response

    @staticmethod
    def _preflight(request: Request) -> Response:
        """A browser's CORS preflight: POST with the headers it asked for (names only, bounded)."""
        asked = request.headers.get("access-control-request-headers", "")[:512]
        names = [n.strip() for n in asked.split(",") if n.strip() and all(c.isalnum() or c == "-" for c in n.strip())]
        headers = dict(PREFLIGHT)
        if names:
            headers["Access-Control-Allow-Headers"] = ", ".join(names)
        return Response(status_code=204, headers=headers)

    async def _token(self, request: Request, endpoint: Literal["v1", "v2"]) -> Response:
        try:
            if request.method != "POST":
                raise InvalidRequest(
                    900561, f"The endpoint only accepts POST requests. Received a {request.method[:10]} request."
                )
            tenant = self._tenant(request, allow_alias=True)
            content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if content_type != "application/x-www-form-urlencoded":
                raise InvalidRequest(900144, "The request body must be application/x-www-form-urlencoded.")
            body = await read_capped(
                request.receive,
                MAX_FORM_BYTES,
                lambda: InvalidRequest(900144, "The request body is too large."),
                declared_length(request.scope.get("headers")),
            )
            form = parse_form(body)
            source = request.client.host if request.client else ""
            if self.signin is not None and form.get("grant_type") in USER_GRANTS:
                return await self._user_token(request, tenant, endpoint, form, source)
            if tenant in _ALIASES:
                self._tenant(request, allow_alias=False)  # app-only tokens name their tenant
            token_request = parse_token_request(form, endpoint, request.headers.get("authorization"))
            with self.limits.guard(token_request, request.client.host if request.client else ""):
                if self.directory.is_cached(token_request.client_id):
                    # Pure CPU (one signature check, one signature): a thread hop would only add contention.
                    result = self.directory.token(tenant, token_request)
                else:
                    # Storage may be a network database: keep its round-trips off the event loop.
                    result = await run_in_threadpool(self.directory.token, tenant, token_request)
            if self.audit.enabled:
                await self._record_issued(request, tenant, endpoint, str(result["access_token"]))
        except OAuthError as exc:
            metrics.token_refused(exc.error)
            if self.audit.enabled and exc.status != 503:
                self.audit.note(
                    Event("token.refuse", "denied", None, None, None, None, {"error": exc.error, "code": exc.aadsts})
                )
            return oauth_error(exc)
        return json_response(result, 200, NO_STORE)

    async def _user_token(
        self, request: Request, tenant: str, endpoint: Literal["v1", "v2"], form: dict[str, str], source: str
    ) -> Response:
        """A user's sign-in (password, code, device code, refresh token): storage and argon2 are
        slow, so always off the event loop."""
        assert self.signin is not None
        signin = self.signin
        grant = parse_user_grant(form, endpoint, request.headers.get("authorization"))
        grant = dataclasses.replace(grant, origin=request.headers.get("origin", "")[:512])
        try:
            with self.limits.guard(grant.as_client_request(), source):
                result = await run_in_threadpool(signin.token, tenant, grant, source)
            if self.audit.enabled:
                await self._record_issued(request, tenant, endpoint, str(result["access_token"]))
        except OAuthError as exc:
            if exc.error != "authorization_pending":
                metrics.token_refused(exc.error)
            if self.audit.enabled and exc.status != 503 and exc.error != "authorization_pending":
                self.audit.note(
                    Event("token.refuse", "denied", None, None, None, None, {"error": exc.error, "code": exc.aadsts})
                )
            return oauth_error(exc)
        return json_response(result, 200, NO_STORE)

    async def token_v1(self, request: Request) -> Response:
        return await self.token(request, "v1")

    async def token_v2(self, request: Request) -> Response:
        return await self.token(request, "v2")

    async def openid_v2(self, request: Request) -> Response:
        try:
            tenant = self._tenant(request, allow_alias=True)
        except OAuthError as exc:
            return oauth_error(exc)
        shown = "{tenantid}" if tenant in _ALIASES else tenant
        doc = discovery.openid_configuration_v2(self.authority, tenant)
        doc["issuer"] = discovery.openid_configuration_v2(self.authority, shown)["issuer"]
        return json_response(doc, 200, CACHEABLE)

    async def openid_v1(self, request: Request) -> Response:
        try:
            tenant = self._tenant(request, allow_alias=True)
        except OAuthError as exc:
            return oauth_error(exc)
        shown = "{tenantid}" if tenant in _ALIASES else tenant
        doc = discovery.openid_configuration_v1(self.authority, tenant)
        doc["issuer"] = discovery.openid_configuration_v1(self.authority, shown)["issuer"]
        return json_response(doc, 200, CACHEABLE)

    async def keys(self, request: Request) -> Response:
        try:
            self._tenant(request, allow_alias=True)
        except OAuthError as exc:
            return oauth_error(exc)
        return Response(self.directory.keys.jwks_body(), media_type="application/json", headers=CACHEABLE)

    def _workload_tenant(self, request: Request) -> str:
        tenant = str(request.path_params["tenant"]).lower()
        if not is_guid(tenant) or not self.directory.has_tenant(tenant):
            raise InvalidTenant(90002, f"Tenant '{tenant[:64]}' not found.")
        return tenant

    async def workload_issuer(self, request: Request) -> Response:
        try:
            tenant = self._workload_tenant(request)
        except OAuthError as exc:
            return oauth_error(exc)
        return json_response(discovery_document(self.directory.workload_issuer(tenant)), 200, CACHEABLE)

    async def workload_keys(self, request: Request) -> Response:
        try:
            self._workload_tenant(request)
        except OAuthError as exc:
            return oauth_error(exc)
        return Response(self.directory.keys.jwks_body(), media_type="application/json", headers=CACHEABLE)

    async def instance(self, request: Request) -> Response:
        host = request.url.netloc
        tenant = "common"
        endpoint = request.query_params.get("authorization_endpoint", "")
        parts = endpoint.split("/")
        if len(parts) > 3 and parts[3]:
            tenant = parts[3]
        return json_response(discovery.instance_discovery(self.authority, tenant, host), 200, CACHEABLE)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/common/discovery/instance", self.instance, methods=["GET"]),
            Route(
                "/{tenant}/oauth2/token", self.token_v1, methods=["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
            ),
            Route(
                "/{tenant}/oauth2/v2.0/token",
                self.token_v2,
                methods=["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"],
            ),
            Route("/{tenant}/v2.0/.well-known/openid-configuration", self.openid_v2, methods=["GET"]),
            Route("/{tenant}/.well-known/openid-configuration", self.openid_v1, methods=["GET"]),
            Route("/{tenant}/discovery/keys", self.keys, methods=["GET"]),
            Route("/{tenant}/discovery/v2.0/keys", self.keys, methods=["GET"]),
            Route(
                WORKLOAD_ISSUER_PATH + "/{tenant}/.well-known/openid-configuration",
                self.workload_issuer,
                methods=["GET"],
            ),
            Route(WORKLOAD_ISSUER_PATH + "/{tenant}" + JWKS_PATH, self.workload_keys, methods=["GET"]),
        ]


class StaticDocuments:
    """Discovery documents and key sets for every tenant, serialized once per change and answered
    before any routing: verifiers and clients fetch them constantly, and they change only when the
    key set or the tenants do (on any node: the directory follows the change feed)."""

    def __init__(self, app: ASGIApp, routes: DirectoryRoutes) -> None:
        self.app = app
        self.routes = routes
        self.documents: dict[str, bytes] = {}
        self.rebuild()
        routes.directory.keys.on_change(lambda _ring: self.rebuild())
        routes.directory.on_tenants(lambda _tenants: self.rebuild())
        self.headers = [
            (b"content-type", b"application/json"),
            (b"cache-control", CACHEABLE["Cache-Control"].encode()),
            # Public documents: a single-page app's library reads them cross-origin, as from Entra.
            (b"access-control-allow-origin", b"*"),
        ]

    def rebuild(self) -> None:
        authority = self.routes.authority
        directory = self.routes.directory
        jwks = directory.keys.jwks_body()
        tenants = sorted(directory.tenants)
        documents: dict[str, bytes] = {}
        for tenant in [*tenants, "common", "organizations"]:
            shown = tenant if tenant in tenants else "{tenantid}"
            v2 = discovery.openid_configuration_v2(authority, tenant)
            v2["issuer"] = discovery.openid_configuration_v2(authority, shown)["issuer"]
            v1 = discovery.openid_configuration_v1(authority, tenant)
            v1["issuer"] = discovery.openid_configuration_v1(authority, shown)["issuer"]
            documents[f"/{tenant}/v2.0/.well-known/openid-configuration"] = orjson.dumps(v2)
            documents[f"/{tenant}/.well-known/openid-configuration"] = orjson.dumps(v1)
            documents[f"/{tenant}/discovery/keys"] = jwks
            documents[f"/{tenant}/discovery/v2.0/keys"] = jwks
        self.documents = documents  # one reference swap

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            body = self.documents.get(scope["path"])
            if body is not None:
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [*self.headers, (b"content-length", str(len(body)).encode())],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
