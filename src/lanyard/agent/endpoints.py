"""The local token endpoints, as bare ASGI apps (the hot path: no router, no framework objects).

`AppServiceEndpoint` serves every App Service workload on one port, told apart by their
IDENTITY_HEADER. `ImdsEndpoint` serves one VM per listener: whoever can reach that listener is that VM,
exactly as with the real metadata service.
"""

from __future__ import annotations

import logging
import time

from starlette.types import Receive, Scope, Send

from lanyard.agent import sources
from lanyard.agent.attest import Caller
from lanyard.agent.attesting import CallerCheck
from lanyard.agent.audit import AgentAudit
from lanyard.agent.bindings import BindingsState, Identity
from lanyard.agent.cache import TokenCache
from lanyard.agent.guards import headers_of, refusal
from lanyard.agent.limits import WorkloadLimits
from lanyard.agent.upstream import Upstream, UpstreamError
from lanyard.agent.wire import metadata_path, query_of, request_id_echo, send_json
from lanyard.agent.workloads import RunningWorkload, WorkloadRegistry
from lanyard.core.errors import AuditUnavailable
from lanyard.protocol.msi import (
    IssuedToken,
    MsiError,
    TokenRequest,
    imds_body,
    parse_app_service,
    parse_imds,
)

log = logging.getLogger("lanyard.agent")
APP_SERVICE_PATH = "/msi/token"
IMDS_TOKEN_PATH = "/metadata/identity/oauth2/token"  # noqa: S105 - a URL path
# IMDSv2 (mTLS proof of possession): a v1 host answers 404 at once, with or without Metadata: true, and
# MSAL.NET's discovery probes without the header and reads only "404 = v1 only" (400 would mean v2).
IMDS_V2_PATHS = frozenset({"/metadata/identity/getplatformmetadata", "/metadata/identity/issuecredential"})


class TokenService:
    """Identity resolution and caching shared by every local protocol."""

    def __init__(
        self,
        state: BindingsState,
        cache: TokenCache,
        upstream: Upstream,
        limits: WorkloadLimits | None = None,
        audit: AgentAudit | None = None,
    ) -> None:
        self.state = state
        self.cache = cache
        self.upstream = upstream
        self.limits = limits or WorkloadLimits.unlimited()
        self.audit = audit  # None: audit is off (LANYARD_AUDIT=off)

    async def issue(self, resource_id: str, request: TokenRequest, caller: Caller | None = None) -> IssuedToken:
        return (await self.issue_for(resource_id, request, caller))[0]

    async def issue_for(
        self, resource_id: str, request: TokenRequest, caller: Caller | None = None
    ) -> tuple[IssuedToken, Identity]:
        """`caller` is the attested process (None where attestation is off for this workload)."""
        workload = self.state.workload(resource_id)
        if workload is None:
            raise MsiError(
                400, "Unable to load the proper Managed Identity: this workload is no longer placed on this host."
            )
        identity = workload.select(request.selector)

        async def fetch() -> IssuedToken:
            return await self.upstream.identity_token(identity.key, identity.client_id, request.resource)

        try:
            with self.limits.admit(workload):  # every request counts, cache hits too (docs/security.md)
                token = await self.cache.get(identity.object_id, request.resource, fetch)
        except UpstreamError as exc:
            log.warning("token request for %s failed: %s", identity.client_id, exc)
            raise MsiError(
                exc.status,
                f"The token could not be obtained: {exc}",
                "invalid_resource" if exc.status == 400 else "temporarily_unavailable",
            ) from exc
        # Re-check after any await: the identity may have been removed while the fetch ran.
        current = self.state.workload(resource_id)
        if current is None or identity.object_id not in {i.object_id for i in current.identities}:
            raise MsiError(400, "Unable to load the proper Managed Identity.")
        if self.audit is not None:
            try:
                await self.audit.token_served(identity, resource_id, request.resource, token, caller)
            except AuditUnavailable as exc:
                raise MsiError(
                    503,
                    "The token could not be recorded in the audit journal; retry shortly.",
                    "temporarily_unavailable",
                ) from exc
        return token, identity


class AppServiceEndpoint:
    def __init__(
        self,
        service: TokenService,
        workloads: WorkloadRegistry,
        allowed_hosts: frozenset[bytes],
        check: CallerCheck,
    ) -> None:
        self.service = service
        self.workloads = workloads
        self.allowed_hosts = allowed_hosts
        self.check = check

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = headers_of(scope["headers"])
        try:
            reason = refusal(headers, self.allowed_hosts)
            if reason:
                raise MsiError(400, reason)
            if scope["path"] != APP_SERVICE_PATH:
                raise MsiError(404, "Not found.")
            if scope["method"] != "GET":
                raise MsiError(405, "Only GET is supported.")
            query = query_of(scope)
            secret = headers.get(b"x-identity-header") or headers.get(b"secret") or b""
            workload = self.workloads.by_header(secret.decode("latin-1"))
            if workload is None or workload.kind not in sources.SHARED_LISTENER:
                raise MsiError(401, "Unauthorized: the X-IDENTITY-HEADER is missing or not valid.")
            request = parse_app_service(query)
            sources.admit(workload.kind, request, headers)
            caller = await self.check.for_resource(self.service.state, scope, workload, workload.resource_id)
            token = await self.service.issue(workload.resource_id, request, caller)
        except MsiError as exc:
            await send_json(send, exc.status, exc.app_service_body(), exc.headers)
            return
        await send_json(send, 200, sources.success_body(workload.kind, token, request, self.service.cache.clock.now()))


