"""HTTP surface of the control plane: authentication, api-version, paths, and ARM error bodies."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from lanyard.arm import web
from lanyard.arm.service import Caller, ControlPlane
from lanyard.core.body import declared_length, read_capped
from lanyard.core.errors import ArmError
from lanyard.directory.service import Directory
from lanyard.protocol import lenient_json
from lanyard.protocol.arm import check_api_version, parse_path
from lanyard.protocol.bearer import InvalidToken, bearer_token, normalize_audience

MAX_BODY = 4 * 1024 * 1024
MANAGEMENT_AUDIENCES = ("https://management.azure.com", "https://management.core.windows.net")
_METHODS = ["GET", "PUT", "PATCH", "DELETE", "POST", "HEAD"]
WRITES = frozenset({"PUT", "PATCH", "DELETE"})


def arm_response(status: int, body: object = None, headers: dict[str, str] | None = None) -> Response:
    if isinstance(body, bytes):  # a provider action's own document (publishxml)
        return Response(body, status_code=status, headers=headers)
    content = b"" if body is None else orjson.dumps(body)
    media = "application/json" if body is not None else None
    return Response(content, status_code=status, media_type=media, headers=headers)


async def read_json_object(request: Request, limit: int) -> dict[str, Any]:
    """A capped JSON object body for the platform's own ARM-envelope APIs (join, hosts, audit
    shipments): too large is 413 before more is read, anything but an object is 400."""
    raw = await read_capped(
        request.receive,
        limit,
        lambda: ArmError("The request content is too large.", code="RequestContentTooLarge", status=413),
        declared_length(request.scope.get("headers")),
    )
    try:
        body = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError as exc:
        raise ArmError("The request content is not JSON.", code="InvalidRequestContent") from exc
    if not isinstance(body, dict):
        raise ArmError("The request content must be a JSON object.", code="InvalidRequestContent")
    return body


class ArmRoutes:
    def __init__(
        self,
        control: ControlPlane,
        directory: Directory,
        base_url: str,
        settle: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self.control = control
        self.settle = settle
        self.directory = directory
        self.base_url = base_url.rstrip("/")
        self.audiences = frozenset(normalize_audience(a) for a in (*MANAGEMENT_AUDIENCES, self.base_url))
        self.challenge = (
            f'Bearer authorization_uri="{directory.config.authority}/{control.tenant_id}", '
            'error="invalid_token", error_description="The access token is missing or invalid."'
        )

    def caller(self, request: Request) -> Caller:
        token = bearer_token(request.headers.get("authorization"))
        if token is None:
            raise ArmError(
                "The request does not contain a valid authentication token: a Bearer token for "
                "https://management.azure.com/ is required.",
                code="AuthenticationFailed",
                status=401,
            )
        try:
            claims = self.directory.verifier.verify(token, self.audiences)
        except InvalidToken as exc:
            raise ArmError(
                f"The access token is invalid: {exc}.", code="InvalidAuthenticationToken", status=401
            ) from exc
        return Caller(object_id=claims["oid"], app_id=claims["appid"], tenant_id=claims["tid"])

    async def _body(self, request: Request) -> object:
        if request.method not in ("PUT", "PATCH", "POST"):
            return None
        raw = await read_capped(
            request.receive,
            MAX_BODY,
            lambda: ArmError("The request content is too large.", code="RequestContentTooLarge", status=413),
        )
        if not raw.strip():
            return None
        try:
            # Json.NET's leniency, as Resource Manager parses bodies (az splices a raw template in).
            return lenient_json.loads(raw)
        except lenient_json.LenientJsonError as exc:
            raise ArmError(
                "The request content was invalid and could not be deserialized.", code="InvalidRequestContent"
            ) from exc

    async def dispatch(self, request: Request) -> Response:
        try:
            # Authenticate before anything else, the body included.
            caller = self.caller(request)
            check_api_version(request.query_params.get("api-version"))
            path = parse_path(request.url.path)
            body = await self._body(request)
            query = dict(request.query_params)
            reply = await run_in_threadpool(self.control.handle, request.method, path, body, query, caller)
            if self.settle is not None and request.method in WRITES and reply.status < 300:
                # Return only once every agent has applied the change (bounded): "at once" means at once.
                await self.settle()
        except ArmError as exc:
            headers = {"WWW-Authenticate": self.challenge} if exc.status_value == 401 else None
            if request.method == "HEAD":
                return Response(status_code=exc.status_value, headers=headers)
            return arm_response(exc.status_value, exc.body(), headers)
        return arm_response(reply.status, reply.body, reply.headers)

    async def tenant_provider(self, request: Request) -> Response:
        """`/providers/Microsoft.Web/webAppStacks|functionAppStacks`: tenant-level reads az makes before
        `webapp create --runtime` and `functionapp create`."""
        try:
            self.caller(request)
            check_api_version(request.query_params.get("api-version"))
            namespace, kind = request.path_params["namespace"], request.path_params["kind"]
            if namespace.lower() != "microsoft.web":
                raise ArmError(
                    f"The resource namespace '{namespace[:80]}' is invalid.",
                    code="InvalidResourceNamespace",
                    status=404,
                )
            return arm_response(200, web.stacks_json(kind))
        except ArmError as exc:
            headers = {"WWW-Authenticate": self.challenge} if exc.status_value == 401 else None
            return arm_response(exc.status_value, exc.body(), headers)

    async def metadata_endpoints(self, request: Request) -> Response:
        """What `az cloud register --endpoint-resource-manager` discovers (docs/protocols.md §7)."""
        authority = self.directory.config.authority
        return arm_response(
            200,
            {
                "name": "Lanyard",
                "galleryEndpoint": f"{self.base_url}/",
                "graphEndpoint": f"{authority}/graph/",
                "graph": f"{authority}/graph/",
                "microsoftGraphResourceId": f"{authority}/graph/",
                "portalEndpoint": f"{self.base_url}/",
                "portal": f"{self.base_url}/",
                "resourceManager": f"{self.base_url}/",
                "authentication": {
                    "loginEndpoint": f"{authority}/",
                    "audiences": ["https://management.core.windows.net/", "https://management.azure.com/"],
                    "tenant": "common",
                    "identityProvider": "AAD",
                },
                "suffixes": {"keyVaultDns": f".{self.control.vault_suffix}", "storage": self.control.zone},
            },
        )

    async def tenants(self, request: Request) -> Response:
        """`GET /tenants`: the caller's own tenant (az lists tenants after signing a user in)."""
        try:
            caller = self.caller(request)
            check_api_version(request.query_params.get("api-version"))
        except ArmError as exc:
            headers = {"WWW-Authenticate": self.challenge} if exc.status_value == 401 else None
            return arm_response(exc.status_value, exc.body(), headers)
        tenant = caller.tenant_id
        return arm_response(
            200,
            {
                "value": [
                    {
                        "id": f"/tenants/{tenant}",
                        "tenantId": tenant,
                        "tenantCategory": "Home",
                        "displayName": "Lanyard",
                        "defaultDomain": "lanyard.local",
                        "domains": ["lanyard.local"],
                        "tenantType": "AAD",
                    }
                ]
            },
        )

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/metadata/endpoints", self.metadata_endpoints, methods=["GET"]),
            Route("/tenants", self.tenants, methods=["GET"]),
            Route("/providers/{namespace}/{kind}", self.tenant_provider, methods=["GET"]),
            Route("/subscriptions", self.dispatch, methods=_METHODS),
            Route("/subscriptions/{path:path}", self.dispatch, methods=_METHODS),
        ]
