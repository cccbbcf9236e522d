"""The portal's pages. Sign-in is the directory's own authorize + token endpoints (code + PKCE S256);
every read or write is an ARM call over HTTP with the user's token, so RBAC applies as for az."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import jinja2
import orjson
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from lanyard.core.body import read_capped
from lanyard.core.errors import OAuthError
from lanyard.directory.clients import LANYARD_PORTAL, portal_redirect
from lanyard.portal.access import AccessPages
from lanyard.portal.apps import PLAN_SKUS, AppPages
from lanyard.portal.errors import PortalError, arm_message
from lanyard.portal.identities import IdentityPages
from lanyard.portal.operations import OperationPages
from lanyard.portal.security import PAGE_HEADERS, CsrfRejected, check_csrf
from lanyard.portal.sessions import COOKIE, Session, SessionStore
from lanyard.portal.vaults import VaultPages
from lanyard.protocol.oauth2 import MAX_FORM_BYTES, parse_form

ARM_SCOPE = "https://management.azure.com/.default"
ARM_API = "2022-03-01"

_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("lanyard.portal", "templates"), autoescape=True, undefined=jinja2.StrictUndefined
)

# Posts a token request form; returns the JSON answer. Injectable so in-process tests need no socket.
TokenPoster = Callable[[dict[str, str]], Awaitable[dict[str, Any]]]
ArmGetter = Callable[[str, str], Awaitable[httpx.Response]]
# (method, path, token, api-version, query, JSON body) -> ARM's answer.
ArmSender = Callable[[str, str, str, str, dict[str, str], Any], Awaitable[httpx.Response]]
# (method, path, token, query, JSON body) -> the platform's operator API's answer (/lanyard/v1/...).
OperatorSender = Callable[[str, str, str, dict[str, str], Any], Awaitable[httpx.Response]]
# The operator API paths the portal may call: hosts, one host, join tokens, the audit trail. Not the
# agents' own paths (/lanyard/v1/agent/..., /lanyard/v1/join), which take no person's token.
_OPERATOR_PATH = re.compile(r"/lanyard/v1/(hosts|hosts/[^/?#]+|hosts/[^/?#]+/placements|joinTokens|audit)")


_GROUP_NAME = re.compile(r"[-\w._()]{1,90}")
_LOCATION = re.compile(r"[A-Za-z0-9]{1,40}")


def _challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


class Portal:
    def __init__(self, authority: str, sessions: SessionStore, verify: str | bool = True) -> None:
        self.authority = authority.rstrip("/")
        self.sessions = sessions
        self.verify = verify
        self.post_token: TokenPoster = self._post_token
        self.arm_get: ArmGetter = self._arm_get
        self.arm_put = self._arm_put
        self.arm_send: ArmSender = self._arm_send
        self.operator_send: OperatorSender = self._operator_send

    # -- plumbing ---------------------------------------------------------------------------------

    async def _post_token(self, form: dict[str, str]) -> dict[str, Any]:
        async with httpx.AsyncClient(verify=self.verify, timeout=10.0) as client:
            answer = await client.post(f"{self.authority}/organizations/oauth2/v2.0/token", data=form)
        body: dict[str, Any] = answer.json()
        return body

    async def _arm_get(self, path: str, token: str) -> httpx.Response:
        async with httpx.AsyncClient(verify=self.verify, timeout=10.0) as client:
            return await client.get(
                f"{self.authority}{path}", params={"api-version": ARM_API}, headers={"Authorization": f"Bearer {token}"}
            )

    async def _arm_put(self, path: str, token: str, body: dict[str, Any]) -> httpx.Response:
        async with httpx.AsyncClient(verify=self.verify, timeout=10.0) as client:
            return await client.put(
                f"{self.authority}{path}",
                params={"api-version": ARM_API},
                headers={"Authorization": f"Bearer {token}"},
                json=body,
            )

    async def _arm_send(
        self, method: str, path: str, token: str, api: str, params: dict[str, str], body: Any
    ) -> httpx.Response:
        async with httpx.AsyncClient(verify=self.verify, timeout=10.0) as client:
            return await client.request(
                method,
                f"{self.authority}{path}",
                params={"api-version": api, **params},
                headers={"Authorization": f"Bearer {token}"},
                json=body,
            )

    async def arm_call(
        self,
        method: str,
        path: str,
        session: Session,
        api: str,
        params: dict[str, str] | None = None,
        body: Any = None,
    ) -> httpx.Response:
        """One ARM request with the person's token; a sign-in that has ended is a PortalError."""
        if not path.startswith("/subscriptions/"):
            raise PortalError("That is not a resource of this platform.")
        try:
            return await self.arm_send(method, path, await self._arm_token(session), api, params or {}, body)
        except httpx.HTTPError as exc:
            raise PortalError(f"Resource Manager could not be reached ({type(exc).__name__}).", 502) from exc

    async def arm_ok(
        self,
        method: str,
        path: str,
        session: Session,
        api: str,
        params: dict[str, str] | None = None,
        body: Any = None,
    ) -> httpx.Response:
        """`arm_call` whose refusal (any status from 400) is a PortalError carrying ARM's own message
        and status, so a page shows it the way it shows every other failure."""
        answer = await self.arm_call(method, path, session, api, params, body)
        if answer.status_code >= 400:
            raise PortalError(arm_message(answer), answer.status_code)
        return answer

    async def _operator_send(
        self, method: str, path: str, token: str, params: dict[str, str], body: Any
    ) -> httpx.Response:
        async with httpx.AsyncClient(verify=self.verify, timeout=10.0) as client:
            return await client.request(
                method,
                f"{self.authority}{path}",
                params=params,
                headers={"Authorization": f"Bearer {token}"},
                json=body,
            )

    async def operator_call(
        self, method: str, path: str, session: Session, params: dict[str, str] | None = None, body: Any = None
    ) -> httpx.Response:
        """arm_call's sibling for the platform's own operator API (/lanyard/v1/hosts, joinTokens, audit):
        the same management token, so the platform's RBAC decides; the same errors as PortalError."""
        if not _OPERATOR_PATH.fullmatch(path):
            raise PortalError("That is not an operator API of this platform.")
        try:
            return await self.operator_send(method, path, await self._arm_token(session), params or {}, body)
        except httpx.HTTPError as exc:
            raise PortalError(f"The platform could not be reached ({type(exc).__name__}).", 502) from exc

    async def data_call(
        self, method: str, url: str, session: Session, scope: str, api: str, body: Any = None
    ) -> httpx.Response:
        """One data-plane request (a vault's URL, from ARM) with a token for that service's audience."""
        try:
            token = await self.token_for(session, scope)
            async with httpx.AsyncClient(verify=self.verify, timeout=10.0) as client:
                return await client.request(
                    method,
                    url,
                    params={"api-version": api},
                    headers={"Authorization": f"Bearer {token}"},
                    json=body,
                )
        except httpx.HTTPError as exc:
            raise PortalError(f"The service could not be reached ({type(exc).__name__}).", 502) from exc

    def render(self, template: str, session: Session | None, status: int = 200, **values: Any) -> Response:
        return self._render(template, session, status, **values)

    def session_of(self, request: Request) -> Session | None:
        return self._session(request)

    async def read_form(self, request: Request) -> dict[str, str]:
        return await self._form(request)

    def _render(self, template: str, session: Session | None, status: int = 200, **values: Any) -> Response:
        body = _templates.get_template(template).render(
            {"session": session, "csrf": session.csrf if session else "", "error": None, **values}
        )
        response = Response(body, status_code=status, media_type="text/html", headers=PAGE_HEADERS)
        return response

    @staticmethod
    def _set_cookie(response: Response, session: Session) -> Response:
        response.set_cookie(COOKIE, session.id, path="/", secure=True, httponly=True, samesite="lax")
        return response

    def _session(self, request: Request) -> Session | None:
        return self.sessions.get(request.cookies.get(COOKIE))

    async def _form(self, request: Request) -> dict[str, str]:
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
            raise PortalError("The form was not sent as a form.")
        body = await read_capped(request.receive, MAX_FORM_BYTES, lambda: PortalError("The form is too large.", 413))
        try:
            return parse_form(body)
        except OAuthError as exc:
            raise PortalError("The form could not be read.") from exc

    async def _arm_token(self, session: Session) -> str:
        return await self.token_for(session, ARM_SCOPE)

    async def token_for(self, session: Session, scope: str) -> str:
        """An access token for one audience, from the session's refresh token (Key Vault's data plane
        needs its own audience, so the portal redeems the refresh token for it as any client would)."""
        cached = session.access_tokens.get(scope)
        if cached and cached[1] > self.sessions.clock.now() + 60:
            return cached[0]
        answer = await self.post_token(
            {
                "grant_type": "refresh_token",
                "client_id": LANYARD_PORTAL,
                "refresh_token": session.refresh_token,
                "scope": f"{scope} offline_access",
            }
        )
        if "access_token" not in answer:
            raise PortalError(str(answer.get("error_description", "The sign-in has ended. Sign in again.")), 401)
        session.refresh_token = str(answer.get("refresh_token", session.refresh_token))
        expires = self.sessions.clock.now() + float(answer.get("expires_in", 300))
        session.access_tokens[scope] = (str(answer["access_token"]), expires)
        self.sessions.save(session)  # the refresh token rotated: every node must use the new one
        return str(answer["access_token"])

    async def _arm(self, session: Session, path: str) -> list[dict[str, Any]]:
        answer = await self.arm_get(path, await self._arm_token(session))
        if answer.status_code >= 400:
            raise PortalError(arm_message(answer), answer.status_code)
        body = answer.json()
        values: list[dict[str, Any]] = body.get("value", [])
        return values

    # -- pages ----------------------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        session = self._session(request)
        if session is None or not session.user:
            return self._render("signin.html", session)
        return await self._home(session)

    async def _home(self, session: Session, status: int = 200, error: str | None = None) -> Response:
        try:
            path = f"/subscriptions/{quote(session.subscription, safe='')}/resourcegroups"
            groups = await self._arm(session, path)
        except PortalError as exc:
            return self._render("home.html", session, exc.status, groups=[], error=exc.message)
        return self._render("home.html", session, status, groups=groups, error=error)

    async def posted_form(self, request: Request) -> tuple[Session, dict[str, str]] | Response:
        """A state-changing POST: its session and form, or the 403 page when the form lacks the session's
        CSRF token (or there is no session, or no readable form)."""
        session = self._session(request)
        try:
            form = await self._form(request)
            check_csrf(session, form.get("csrf_token", ""))
        except (CsrfRejected, PortalError):
            return self._render("error.html", None, 403, error="The form was not sent from this portal's page.")
        assert session is not None
        return session, form

    async def create_group(self, request: Request) -> Response:
        posted = await self.posted_form(request)
        if isinstance(posted, Response):
            return posted
        session, form = posted
        name, location = form.get("name", "").strip(), form.get("location", "").strip()
        if not _GROUP_NAME.fullmatch(name) or name.endswith(".") or not _LOCATION.fullmatch(location):
            return await self._home(
                session,
                400,
                "A resource group needs a name (letters, digits, . _ - ( ), "
                "at most 90, not ending in '.') and a location (letters and digits).",
            )
        try:
            token = await self._arm_token(session)
            sub = quote(session.subscription, safe="")
            answer = await self.arm_put(f"/subscriptions/{sub}/resourcegroups/{name}", token, {"location": location})
        except PortalError as exc:
            return await self._home(session, exc.status, exc.message)
        if answer.status_code >= 400:
            return await self._home(session, answer.status_code, arm_message(answer))
        return RedirectResponse("/portal/", 303, PAGE_HEADERS)

    async def group(self, request: Request) -> Response:
        session = self._session(request)
        if session is None or not session.user:
            return RedirectResponse("/portal/", 303, PAGE_HEADERS)
        return await self.group_page(session, str(request.path_params["name"]))

    async def group_page(self, session: Session, name: str, status: int = 200, error: str | None = None) -> Response:
        sub = quote(session.subscription, safe="")
        try:
            resources = await self._arm(
                session, f"/subscriptions/{sub}/resourceGroups/{quote(name, safe='')}/resources"
            )
        except PortalError as exc:
            return self._render(
                "group.html", session, exc.status, name=name, resources=[], plans=[], skus=PLAN_SKUS, error=exc.message
            )
        plans = [r for r in resources if str(r.get("type", "")).lower() == "microsoft.web/serverfarms"]
        return self._render(
            "group.html", session, status, name=name, resources=resources, plans=plans, skus=PLAN_SKUS, error=error
        )

    async def signin(self, request: Request) -> Response:
        session = self.sessions.create()
        verifier = secrets.token_urlsafe(48)
        session.pending = {"verifier": verifier, "state": secrets.token_urlsafe(24), "nonce": secrets.token_urlsafe(24)}
        self.sessions.save(session)
        query = urlencode(
            {
                "client_id": LANYARD_PORTAL,
                "response_type": "code",
                "redirect_uri": portal_redirect(self.authority),
                "scope": f"openid profile offline_access {ARM_SCOPE}",
                "code_challenge": _challenge(verifier),
                "code_challenge_method": "S256",
                "state": session.pending["state"],
                "nonce": session.pending["nonce"],
            }
        )
        response = RedirectResponse(f"{self.authority}/organizations/oauth2/v2.0/authorize?{query}", 302, PAGE_HEADERS)
        return self._set_cookie(response, session)

    async def callback(self, request: Request) -> Response:
        session = self._session(request)
        params = request.query_params
        state = session.pending.get("state", "") if session else ""
        if session is None or not state or not secrets.compare_digest(state, params.get("state", "")):
            return self._render("error.html", None, 400, error="The sign-in did not start here or has expired.")
        if "code" not in params:
            return self._render("error.html", None, 400, error=params.get("error_description", "Sign-in failed.")[:500])
        answer = await self.post_token(
            {
                "grant_type": "authorization_code",
                "client_id": LANYARD_PORTAL,
                "code": params["code"],
                "redirect_uri": portal_redirect(self.authority),
                "code_verifier": session.pending["verifier"],
                "scope": f"openid profile offline_access {ARM_SCOPE}",
            }
        )
        person = self._id_claims(answer, session.pending["nonce"])
        if "access_token" not in answer or "refresh_token" not in answer or person is None:
            return self._render(
                "error.html", None, 400, error=str(answer.get("error_description", "Sign-in failed."))[:500]
            )
        # A new session id once signed in: a session fixed before sign-in is worth nothing after.
        self.sessions.end(session.id)
        signed_in = self.sessions.create()
        signed_in.refresh_token = str(answer["refresh_token"])
        signed_in.access_tokens[ARM_SCOPE] = (
            str(answer["access_token"]),
            self.sessions.clock.now() + float(answer.get("expires_in", 300)),
        )
        signed_in.user = str(person.get("name") or person.get("preferred_username") or "")[:200] or "signed in"
        signed_in.subscription = await self._first_subscription(signed_in)
        self.sessions.save(signed_in)
        return self._set_cookie(RedirectResponse("/portal/", 303, PAGE_HEADERS), signed_in)

    @staticmethod
    def _id_claims(answer: dict[str, Any], nonce: str) -> dict[str, Any] | None:
        """The ID token's claims when its nonce is ours. It came straight from the token endpoint over
        TLS, so its signature need not be checked again (OpenID Connect Core 3.1.3.7)."""
        token = answer.get("id_token")
        if not isinstance(token, str) or token.count(".") != 2 or len(token) > 16_384:
            return None
        try:
            payload = token.split(".")[1]
            claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except (ValueError, orjson.JSONDecodeError):
            return None
        if not isinstance(claims, dict) or not secrets.compare_digest(str(claims.get("nonce", "")), nonce):
            return None
        return claims

    async def _first_subscription(self, session: Session) -> str:
        answer = await self.arm_get("/subscriptions", await self._arm_token(session))
        values = answer.json().get("value", []) if answer.status_code == 200 else []
        return str(values[0]["subscriptionId"]) if values else ""

    async def signout(self, request: Request) -> Response:
        session = self._session(request)
        try:
            check_csrf(session, (await self._form(request)).get("csrf_token", ""))
        except (CsrfRejected, PortalError):
            return self._render("error.html", None, 403, error="The form was not sent from this portal's page.")
        assert session is not None
        self.sessions.end(session.id)
        response = RedirectResponse("/portal/", 303, PAGE_HEADERS)
        response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="lax")
        return response

    def routes(self) -> list[Route | Mount]:
        static = StaticFiles(packages=[("lanyard.portal", "static")])
        return [
            *AccessPages(self).routes(),
            *AppPages(self).routes(),
            *VaultPages(self).routes(),
            *IdentityPages(self).routes(),
            *OperationPages(self).routes(),
            Route("/portal", lambda r: RedirectResponse("/portal/", 308)),
            Route("/portal/", self.home),
            Route("/portal/resourcegroups", self.create_group, methods=["POST"]),
            Route("/portal/resourcegroups/{name}", self.group),
            Route("/portal/signin", self.signin),
            Route("/portal/callback", self.callback),
            Route("/portal/signout", self.signout, methods=["POST"]),
            Mount("/portal/static", static),
        ]
