"""Operator pages: the host agents (`/lanyard/v1/hosts`, join tokens, removing a host) and the audit
trail (`/lanyard/v1/audit`). Both are the platform's own operator API, called with the signed-in
person's management token through Portal.operator_call, so the platform's RBAC decides: listing needs
`Lanyard/hosts/read` / `Lanyard/audit/read` at the subscription, creating join tokens and removing hosts
`Lanyard/hosts/write` / `Lanyard/hosts/delete` (owner-level). A refusal is shown as the API wrote it.

A join token is a secret for the operator who asked: it is rendered only in the answer to that POST
(no-store) and kept nowhere by the portal."""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import orjson
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from lanyard.portal.errors import PortalError, arm_message
from lanyard.portal.security import PAGE_HEADERS

if TYPE_CHECKING:
    from lanyard.portal.routes import Portal
    from lanyard.portal.sessions import Session

# The audit API's own filters, passed through as typed; the API checks them and its 400 is shown.
AUDIT_FILTERS = ("principal", "resource", "action", "since", "until", "chain")
PAGE_SIZE = "100"
_CURSOR = re.compile(r"[0-9]{1,15}")
_TOP = re.compile(r"[0-9]{1,4}")
MAX_FILTER = 1200
MAX_HOST_NAME = 128
MAX_DETAIL = 400
_RESOURCE_ID = re.compile(r"/subscriptions/[^/?#\s]+/resourceGroups/[^/?#\s]+/providers/[^?#\s]{3,1000}", re.I)


