"""Service Fabric's managed-identity endpoint: HTTPS with a self-signed certificate the clients pin.

The clients trust the endpoint by IDENTITY_SERVER_THUMBPRINT (SHA-1 of the certificate), and MSAL
Python and Go accept nothing else (no CA fallback), so the agent makes its own certificate at every
start: the key stays in the agent home (0600) and the thumbprint reaches workloads through their
environment. Workloads are told apart by their IDENTITY_HEADER, sent as `secret`; it is a separate
listener from App Service's, so a Service Fabric secret is worth nothing over plain HTTP.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from starlette.types import Receive, Scope, Send

from lanyard.agent.attesting import CallerCheck
from lanyard.agent.guards import headers_of, refusal
from lanyard.agent.wire import metadata_path, query_of, send_json
from lanyard.agent.workloads import WorkloadRegistry
from lanyard.core.files import write_atomically
from lanyard.crypto.pki import cert_pem, private_key_pem, thumbprint_sha1
from lanyard.protocol.msi import IssuedToken, MsiError, TokenRequest, parse_imds

if TYPE_CHECKING:  # endpoints imports the agent's modules
    from lanyard.agent.endpoints import TokenService

FABRIC_PATH = "/metadata/identity/oauth2/token"
# 2019-07-01-preview: MSAL Python, node, Go and azidentity; 2020-05-01: MSAL.NET 4.83 and later.
FABRIC_VERSIONS = frozenset({"2019-07-01-preview", "2020-05-01"})
# Selectors some client sends; only MSAL.NET's principalId (an object id) is honoured.
_FOREIGN_SELECTORS = ("client_id", "clientid", "object_id", "principal_id", "mi_res_id", "msi_res_id", "resource_id")


@dataclass(frozen=True)
class FabricCertificate:
    cert_file: Path
    key_file: Path
    thumbprint: str  # SHA-1, upper-case hex, as Service Fabric sets IDENTITY_SERVER_THUMBPRINT

    def node_trust(self, ca_cert: str) -> Path:
        """The platform CA plus this certificate, for NODE_EXTRA_CA_CERTS: msal-node pins no thumbprint and
        validates the endpoint as any HTTPS server, so a Service Fabric run's node trusts the certificate
        itself (Python, Go and .NET trust it by the pin alone)."""
        trust = self.cert_file.with_name("servicefabric-trust.pem")
        ca = Path(ca_cert).read_bytes().rstrip(b"\n") + b"\n"
        write_atomically(trust, ca + self.cert_file.read_bytes(), 0o600)
        return trust

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(self.cert_file), str(self.key_file))
        return context


def make_certificate(home: Path, now: float) -> FabricCertificate:
    """A fresh key and self-signed certificate for this agent run, for 127.0.0.1 and localhost."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Lanyard"),
            x509.NameAttribute(NameOID.COMMON_NAME, "lanyard service fabric identity endpoint"),
        ]
    )
    start = dt.datetime.fromtimestamp(now, dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - dt.timedelta(minutes=5))
        .not_valid_after(start + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = home / "servicefabric.pem", home / "servicefabric.key"
    write_atomically(key_file, private_key_pem(key), 0o600)
    write_atomically(cert_file, cert_pem(cert), 0o600)
    return FabricCertificate(cert_file, key_file, thumbprint_sha1(cert.public_bytes(serialization.Encoding.DER)))


def fabric_error(exc: MsiError) -> dict[str, Any]:
    """Service Fabric's nested error; MSAL Python maps these codes to OAuth2 errors."""
    return {"error": {"code": exc.error, "message": exc.message, "correlationId": ""}}


def fabric_body(token: IssuedToken, request: TokenRequest) -> dict[str, Any]:
    # MSAL Python indexes token_type and does int(expires_on); Service Fabric sends expires_on as a number.
    return {
        "token_type": "Bearer",
        "access_token": token.access_token,
        "expires_on": token.expires_on,
        "resource": request.resource,
    }


def parse_fabric(query: dict[str, str]) -> TokenRequest:
    version = query.get("api-version", "")
    if version not in FABRIC_VERSIONS:
        raise MsiError(
            400,
            f"The api-version '{version[:24]}' is not supported; use 2019-07-01-preview or 2020-05-01.",
            "InvalidApiVersion",
        )
    if not query.get("resource"):
        raise MsiError(400, "The resource parameter is required.", "ArgumentNullOrEmpty")
    if any(query.get(name) for name in _FOREIGN_SELECTORS):
        raise MsiError(
            400, "Service Fabric selects a user-assigned identity by principalId only.", "UserAssignedNotSupported"
        )
    try:
        request = parse_imds({"api-version": "2018-02-01", "resource": query["resource"]})
    except MsiError as exc:
        raise MsiError(400, exc.message, "InvalidResource") from exc
    principal = query.get("principalId")
    return TokenRequest(version, request.resource, ("object_id", principal) if principal else None)


class ServiceFabricEndpoint:
    def __init__(
        self, service: TokenService, workloads: WorkloadRegistry, allowed_hosts: frozenset[bytes], check: CallerCheck
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
                raise MsiError(400, reason, "BadRequest")
            if metadata_path(scope) != FABRIC_PATH:
                raise MsiError(404, "Not found.", "NotFound")
            if scope["method"] != "GET":
                raise MsiError(405, "Only GET is supported.", "MethodNotAllowed")
            secret = headers.get(b"secret", b"")
            if not secret:
                raise MsiError(401, "The secret header is required.", "SecretHeaderNotFound")
            workload = self.workloads.by_header(secret.decode("latin-1"))
            if workload is None or workload.kind != "servicefabric":
                raise MsiError(401, "The secret header is not valid.", "SecretHeaderNotFound")
            request = parse_fabric(query_of(scope))
            caller = await self.check.for_resource(self.service.state, scope, workload, workload.resource_id)
            token = await self.service.issue(workload.resource_id, request, caller)
        except MsiError as exc:
            if exc.status == 400 and exc.message.startswith("Unable to load"):
                # Service Fabric's guidance is not to retry a 404: the identity will not appear.
                exc = MsiError(404, exc.message, "ManagedIdentityNotFound")
            await send_json(send, exc.status, fabric_error(exc), exc.headers)
            return
        await send_json(send, 200, fabric_body(token, request))
