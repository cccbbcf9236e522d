"""The bare reference app: the fastest thing a Starlette/uvicorn server can do on this machine.

G7 (JWKS, discovery) and the cache-hit goals are ratios to this app measured in the same run, so
it must stay trivial: one route, a small JSON body, no middleware.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def hello(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok", "service": "bench-reference"})


app = Starlette(routes=[Route("/", hello)])