def _when(value: Any) -> str:
    """A record's `at` (epoch seconds) as ISO 8601 UTC; anything else as it came."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return dt.datetime.fromtimestamp(value, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        except (OverflowError, OSError, ValueError):
            pass
    return str(value if value is not None else "")


def _detail(value: Any) -> str:
    if not value:
        return ""
    try:
        text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        text = str(value)
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 1] + "…"


def _next_before(next_link: Any) -> str | None:
    """The continuation (`before`, newest first) of the API's nextLink, for the portal's next-page link."""
    if not isinstance(next_link, str):
        return None
    values = parse_qs(urlsplit(next_link).query).get("before", [])
    return values[0] if values and _CURSOR.fullmatch(values[0]) else None


def _body(answer: Any) -> dict[str, Any]:
    """A successful answer's JSON object; anything else is the platform's fault, shown as a 502."""

    try:
        body = answer.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise PortalError("The platform's answer could not be read.", 502)
    return body


class OperationPages:
    def __init__(self, portal: Portal) -> None:
        self.portal = portal

    # -- host agents ----------------------------------------------------------------------------

    async def _hosts(self, session: Session) -> tuple[list[dict[str, Any]], int, str | None]:
        try:
            answer = await self.portal.operator_call("GET", "/lanyard/v1/hosts", session)
        except PortalError as exc:
            return [], exc.status, exc.message
        if answer.status_code >= 400:
            return [], answer.status_code, arm_message(answer)
        try:
            listed = [h for h in _body(answer).get("value", []) if isinstance(h, dict)]
        except PortalError as exc:
            return [], exc.status, exc.message
        hosts = []
        for h in listed:
            hosts.append(
                {
                    "hostId": str(h.get("hostId", "")),
                    "name": str(h.get("name", "")),
                    "principalId": str(h.get("principalId", "")),
                    "joinedAt": str(h.get("joinedAt") or ""),
                    "credentialExpiresOn": str(h.get("credentialExpiresOn") or ""),
                    "placements": [str(p) for p in h.get("placements", [])],
                }
            )
        return sorted(hosts, key=lambda h: (h["name"].lower(), h["hostId"])), 200, None

    async def _hosts_page(
        self, session: Session, status: int = 200, error: str | None = None, **extra: Any
    ) -> Response:
        hosts, listed, listing_error = await self._hosts(session)
        values: dict[str, Any] = {"title": "Host agents", "hosts": hosts, "join": None, "notice": None}
        values.update(extra)
        if error is None and listing_error is not None:
            status, error = listed, listing_error
        return self.portal.render("hosts.html", session, status, error=error, **values)

    async def hosts(self, request: Request) -> Response:
        session = self.portal.session_of(request)
        if session is None or not session.user:
            return RedirectResponse("/portal/", 303, PAGE_HEADERS)
        removed = request.query_params.get("removed", "")[:MAX_HOST_NAME]
        return await self._hosts_page(session, notice=f"Host {removed} was removed." if removed else None)

    @staticmethod
    def _host_ref(request: Request) -> str | None:
        host = str(request.path_params["host"])
        return host if 1 <= len(host) <= MAX_HOST_NAME and host.isprintable() else None

    async def confirm_remove(self, request: Request) -> Response:
        session = self.portal.session_of(request)
        if session is None or not session.user:
            return RedirectResponse("/portal/", 303, PAGE_HEADERS)
        host = self._host_ref(request)
        if host is None:
            return await self._hosts_page(session, 400, "A host is named by its id or name (1 to 128 characters).")
        hosts, status, error = await self._hosts(session)
        if error is not None:
            return await self._hosts_page(session, status, error)
        found = [h for h in hosts if host in (h["hostId"], h["name"])]
        if not found:
            return await self._hosts_page(session, 404, f"The host '{host}' was not found.")
        return self.portal.render("host_remove.html", session, title="Remove host", host=found[0])

    async def remove(self, request: Request) -> Response:

        posted = await self.portal.posted_form(request)
        if isinstance(posted, Response):
            return posted
        session, _form = posted
        host = self._host_ref(request)
        if host is None:
            return await self._hosts_page(session, 400, "A host is named by its id or name (1 to 128 characters).")
        try:
            answer = await self.portal.operator_call("DELETE", f"/lanyard/v1/hosts/{quote(host, safe='')}", session)
        except PortalError as exc:
            return await self._hosts_page(session, exc.status, exc.message)
        if answer.status_code >= 400:
            return await self._hosts_page(session, answer.status_code, arm_message(answer))
        try:
            name = str(_body(answer).get("name") or host)[:MAX_HOST_NAME]
        except PortalError:
            name = host  # removed all the same: the DELETE succeeded
        return RedirectResponse(f"/portal/hosts?{urlencode({'removed': name})}", 303, PAGE_HEADERS)

    async def create_join_token(self, request: Request) -> Response:

        posted = await self.portal.posted_form(request)
        if isinstance(posted, Response):
            return posted
        session, form = posted
        name = form.get("name", "").strip()
        if len(name) > MAX_HOST_NAME or not name.isprintable():
            return await self._hosts_page(session, 400, "A host name is at most 128 printable characters.")
        try:
            answer = await self.portal.operator_call(
                "POST", "/lanyard/v1/joinTokens", session, body={"name": name or None}
            )
            if answer.status_code >= 400:
                return await self._hosts_page(session, answer.status_code, arm_message(answer))
            made = _body(answer)
        except PortalError as exc:
            return await self._hosts_page(session, exc.status, exc.message)
        join = {"token": str(made.get("token", "")), "name": name, "expires": made.get("expiresInSeconds")}
        return await self._hosts_page(session, join=join)

    async def _placement(self, request: Request, remove: bool) -> Response:
        """Place a resource's identities on a host (the agent there serves its tokens) or take them off:
        one PUT or DELETE of /lanyard/v1/hosts/{host}/placements, as `lanyard host place` does."""
        posted = await self.portal.posted_form(request)
        if isinstance(posted, Response):
            return posted
        session, form = posted
        host = self._host_ref(request)
        resource = form.get("resource_id", "").strip()
        if host is None or not _RESOURCE_ID.fullmatch(resource) or ".." in resource:
            return await self._hosts_page(
                session, 400, "A placement names a host and a resource id (/subscriptions/.../providers/...)."
            )
        path = f"/lanyard/v1/hosts/{quote(host, safe='')}/placements"
        try:
            if remove:
                answer = await self.portal.operator_call("DELETE", path, session, params={"resourceId": resource})
            else:
                answer = await self.portal.operator_call("PUT", path, session, body={"resourceId": resource})
        except PortalError as exc:
            return await self._hosts_page(session, exc.status, exc.message)
        if answer.status_code >= 400:
            return await self._hosts_page(session, answer.status_code, arm_message(answer))
        return RedirectResponse("/portal/hosts", 303, PAGE_HEADERS)

    async def place(self, request: Request) -> Response:
        return await self._placement(request, remove=False)

    async def unplace(self, request: Request) -> Response:
        return await self._placement(request, remove=True)

    # -- audit trail ----------------------------------------------------------------------------

    async def audit(self, request: Request) -> Response:

        session = self.portal.session_of(request)
        if session is None or not session.user:
            return RedirectResponse("/portal/", 303, PAGE_HEADERS)
        p = request.query_params
        filters = {name: p.get(name, "").strip() for name in AUDIT_FILTERS}
        top = p.get("top", "").strip() or PAGE_SIZE
        before = p.get("before", "").strip()
        values: dict[str, Any] = {
            "title": "Audit trail",
            "filters": filters,
            "top": top,
            "records": [],
            "next": None,
            "first": None,
            "before": before,
        }
        shown = {k: v for k, v in filters.items() if v}
        if before:
            values["first"] = f"/portal/audit?{urlencode({**shown, 'top': top})}"
        problem = None
        if any(len(v) > MAX_FILTER for v in filters.values()):
            problem = f"A filter is at most {MAX_FILTER} characters."
        elif not _TOP.fullmatch(top) or int(top) < 1:
            problem = "Records per page is a whole number from 1 to 1000."
        elif before and not _CURSOR.fullmatch(before):
            problem = "The page to continue from is not one this portal linked to."
        if problem:
            return self.portal.render("audit.html", session, 400, error=problem, **values)
        query = {**shown, "top": top, "order": "newest", **({"before": before} if before else {})}
        try:
            answer = await self.portal.operator_call("GET", "/lanyard/v1/audit", session, params=query)
            if answer.status_code >= 400:
                status, error = answer.status_code, arm_message(answer)
                return self.portal.render("audit.html", session, status, error=error, **values)
            body = _body(answer)
        except PortalError as exc:
            return self.portal.render("audit.html", session, exc.status, error=exc.message, **values)
        values["records"] = [
            {
                "at": _when(r.get("at")),
                "action": str(r.get("action") or ""),
                "outcome": str(r.get("outcome") or ""),
                "principal": str(r.get("principal") or ""),
                "app_id": str(r.get("app_id") or ""),
                "resource": str(r.get("resource") or ""),
                "host": str(r.get("host") or ""),
                "chain": f"{r.get('chain') or ''} #{r.get('seq', '')}",
                "detail": _detail(r.get("detail")),
            }
            for r in body.get("value", [])
            if isinstance(r, dict)
        ]
        following = _next_before(body.get("nextLink"))
        if following is not None:
            values["next"] = f"/portal/audit?{urlencode({**shown, 'top': top, 'before': following})}"
        return self.portal.render("audit.html", session, **values)

    def routes(self) -> list[Route]:
        return [
            Route("/portal/hosts", self.hosts),
            Route("/portal/hosts/jointokens", self.create_join_token, methods=["POST"]),
            Route("/portal/hosts/{host}/remove", self.confirm_remove, methods=["GET"]),
            Route("/portal/hosts/{host}/remove", self.remove, methods=["POST"]),
            Route("/portal/hosts/{host}/placements", self.place, methods=["POST"]),
            Route("/portal/hosts/{host}/placements/remove", self.unplace, methods=["POST"]),
            Route("/portal/audit", self.audit),
        ]
