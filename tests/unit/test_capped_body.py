"""The one capped body reader: whole bodies in chunks, refusals past the limit, a client that left."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lanyard.arm.http import arm_response, read_json_object
from lanyard.core.body import declared_length, read_capped
from lanyard.core.errors import ArmError


class TooLarge(Exception):
    pass


class Gone(Exception):
    pass


def _receiver(messages: Iterable[dict[str, Any]]) -> Any:
    queue = list(messages)
    taken: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        message = queue.pop(0)
        taken.append(message)
        return message

    receive.taken = taken  # type: ignore[attr-defined]
    return receive


def _read(messages: Iterable[dict[str, Any]], limit: int, declared: int | None = None) -> bytes:
    return asyncio.run(read_capped(_receiver(messages), limit, TooLarge, declared, gone=Gone))


def _chunk(body: bytes, more: bool) -> dict[str, Any]:
    return {"type": "http.request", "body": body, "more_body": more}


def test_chunks_are_joined_up_to_the_limit_exactly() -> None:
    assert _read([_chunk(b"ab", True), _chunk(b"", True), _chunk(b"cd", False)], 4) == b"abcd"


def test_reading_stops_at_the_first_chunk_past_the_limit() -> None:
    receive = _receiver([_chunk(b"abc", True), _chunk(b"de", True), _chunk(b"never read", False)])
    with pytest.raises(TooLarge):
        asyncio.run(read_capped(receive, 4, TooLarge))
    assert len(receive.taken) == 2


@pytest.mark.parametrize("declared", [5, -1])
def test_a_declared_length_over_the_limit_or_not_a_number_is_refused_before_reading(declared: int) -> None:
    receive = _receiver([_chunk(b"ab", False)])
    with pytest.raises(TooLarge):
        asyncio.run(read_capped(receive, 4, TooLarge, declared))
    assert receive.taken == []


def test_a_client_that_leaves_mid_body_is_never_given_a_partial_body() -> None:
    with pytest.raises(Gone):
        _read([_chunk(b"ab", True), {"type": "http.disconnect"}], 10)


def test_declared_length_reads_the_header() -> None:
    assert declared_length([(b"host", b"x"), (b"Content-Length", b"12")]) == 12
    assert declared_length([(b"content-length", b"1e3")]) == -1
    assert declared_length([(b"host", b"x")]) is None
    assert declared_length(None) is None


def _json_app() -> Starlette:
    async def echo(request: Request) -> Response:
        try:
            return arm_response(200, await read_json_object(request, 64))
        except ArmError as exc:
            return arm_response(exc.status_value, exc.body())

    return Starlette(routes=[Route("/", echo, methods=["POST"])])


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b'{"a": 1}', 200, None),
        (b"", 200, None),
        (b'{"a": "' + b"x" * 100 + b'"}', 413, "RequestContentTooLarge"),
        (b"{not json", 400, "InvalidRequestContent"),
        (b"[1, 2]", 400, "InvalidRequestContent"),
    ],
)
def test_the_platforms_json_apis_read_one_capped_object(body: bytes, status: int, code: str | None) -> None:
    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=_json_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post("/", content=body)

    answer = asyncio.run(post())
    assert answer.status_code == status
    assert (answer.json().get("error", {}).get("code") if code else None) == code
