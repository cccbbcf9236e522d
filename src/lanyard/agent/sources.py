"""The platforms an App Service-style workload can be run as (docs/protocols.md, "Sources").

Every official client picks its protocol from the environment alone, so a platform is an
environment plus the few rules its endpoint enforces:

- appservice / functionapp: IDENTITY_ENDPOINT + IDENTITY_HEADER (2019-08-01), and the 2017-09-01
  pair MSI_ENDPOINT + MSI_SECRET, as App Service itself sets both.
- containerapps: App Service's 2019-08-01 protocol with Container Apps' variables and no MSI_* pair.
- ml: MSI_ENDPOINT + MSI_SECRET + DEFAULT_IDENTITY_CLIENT_ID and nothing else, which every client
  reads as Azure Machine Learning: 2017-09-01 with `clientid`, answered with an epoch `expires_on`
  (MSAL does `int(expires_on)`; the 2017 date string would break it).
- servicefabric: IDENTITY_ENDPOINT (HTTPS) + IDENTITY_HEADER + IDENTITY_SERVER_THUMBPRINT, served by
  agent/servicefabric.py on a listener of its own.
- cloudshell: MSI_ENDPOINT alone: a POST with a form body (or msal4j's GET with a query) and
  `Metadata: true`, no secret, so each run gets a listener of its own (like a VM's IMDS) and caller
  attestation says who is calling.
- aks: no managed-identity endpoint at all: AKS workload identity's AZURE_CLIENT_ID, AZURE_TENANT_ID,
  AZURE_AUTHORITY_HOST and AZURE_FEDERATED_TOKEN_FILE (agent/projected.py keeps the file fresh),
  which every client reads as WorkloadIdentityCredential (federation, docs/federation.md).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from starlette.types import Receive, Scope, Send

from lanyard.agent.attest import Caller
from lanyard.agent.attesting import CallerCheck
from lanyard.agent.bindings import Identity
from lanyard.agent.guards import headers_of, refusal
from lanyard.agent.wire import first_values, metadata_path, query_of, send_json
from lanyard.agent.workloads import RunningWorkload
from lanyard.core.body import read_capped
from lanyard.protocol.msi import IssuedToken, MsiError, TokenRequest, app_service_body, imds_body, parse_imds

if TYPE_CHECKING:  # endpoints imports this module
    from lanyard.agent.endpoints import TokenService

PLATFORMS = ("appservice", "containerapps", "ml", "cloudshell", "servicefabric", "aks")
# Served on the shared App Service listener, told apart by their secret.
SHARED_LISTENER = frozenset({"appservice", "containerapps", "ml"})
CLOUD_SHELL_PATH = "/oauth2/token"
MAX_FORM = 8192


def default_client_id(identities: Sequence[Identity]) -> str:
    """DEFAULT_IDENTITY_CLIENT_ID: .NET, node and Go send it as `clientid` for a system-assigned request,
    so it must select the identity a request without a selector gets (the system-assigned one)."""
    for identity in identities:
        if identity.kind == "system":
            return identity.client_id
    return identities[0].client_id if identities else ""


def aks_client_id(identities: Sequence[Identity]) -> str | None:
    """The identity an AKS-style run signs in as: its first user-assigned one (federated credentials
    exist on user-assigned identities only, as in Azure)."""
    return next((i.client_id for i in identities if i.kind == "user"), None)


def aks_environment(client_id: str, tenant_id: str, authority: str, token_file: str) -> dict[str, str]:
    return {
        "AZURE_CLIENT_ID": client_id,
        "AZURE_TENANT_ID": tenant_id,
        "AZURE_AUTHORITY_HOST": authority.rstrip("/") + "/",
        "AZURE_FEDERATED_TOKEN_FILE": token_file,
    }


def environment(
    platform: str,
    request: dict[str, Any],
    url: str | None,
    header: str | None,
    identities: Sequence[Identity],
    thumbprint: str | None = None,
) -> dict[str, str]:
    """The variables `platform` gives its workload; no endpoint at all when the identity is off."""
    name = str(request.get("siteName", ""))
    group = str(request.get("resourceGroup", ""))
    if platform == "containerapps":
        suffix = "lanyard.local"
        env = {
            "CONTAINER_APP_NAME": name,
            "CONTAINER_APP_REVISION": f"{name}--{secrets.token_hex(4)}",
            "CONTAINER_APP_REPLICA_NAME": f"{name}--{secrets.token_hex(4)}-{secrets.token_hex(5)}",
            "CONTAINER_APP_HOSTNAME": f"{name}.{suffix}",
            "CONTAINER_APP_ENV_DNS_SUFFIX": suffix,
        }
        if url and header:
            env.update({"IDENTITY_ENDPOINT": url, "IDENTITY_HEADER": header})
        return env
    if platform == "ml":
        env = {"AZUREML_ARM_RESOURCEGROUP": group, "AZUREML_ARM_WORKSPACE_NAME": name}
        if url and header:
            env.update(
                {"MSI_ENDPOINT": url, "MSI_SECRET": header, "DEFAULT_IDENTITY_CLIENT_ID": default_client_id(identities)}
            )
        return env
    if platform == "servicefabric":
        env = {"Fabric_ApplicationName": f"fabric:/{name}", "Fabric_ServiceName": f"fabric:/{name}/{name}"}
        if url and header and thumbprint:
            env.update(
                {
                    "IDENTITY_ENDPOINT": url,
                    "IDENTITY_HEADER": header,
                    "IDENTITY_SERVER_THUMBPRINT": thumbprint,
                    "IDENTITY_API_VERSION": "2019-07-01-preview",
                }
            )
        return env
    if platform == "aks":
        return {}  # the runner adds the federation variables (aks_environment)
    if platform == "cloudshell":
        env = {"AZUREPS_HOST_ENVIRONMENT": "cloud-shell/1.0", "ACC_CLOUD": "AzureCloud"}
        if url:
            env["MSI_ENDPOINT"] = url
        return env
    env = {
        "WEBSITE_SITE_NAME": name,
        "WEBSITE_RESOURCE_GROUP": group,
        "WEBSITE_SLOT_NAME": str(request.get("slotName") or "Production"),
        "WEBSITE_HOSTNAME": str(request.get("hostName", "")),
        "WEBSITE_OWNER_NAME": str(request.get("ownerName", "")),
        "WEBSITE_INSTANCE_ID": secrets.token_hex(32),
    }
    if url and header:
        env.update({"IDENTITY_ENDPOINT": url, "IDENTITY_HEADER": header, "MSI_ENDPOINT": url, "MSI_SECRET": header})
    return env


def admit(platform: str, request: TokenRequest, headers: dict[bytes, bytes]) -> None:
    """What a platform on the shared listener refuses beyond App Service's own rules."""
    if platform == "containerapps":
        if b"x-identity-header" not in headers:
            raise MsiError(401, "Unauthorized: the X-IDENTITY-HEADER is missing or not valid.")
        if request.api_version != "2019-08-01":
            raise MsiError(400, f"The api-version '{request.api_version}' is not supported; use 2019-08-01.")
    elif platform == "ml":
        if b"secret" not in headers:
            raise MsiError(401, "Unauthorized: the secret header is missing or not valid.")
        if request.api_version != "2017-09-01":
            raise MsiError(400, f"The api-version '{request.api_version}' is not supported; use 2017-09-01.")
        if request.selector is not None and request.selector[0] != "client_id":
            raise MsiError(
                400, "Azure Machine Learning selects a user-assigned identity by its client id only (clientid)."
            )


