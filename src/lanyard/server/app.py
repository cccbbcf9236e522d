"""Composition: one ASGI app serving the directory, Graph and (later) the control plane."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lanyard.arm.http import ArmRoutes
from lanyard.arm.service import ControlPlane
from lanyard.audit import NULL_AUDITOR, server_auditor
from lanyard.audit.api import AuditRoutes
from lanyard.audit.http import AuditMiddleware
from lanyard.audit.writer import Auditor
from lanyard.core.clock import Clock
from lanyard.core.errors import StoreUnavailable
from lanyard.core.jobs import PeriodicJob
from lanyard.directory.graph import GraphRoutes
from lanyard.directory.http import DirectoryRoutes, StaticDocuments
from lanyard.directory.limits import ClientLimits
from lanyard.directory.oidc import IssuerKeys
from lanyard.directory.renewal import IdentityRenewal, RenewalPolicy
from lanyard.directory.rotation import KeyLifecycle, RotationPolicy
from lanyard.directory.service import Directory, DirectoryConfig
from lanyard.directory.signin import PasswordLimits, SignIn
from lanyard.directory.signin_pages import SignInPages
from lanyard.fleet.http import FleetRoutes
from lanyard.fleet.hub import BindingsHub
from lanyard.fleet.service import Fleet
from lanyard.observe import metrics
from lanyard.observe.access import AccessLog, AccessLogMiddleware
from lanyard.observe.files import log_dir
from lanyard.observe.http import MetricsRoutes, count_denial, platform_family
from lanyard.observe.logs import ACCESS_LOG
from lanyard.portal.routes import Portal
from lanyard.portal.sessions import SessionKeys, SessionStore
from lanyard.server.bootstrap import Platform
from lanyard.server.keys_api import KeyRoutes
from lanyard.storage.feed import Follower
from lanyard.vault.http import HostRouter, VaultApp
from lanyard.vault.references import ReferenceStatuses
from lanyard.vault.service import VaultService

log = logging.getLogger("lanyard.server")


@dataclass(frozen=True)
class Urls:
    authority: str  # https://host:port, the public URL every node issues and accepts
    known_bases: tuple[str, ...]
    port: int  # the public port (in vault host names and audiences)
    zone: str
    bound_port: int = 0  # the port this node listens on, when a balancer maps another in front

    @property
    def vault_suffix(self) -> str:
        """Vault hosts are {name}.{vault_suffix}; the SDK requires them under the audience host, port included."""
        return f"vault.{self.zone}:{self.port}"

    @property
    def vault_audience(self) -> str:
        return f"https://{self.vault_suffix}"

    @property
    def graph(self) -> str:
        return f"{self.authority}/graph"


def urls_for(host: str, port: int, zone: str, public_url: str | None = None) -> Urls:
    """This node's URLs. With a public URL (nodes behind a balancer) every node uses that one for
    the authority, issuer and vault audiences, so all issue and accept the same tokens."""

    def fmt(h: str, p: int) -> str:
        return f"https://[{h}]:{p}" if ":" in h else f"https://{h}:{p}"

    local = {fmt("localhost", port), fmt("127.0.0.1", port), fmt("::1", port)}
    if public_url:
        from urllib.parse import urlsplit

        parts = urlsplit(public_url)
        public_port = parts.port or 443
        authority = public_url.rstrip("/")
        return Urls(authority, tuple(sorted({authority, *local})), public_port, zone, port)
    authority = fmt(host, port)
    return Urls(authority, tuple(sorted({authority, *local})), port, zone, port)


def _error_body(path: str, status: int, message: str) -> bytes:
    """Unknown routes answer in the wire format of the API family the path belongs to."""
    if path.startswith("/graph/"):
        code = {404: "Request_ResourceNotFound", 405: "Request_BadRequest", 503: "serviceNotAvailable"}.get(
            status, "UnknownError"
        )
        return orjson.dumps({"error": {"code": code, "message": message}})
    if path.startswith(("/subscriptions", "/providers", "/tenants", "/metadata")):
        code = {404: "NotFound", 405: "MethodNotAllowed", 503: "ServiceUnavailable"}.get(status, "InternalServerError")
        return orjson.dumps({"error": {"code": code, "message": message}})
    error = "invalid_request" if status < 500 else "temporarily_unavailable" if status == 503 else "server_error"
    return orjson.dumps({"error": error, "error_description": message})


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {
        404: "The requested resource was not found.",
        405: f"The HTTP method '{request.method[:10]}' is not supported for this resource.",
    }.get(exc.status_code, exc.detail)
    return Response(
        _error_body(request.url.path, exc.status_code, message),
        status_code=exc.status_code,
        media_type="application/json",
        headers=getattr(exc, "headers", None),
    )


async def _store_unavailable(request: Request, exc: Exception) -> Response:
    return Response(
        _error_body(request.url.path, 503, "The service is temporarily unavailable; retry shortly."),
        status_code=503,
        media_type="application/json",
        headers={"Retry-After": "1"},
    )


class CatchAll:
    """Last line: an unexpected exception becomes a bare 500 in the right format, never a traceback."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except StoreUnavailable:
            log.warning("database unavailable on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            await _send_error(send, scope, 503, "The service is temporarily unavailable; retry shortly.")
        except Exception:
            # The exception text may quote request data; log its type and place only.
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            await _send_error(send, scope, 500, "The server encountered an internal error.")


def _is_vault_host(scope: Scope) -> bool:
    for name, value in scope.get("headers", []):
        if name == b"host":
            return b".vault." in value
    return False


async def _send_error(send: Send, scope: Scope, status: int, message: str) -> None:
    if _is_vault_host(scope):
        code = "ServiceUnavailable" if status == 503 else "InternalServerError"
        body = orjson.dumps({"error": {"code": code, "message": message}})
    else:
        body = _error_body(scope.get("path", ""), status, message)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 503:
        headers.append((b"retry-after", b"1"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@dataclass(frozen=True)
class Served:
    app: ASGIApp
    fleet: Fleet
    hub: BindingsHub
    follower: Follower
    jobs: tuple[PeriodicJob, ...]
    access: AccessLog | None = None  # closed by the server on shutdown (writes out what is queued)
    audit: Auditor = NULL_AUDITOR  # bound to the server's loop when it starts, closed when it stops


def build_app(platform: Platform, urls: Urls, clock: Clock) -> Served:
    follower = Follower(platform.store.engine)
    auditor = server_auditor(platform.settings.audit, platform.store.engine, clock)
    directory = Directory(
        platform.store,
        platform.barrier,
        platform.keys,
        clock,
        DirectoryConfig(
            authority=urls.authority,
            known_bases=urls.known_bases,
            token_lifetime=platform.settings.token_lifetime,
            identity_cert_lifetime=platform.settings.identity_cert_lifetime,
        ),
        IssuerKeys(platform.settings.federation, clock),
    )
    limits = platform.settings.limits
    client_limits = ClientLimits.of(
        limits.client_rate, limits.client_burst, limits.secret_failures, limits.secret_failure_refill, clock
    )
    signin = SignIn(
        directory,
        PasswordLimits.of(
            limits.password_failures, limits.password_source_failures, limits.password_failure_refill, clock
        ),
    )
    directory_routes = DirectoryRoutes(directory, auditor, client_limits, signin)

    async def settle_nodes() -> bool:
        return await follower.settle(platform.store.written_through)

    async def settle_all() -> bool:
        # A write returns once every live node and every connected agent has applied it.
        nodes, agents = await asyncio.gather(settle_nodes(), hub.settle())
        return nodes and agents

    graph = GraphRoutes(directory, urls.graph, frozenset({platform.identity.admin_object_id}), settle_nodes)
    control = ControlPlane(
        platform.store,
        directory,
        clock,
        tenant_id=platform.identity.tenant_id,
        zone=platform.settings.dns_zone,
        base_url=urls.authority,
        vault_suffix=urls.vault_suffix,
    )
    # The admin application is Owner of the platform's subscription, as its creator would be.
    control.ensure_owner(platform.identity.admin_object_id, platform.identity.subscription_id)
    fleet = Fleet(platform.store, directory, control, clock, platform.identity.tenant_id)
    fleet.audit = auditor
    fleet.workload_token_lifetime = platform.settings.federation.workload_token_lifetime
    hub = BindingsHub(fleet, platform.store, clock)
    arm = ArmRoutes(control, directory, urls.authority, settle=settle_all)
    settings = platform.settings
    policy = RotationPolicy.for_tokens(settings.key_rotation_period, settings.key_publish_lead, settings.token_lifetime)
    lifecycle = KeyLifecycle(platform.store, platform.barrier, platform.keys, clock, policy)
    lifecycle.audit = auditor
    rotation = PeriodicJob("signing-key rotation", lifecycle.step, tick=min(1.0, policy.publish_lead / 10))
    renewal_policy = RenewalPolicy.checked(
        settings.identity_cert_lifetime, settings.identity_cert_renew_after, settings.identity_cert_grace
    )
    renewal = PeriodicJob(
        "identity certificate renewal",
        IdentityRenewal(directory, clock, renewal_policy, auditor).step,
        tick=min(60.0, renewal_policy.renew_after / 10),
    )
    fleet_routes = FleetRoutes(fleet, hub, arm, settle_all)
    portal_sessions = SessionStore(clock, platform.store, SessionKeys.of(platform.barrier))
    app = Starlette(
        routes=[
            Mount("/graph/v1.0", routes=graph.routes()),
            *KeyRoutes(lifecycle, arm, settle_all).routes(),
            *MetricsRoutes(arm).routes(),
            *AuditRoutes(arm, fleet_routes.authenticate_host).routes(),
            *fleet_routes.routes(),
            *arm.routes(),
            *directory_routes.routes(),
            *SignInPages(signin).routes(),
            *Portal(urls.authority, portal_sessions, str(platform.tls.ca_cert)).routes(),
        ],
        exception_handlers={HTTPException: _http_exception, StoreUnavailable: _store_unavailable},
    )
    vaults = VaultService(platform.store, platform.barrier, clock, urls.vault_suffix)
    control.references = ReferenceStatuses(vaults, platform.identity.tenant_id)
    vault_app = VaultApp(
        vaults,
        directory.verifier,
        urls.vault_audience,
        f"{urls.authority}/{platform.identity.tenant_id}",
        settle_nodes,
        audit=auditor,
    )
    documents = StaticDocuments(AuditMiddleware(app, auditor, _send_error), directory_routes)
    ports = (urls.port, urls.bound_port) if urls.bound_port and urls.bound_port != urls.port else (urls.port,)
    routed = HostRouter(documents, vault_app, platform.settings.dns_zone, ports)
    # Everything that caches follows the change feed: this node's own commits at once, every
    # other node's through the follower.
    for listener in (directory.apply, vaults.apply, vault_app.apply, hub.apply):
        follower.subscribe(listener)
    platform.store.on_commit(follower.dispatch)
    platform.store.on_commit(lambda _changes: follower.wake())
    access = (
        AccessLog(log_dir(platform.settings.home) / ACCESS_LOG, clock, metrics.ACCESS_LOG_DROPPED).start()
        if platform.settings.access_log
        else None
    )
    served = AccessLogMiddleware(
        CatchAll(routed), access, platform_family, metrics.HTTP_RESPONSES, metrics.HTTP_LATENCY, count_denial
    )
    grant_cleanup = PeriodicJob("sign-in grant cleanup", signin.forget_expired, tick=600.0)
    return Served(served, fleet, hub, follower, (rotation, renewal, grant_cleanup), access, auditor)
