"""Lanyard's error types. Each family renders itself in the wire format of the API that raised it.

    LanyardError                      base; never reaches the wire as itself
    ├── ConfigError                   operator mistakes at start-up (bad home, unreadable KEK)
    ├── CryptoError                   a ciphertext that does not decrypt under any known key
    ├── StoreUnavailable              the database cannot be reached: 503 in the called API's format
    │   └── AuditUnavailable          a grant's audit record was not accepted in time: 503, nothing granted
    ├── OAuthError                    RFC 6749 §5.2 {"error", "error_description", "error_codes"}
    │   ├── InvalidRequest            400 invalid_request
    │   ├── InvalidClient             401 invalid_client
    │   ├── UnauthorizedClient        400 unauthorized_client
    │   ├── UnsupportedGrantType      400 unsupported_grant_type
    │   ├── InvalidScope              400 invalid_scope
    │   ├── InvalidResource           400 invalid_resource
    │   ├── InvalidGrant              400 invalid_grant (user sign-in: credentials, codes, refresh tokens)
    │   ├── AuthorizationPending      400 authorization_pending (device code not yet approved)
    │   └── ExpiredToken              400 expired_token (device code expired)
    ├── GraphError                    Microsoft Graph {"error": {"code", "message"}}
    └── ArmError                      ARM {"error": {"code", "message"}}

Messages never contain a secret, token, or key: callers pass identifiers only.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar


class LanyardError(Exception):
    status: ClassVar[int] = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(LanyardError):
    pass


class CryptoError(LanyardError):
    pass


class StoreUnavailable(LanyardError):
    """The database went away or refused us. Every API answers 503 in its own format (the last-line
    handler renders it by the API that was called) and the request can be retried."""

    status = 503


class AuditUnavailable(StoreUnavailable):
    """The audit trail did not durably accept a grant's record within its deadline (docs/security.md,
    "The audit trail"): the grant is refused with 503 in the called API's format."""


class OAuthError(LanyardError):
    """An OAuth 2.0 token-endpoint error with an Entra-style AADSTS code in its description."""

    error: ClassVar[str] = "invalid_request"
    status: ClassVar[int] = 400

    def __init__(self, aadsts: int, message: str) -> None:
        super().__init__(f"AADSTS{aadsts}: {message}")
        self.aadsts = aadsts

    def body(self, *, now: datetime | None = None) -> dict[str, Any]:
        trace = str(uuid.uuid4())
        stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M:%SZ")
        return {
            "error": self.error,
            "error_description": f"{self.message} Trace ID: {trace} Timestamp: {stamp}",
            "error_codes": [self.aadsts],
            "timestamp": stamp,
            "trace_id": trace,
            "correlation_id": str(uuid.uuid4()),
        }


class InvalidRequest(OAuthError):
    error = "invalid_request"


class InvalidClient(OAuthError):
    error = "invalid_client"
    status = 401


class UnauthorizedClient(OAuthError):
    error = "unauthorized_client"


class UnsupportedGrantType(OAuthError):
    error = "unsupported_grant_type"


class InvalidScope(OAuthError):
    error = "invalid_scope"


class InvalidResource(OAuthError):
    error = "invalid_resource"


class InvalidGrant(OAuthError):
    error = "invalid_grant"


class AuthorizationPending(OAuthError):
    error = "authorization_pending"


class ExpiredToken(OAuthError):
    error = "expired_token"


class _JsonApiError(LanyardError):
    """Graph and ARM share the `{"error": {"code", "message"}}` envelope."""

    code: ClassVar[str] = "BadRequest"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.code_value = code or self.code
        self.status_value = status or self.status

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code_value, "message": self.message}}


class GraphError(_JsonApiError):
    status = 400
    code = "Request_BadRequest"


class ArmError(_JsonApiError):
    status = 400
    code = "BadRequest"
