"""Control-plane writes and refusals, recorded around the routes (pure ASGI, before routing).

A write (PUT, PATCH, DELETE, POST) on ARM, Graph or /lanyard/v1 is recorded twice, as Vault
does: a `request` record before the route runs (refused: 503, nothing done) and the outcome once
the route has answered but before the answer is sent (refused: 503 instead of the answer; the
change itself stands, and its request record says it was attempted). A read refused with 401 or
403 is recorded without holding the answer. The principal is read from the bearer token without
checking it: the outcome says whether the platform accepted that token.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lanyard.audit.record import Event, outcome_of, unverified_claims
from lanyard.audit.writer import Auditor
from lanyard.core.errors import AuditUnavailable

WRITES = frozenset({"PUT", "PATCH", "DELETE", "POST"})
PREFIXES = ("/subscriptions", "/providers", "/lanyard/v1/", "/graph/")
# Recorded elsewhere (agent shipments, the audit API) or polls that grant nothing.
EXEMPT = ("/lanyard/v1/agent/audit", "/lanyard/v1/agent/bindings", "/lanyard/v1/audit")
ErrorSender = Callable[[Send, Scope, int, str], Awaitable[None]]
UNAVAILABLE = "The audit trail is unavailable, so nothing was changed; retry shortly."


def _family(path: str) -> str:
    if path.startswith("/graph/"):
        return "graph"
    if path.startswith("/lanyard/v1/"):
        return "lanyard"
    return "arm"


def _principal(scope: Scope) -> tuple[str | None, str | None]:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() != "bearer":
                return None, None
            claims = unverified_claims(token.strip())
            oid, appid = claims.get("oid"), claims.get("appid")
            return (str(oid)[:64] if oid else None), (str(appid)[:64] if appid else None)
    return None, None


def _client(scope: Scope) -> str | None:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else None


class AuditMiddleware:
    def __init__(self, app: ASGIApp, auditor: Auditor, send_error: ErrorSender) -> None:
        self.app = app
        self.auditor = auditor
        self.send_error = send_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not self.auditor.enabled or not path.startswith(PREFIXES) or path.startswith(EXEMPT):
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        principal, app_id = _principal(scope)
        action = f"{_family(path)}.{'write' if method in WRITES else 'read'}"
        detail = {"method": method[:10], "client": _client(scope)}

        def event(outcome: str, status: int | None = None) -> Event:
            extra = {"status": status} if status is not None else {}
            return Event(action, outcome, principal, app_id, path[:1200], None, {**detail, **extra})

        if method not in WRITES:

            async def noting_send(message: Message) -> None:
                if message["type"] == "http.response.start" and message["status"] in (401, 403):
                    self.auditor.note(event("denied", message["status"]))
                await send(message)

            await self.app(scope, receive, noting_send)
            return

        try:
            await self.auditor.record(event("request"))
        except AuditUnavailable:
            await self.send_error(send, scope, 503, UNAVAILABLE)
            return
        swallowed = False

        async def recording_send(message: Message) -> None:
            nonlocal swallowed
            if swallowed:
                return
            if message["type"] == "http.response.start":
                status = int(message["status"])
                try:
                    await self.auditor.record(event(outcome_of(status), status))
                except AuditUnavailable:
                    swallowed = True
                    await self.send_error(
                        send, scope, 503, "The audit trail is unavailable; the outcome is unknown, check and retry."
                    )
                    return
            await send(message)

        await self.app(scope, receive, recording_send)
