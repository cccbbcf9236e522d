"""User-assigned managed identities in the portal (Azure's "Managed Identities" blade): the list, a create
form, an identity's own page (its ids, its role assignments, Delete) and its federated identity credentials.
Every read and write is an ARM call with the signed-in person's own token; a refusal is ARM's own message
on the page, and a Reader's save changes nothing because ARM refuses it."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from lanyard.portal.apps import UAI_API, UAI_TYPE, role_assignments
from lanyard.portal.errors import PortalError, arm_message
from lanyard.portal.security import PAGE_HEADERS
from lanyard.protocol.federation import DEFAULT_AUDIENCE
from lanyard.protocol.federation import NAME as FIC_NAME

if TYPE_CHECKING:
    from lanyard.portal.routes import Portal
    from lanyard.portal.sessions import Session

RESOURCES_API = "2021-04-01"
MAX_PAGES = 20
MAX_SINGLE = 100
# ARM's own rules (src/lanyard/arm/providers.py), checked here too so a bad name costs no call.
_IDENTITY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{2,127}")
_GROUP_NAME = re.compile(r"[-\w._()]{1,90}")
_LOCATION = re.compile(r"[A-Za-z0-9]{1,40}")
_AUDIENCES = re.compile(r"[\s,]+")
BAD_NAME = (
    "An identity needs a name of 3 to 128 letters, digits, hyphens or underscores, starting with a letter or digit."
)
BAD_FIC_NAME = (
    "A federated credential needs a name of 3 to 120 letters, digits, hyphens or underscores, "
    "starting with a letter or digit."
)


class IdentityPages:
    def __init__(self, portal: Portal) -> None:
        self.portal = portal

    # -- helpers ----------------------------------------------------------------------------------

    @staticmethod
    def _sub(session: Session) -> str:
        return f"/subscriptions/{quote(session.subscription, safe='')}"

    def _group_path(self, session: Session, group: str) -> str:
        return f"{self._sub(session)}/resourceGroups/{quote(group, safe='')}"

    def _identity_path(self, session: Session, group: str, name: str) -> str:
        return f"{self._group_path(session, group)}/providers/{UAI_TYPE}/{quote(name, safe='')}"

    @staticmethod
    def _page(group: str, name: str) -> str:
        return f"/portal/resourcegroups/{quote(group, safe='')}/identities/{quote(name, safe='')}"

    @staticmethod
    def _names(request: Request) -> tuple[str, str]:
        return str(request.path_params["group"]), str(request.path_params["name"])

    def _signed_in(self, request: Request) -> Session | None:
        session = self.portal.session_of(request)
        return session if session is not None and session.user else None

    async def _list_all(
        self, session: Session, path: str, api: str, params: dict[str, str] | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Every page of an ARM list (following nextLink on this platform), or ARM's error."""
        items: list[dict[str, Any]] = []
        query = dict(params or {})
        for _ in range(MAX_PAGES):
            answer = await self.portal.arm_call("GET", path, session, api, params=query)
            if answer.status_code >= 400:
                return items, arm_message(answer)
            body = answer.json()
            items.extend(v for v in body.get("value", []) if isinstance(v, dict))
            link = body.get("nextLink")
            if not isinstance(link, str) or not link:
                break
            parts = urlsplit(link)
            path = parts.path
            query = {k: v for k, v in parse_qsl(parts.query) if k != "api-version"}
        return items, None

    async def _identities(self, session: Session) -> tuple[list[dict[str, str]], str | None]:
        """The subscription's user-assigned identities the person can read. ARM's generic resource list
        (filtered by resource type, and by what the caller may read) names them; each group's typed list
        then gives their properties (client and principal ids), which the generic list leaves out."""
        found, error = await self._list_all(
            session, f"{self._sub(session)}/resources", RESOURCES_API, {"$filter": f"resourceType eq '{UAI_TYPE}'"}
        )
        if error:
            return [], error
        groups = sorted({str(r.get("id", "")).split("/")[4] for r in found if str(r.get("id", "")).count("/") >= 8})
        full: dict[str, dict[str, Any]] = {}
        for group in groups:
            listed, failed = await self._list_all(
                session, f"{self._group_path(session, group)}/providers/{UAI_TYPE}", UAI_API
            )
            if failed is None:
                full.update((str(i.get("id", "")).lower(), i) for i in listed)
        for r in found[:MAX_SINGLE]:
            # Someone who may read one identity but not its group's list: read that one on its own.
            rid = str(r.get("id", ""))
            if rid.lower() not in full and rid.lower().startswith("/subscriptions/"):
                one = await self.portal.arm_call("GET", rid, session, UAI_API)
                if one.status_code == 200:
                    full[rid.lower()] = one.json()
        rows = []
        for r in found:
            rid = str(r.get("id", ""))
            item = full.get(rid.lower(), r)
            props = item.get("properties") or {}
            rows.append(
                {
                    "id": rid,
                    "name": str(r.get("name", "")),
                    "group": rid.split("/")[4] if rid.count("/") >= 8 else "",
                    "location": str(item.get("location", "")),
                    "clientId": str(props.get("clientId", "")),
                    "principalId": str(props.get("principalId", "")),
                }
            )
        return sorted(rows, key=lambda r: (r["group"].lower(), r["name"].lower())), None

    async def _list_page(
        self, session: Session, status: int = 200, error: str | None = None, form: dict[str, str] | None = None
    ) -> Response:

        values: dict[str, Any] = {"identities": [], "groups": [], "form": form or {}}
        try:
            values["identities"], list_error = await self._identities(session)
            values["groups"], group_error = await self._list_all(
                session, f"{self._sub(session)}/resourcegroups", RESOURCES_API
            )
        except PortalError as exc:
            return self.portal.render("identities.html", session, exc.status, error=error or exc.message, **values)
        return self.portal.render(
            "identities.html", session, status, error=error or list_error or group_error, **values
        )

    async def _show(
        self, request: Request, session: Session, status: int = 200, error: str | None = None, **extra: Any
    ) -> Response:

        group, name = self._names(request)
        values: dict[str, Any] = {
            "group": group,
            "name": name,
            "page": self._page(group, name),
            "identity": None,
            "assignments": [],
            "note": "",
            "credentials": [],
            "credentials_error": None,
            "confirm": None,
            "confirm_fic": None,
            "form": {},
            "default_audience": DEFAULT_AUDIENCE,
        }
        values.update(extra)
        path = self._identity_path(session, group, name)
        try:
            answer = await self.portal.arm_call("GET", path, session, UAI_API)
            if answer.status_code >= 400:
                return self.portal.render(
                    "user_identity.html", session, answer.status_code, error=error or arm_message(answer), **values
                )
            found = answer.json()
            props = found.get("properties") or {}
            values["identity"] = {
                "id": str(found.get("id", path)),
                "location": str(found.get("location", "")),
                "clientId": str(props.get("clientId", "")),
                "principalId": str(props.get("principalId", "")),
                "tenantId": str(props.get("tenantId", "")),
            }
            principal = values["identity"]["principalId"]
            if principal:
                values["assignments"], values["note"] = await role_assignments(self.portal, session, group, principal)
            listed, values["credentials_error"] = await self._list_all(
                session, f"{path}/federatedIdentityCredentials", UAI_API
            )
            values["credentials"] = [
                {
                    "name": str(c.get("name", "")),
                    "issuer": str((c.get("properties") or {}).get("issuer", "")),
                    "subject": str((c.get("properties") or {}).get("subject", "")),
                    "audiences": ", ".join(str(a) for a in (c.get("properties") or {}).get("audiences", [])),
                }
                for c in listed
            ]
        except PortalError as exc:
            return self.portal.render("user_identity.html", session, exc.status, error=exc.message, **values)
        return self.portal.render("user_identity.html", session, status, error=error, **values)

    # -- pages ------------------------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        session = self._signed_in(request)
        if session is None:
            return RedirectResponse("/portal/", 303, PAGE_HEADERS)
        return await self._list_page(session)

    async def create(self, request: Request) -> Response:
        """The list page's Create form: the group's location unless one is given, then one ARM PUT."""

        posted = await self.portal.posted_form(request)
        if isinstance(posted, Response):
            return posted
        session, form = posted
        group, name = form.get("group", "").strip(), form.get("name", "").strip()
        location = form.get("location", "").strip()
        kept = {"group": group, "name": name, "location": location}
        if not _GROUP_NAME.fullmatch(group):
            return await self._list_page(session, 400, "Choose a resource group.", kept)
        if not _IDENTITY_NAME.fullmatch(name):
            return await self._list_page(session, 400, BAD_NAME, kept)
        if location and not _LOCATION.fullmatch(location):
            return await self._list_page(
                session, 400, "A location is letters and digits (or empty: the group's).", kept
            )
        try:
            if not location:
                found = await self.portal.arm_ok("GET", self._group_path(session, group), session, RESOURCES_API)
                location = str(found.json().get("location", ""))
            await self.portal.arm_ok(
                "PUT", self._identity_path(session, group, name), session, UAI_API, body={"location": location}
            )
        except PortalError as exc:
            return await self._list_page(session, exc.status, exc.message, kept)
        return RedirectResponse(self._page(group, name), 303, PAGE_HEADERS)

    async def identity(self, request: Request) -> Response:
        session = self._signed_in(request)
        if session is None:
            return RedirectResponse("/portal/", 303, PAGE_HEADERS)
        return await self._show(request, session)

    async def confirm_delete(self, request: Request) -> Response:
        session = self._signed_in(request)
        if session is None:
            return RedirectResponse("/portal/", 303, PAGE_HEADERS)
        return await self._show(request, session, confirm="identity")

    async def delete(self, request: Request) -> Response:

        posted = await self.portal.posted_form(request)
        if isinstance(posted, Response):
            return posted
        session, _form = posted
        group, name = self._names(request)
        try:
            await self.portal.arm_ok("DELETE", self._identity_path(session, group, name), session, UAI_API)
        except PortalError as exc:
            return await self._show(request, session, exc.status, exc.message)
        return RedirectResponse("/portal/identities", 303, PAGE_HEADERS)

    async def add_credential(self, request: Request) -> Response:
        """The add form: one ARM PUT of the credential; ARM checks the issuer, subject and audiences and
        its refusal is shown on the page with the form still filled in."""

        posted = await self.portal.posted_form(request)
        if isinstance(posted, Response):
            return posted
        session, form = posted
        group, name = self._names(request)
        fic = form.get("name", "").strip()
        issuer, subject = form.get("issuer", "").strip(), form.get("subject", "").strip()
        audiences = [a for a in _AUDIENCES.split(form.get("audiences", "")) if a] or [DEFAULT_AUDIENCE]
        kept = {"name": fic, "issuer": issuer, "subject": subject, "audiences": " ".join(audiences)}
        if not FIC_NAME.match(fic):
            return await self._show(request, session, 400, BAD_FIC_NAME, form=kept)
        body = {"properties": {"issuer": issuer, "subject": subject, "audiences": audiences}}
        path = f"{self._identity_path(session, group, name)}/federatedIdentityCredentials/{quote(fic, safe='')}"
        try:
            await self.portal.arm_ok("PUT", path, session, UAI_API, body=body)
        except PortalError as exc:
            return await self._show(request, session, exc.status, exc.message, form=kept)
        return RedirectResponse(self._page(group, name), 303, PAGE_HEADERS)

    async def confirm_delete_credential(self, request: Request) -> Response:
        session = self._signed_in(request)
        if session is None:
            return RedirectResponse("/portal/", 303, PAGE_HEADERS)
        fic = request.query_params.get("name", "")
        if not FIC_NAME.match(fic):
            return await self._show(request, session, 400, BAD_FIC_NAME)
        return await self._show(request, session, confirm_fic=fic)

    async def delete_credential(self, request: Request) -> Response:

        posted = await self.portal.posted_form(request)
        if isinstance(posted, Response):
            return posted
        session, form = posted
        group, name = self._names(request)
        fic = form.get("name", "")
        if not FIC_NAME.match(fic):
            return await self._show(request, session, 400, BAD_FIC_NAME)
        path = f"{self._identity_path(session, group, name)}/federatedIdentityCredentials/{quote(fic, safe='')}"
        try:
            await self.portal.arm_ok("DELETE", path, session, UAI_API)
        except PortalError as exc:
            return await self._show(request, session, exc.status, exc.message)
        return RedirectResponse(self._page(group, name), 303, PAGE_HEADERS)

    def routes(self) -> list[Route]:
        base = "/portal/resourcegroups/{group}/identities/{name}"
        return [
            Route("/portal/identities", self.index, methods=["GET"]),
            Route("/portal/identities", self.create, methods=["POST"]),
            Route(base, self.identity, methods=["GET"]),
            Route(f"{base}/delete", self.confirm_delete, methods=["GET"]),
            Route(f"{base}/delete", self.delete, methods=["POST"]),
            Route(f"{base}/federated", self.add_credential, methods=["POST"]),
            Route(f"{base}/federated/delete", self.confirm_delete_credential, methods=["GET"]),
            Route(f"{base}/federated/delete", self.delete_credential, methods=["POST"]),
        ]
