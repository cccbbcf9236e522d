"""The local managed-identity token protocols (docs/protocols.md §1-§3): App Service 2019-08-01 and
2017-09-01, and IMDS. Pure: a query and headers in, a request or a wire error out; a token in, the
exact success body each client family parses.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any, Literal

APP_SERVICE_VERSIONS = frozenset({"2019-08-01", "2017-09-01"})
IMDS_VERSIONS = frozenset(
    {
        "2017-09-01",
        "2018-02-01",
        "2018-04-02",
        "2018-10-01",
        "2019-02-01",
        "2019-03-11",
        "2019-04-30",
        "2019-06-01",
        "2019-06-04",
        "2019-08-01",
        "2019-08-15",
        "2019-11-01",
        "2020-06-01",
        "2020-07-15",
        "2020-09-01",
        "2020-10-01",
        "2020-12-01",
        "2021-01-01",
        "2021-02-01",
        "2021-03-01",
        "2021-05-01",
        "2021-10-01",
        "2021-11-01",
        "2021-11-15",
        "2021-12-13",
        "2023-07-01",
        "2023-11-15",
        "2024-03-15",
        "2025-04-07",
    }
)
MAX_RESOURCE = 512

SelectorKind = Literal["client_id", "object_id", "resource_id"]
# Every spelling a client sends (docs/protocols.md §1.2, §2, §3): sync maps resource ids to mi_res_id or
# msi_res_id, async sends identity_config keys verbatim, 2017 uses clientid, docs name principal_id.
_SELECTORS: dict[str, SelectorKind] = {
    "client_id": "client_id",
    "clientid": "client_id",
    "object_id": "object_id",
    "principal_id": "object_id",
    "mi_res_id": "resource_id",
    "msi_res_id": "resource_id",
    "resource_id": "resource_id",
}


class MsiError(Exception):
    """A refusal, rendered in the protocol that was called."""

    def __init__(
        self,
        status: int,
        message: str,
        error: str = "invalid_request",
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error = error
        self.headers = headers or []  # e.g. Retry-After on a 429

    def app_service_body(self) -> dict[str, Any]:
        return {"statusCode": self.status, "message": self.message, "correlationId": str(uuid.uuid4())}

    def imds_body(self) -> dict[str, Any]:
        return {"error": self.error, "error_description": self.message}


@dataclass(frozen=True)
class TokenRequest:
    api_version: str
    resource: str
    selector: tuple[SelectorKind, str] | None


def _resource(query: dict[str, str], missing: str) -> str:
    resource = query.get("resource", "")
    if not resource:
        raise MsiError(400, missing)
    if len(resource) > MAX_RESOURCE or any(ord(c) < 0x21 or ord(c) > 0x7E for c in resource):
        raise MsiError(400, "The resource parameter is not a valid resource URI or application id.", "invalid_resource")
    return resource


def _selector(query: dict[str, str]) -> tuple[SelectorKind, str] | None:
    given = [(kind, query[name]) for name, kind in _SELECTORS.items() if query.get(name)]
    if len(given) > 1:
        raise MsiError(400, "Only one of client_id, object_id (principal_id) and mi_res_id may be given.")
    if not given:
        return None
    kind, value = given[0]
    if len(value) > 1024:
        raise MsiError(400, "The identity selector is too long.")
    return kind, value


def parse_app_service(query: dict[str, str]) -> TokenRequest:
    version = query.get("api-version", "")
    if version not in APP_SERVICE_VERSIONS:
        raise MsiError(400, f"The api-version '{version[:20]}' is not supported; use 2019-08-01 or 2017-09-01.")
    resource = _resource(query, "The resource parameter is required.")
    return TokenRequest(version, resource, _selector(query))


def parse_imds(query: dict[str, str]) -> TokenRequest:
    version = query.get("api-version", "")
    if not version:
        raise MsiError(400, "Required query variable 'api-version' is missing")
    if version not in IMDS_VERSIONS:
        raise MsiError(400, "Invalid API version")
    resource = _resource(query, "Required audience parameter not specified")
    return TokenRequest(version, resource, _selector(query))


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_on: int
    not_before: int
    client_id: str


def _date_2017(epoch: int) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%m/%d/%Y %H:%M:%S +00:00")


def app_service_body(token: IssuedToken, request: TokenRequest, now: float) -> dict[str, Any]:
    """2019-08-01: epoch-string expires_on. 2017-09-01: the date string that protocol defines."""
    expires_on = str(token.expires_on) if request.api_version == "2019-08-01" else _date_2017(token.expires_on)
    return {
        "access_token": token.access_token,
        "expires_on": expires_on,
        "expires_in": str(max(token.expires_on - int(now), 0)),
        "not_before": str(token.not_before),
        "resource": request.resource,
        "token_type": "Bearer",
        "client_id": token.client_id,
    }


def imds_body(token: IssuedToken, request: TokenRequest, now: float) -> dict[str, Any]:
    """IMDS sends every number as a string; sync clients need expires_in, async ones need resource."""
    return {
        "access_token": token.access_token,
        "refresh_token": "",
        "expires_in": str(max(token.expires_on - int(now), 0)),
        "expires_on": str(token.expires_on),
        "ext_expires_in": str(max(token.expires_on - int(now), 0)),
        "not_before": str(token.not_before),
        "resource": request.resource,
        "token_type": "Bearer",
        "client_id": token.client_id,
    }