def check_metadata_request(scope: Scope, headers: dict[bytes, bytes], allowed_hosts: frozenset[bytes]) -> None:
    """What IMDS and Arc both demand before anything else. The header check comes first and is cheap:
    the SDK's probe (no Metadata header) must get its 400 at once."""
    if headers.get(b"metadata", b"").lower() != b"true":
        raise MsiError(400, "Required metadata header not specified")
    reason = refusal(headers, allowed_hosts)
    if reason:
        raise MsiError(400, reason)
    if scope["method"] != "GET":
        raise MsiError(405, "The request method is not supported; use GET.", "method_not_allowed")


class ImdsEndpoint:
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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = headers_of(scope["headers"])
        echo = request_id_echo(headers)
        try:
            path = metadata_path(scope)
            if path in IMDS_V2_PATHS:
                raise MsiError(404, "This host serves IMDS v1 only: no IMDSv2 credentials here.", "not_found")
            check_metadata_request(scope, headers, self.allowed_hosts)
            if path == "/metadata/instance":
                await send_json(
                    send,
                    200,
                    {"compute": {"resourceId": self.resource_id, "name": self.resource_id.rsplit("/", 1)[-1]}},
                    echo,
                )
                return
            if path != IMDS_TOKEN_PATH:
                # Never 404 on IMDS: the SDKs retry 404 for ~24 s (docs/protocols.md §1.7).
                raise MsiError(400, "The requested metadata path is not supported.")
            request = parse_imds(query_of(scope))
            caller = await self.check.for_resource(self.service.state, scope, self.registration, self.resource_id)
            token = await self.service.issue(self.resource_id, request, caller)
        except MsiError as exc:
            if exc.status == 400 and exc.message.startswith("Unable to load"):
                exc = MsiError(400, "Identity not found")
            await send_json(send, exc.status, exc.imds_body(), [*exc.headers, *echo])
            return
        await send_json(send, 200, imds_body(token, request, self.service.cache.clock.now()), echo)


class ArcEndpoint:
    """The Azure Arc (HIMDS) protocol for one machine: a first request is answered 401 with
    `WWW-Authenticate: Basic realm=<path>.key`; only a process that can read that file can answer the
    challenge, so file permissions prove local privilege (docs/security.md T1). Each key is good once."""

    KEY_DIR = "/var/opt/azcmagent/tokens"  # azure-identity accepts key files only here (on Linux)
    KEY_TTL = 60.0

    def __init__(
        self,
        service: TokenService,
        resource_id: str,
        allowed_hosts: frozenset[bytes],
        owner: tuple[int, int] | None,
        check: CallerCheck,
        registration: RunningWorkload,
    ) -> None:
        self.service = service
        self.resource_id = resource_id
        self.allowed_hosts = allowed_hosts
        self.owner = owner
        self.check = check
        self.registration = registration
        self._keys: dict[str, tuple[str, float]] = {}  # secret -> (file, expiry)

    def _challenge(self) -> str:
        import os
        import secrets as pysecrets

        # The agent's umask is 077: folders it makes here get 0755 explicitly (each key file inside is
        # its owner's alone); folders that were already there are left as they are.
        for folder in (os.path.dirname(self.KEY_DIR), self.KEY_DIR):
            if not os.path.isdir(folder):
                os.makedirs(folder, exist_ok=True)
                os.chmod(folder, 0o755)  # noqa: S103 - the key files inside are 0600
        secret = pysecrets.token_urlsafe(32)
        path = f"{self.KEY_DIR}/{pysecrets.token_hex(16)}.key"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secret)
        if self.owner is not None:
            os.chown(path, *self.owner)
        self._expire()
        self._keys[secret] = (path, time.monotonic() + self.KEY_TTL)
        return path

    def _expire(self) -> None:
        import contextlib
        import os

        now = time.monotonic()
        for secret, (path, expiry) in list(self._keys.items()):
            if expiry < now:
                del self._keys[secret]
                with contextlib.suppress(OSError):
                    os.unlink(path)

    def _redeem(self, authorization: bytes) -> bool:
        import contextlib
        import hmac
        import os

        scheme, _, value = authorization.decode("latin-1").partition(" ")
        if scheme.lower() != "basic":
            return False
        self._expire()
        for secret in list(self._keys):
            if hmac.compare_digest(secret.encode(), value.strip().encode()):
                path, _ = self._keys.pop(secret)
                with contextlib.suppress(OSError):
                    os.unlink(path)
                return True
        return False

    def close(self) -> None:
        for secret in list(self._keys):
            self._keys[secret] = (self._keys[secret][0], 0.0)
        self._expire()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = headers_of(scope["headers"])
        echo = request_id_echo(headers)
        try:
            check_metadata_request(scope, headers, self.allowed_hosts)
            if metadata_path(scope) != IMDS_TOKEN_PATH:
                raise MsiError(400, "The requested metadata path is not supported.")
            request = parse_imds(query_of(scope))
            if not self._redeem(headers.get(b"authorization", b"")):
                realm = self._challenge()
                await send_json(
                    send,
                    401,
                    {
                        "error": "unauthorized",
                        "error_description": "Read the key file named "
                        "in WWW-Authenticate and send its content as Basic credentials.",
                    },
                    [(b"www-authenticate", f"Basic realm={realm}".encode()), *echo],
                )
                return
            caller = await self.check.for_resource(self.service.state, scope, self.registration, self.resource_id)
            token, identity = await self.service.issue_for(self.resource_id, request, caller)
        except MsiError as exc:
            if exc.status == 400 and exc.message.startswith("Unable to load"):
                exc = MsiError(400, "Identity not found")
            await send_json(send, exc.status, exc.imds_body(), [*exc.headers, *echo])
            return
        body = imds_body(token, request, self.service.cache.clock.now())
        # Clients check that a user-assigned answer names the identity they asked for.
        body.update({"object_id": identity.object_id, "msi_res_id": identity.resource_id})
        await send_json(send, 200, body, echo)
