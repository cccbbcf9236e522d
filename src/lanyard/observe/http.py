"""Serving the metrics, and naming the route family of a request (the label of the request metrics).

The platform's `/metrics` is on its HTTPS port and needs a bearer token for ARM whose principal may
read the platform's subscription (`Microsoft.Insights/metrics/read`: Owner, Contributor, Reader):
the administrator, or a scraper given a service principal with Reader. A workload's managed identity
has no role there unless someone grants it one. The agent's metrics are served only on a unix
socket only its own user can open (`<agent home>/metrics.sock`, 0600), never on the loopback port
every workload can reach.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from lanyard.arm.http import ArmRoutes, arm_response
from lanyard.arm.service import Caller
from lanyard.core.errors import ArmError
from lanyard.observe import metrics
from lanyard.storage import directory_repo as repo

READ = "Microsoft.Insights/metrics/read"
METRICS_PATH = "/metrics"
NOT_FOUND = b'{"error":"not_found","error_description":"Only GET /metrics is served here."}'
_ARM_PREFIXES = ("/subscriptions", "/providers", "/tenants", "/metadata")


def platform_family(scope: Scope) -> str:
    """A handful of fixed names, never anything taken from the request."""
    for name, value in scope["headers"]:
        if name == b"host":
            if b".vault." in value:
                return "vault"
            break
    path: str = scope["path"]
    if path.endswith(("/oauth2/v2.0/token", "/oauth2/token")):
        return "token"
    if "/.well-known/" in path or path.endswith(("/discovery/keys", "/discovery/v2.0/keys", "/discovery/instance")):
        return "discovery"
    if path.startswith("/graph/"):
        return "graph"
    if path.startswith("/lanyard/v1/agent/"):
        return "agent"  # bindings long polls and credential renewals: slow by design
    if path.startswith(("/lanyard/v1/hosts", "/lanyard/v1/join")):
        return "fleet"
    if path.startswith("/lanyard/v1/") or path == METRICS_PATH:
        return "admin"
    if path.startswith(_ARM_PREFIXES):
        return "arm"
    return "other"


def count_denial(family: str, status: int) -> None:
    kind = "unauthenticated" if status == 401 else "vault" if family == "vault" else "authz"
    metrics.DENIALS.labels(kind, family).inc()


class MetricsRoutes:
    def __init__(self, arm: ArmRoutes) -> None:
        self.arm = arm

    def _authorize(self, caller: Caller) -> None:
        control = self.arm.control
        with control.store.session() as s:
            subscriptions = repo.list_subscriptions(s, control.tenant_id)
            control.authorize(s, caller, READ, f"/subscriptions/{subscriptions[0].id}")

    async def scrape(self, request: Request) -> Response:
        try:
            caller = self.arm.caller(request)
            await run_in_threadpool(self._authorize, caller)
        except ArmError as exc:
            return arm_response(exc.status_value, exc.body())
        # Multiprocess mode reads one file per worker and metric: off the event loop.
        body = await run_in_threadpool(metrics.platform_exposition)
        return Response(body, media_type=metrics.CONTENT_TYPE, headers={"Cache-Control": "no-store"})

    def routes(self) -> list[BaseRoute]:
        return [Route(METRICS_PATH, self.scrape, methods=["GET"])]


class AgentMetricsApp:
    """GET /metrics on the agent's private unix socket; anything else is a 404."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == METRICS_PATH and scope["method"] == "GET":
            status, body, kind = 200, metrics.agent_exposition(), metrics.CONTENT_TYPE
        else:
            status, body, kind = 404, NOT_FOUND, "application/json"
        headers = [(b"content-type", kind.encode()), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