def success_body(platform: str, token: IssuedToken, request: TokenRequest, now: float) -> dict[str, Any]:
    body = app_service_body(token, request, now)
    if platform == "ml":
        body["expires_on"] = str(token.expires_on)
    return body


def cloud_shell_error(exc: MsiError) -> dict[str, Any]:
    """Cloud Shell's nested error shape (the one MSAL.NET and MSAL Python's Cloud Shell path parse)."""
    return {"error": {"code": exc.error, "message": exc.message}}


async def _form(receive: Receive) -> dict[str, str]:
    body = await read_capped(
        receive,
        MAX_FORM,
        lambda: MsiError(413, "The request body is too large.", "invalid_request"),
        gone=lambda: MsiError(400, "The request body was not received."),
    )
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=16)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MsiError(400, "The request body is not a valid form.") from exc
    return first_values(pairs)


class CloudShellEndpoint:
    """Cloud Shell's token endpoint for one run. It has no secret: whoever reaches this listener and
    passes caller attestation is that session, as with the real per-user container."""

    def __init__(
        self,
        service: TokenService,
        resource_id: str,
        allowed_hosts: frozenset[bytes],
        check: CallerCheck,
        registration: RunningWorkload,
    ) -> None:
        self.service = service
        self.resource_id = resource_id
        self.allowed_hosts = allowed_hosts
        self.check = check
        self.registration = registration

    async def _caller(self, scope: Scope) -> Caller | None:
        return await self.check.for_resource(self.service.state, scope, self.registration, self.resource_id)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = headers_of(scope["headers"])
        try:
            reason = refusal(headers, self.allowed_hosts)
            if reason:
                raise MsiError(400, reason)
            if metadata_path(scope) != CLOUD_SHELL_PATH:
                raise MsiError(404, "Not found.", "not_found")
            if scope["method"] not in ("POST", "GET"):
                raise MsiError(
                    405,
                    "Cloud Shell tokens are requested with POST and a form body (resource=...), or GET with "
                    "resource in the query.",
                    "method_not_allowed",
                )
            if headers.get(b"metadata", b"").lower() != b"true":
                raise MsiError(400, "Required metadata header not specified")
            # Most clients POST a form; msal4j GETs with `resource` in the query, which Cloud Shell answers too.
            form = await _form(receive) if scope["method"] == "POST" else query_of(scope)
            if any(
                form.get(k) for k in ("client_id", "clientid", "object_id", "principal_id", "mi_res_id", "msi_res_id")
            ):
                raise MsiError(400, "Cloud Shell does not support user-assigned managed identities.")
            request = parse_imds({"api-version": "2018-02-01", "resource": form.get("resource", "")})
            caller = await self._caller(scope)
            token = await self.service.issue(self.resource_id, request, caller)
        except MsiError as exc:
            await send_json(send, exc.status, cloud_shell_error(exc), exc.headers)
            return
        await send_json(send, 200, imds_body(token, request, self.service.cache.clock.now()))
