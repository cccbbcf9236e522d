"""Key vaults in the portal: access policies through ARM (the vault resource, read then written back whole
in one PUT), secrets through the vault's own data plane with a token for the vault audience. A secret's
value is shown only after Reveal, a CSRF-checked POST that renders that one value."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from lanyard.portal.errors import PortalError, arm_message
from lanyard.portal.security import PAGE_HEADERS

if TYPE_CHECKING:
    from lanyard.portal.routes import Portal
    from lanyard.portal.sessions import Session

VAULT_API = "2023-07-01"
SECRETS_API = "7.5"
PERMISSIONS = ("get", "list", "set", "delete")
_OBJECT_ID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_SECRET_NAME = re.compile(r"[0-9A-Za-z-]{1,127}")
MAX_VALUE = 25 * 1024


def vault_scope(vault_uri: str) -> str:
    """https://{name}.{suffix}/ -> https://{suffix}/.default, the audience the vault accepts."""
    parts = urlsplit(vault_uri)
    if parts.scheme != "https" or "." not in parts.netloc:
        raise PortalError("The vault has no usable URI.", 502)
    return f"https://{parts.netloc.split('.', 1)[1]}/.default"


class VaultPages:
    def __init__(self, portal: Portal) -> None:
        self.portal = portal

    @staticmethod
    def _names(request: Request) -> tuple[str, str]:
        return str(request.path_params["group"]), str(request.path_params["vault"])

    @staticmethod
    def _vault_path(session: Session, group: str, vault: str) -> str:
        return (
            f"/subscriptions/{quote(session.subscription, safe='')}/resourceGroups/{quote(group, safe='')}"
            f"/providers/Microsoft.KeyVault/vaults/{quote(vault, safe='')}"
        )

    @staticmethod
    def _page(group: str, vault: str) -> str:
        return f"/portal/resourcegroups/{quote(group, safe='')}/vaults/{quote(vault, safe='')}"

    async def _secrets(self, session: Session, uri: str) -> tuple[list[str], str | None]:

        try:
            answer = await self.portal.data_call(
                "GET", f"{uri.rstrip('/')}/secrets", session, vault_scope(uri), SECRETS_API
            )
        except PortalError as exc:
            return [], exc.message
        if answer.status_code >= 400:
            return [], arm_message(answer)
        return sorted(str(s.get("id", "")).rstrip("/").rsplit("/", 1)[-1] for s in answer.json().get("value", [])), None

    async def _show(
        self, request: Request, session: Session, status: int = 200, error: str | None = None, **extra: Any
    ) -> Response:

        group, vault = self._names(request)
        values: dict[str, Any] = {
            "group": group,
            "vault": vault,
            "page": self._page(group, vault),
            "policies": [],
            "secrets": [],
            "secrets_error": None,
            "revealed": None,
            "confirm_secret": None,
            "permissions": PERMISSIONS,
            "found": False,
        }
        values.update(extra)
        try:
            answer = await self.portal.arm_call("GET", self._vault_path(session, group, vault), session, VAULT_API)
            if answer.status_code >= 400:
                return self.portal.render(
                    "vault.html", session, answer.status_code, error=arm_message(answer), **values
                )
            props = answer.json().get("properties", {})
            values["found"] = True
            values["policies"] = [
                {
                    "objectId": str(p.get("objectId", "")),
                    "secrets": ", ".join(str(x) for x in p.get("permissions", {}).get("secrets", [])),
                }
                for p in props.get("accessPolicies", [])
            ]
            values["secrets"], values["secrets_error"] = await self._secrets(session, str(props.get("vaultUri", "")))
        except PortalError as exc:
            return self.portal.render("vault.html", session, exc.status, error=exc.message, **values)
        return self.portal.render("vault.html", session, status, error=error, **values)

    async def _posted(self, request: Request) -> tuple[Session, dict[str, str]] | Response:
        return await self.portal.posted_form(request)

    async def _write_policies(self, request: Request, change: str) -> Response:

        posted = await self._posted(request)
        if isinstance(posted, Response):
            return posted
        session, form = posted
        group, vault = self._names(request)
        object_id = form.get("object_id", "").strip().lower()
        if not _OBJECT_ID.fullmatch(object_id):
            return await self._show(request, session, 400, "An object id is a GUID.")
        granted = [p for p in PERMISSIONS if form.get(f"perm_{p}") == "on"]
        if change == "add" and not granted:
            return await self._show(request, session, 400, "Choose at least one secret permission.")
        path = self._vault_path(session, group, vault)
        try:
            answer = await self.portal.arm_ok("GET", path, session, VAULT_API)
            current = answer.json()
            props = dict(current.get("properties", {}))
            policies = [p for p in props.get("accessPolicies", []) if str(p.get("objectId", "")).lower() != object_id]
            if change == "add":
                policies.append(
                    {"tenantId": props.get("tenantId"), "objectId": object_id, "permissions": {"secrets": granted}}
                )
            props["accessPolicies"] = policies
            body = {"location": current.get("location"), "tags": current.get("tags") or {}, "properties": props}
            answer = await self.portal.arm_ok("PUT", path, session, VAULT_API, body=body)
        except PortalError as exc:
            return await self._show(request, session, exc.status, exc.message)
        return RedirectResponse(self._page(group, vault), 303, PAGE_HEADERS)

    async def _secret(self, request: Request, change: str) -> Response:

        posted = await self._posted(request)
        if isinstance(posted, Response):
            return posted
        session, form = posted
        group, vault = self._names(request)
        name = form.get("name", "").strip()
        if not _SECRET_NAME.fullmatch(name):
            return await self._show(request, session, 400, "A secret name is 1-127 letters, digits or '-'.")
        value = form.get("value", "")
        if change == "set" and (not value or len(value) > MAX_VALUE):
            return await self._show(request, session, 400, "A secret needs a value of at most 25 KiB.")
        method = {"set": "PUT", "reveal": "GET", "delete": "DELETE"}[change]
        try:
            answer = await self.portal.arm_ok("GET", self._vault_path(session, group, vault), session, VAULT_API)
            uri = str(answer.json().get("properties", {}).get("vaultUri", "")).rstrip("/")
            body = {"value": value} if change == "set" else None
            answer = await self.portal.data_call(
                method, f"{uri}/secrets/{name}", session, vault_scope(uri), SECRETS_API, body
            )
            if answer.status_code >= 400:
                return await self._show(request, session, answer.status_code, arm_message(answer))
        except PortalError as exc:
            return await self._show(request, session, exc.status, exc.message)
        if change != "reveal":
            return RedirectResponse(self._page(group, vault), 303, PAGE_HEADERS)
        return await self._show(request, session, revealed={"name": name, "value": str(answer.json().get("value", ""))})

    async def vault(self, request: Request) -> Response:
        session = self.portal.session_of(request)
        if session is None or not session.user:
            return RedirectResponse("/portal/", 303, PAGE_HEADERS)
        return await self._show(request, session)

    async def add_policy(self, request: Request) -> Response:
        return await self._write_policies(request, "add")

    async def remove_policy(self, request: Request) -> Response:
        return await self._write_policies(request, "remove")

    async def reveal(self, request: Request) -> Response:
        return await self._secret(request, "reveal")

    async def set_secret(self, request: Request) -> Response:
        return await self._secret(request, "set")

    async def confirm_delete_secret(self, request: Request) -> Response:
        """The "Delete" link's target: the vault page asking "Delete secret …?" with Yes (a POST) and No."""
        session = self.portal.session_of(request)
        if session is None or not session.user:
            return RedirectResponse("/portal/", 303, PAGE_HEADERS)
        name = request.query_params.get("name", "")
        if not _SECRET_NAME.fullmatch(name):
            return await self._show(request, session, 400, "A secret name is 1-127 letters, digits or '-'.")
        return await self._show(request, session, confirm_secret=name)

    async def delete_secret(self, request: Request) -> Response:
        return await self._secret(request, "delete")

    def routes(self) -> list[Route]:
        base = "/portal/resourcegroups/{group}/vaults/{vault}"
        return [
            Route(base, self.vault),
            Route(f"{base}/policies/add", self.add_policy, methods=["POST"]),
            Route(f"{base}/policies/remove", self.remove_policy, methods=["POST"]),
            Route(f"{base}/secrets/reveal", self.reveal, methods=["POST"]),
            Route(f"{base}/secrets/set", self.set_secret, methods=["POST"]),
            Route(f"{base}/secrets/delete", self.confirm_delete_secret, methods=["GET"]),
            Route(f"{base}/secrets/delete", self.delete_secret, methods=["POST"]),
        ]
