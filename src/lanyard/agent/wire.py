"""The bytes every local token protocol shares: JSON answers, first-value-wins query parsing and the
metadata path spelling. A module of its own so each protocol's endpoint imports it at load time."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.types import Scope, Send

_REQUEST_ID = re.compile(rb"^[A-Za-z0-9{}._:-]{1,128}$")
JSON_HEADERS = [(b"content-type", b"application/json; charset=utf-8"), (b"cache-control", b"no-store")]


async def send_json(
    send: Send, status: int, body: dict[str, Any], extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    payload = orjson.dumps(body)
    headers = [*JSON_HEADERS, (b"content-length", str(len(payload)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def first_values(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """First value wins; duplicates of a selector would be ambiguous, parse_app_service refuses two kinds."""
    out: dict[str, str] = {}
    for key, value in pairs:
        out.setdefault(key, value)
    return out


def query_of(scope: Scope) -> dict[str, str]:
    raw = scope.get("query_string", b"").decode("latin-1")
    return first_values(parse_qsl(raw, keep_blank_values=True, max_num_fields=32))


_SLASHES = re.compile(r"//+")


def metadata_path(scope: Scope) -> str:
    """The path without a trailing slash and with runs of slashes as one: msal-node asks for
    `/metadata/identity/oauth2/token/` and the real IMDS and Arc services answer it as the same resource;
    msal4j appends `//metadata/identity/oauth2/token` to AZURE_POD_IDENTITY_AUTHORITY_HOST."""
    path: str = _SLASHES.sub("/", scope["path"])
    return path.rstrip("/") if len(path) > 1 else path


def request_id_echo(headers: dict[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    """IMDS and Arc answer with the caller's x-ms-client-request-id (the correlation id msal and azure-core
    send), errors included; anything but a plain id (a GUID in practice) is not repeated back."""
    value = headers.get(b"x-ms-client-request-id", b"").strip()
    return [(b"x-ms-client-request-id", value)] if _REQUEST_ID.match(value) else []
