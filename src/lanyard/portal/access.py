"""Access control (IAM) in the portal: the Azure role assignments at a subscription or a resource group,
adding one and removing one. Every read and write is an ARM call with the signed-in person's own token
(RBAC decides: a Reader sees the list, and ARM's AuthorizationFailed is on the page when they press Add);
principals are named and searched through Graph with a Graph token for the same person, and when Graph
refuses the page shows object ids and says so."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import httpx
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from lanyard.portal.errors import PortalError, arm_message
from lanyard.portal.security import PAGE_HEADERS

if TYPE_CHECKING:
    from lanyard.portal.routes import Portal
    from lanyard.portal.sessions import Session

ROLES_API = "2022-04-01"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
# Graph's getByIds takes at most 1000 ids a call; the page asks in chunks of this many.
GRAPH_CHUNK = 1000
MAX_RESULTS = 50
# ARM lists 100 role assignments a page; the page follows nextLink this many times at most.
MAX_PAGES = 20
MAX_QUERY = 100
PRINCIPAL_TYPES = ("User", "Group", "ServicePrincipal")
_GRAPH_KINDS = {"users": "User", "groups": "Group", "servicePrincipals": "ServicePrincipal"}
_ODATA_TYPES = {
    "#microsoft.graph.user": "User",
    "#microsoft.graph.group": "Group",
    "#microsoft.graph.serviceprincipal": "ServicePrincipal",
}
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_SEGMENT = re.compile(r"[-\w.()~]{1,260}")
_ASSIGNMENT = re.compile(
    r"(/subscriptions/[^/?#]+(?:/[^?#]*?)?)/providers/Microsoft\.Authorization/roleAssignments/("
    + _GUID.pattern
    + r")",
    re.IGNORECASE,
)

# (method, path under /v1.0, token, query, JSON body) -> Graph's answer. Injectable for in-process tests.
GraphSender = Callable[[str, str, str, dict[str, str], Any], Awaitable[httpx.Response]]


def covers(outer: str, inner: str) -> bool:
    """Whether an assignment at `outer` applies at `inner` (the same scope or one above it)."""
    a, b = outer.rstrip("/").lower(), inner.rstrip("/").lower()
    return b == a or b.startswith(f"{a}/")


def where(assignment_scope: str, page_scope: str) -> str:
    if assignment_scope.rstrip("/").lower() == page_scope.rstrip("/").lower():
        return "This scope"
    if covers(assignment_scope, page_scope):
        return "Inherited"
    return "Below"


@dataclass(frozen=True)
class Place:
    """The scope a page is for: the subscription, a resource group, or one resource in a group."""

    group: str | None
    resource: tuple[str, ...] | None

    def scope(self, session: Session) -> str:
        path = f"/subscriptions/{quote(session.subscription, safe='')}"
        if self.group is not None:
            path += f"/resourceGroups/{quote(self.group, safe='')}"
        if self.resource is not None:
            path += "/providers/" + "/".join(quote(p, safe="") for p in self.resource)
        return path

    def page(self) -> str:
        if self.group is None:
            return "/portal/access"
        path = f"/portal/resourcegroups/{quote(self.group, safe='')}"
        if self.resource is not None:
            path += "/providers/" + "/".join(quote(p, safe="") for p in self.resource)
        return f"{path}/access"


class AccessPages:
    def __init__(self, portal: Portal) -> None:
        self.portal = portal
        self.graph_send: GraphSender = self._graph_send

    # -- plumbing ---------------------------------------------------------------------------------

    async def _graph_send(
        self, method: str, path: str, token: str, params: dict[str, str], body: Any
    ) -> httpx.Response:
        async with httpx.AsyncClient(verify=self.portal.verify, timeout=10.0) as client:
            return await client.request(
                method,
                f"{self.portal.authority}/graph/v1.0{path}",
                params=params,
                headers={"Authorization": f"Bearer {token}"},
                json=body,
            )

    async def _graph(self, session: Session, method: str, path: str, params: dict[str, str], body: Any) -> Any:
        """One Graph call with the person's Graph token: the JSON answer, or a PortalError with Graph's
        own code and message (for example Authorization_RequestDenied)."""

        try:
            token = await self.portal.token_for(session, GRAPH_SCOPE)
            answer = await self.graph_send(method, path, token, params, body)
        except httpx.HTTPError as exc:
            raise PortalError(f"The directory could not be reached ({type(exc).__name__}).", 502) from exc
        if answer.status_code >= 400:
            raise PortalError(arm_message(answer), answer.status_code)
        try:
            return answer.json()
        except ValueError as exc:
            raise PortalError("The directory's answer could not be read.", 502) from exc

    @staticmethod
    def _place(request: Request) -> Place | None:
        """Where the page is: the subscription, a group, or a resource in a group (None: not a resource
        path, `{namespace}/{type}/{name}` with more type/name pairs for a child)."""
        group = request.path_params.get("group")
        resource = request.path_params.get("resource")
        if resource is None:
            return Place(str(group) if group is not None else None, None)
        parts = str(resource).split("/")
        if (
            len(parts) < 3
            or len(parts) % 2 == 0
            or len(parts) > 9
            or not all(_SEGMENT.fullmatch(p) and p not in (".", "..") for p in parts)
        ):
            return None
        return Place(str(group), tuple(parts))

    async def _nowhere(self, request: Request, session: Session | None) -> Response:
        return self.portal.render(
            "error.html", session, 400, error="That is not a resource's path: {namespace}/{type}/{name}."
        )

    async def _names(self, session: Session, ids: list[str]) -> tuple[dict[str, dict[str, str]], str | None]:
        """Display names (and a second line: UPN or app id) of directory objects, as az gets them
        (directoryObjects/getByIds); Graph's refusal is returned as a note and the page shows object ids."""

        found: dict[str, dict[str, str]] = {}
        wanted = sorted({i.lower() for i in ids if _GUID.fullmatch(i)})
        try:
            for start in range(0, len(wanted), GRAPH_CHUNK):
                body = {"ids": wanted[start : start + GRAPH_CHUNK], "types": ["user", "group", "servicePrincipal"]}
                answer = await self._graph(session, "POST", "/directoryObjects/getByIds", {}, body)
                for item in answer.get("value", []) if isinstance(answer, dict) else []:
                    if isinstance(item, dict) and item.get("id"):
                        found[str(item["id"]).lower()] = self._principal(item)
        except PortalError as exc:
            return found, f"The directory did not name the principals ({exc.message}); object ids are shown."
        return found, None

    @staticmethod
    def _principal(item: dict[str, Any], kind: str | None = None) -> dict[str, str]:
        kind = kind or _ODATA_TYPES.get(str(item.get("@odata.type", "")).lower(), "")
        detail = item.get("userPrincipalName") if kind == "User" else item.get("appId")
        return {
            "id": str(item.get("id", "")).lower(),
            "name": str(item.get("displayName") or item.get("id", ""))[:200],
            "type": kind,
            "detail": str(detail or "")[:200],
        }

    async def _search(self, session: Session, text: str) -> tuple[list[dict[str, str]], str | None]:
        """Users, groups and service principals whose display name starts with the text (Graph's own
        `startswith(displayName,'…')`, one request per kind)."""

        quoted = text.replace("'", "''")
        results: list[dict[str, str]] = []
        try:
            for collection, kind in _GRAPH_KINDS.items():
                params = {"$filter": f"startswith(displayName,'{quoted}')", "$top": str(MAX_RESULTS)}
                answer = await self._graph(session, "GET", f"/{collection}", params, None)
                for item in answer.get("value", []) if isinstance(answer, dict) else []:
                    if isinstance(item, dict) and _GUID.fullmatch(str(item.get("id", ""))):
                        results.append(self._principal(item, kind))
        except PortalError as exc:
            return results, f"The directory refused the search ({exc.message}). Paste the object id instead."
        results.sort(key=lambda r: (r["name"].lower(), r["type"]))
        return results[:MAX_RESULTS], None

    @staticmethod
    def _next(link: object, listed: str) -> dict[str, str]:
        """The query of ARM's nextLink (its $skiptoken and the like) when it continues the same list;
        the request goes to the portal's own ARM with arm_call as always, never to the link's host."""
        if not isinstance(link, str) or not link:
            return {}
        parts = urlsplit(link)
        if unquote(parts.path).lower() != unquote(listed).lower():
            return {}
        return {k: v for k, v in parse_qsl(parts.query) if k != "api-version"}

    async def _roles(self, session: Session, scope: str) -> dict[str, str]:
        """Role definition GUID -> role name, as ARM lists them at the scope (the role picker too)."""
        answer = await self.portal.arm_call(
            "GET", f"{scope}/providers/Microsoft.Authorization/roleDefinitions", session, ROLES_API
        )
        if answer.status_code != 200:
            return {}
        roles: dict[str, str] = {}
        for item in answer.json().get("value", []):
            guid = str(item.get("name") or str(item.get("id", "")).rsplit("/", 1)[-1]).lower()
            roles[guid] = str(item.get("properties", {}).get("roleName", guid))
        return roles

    # -- the page ---------------------------------------------------------------------------------

    async def _show(
        self, request: Request, session: Session, status: int = 200, error: str | None = None, **extra: Any
    ) -> Response:

        place = self._place(request)
        if place is None:
            return await self._nowhere(request, session)
        scope = place.scope(session)
        values: dict[str, Any] = {
            "group": place.group,
            "resource": place.resource,
            "resource_type": "/".join([place.resource[0], *place.resource[1::2]]) if place.resource else "",
            "resource_name": "/".join(place.resource[2::2]) if place.resource else "",
            "scope": scope,
            "page": place.page(),
            "assignments": [],
            "roles": [],
            "names_note": None,
            "query": "",
            "results": [],
            "search_note": None,
            "selected": None,
            "confirm": None,
            "chosen_role": "",
        }
        values.update(extra)
        try:
            listed = f"{scope}/providers/Microsoft.Authorization/roleAssignments"
            items: list[dict[str, Any]] = []
            params: dict[str, str] = {}
            for _ in range(MAX_PAGES):
                answer = await self.portal.arm_call("GET", listed, session, ROLES_API, params=params)
                if answer.status_code >= 400:
                    return self.portal.render(
                        "access.html", session, answer.status_code, error=arm_message(answer), **values
                    )
                body = answer.json()
                items += [i for i in body.get("value", []) if isinstance(i, dict)]
                params = self._next(body.get("nextLink"), listed)
                if not params:
                    break
            else:
                values["names_note"] = f"Only the first {len(items)} role assignments are shown."
            roles = await self._roles(session, scope)
            values["roles"] = sorted(roles.items(), key=lambda r: r[1].lower())
            selected = values["selected"]
            ids = [str(i.get("properties", {}).get("principalId", "")) for i in items]
            names, note = await self._names(session, ids + ([selected["id"]] if selected else []))
            values["names_note"] = " ".join(n for n in (values["names_note"], note) if n) or None
            if selected and selected["id"] in names:
                found = names[selected["id"]]
                values["selected"] = {**found, "type": found["type"] or selected["type"]}
            rows = []
            for item in items:
                props = item.get("properties", {})
                principal = str(props.get("principalId", "")).lower()
                role_guid = str(props.get("roleDefinitionId", "")).rsplit("/", 1)[-1].lower()
                at = str(props.get("scope", ""))
                named = names.get(principal)
                rows.append(
                    {
                        "id": str(item.get("id", "")),
                        "principal": principal,
                        "name": named["name"] if named else principal,
                        "detail": named["detail"] if named else "",
                        "type": str(props.get("principalType") or (named["type"] if named else "")),
                        "role": roles.get(role_guid, role_guid),
                        "scope": at,
                        "where": where(at, scope),
                    }
                )
            order = {"This scope": 0, "Inherited": 1, "Below": 2}
            rows.sort(key=lambda r: (order[r["where"]], r["role"].lower(), r["name"].lower()))
            values["assignments"] = rows
        except PortalError as exc:
            return self.portal.render("access.html", session, exc.status, error=exc.message, **values)
        except (ValueError, AttributeError):  # not the JSON shapes ARM answers with
            return self.portal.render(
                "access.html", session, 502, error="Resource Manager's answer could not be read.", **values
            )
        return self.portal.render("access.html", session, status, error=error, **values)

    async def access(self, request: Request) -> Response:
        """The list, and (GET form) a principal search `?q=…` or a selected principal `?principal=…`."""
        session = self.portal.session_of(request)
        if session is None or not session.user:
            return RedirectResponse("/portal/", 303, PAGE_HEADERS)
        if self._place(request) is None:
            return await self._nowhere(request, session)
        params = request.query_params
        query = params.get("q", "").strip()
        extra: dict[str, Any] = {"query": query[:MAX_QUERY]}
        chosen = params.get("principal", "").strip().lower()
        if chosen:
            if not _GUID.fullmatch(chosen):
                return await self._show(request, session, 400, "A principal's object id is a GUID.", **extra)
            kind = params.get("type", "")
            extra["selected"] = {
                "id": chosen,
                "name": chosen,
                "type": kind if kind in PRINCIPAL_TYPES else "",
                "detail": "",
            }
        if query:
            if len(query) > MAX_QUERY or any(ord(c) < 32 for c in query):
                return await self._show(
                    request, session, 400, f"Search for at most {MAX_QUERY} characters of a name.", **extra
                )
            extra["results"], extra["search_note"] = await self._search(session, query)
        return await self._show(request, session, **extra)

    async def add(self, request: Request) -> Response:
        """ARM PUT {scope}/providers/Microsoft.Authorization/roleAssignments/{new guid}, as az does."""

        posted = await self.portal.posted_form(request)
        if isinstance(posted, Response):
            return posted
        session, form = posted
        place = self._place(request)
        if place is None:
            return await self._nowhere(request, session)
        role = form.get("role", "").strip().lower()
        principal = form.get("principal_id", "").strip().lower()
        # The type the search gave, for the principal it gave it for (the id may have been edited since).
        kind = form.get("principal_type", "").strip() if form.get("selected_id", "").lower() == principal else ""
        keep: dict[str, Any] = {"chosen_role": role}
        if _GUID.fullmatch(principal):
            keep["selected"] = {"id": principal, "name": principal, "type": kind, "detail": ""}
        if not _GUID.fullmatch(role):
            return await self._show(request, session, 400, "Choose a role.", **keep)
        if not _GUID.fullmatch(principal):
            return await self._show(
                request, session, 400, "Choose a principal (search and Select, or paste an object id, a GUID).", **keep
            )
        if kind and kind not in PRINCIPAL_TYPES:
            return await self._show(request, session, 400, "A principal is a user, a group or a service principal.")
        # As az does: the principal's type from the directory; when Graph will not say, the search's type
        # (or none, and ARM works it out).
        names, _note = await self._names(session, [principal])
        kind = (names.get(principal) or {}).get("type") or kind
        scope = place.scope(session)
        sub = f"/subscriptions/{quote(session.subscription, safe='')}"
        props: dict[str, Any] = {
            "roleDefinitionId": f"{sub}/providers/Microsoft.Authorization/roleDefinitions/{role}",
            "principalId": principal,
        }
        if kind:
            props["principalType"] = kind
        path = f"{scope}/providers/Microsoft.Authorization/roleAssignments/{uuid.uuid4()}"
        try:
            answer = await self.portal.arm_call("PUT", path, session, ROLES_API, body={"properties": props})
        except PortalError as exc:
            return await self._show(request, session, exc.status, exc.message, **keep)
        if answer.status_code >= 400:
            return await self._show(request, session, answer.status_code, arm_message(answer), **keep)
        return RedirectResponse(place.page(), 303, PAGE_HEADERS)

    def _assignment(self, session: Session, raw: str) -> str | None:
        """The assignment id when it is a role assignment's id in the person's subscription."""
        match = _ASSIGNMENT.fullmatch(raw.strip())
        sub = f"/subscriptions/{session.subscription}".lower()
        if match is None or not covers(sub, match.group(1)) or ".." in raw:
            return None
        return raw.strip()

    async def confirm_remove(self, request: Request) -> Response:
        """The "Remove" link's target: a question with a Yes form (the POST) and a No link back."""
        session = self.portal.session_of(request)
        if session is None or not session.user:
            return RedirectResponse("/portal/", 303, PAGE_HEADERS)
        wanted = self._assignment(session, request.query_params.get("id", ""))
        if wanted is None:
            return await self._show(request, session, 400, "That is not a role assignment of this subscription.")
        return await self._show(request, session, confirm=wanted)

    async def remove(self, request: Request) -> Response:

        posted = await self.portal.posted_form(request)
        if isinstance(posted, Response):
            return posted
        session, form = posted
        place = self._place(request)
        if place is None:
            return await self._nowhere(request, session)
        wanted = self._assignment(session, form.get("id", ""))
        if wanted is None:
            return await self._show(request, session, 400, "That is not a role assignment of this subscription.")
        try:
            answer = await self.portal.arm_call("DELETE", wanted, session, ROLES_API)
        except PortalError as exc:
            return await self._show(request, session, exc.status, exc.message)
        if answer.status_code >= 400:
            return await self._show(request, session, answer.status_code, arm_message(answer))
        return RedirectResponse(place.page(), 303, PAGE_HEADERS)

    def routes(self) -> list[Route]:
        out: list[Route] = []
        for base in (
            "/portal/access",
            "/portal/resourcegroups/{group}/access",
            "/portal/resourcegroups/{group}/providers/{resource:path}/access",
        ):
            out += [
                Route(base, self.access),
                Route(f"{base}/add", self.add, methods=["POST"]),
                Route(f"{base}/remove", self.confirm_remove, methods=["GET"]),
                Route(f"{base}/remove", self.remove, methods=["POST"]),
            ]
        return out
