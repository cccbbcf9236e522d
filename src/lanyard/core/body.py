"""The one capped request-body reader every listener uses: it stops reading at the first byte past the
limit (a declared Content-Length over it is refused before reading anything), so no API buffers more
than its own limit, and each API renders the refusal in its own wire format."""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import ClientDisconnect
from starlette.types import Receive

TooLarge = Callable[[], Exception]


def declared_length(headers: list[tuple[bytes, bytes]] | None) -> int | None:
    """The Content-Length a request declared (-1 when it is not a number), or None."""
    for name, value in headers or ():
        if name.lower() == b"content-length":
            return int(value) if value.isdigit() else -1
    return None


async def read_capped(
    receive: Receive, limit: int, too_large: TooLarge, declared: int | None = None, gone: TooLarge = ClientDisconnect
) -> bytes:
    """The whole body, or `too_large()` raised once it (or its declared length) passes `limit` bytes;
    `gone()` when the client left before sending all of it (a partial body is never acted on)."""
    if declared is not None and (declared < 0 or declared > limit):
        raise too_large()
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise gone()
        body += message.get("body", b"")
        if len(body) > limit:
            raise too_large()
        if not message.get("more_body"):
            return bytes(body)
