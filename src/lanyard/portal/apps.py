"""Web and function apps (and their slots) in the portal: the Identity page. Every read and write is an
ARM call with the signed-in person's own token; a refusal is ARM's own message on the page."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from lanyard.portal.errors import PortalError, arm_message
from lanyard.portal.security import PAGE_HEADERS

if TYPE_CHECKING:
    from lanyard.portal.routes import Portal
    from lanyard.portal.sessions import Session

WEB_API = "2023-01-01"
UAI_TYPE = "Microsoft.ManagedIdentity/userAssignedIdentities"
UAI_API = "2023-01-31"
ROLES_API = "2022-04-01"
MAX_SEARCH = 100
# App Service's own rule, checked here too so a bad name costs no ARM call (ARM checks it again).
_SITE_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,58}[A-Za-z0-9])")
_KINDS = {"app": "app", "functionapp": "functionapp"}
_PLAN_NAME = re.compile(r"[A-Za-z0-9][-A-Za-z0-9_]{0,59}")
# The SKUs the plan form offers, with the tier ARM stores beside each (as the real portal's picker).
PLAN_SKUS = {"F1": "Free", "B1": "Basic", "S1": "Standard", "P1v3": "PremiumV3", "Y1": "Dynamic"}


def identity_type(system: bool, users: list[str]) -> str:
    kinds = (["SystemAssigned"] if system else []) + (["UserAssigned"] if users else [])
    return ", ".join(kinds) or "None"


def user_ids(identity: dict[str, Any]) -> list[str]:
    users = identity.get("userAssignedIdentities") or {}
    return sorted(users) if isinstance(users, dict) else []


async def role_assignments(
    portal: Portal, session: Session, group: str, principal: str
) -> tuple[list[dict[str, str]], str]:
    """The principal's role assignments, each with its role's name (the Identity page of an app and the
    page of a user-assigned identity both show them). Listed at the subscription; a
    person who may not read there sees those at the group (what they can read), and a note."""
    sub = quote(session.subscription, safe="")
    flt = {"$filter": f"principalId eq '{principal}'"}
    note = ""
    scope = f"/subscriptions/{sub}"
    answer = await portal.arm_call(
        "GET", f"{scope}/providers/Microsoft.Authorization/roleAssignments", session, ROLES_API, params=flt
    )
    if answer.status_code == 403:
        note = "You may not read role assignments at the subscription; these are the ones at this resource group."
        scope = f"{scope}/resourceGroups/{quote(group, safe='')}"
        answer = await portal.arm_call(
            "GET", f"{scope}/providers/Microsoft.Authorization/roleAssignments", session, ROLES_API, params=flt
        )
    if answer.status_code >= 400:
        return [], arm_message(answer)
    rows = []
    names: dict[str, str] = {}
    for item in answer.json().get("value", []):
        props = item.get("properties", {})
        definition = str(props.get("roleDefinitionId", ""))
        if definition not in names:
            # Read at the scope the list came from: a person with rights on a group only may read there.
            guid = quote(definition.rsplit("/", 1)[-1], safe="")
            found = await portal.arm_call(
                "GET", f"{scope}/providers/Microsoft.Authorization/roleDefinitions/{guid}", session, ROLES_API
            )
            names[definition] = (
                str(found.json().get("properties", {}).get("roleName", definition.rsplit("/", 1)[-1]))
                if found.status_code == 200
                else definition.rsplit("/", 1)[-1]
            )
        rows.append({"role": names[definition], "scope": str(props.get("scope", ""))})
    return rows, note


class AppPages:
    def __init__(self, portal: Portal) -> None:
        self.portal = portal

    # -- helpers ----------------------------------------------------------------------------------

    @staticmethod
    def _names(request: Request) -> tuple[str, str, str | None]:
        params = request.path_params
        slot = params.get("slot")
        return str(params["group"]), str(params["app"]), str(slot) if slot is not None else None

    @staticmethod
    def _site_path(session: Session, group: str, app: str, slot: str | None) -> str:
        path = (
            f"/subscriptions/{quote(session.subscription, safe='')}/resourceGroups/{quote(group, safe='')}"
            f"/providers/Microsoft.Web/sites/{quote(app, safe='')}"
        )
        return f"{path}/slots/{quote(slot, safe='')}" if slot is not None else path

    @staticmethod
    def _page_path(group: str, app: str, slot: str | None) -> str:
        path = f"/portal/resourcegroups/{quote(group, safe='')}/sites/{quote(app, safe='')}"
        return f"{path}/slots/{quote(slot, safe='')}/identity" if slot is not None else f"{path}/identity"

    async def _slots(self, session: Session, group: str, app: str) -> list[str]:
        """The app's deployment slots, for links to their own Identity pages (none shown if ARM refuses)."""
        answer = await self.portal.arm_call(
            "GET", f"{self._site_path(session, group, app, None)}/slots", session, WEB_API
        )
        if answer.status_code != 200:
            return []
        return sorted(str(s.get("name", "")).rsplit("/", 1)[-1] for s in answer.json().get("value", []))

    async def _search(self, session: Session, text: str) -> tuple[list[dict[str, str]], str | None]:
        sub = quote(session.subscription, safe="")
        answer = await self.portal.arm_call(
            "GET",
            f"/subscriptions/{sub}/resources",
            session,
            "2021-04-01",
            params={"$filter": f"resourceType eq '{UAI_TYPE}'"},
        )
        if answer.status_code >= 400:
            return [], arm_message(answer)
        wanted = text.strip().lower()
        found = [
            {"id": str(r["id"]), "name": str(r["name"]), "group": str(r["id"]).split("/")[4]}
            for r in answer.json().get("value", [])
            if wanted in str(r.get("name", "")).lower()
        ]
        return sorted(found, key=lambda r: r["name"].lower())[:MAX_SEARCH], None

    async def _show(
        self, request: Request, session: Session, status: int = 200, error: str | None = None, **extra: Any
    ) -> Response:

        group, app, slot = self._names(request)
        values: dict[str, Any] = {
            "group": group,
            "app": app,
            "slot": slot,
            "page": self._page_path(group, app, slot),
            "tab": request.query_params.get("tab", "system"),
            "query": request.query_params.get("q", ""),
            "site": None,
            "identity": {},
            "users": [],
            "principal": "",
            "assignments": [],
            "note": "",
            "results": None,
            "confirm": None,
            "slots": [],
        }
        values.update(extra)
        try:
            answer = await self.portal.arm_call("GET", self._site_path(session, group, app, slot), session, WEB_API)
            if answer.status_code >= 400:
                return self.portal.render(
                    "identity.html", session, answer.status_code, error=arm_message(answer), **values
                )
            site = answer.json()
            identity = site.get("identity") or {}
            values.update(site=site, identity=identity, users=user_ids(identity))
            if slot is None:
                values["slots"] = await self._slots(session, group, app)
            principal = str(identity.get("principalId") or "")
            if principal and "systemassigned" in str(identity.get("type", "")).replace(" ", "").lower():
                values["principal"] = principal
                values["assignments"], values["note"] = await role_assignments(self.portal, session, group, principal)
            if values["tab"] == "user" and "q" in request.query_params:
                values["results"], search_error = await self._search(session, values["query"])
                error = error or search_error
        except PortalError as exc:
            return self.portal.render("identity.html", session, exc.status, error=exc.message, **values)
        return self.portal.render("identity.html", session, status, error=error, **values)

    async def _change(self, request: Request, change: str) -> Response:
        """A POST from the Identity page: read the site's identity, apply one change, PATCH it back."""

        posted = await self.portal.posted_form(request)
        if isinstance(posted, Response):
            return posted
        session, form = posted
        group, app, slot = self._names(request)
        path = self._site_path(session, group, app, slot)
        tab = "system" if change == "system" else "user"
        try:
            answer = await self.portal.arm_call("GET", path, session, WEB_API)
            if answer.status_code >= 400:
                return await self._show(request, session, answer.status_code, arm_message(answer))
            identity = answer.json().get("identity") or {}
            system = "systemassigned" in str(identity.get("type", "")).replace(" ", "").lower()
            users: dict[str, dict[str, Any] | None] = {u: {} for u in user_ids(identity)}
            if change == "system":
                status = form.get("status", "")
                if status not in ("on", "off"):
                    return await self._show(request, session, 400, "Choose On or Off.")
                system = status == "on"
            elif change == "add":
                wanted = form.get("id", "")
                if (
                    not wanted.lower().startswith("/subscriptions/")
                    or f"/providers/{UAI_TYPE}/".lower() not in wanted.lower()
                ):
                    return await self._show(
                        request, session, 400, "Choose a user-assigned identity to add.", tab="user"
                    )
                users[wanted] = {}
            else:
                wanted = form.get("id", "")
                if wanted not in users:
                    return await self._show(
                        request, session, 400, "That identity is not assigned to this app.", tab="user"
                    )
                users[wanted] = None
            kept = [u for u, v in users.items() if v is not None]
            block: dict[str, Any] = {"type": identity_type(system, kept)}
            if users:
                block["userAssignedIdentities"] = users
            answer = await self.portal.arm_ok("PATCH", path, session, WEB_API, body={"identity": block})
        except PortalError as exc:
            return await self._show(request, session, exc.status, exc.message, tab=tab)
        return RedirectResponse(f"{self._page_path(group, app, slot)}?tab={tab}", 303, PAGE_HEADERS)

    async def _group_location(self, session: Session, group: str) -> str:

        group_path = f"/subscriptions/{quote(session.subscription, safe='')}/resourcegroups/{quote(group, safe='')}"
        found = await self.portal.arm_call("GET", group_path, session, "2021-04-01")
        if found.status_code >= 400:
            raise PortalError(arm_message(found), found.status_code)
        return str(found.json().get("location") or "westus")

    @staticmethod
    def _farm_id(session: Session, group: str, plan: str, quoted: bool = False) -> str:
        """A plan's resource id (in a body), or its URL path (quoted)."""
        sub, group, plan = (quote(v, safe="") if quoted else v for v in (session.subscription, group, plan))
        return f"/subscriptions/{sub}/resourceGroups/{group}/providers/Microsoft.Web/serverfarms/{plan}"

    async def create(self, request: Request) -> Response:
        """The group page's "Create a web app" form: one ARM PUT of the site in the group's location, on
        the chosen App Service plan of the group (or none), then its Identity page. ARM's refusal (a
        Reader, a taken name, a plan that is gone) is shown on the group page."""

        posted = await self.portal.posted_form(request)
        if isinstance(posted, Response):
            return posted
        session, form = posted
        group = str(request.path_params["group"])
        name, kind = form.get("name", "").strip(), _KINDS.get(form.get("kind", ""))
        plan = form.get("plan", "").strip()
        if not _SITE_NAME.fullmatch(name) or kind is None or (plan and not _PLAN_NAME.fullmatch(plan)):
            return await self.portal.group_page(
                session,
                group,
                400,
                "An app needs a name of 2 to 60 letters, digits or hyphens (not first or last), a kind, "
                "and a plan of this group (or none).",
            )
        try:
            properties = {"serverFarmId": self._farm_id(session, group, plan)} if plan else {}
            body = {"location": await self._group_location(session, group), "kind": kind, "properties": properties}
            await self.portal.arm_ok("PUT", self._site_path(session, group, name, None), session, WEB_API, body=body)
        except PortalError as exc:
            return await self.portal.group_page(session, group, exc.status, exc.message)
        return RedirectResponse(self._page_path(group, name, None), 303, PAGE_HEADERS)

    async def create_plan(self, request: Request) -> Response:
        """The group page's "Create an App Service plan" form: one ARM PUT of the plan (a SKU from the
        list; Linux sets `reserved`, as az appservice plan create --is-linux does)."""

        posted = await self.portal.posted_form(request)
        if isinstance(posted, Response):
            return posted
        session, form = posted
        group = str(request.path_params["group"])
        name, sku, os_kind = form.get("name", "").strip(), form.get("sku", ""), form.get("os", "")
        if not _PLAN_NAME.fullmatch(name) or sku not in PLAN_SKUS or os_kind not in ("linux", "windows"):
            return await self.portal.group_page(
                session,
                group,
                400,
                "A plan needs a name of 1 to 60 letters, digits, hyphens or underscores, a pricing tier and "
                "an operating system.",
            )
        linux = os_kind == "linux"
        try:
            body = {
                "location": await self._group_location(session, group),
                "kind": "linux" if linux else "app",
                "sku": {"name": sku, "tier": PLAN_SKUS[sku]},
                "properties": {"reserved": linux},
            }
            await self.portal.arm_ok(
                "PUT", self._farm_id(session, group, name, quoted=True), session, WEB_API, body=body
            )
        except PortalError as exc:
            return await self.portal.group_page(session, group, exc.status, exc.message)
        return RedirectResponse(f"/portal/resourcegroups/{quote(group, safe='')}", 303, PAGE_HEADERS)

    # -- pages ------------------------------------------------------------------------------------

    async def identity(self, request: Request) -> Response:
        session = self.portal.session_of(request)
        if session is None or not session.user:
            return RedirectResponse("/portal/", 303, PAGE_HEADERS)
        return await self._show(request, session)

    async def confirm_remove(self, request: Request) -> Response:
        """The "Remove" link's target: a question with a Yes form (the POST) and a No link back."""
        session = self.portal.session_of(request)
        if session is None or not session.user:
            return RedirectResponse("/portal/", 303, PAGE_HEADERS)
        return await self._show(request, session, tab="user", confirm=request.query_params.get("id", ""))

    async def set_system(self, request: Request) -> Response:
        return await self._change(request, "system")

    async def add_user(self, request: Request) -> Response:
        return await self._change(request, "add")

    async def remove_user(self, request: Request) -> Response:
        return await self._change(request, "remove")

    def routes(self) -> list[Route]:
        out = [
            Route("/portal/resourcegroups/{group}/sites", self.create, methods=["POST"]),
            Route("/portal/resourcegroups/{group}/plans", self.create_plan, methods=["POST"]),
        ]
        for base in (
            "/portal/resourcegroups/{group}/sites/{app}/identity",
            "/portal/resourcegroups/{group}/sites/{app}/slots/{slot}/identity",
        ):
            out += [
                Route(base, self.identity),
                Route(f"{base}/system", self.set_system, methods=["POST"]),
                Route(f"{base}/user/add", self.add_user, methods=["POST"]),
                Route(f"{base}/user/remove", self.confirm_remove, methods=["GET"]),
                Route(f"{base}/user/remove", self.remove_user, methods=["POST"]),
            ]
        return out
