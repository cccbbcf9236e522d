"""HTTP surface for host agents (join, bindings) and operators (join tokens, hosts, placements).

Errors use the ARM envelope. Agents authenticate with tokens for AGENT_AUDIENCE, operators with
management tokens and RBAC.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from lanyard.arm.http import ArmRoutes, arm_response, read_json_object
from lanyard.core.errors import ArmError
from lanyard.fleet.hub import BindingsHub
from lanyard.fleet.service import AGENT_AUDIENCE, Fleet
from lanyard.protocol.bearer import InvalidToken, bearer_token
from lanyard.storage.fleet_repo import HostRecord

MAX_WAIT = 30.0


class FleetRoutes:
    def __init__(self, fleet: Fleet, hub: BindingsHub, arm: ArmRoutes, settle: Callable[[], Awaitable[bool]]) -> None:
        self.fleet = fleet
        self.hub = hub
        self.arm = arm
        self.settle = settle
        self.agent_audiences = frozenset({AGENT_AUDIENCE})

    async def _json(self, request: Request) -> dict[str, object]:
        return await read_json_object(request, 64 * 1024)  # capped while reading: /join is unauthenticated

    @staticmethod
    def _error(exc: ArmError) -> Response:
        return arm_response(exc.status_value, exc.body())

    async def join(self, request: Request) -> Response:
        try:
            body = await self._json(request)
            result = await run_in_threadpool(
                self.fleet.join, body.get("token"), body.get("name"), body.get("certificate")
            )
        except ArmError as exc:
            return self._error(exc)
        return arm_response(200, result)

    async def join_tokens(self, request: Request) -> Response:
        try:
            caller = self.arm.caller(request)
            body = await self._json(request)
            name = body.get("name")
            token = await run_in_threadpool(
                self.fleet.create_join_token, caller, name if isinstance(name, str) else None
            )
        except ArmError as exc:
            return self._error(exc)
        return arm_response(200, {"token": token, "expiresInSeconds": 3600})

    async def hosts(self, request: Request) -> Response:
        try:
            caller = self.arm.caller(request)
            hosts = await run_in_threadpool(self.fleet.list_hosts, caller)
        except ArmError as exc:
            return self._error(exc)
        return arm_response(200, {"value": hosts})

    async def host(self, request: Request) -> Response:
        try:
            caller = self.arm.caller(request)
            result = await run_in_threadpool(self.fleet.revoke_host, caller, str(request.path_params["host"]))
            await self.settle()
        except ArmError as exc:
            return self._error(exc)
        return arm_response(200, result)

    async def placements(self, request: Request) -> Response:
        try:
            caller = self.arm.caller(request)
            if request.method == "PUT":
                resource_id = (await self._json(request)).get("resourceId")
            else:
                resource_id = request.query_params.get("resourceId")
            if not isinstance(resource_id, str):
                raise ArmError("resourceId is required.", code="InvalidRequestContent")
            result = await run_in_threadpool(
                self.fleet.place, caller, request.path_params["host"], resource_id, remove=request.method == "DELETE"
            )
            await self.settle()
        except ArmError as exc:
            return self._error(exc)
        return arm_response(200, result)

    async def _host(self, request: Request) -> HostRecord:
        token = bearer_token(request.headers.get("authorization"))
        if token is None:
            raise ArmError("A host agent token is required.", code="AuthenticationFailed", status=401)
        try:
            claims = self.fleet.directory.verifier.verify(token, self.agent_audiences)
        except InvalidToken as exc:
            raise ArmError(
                f"The host agent token is invalid: {exc}.", code="InvalidAuthenticationToken", status=401
            ) from exc
        host = await run_in_threadpool(self.fleet.host_for_principal, claims["oid"])
        if host is None:
            raise ArmError("The caller is not a registered host.", code="AuthorizationFailed", status=403)
        return host

    async def authenticate_host(self, request: Request) -> HostRecord:
        """The registered host an agent's token names, for other routes agents call (audit shipping)."""
        return await self._host(request)

    async def credential(self, request: Request) -> Response:
        """An agent registers its renewed certificate, signed in with its current one."""
        try:
            host = await self._host(request)
            body = await self._json(request)
            result = await run_in_threadpool(self.fleet.renew_host_credential, host, body.get("certificate"))
            await self.settle()
        except ArmError as exc:
            return self._error(exc)
        return arm_response(200, result)

    async def workload_token(self, request: Request) -> Response:
        """A projected service-account token for one of this host's workloads (AKS-style runs)."""
        try:
            host = await self._host(request)
            body = await self._json(request)
            result = await run_in_threadpool(self.fleet.workload_token, host, body.get("resourceId"))
        except ArmError as exc:
            return self._error(exc)
        return arm_response(200, result, {"Cache-Control": "no-store"})

    async def bindings(self, request: Request) -> Response:
        try:
            host = await self._host(request)
            try:
                wait = float(request.query_params.get("wait", "0"))
            except ValueError:
                wait = math.nan
            if not math.isfinite(wait):
                raise ArmError("wait must be a number of seconds.", code="InvalidRequestContent")
            wait = min(max(wait, 0.0), MAX_WAIT)
            bindings = await self.hub.poll(host.id, request.query_params.get("etag"), wait)
        except ArmError as exc:
            return self._error(exc)
        if bindings is None:
            return Response(status_code=304)
        return Response(bindings.body, media_type="application/json", headers={"Cache-Control": "no-store"})

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/lanyard/v1/join", self.join, methods=["POST"]),
            Route("/lanyard/v1/joinTokens", self.join_tokens, methods=["POST"]),
            Route("/lanyard/v1/hosts", self.hosts, methods=["GET"]),
            Route("/lanyard/v1/hosts/{host}", self.host, methods=["DELETE"]),
            Route("/lanyard/v1/hosts/{host}/placements", self.placements, methods=["PUT", "DELETE"]),
            Route("/lanyard/v1/agent/bindings", self.bindings, methods=["GET"]),
            Route("/lanyard/v1/agent/credential", self.credential, methods=["POST"]),
            Route("/lanyard/v1/agent/workloadToken", self.workload_token, methods=["POST"]),
        ]
