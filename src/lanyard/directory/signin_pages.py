"""The sign-in pages a person sees: the login page of the authorization endpoint (code + PKCE), the
page a device code is entered on, the device-code endpoint itself, and user-realm discovery.

Server-rendered (Jinja2, autoescaped), no script at all. Every page is sent with a CSP without
'unsafe-inline', frame-ancestors 'none', no-store and no-referrer; every POST carries a CSRF token
equal to a __Host- cookie (SameSite=Strict, HttpOnly, Secure) set when the form was served.
Errors about the client or the redirect URI are shown on the page (a code is never sent to an
unvetted address); the rest go back to the client as RFC 6749 §4.1.2.1 says.

A password sign-in on the login page starts an SSO session (directory/sso.py): later authorize
requests from that browser are answered without the password unless the client asks for
prompt=login or names another user in login_hint; /oauth2/v2.0/logout ends it.
"""

from __future__ import annotations

import hmac
import re
import secrets
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import urlencode, urlsplit

import jinja2
import jwt
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from lanyard.core.body import read_capped
from lanyard.core.errors import InvalidGrant, InvalidRequest, OAuthError
from lanyard.directory.http import NO_STORE, json_response, oauth_error
from lanyard.directory.redirects import WEB
from lanyard.directory.signin import (
    ALIASES,
    SignedInClient,
    SignIn,
    SignInThrottled,
    WeakPassword,
)
from lanyard.directory.sso import SSO_COOKIE
from lanyard.protocol.oauth2 import MAX_FORM_BYTES, delegated_scope, is_guid, parse_form
from lanyard.storage.people_repo import UserRecord

CSRF_COOKIE = "__Host-lanyard-csrf"
_CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43}$")
# What the login form carries from the authorize request to its POST.
_CARRIED = (
    "response_mode",
    "client_id",
    "redirect_uri",
    "response_type",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
    "nonce",
    "prompt",
)
_PROMPTS = frozenset({"login", "none", "select_account", "consent"})
_MESSAGES = {
    50126: "Your account or password is incorrect.",
    50057: "Your account has been disabled. Contact your administrator.",
    50053: "Your account is temporarily locked to prevent unauthorized use. Try again later.",
    50055: "Your password has expired and must be changed. Sign in in a browser to change it, then try again.",
}

_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("lanyard.directory", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
_STATIC = resources.files("lanyard.directory").joinpath("static")
_CSS = _STATIC.joinpath("signin.css").read_bytes()
_FORM_POST_JS = _STATIC.joinpath("form_post.js").read_bytes()


class PageError(Exception):
    """Shown on the page itself (the client or its redirect URI cannot be trusted with an answer)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _security_headers(form_targets: str = "", scripts: bool = False) -> dict[str, str]:
    script = " script-src 'self';" if scripts else ""  # only the form_post page, and only our file
    csp = (
        f"default-src 'none';{script} style-src 'self'; img-src 'self'; base-uri 'none'; "
        f"form-action 'self'{form_targets}; frame-ancestors 'none'"
    )
    return {
        **NO_STORE,
        "Content-Security-Policy": csp,
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }


def _origin(uri: str) -> str:
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme in ("http", "https") else ""


@dataclass(frozen=True)
class _Flow:
    """One authorize request, vetted: where its answer goes and what it asked for."""

    client: SignedInClient
    redirect_uri: str
    kind: str
    params: dict[str, str]


def _audience_of(id_token: str) -> str:
    """The client an id_token_hint was issued to. Not verified: it only picks whose registered
    redirect URIs the sign-out target is checked against."""
    try:
        aud = jwt.decode(id_token, options={"verify_signature": False}).get("aud", "")
    except jwt.PyJWTError:
        return ""
    return aud if isinstance(aud, str) else ""


class SignInPages:
    def __init__(self, signin: SignIn) -> None:
        self.signin = signin
        self.authority = signin.directory.config.authority

    # -- rendering ----------------------------------------------------------------------------

    def _page(
        self,
        request: Request,
        template: str,
        status: int = 200,
        form_targets: str = "",
        scripts: bool = False,
        **values: Any,
    ) -> Response:
        csrf = request.cookies.get(CSRF_COOKIE, "")
        fresh = not re.fullmatch(r"[A-Za-z0-9_-]{43}", csrf)
        if fresh:
            csrf = secrets.token_urlsafe(32)
        body = _templates.get_template(template).render({"error": None, **values, "csrf": csrf})
        response = Response(
            body, status, media_type="text/html; charset=utf-8", headers=_security_headers(form_targets, scripts)
        )
        if fresh:
            response.set_cookie(CSRF_COOKIE, csrf, path="/", secure=True, httponly=True, samesite="strict")
        return response

    def _error_page(self, request: Request, message: str, status: int = 400) -> Response:
        return self._page(request, "base.html", status, title="Sign-in failed", error=message)

    @staticmethod
    async def _form(request: Request) -> dict[str, str]:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            raise PageError("The form was not sent as a form.")
        body = await read_capped(request.receive, MAX_FORM_BYTES, lambda: PageError("The form is too large.", 413))
        try:
            return parse_form(body)
        except OAuthError as exc:
            raise PageError("The form could not be read.") from exc

    @staticmethod
    def _check_csrf(request: Request, form: dict[str, str]) -> None:
        cookie = request.cookies.get(CSRF_COOKIE, "")
        offered = form.get("csrf_token", "")
        if not cookie or not offered or not hmac.compare_digest(cookie.encode(), offered.encode()):
            raise PageError("The sign-in form expired or was not sent from this page. Go back and try again.", 403)

    @staticmethod
    def _tenant(request: Request) -> str:
        tenant = str(request.path_params["tenant"]).lower()
        if tenant not in ALIASES and not is_guid(tenant):
            raise PageError(f"Tenant '{tenant[:64]}' not found.", 404)
        return tenant

    # -- authorization endpoint ---------------------------------------------------------------

    def _vet(self, tenant: str, params: dict[str, str]) -> tuple[SignedInClient, str, str]:
        """The client and redirect URI, or a PageError: nothing may be redirected before these hold."""
        client_id = params.get("client_id", "")
        if not client_id:
            raise PageError("AADSTS900144: The request must contain the parameter 'client_id'.")
        try:
            client = self.signin.public_or_registered(tenant, client_id)
        except OAuthError as exc:
            raise PageError(exc.message) from exc
        redirect_uri = params.get("redirect_uri", "")
        kind = client.redirect_kind(redirect_uri)
        if kind is None:
            raise PageError(
                "AADSTS50011: The redirect URI specified in the request does not match the redirect URIs "
                f"configured for the application '{client.client_id}'."
            )
        return client, redirect_uri, kind

    @staticmethod
    def _checked_request(params: dict[str, str], kind: str) -> None:
        """The rest of the request (its errors go back to the client's redirect URI). PKCE may be left
        out only by a web app, which redeems its code with its own credential."""
        if params.get("response_type") != "code":
            raise InvalidRequest(900144, "The only response_type supported is 'code' (with PKCE).")
        pkce_optional = kind == WEB and not params.get("code_challenge") and not params.get("code_challenge_method")
        if not pkce_optional and (
            params.get("code_challenge_method") != "S256" or not _CHALLENGE.match(params.get("code_challenge", ""))
        ):
            raise InvalidRequest(
                50148, "A PKCE code_challenge with code_challenge_method S256 is required for this client."
            )
        if params.get("prompt", "login") not in _PROMPTS:
            raise InvalidRequest(90023, "Invalid prompt value: use login, none, select_account or consent.")
        if params.get("response_mode", "query") not in _RESPONSE_MODES:
            raise InvalidRequest(900144, "The response_mode must be 'query', 'fragment' or 'form_post'.")
        if len(params.get("state", "")) > 2048 or len(params.get("nonce", "")) > 512:
            raise InvalidRequest(900144, "The state or nonce parameter is too long.")
        delegated_scope(params.get("scope"), None)

    @staticmethod
    def _redirect(redirect_uri: str, mode: str = "query", **values: str) -> Response:
        """The answer sent back to the client: in the query, or (response_mode=fragment, what a
        single-page app asks for) in the fragment, which the browser keeps out of any server's logs."""
        query = urlencode({k: v for k, v in values.items() if v})
        if mode == "fragment":
            return RedirectResponse(f"{redirect_uri}#{query}", status_code=302, headers=NO_STORE)
        sep = "&" if urlsplit(redirect_uri).query else "?"
        return RedirectResponse(f"{redirect_uri}{sep}{query}", status_code=302, headers=NO_STORE)

    async def authorize(self, request: Request) -> Response:
        try:
            tenant = self._tenant(request)
            form = await self._form(request) if request.method == "POST" else {}
            if request.method == "POST":
                self._check_csrf(request, form)
            params = {k: form[k] for k in _CARRIED if k in form} if form else dict(request.query_params)
            client, redirect_uri, kind = await run_in_threadpool(self._vet, tenant, params)
            try:
                self._checked_request(params, kind)
            except OAuthError as exc:
                return self._redirect(
                    redirect_uri,
                    _mode(params),
                    error=exc.error,
                    error_description=exc.message,
                    state=params.get("state", ""),
                )
            flow = _Flow(client, redirect_uri, kind, params)
            page: dict[str, Any] = {
                "title": "Sign in",
                "client_name": client.name,
                "action": request.url.path,
                "carried": [(k, params[k]) for k in _CARRIED if params.get(k)],
                "username": params.get("login_hint", "")[:256],
                "form_targets": f" {_origin(redirect_uri)}",
            }
            if request.method != "POST":
                return await self._without_password(request, tenant, flow, page)
            if form.get("step") == "pick":  # the account picker's choice: the session's account
                picked = await run_in_threadpool(
                    self._session_user, request.cookies.get(SSO_COOKIE, ""), tenant, params.get("login_hint", "")
                )
                if picked is None:
                    return self._page(request, "login.html", **page)
                return await self._answer(request, picked, flow, page, None)
            page["username"] = form.get("username", "")[:256]
            source = request.client.host if request.client else ""
            changing = form.get("step") == "change_password"
            change_page = {**page, "title": "Update your password"}
            try:
                if changing:
                    user = await run_in_threadpool(
                        self.signin.change_password,
                        tenant,
                        form.get("username", ""),
                        form.get("password", ""),
                        form.get("new_password", ""),
                        form.get("confirm_password", ""),
                        source,
                    )
                else:
                    user = await run_in_threadpool(
                        self.signin.check_password, tenant, form.get("username", ""), form.get("password", ""), source
                    )
            except WeakPassword as exc:
                return self._page(request, "change_password.html", 200, error=exc.message, **change_page)
            except InvalidGrant as exc:
                status = 429 if isinstance(exc, SignInThrottled) else 200
                shown = change_page if changing else page
                template = "change_password.html" if changing else "login.html"
                return self._page(request, template, status, error=_MESSAGES.get(exc.aadsts, exc.message), **shown)
            if user.force_change_password:
                return self._page(request, "change_password.html", **change_page)
            session = await run_in_threadpool(self.signin.sso.start, user)
            old = request.cookies.get(SSO_COOKIE, "")
            if old:  # prompt=login, or a session that no longer held: the new one replaces it
                await run_in_threadpool(self.signin.sso.end, old)
            return await self._answer(request, user, flow, page, session)
        except PageError as exc:
            return self._error_page(request, exc.message, exc.status)

    async def _without_password(self, request: Request, tenant: str, flow: _Flow, page: dict[str, Any]) -> Response:
        """A GET: answered from the SSO session when there is one that may be used, else the login page
        (or, for prompt=none, login_required back to the client)."""
        prompt = flow.params.get("prompt", "")
        user = None
        if prompt != "login":
            user = await run_in_threadpool(
                self._session_user, request.cookies.get(SSO_COOKIE, ""), tenant, flow.params.get("login_hint", "")
            )
        if user is not None and prompt == "select_account":
            # Entra's "Pick an account": the signed-in one, or another (the login page, as prompt=login).
            other = urlencode({**{k: v for k, v in flow.params.items() if k in _CARRIED}, "prompt": "login"})
            return self._page(
                request,
                "pick.html",
                **{**page, "title": "Pick an account"},
                account=user,
                other=f"{request.url.path}?{other}",
            )
        if user is not None:
            return await self._answer(request, user, flow, page, None)
        if prompt == "none":
            return self._redirect(
                flow.redirect_uri,
                _mode(flow.params),
                error="login_required",
                error_description="AADSTS50058: A silent sign-in request was sent but no user is signed in.",
                state=flow.params.get("state", ""),
            )
        return self._page(request, "login.html", **page)

    def _session_user(self, cookie: str, tenant: str, login_hint: str) -> UserRecord | None:
        user = self.signin.sso.user_of(cookie) if cookie else None
        if user is None or not (tenant in ALIASES or tenant == user.tenant_id):
            return None
        if login_hint and login_hint.lower() != user.user_principal_name.lower():
            return None  # another account is asked for: that one signs in with its password
        return user

    async def _answer(
        self, request: Request, user: UserRecord, flow: _Flow, page: dict[str, Any], session: str | None
    ) -> Response:
        code = await run_in_threadpool(self._issue_code, user, flow)
        params = flow.params
        if params.get("response_mode") == "form_post":
            fields = [("code", code), *([("state", params["state"])] if params.get("state") else [])]
            response = self._page(
                request,
                "form_post.html",
                form_targets=page["form_targets"],
                scripts=True,
                title="Signed in",
                client_name=flow.client.name,
                redirect_uri=flow.redirect_uri,
                fields=fields,
            )
        else:
            response = self._redirect(flow.redirect_uri, _mode(params), code=code, state=params.get("state", ""))
        if session is not None:
            # Lax, not Strict: the cookie must come along when a client's page navigates here.
            response.set_cookie(SSO_COOKIE, session, path="/", secure=True, httponly=True, samesite="lax")
        return response

    def _issue_code(self, user: UserRecord, flow: _Flow) -> str:
        return self.signin.issue_code(
            user,
            flow.client,
            redirect_uri=flow.redirect_uri,
            scope=flow.params.get("scope", ""),
            challenge=flow.params.get("code_challenge") or None,
            nonce=flow.params.get("nonce") or None,
            redirect_kind=flow.kind,
        )

    # -- sign-out -----------------------------------------------------------------------------

    async def logout(self, request: Request) -> Response:
        """OpenID front-channel sign-out (end_session_endpoint): the SSO session ends, then the
        browser goes to post_logout_redirect_uri only if it is registered for the client named by
        client_id (or the id_token_hint's audience)."""
        try:
            tenant = self._tenant(request)
            params = await self._form(request) if request.method == "POST" else dict(request.query_params)
            cookie = request.cookies.get(SSO_COOKIE, "")
            if cookie:
                await run_in_threadpool(self.signin.sso.end, cookie)
            target = params.get("post_logout_redirect_uri", "")
            response: Response
            if target:
                client_id = params.get("client_id") or _audience_of(params.get("id_token_hint", ""))
                try:
                    client = await run_in_threadpool(self.signin.public_or_registered, tenant, client_id)
                except OAuthError:
                    client = None
                if client is None or client.redirect_kind(target) is None:
                    raise PageError(
                        "You signed out, but AADSTS50011: the post_logout_redirect_uri is not a redirect URI "
                        "registered for the application, so you were not sent back to it."
                    )
                response = self._redirect(target, state=params.get("state", ""))
            else:
                response = self._page(request, "signed_out.html", title="Signed out")
        except PageError as exc:
            response = self._error_page(request, exc.message, exc.status)
        response.delete_cookie(SSO_COOKIE, path="/", secure=True, httponly=True, samesite="lax")
        return response

    # -- device code --------------------------------------------------------------------------

    async def devicecode(self, request: Request) -> Response:
        try:
            tenant = str(request.path_params["tenant"]).lower()
            if tenant not in ALIASES and not is_guid(tenant):
                raise InvalidRequest(90002, f"Tenant '{tenant[:64]}' not found.")
            if request.method != "POST":
                raise InvalidRequest(900561, "The endpoint only accepts POST requests.")
            try:
                form = await self._form(request)
            except PageError as exc:
                raise InvalidRequest(900144, exc.message) from exc
            client_id = form.get("client_id", "")
            if not client_id:
                raise InvalidRequest(900144, "The request body must contain the following parameter: 'client_id'.")
            scope = form.get("scope") or ""
            if not scope and form.get("resource"):
                scope = f"{form['resource']}/.default offline_access openid"  # v1: the resource's default
            delegated_scope(scope, None)
            result = await run_in_threadpool(self.signin.start_device, tenant, client_id, scope, self.device_page_url)
        except OAuthError as exc:
            return oauth_error(exc)
        return json_response(result, 200, NO_STORE)

    @property
    def device_page_url(self) -> str:
        return f"{self.authority}/devicelogin"

    async def device_page(self, request: Request) -> Response:
        """Where a device code is entered. With a password; or, in a browser already signed in (an SSO
        session), by confirming "Continue as ..." after the page has said which application the code
        is for, so a code someone else made cannot be approved unseen."""
        cookie = request.cookies.get(SSO_COOKIE, "")
        signed_in = await run_in_threadpool(self._session_user, cookie, "organizations", "") if cookie else None
        other = request.query_params.get("other") == "1"
        page: dict[str, Any] = {
            "title": "Enter code",
            "action": "/devicelogin" + ("?other=1" if other else ""),
            "done": False,
            "confirm": False,
            "client_name": "",
            "code": request.query_params.get("otc", "")[:32],
            "username": "",
            "signed_in": None if other or signed_in is None else signed_in.user_principal_name,
        }
        try:
            if request.method != "POST":
                return self._page(request, "device.html", **page)
            form = await self._form(request)
            self._check_csrf(request, form)
            page.update(code=form.get("otc", "")[:32], username=form.get("username", "")[:256])
            source = request.client.host if request.client else ""
            try:
                grant, client = await run_in_threadpool(self.signin.pending_device, form.get("otc", ""))
            except OAuthError as exc:
                return self._page(request, "device.html", 400, error=exc.message, **page)
            step = form.get("step", "")
            if page["signed_in"] is not None and step in ("code", "continue"):
                assert signed_in is not None
                if step == "code":  # first say what the code is for, and as whom it would sign in
                    page.update(confirm=True, client_name=client.name, title="Are you trying to sign in?")
                    return self._page(request, "device.html", **page)
                user: UserRecord | None = await run_in_threadpool(
                    self._session_user, cookie, grant.tenant_id, signed_in.user_principal_name
                )
                if user is None:
                    return self._page(request, "device.html", 400, error="Your session has ended. Sign in.", **page)
            else:
                try:
                    user = await run_in_threadpool(
                        self.signin.check_password,
                        grant.tenant_id,
                        form.get("username", ""),
                        form.get("password", ""),
                        source,
                    )
                except InvalidGrant as exc:
                    status = 429 if isinstance(exc, SignInThrottled) else 200
                    error = _MESSAGES.get(exc.aadsts, exc.message)
                    return self._page(request, "device.html", status, error=error, **page)
            try:
                await run_in_threadpool(self.signin.approve_device, grant, user)
            except InvalidGrant as exc:  # the user's own state (a password to change): said on the page
                return self._page(request, "device.html", error=_MESSAGES.get(exc.aadsts, exc.message), **page)
            except OAuthError as exc:
                return self._page(request, "device.html", 400, error=exc.message, **page)
            page.update(done=True, client_name=client.name, title="You're signed in")
            return self._page(request, "device.html", **page)
        except PageError as exc:
            return self._error_page(request, exc.message, exc.status)

    # -- the rest -----------------------------------------------------------------------------

    async def user_realm(self, request: Request) -> Response:
        """msal asks before a password sign-in whether the name is federated. Every name is managed
        here, whether it exists or not (the answer must not tell)."""
        name = str(request.path_params["username"])[:256]
        domain = name.rpartition("@")[2]
        return json_response(
            {
                "ver": "1.0",
                "account_type": "Managed",
                "domain_name": domain,
                "cloud_instance_name": urlsplit(self.authority).hostname or "",
                "cloud_audience_urn": "urn:federation:MicrosoftOnline",
            },
            200,
            NO_STORE,
        )

    async def revoke(self, request: Request) -> Response:
        """RFC 7009 revocation of a refresh token (what `lanyard logout` calls): 200 whether or not
        the token was known, as the RFC says."""
        try:
            try:
                form = await self._form(request)
            except PageError as exc:
                raise InvalidRequest(900144, exc.message) from exc
            token, client_id = form.get("token", ""), form.get("client_id", "")
            if not token or not is_guid(client_id):
                raise InvalidRequest(900144, "The request body must contain 'token' and 'client_id'.")
            await run_in_threadpool(self.signin.revoke_refresh_token, token, client_id)
        except OAuthError as exc:
            return oauth_error(exc)
        return Response(status_code=200, headers=NO_STORE)

    async def stylesheet(self, request: Request) -> Response:
        return Response(_CSS, media_type="text/css", headers={"Cache-Control": "max-age=3600"})

    async def form_post_script(self, request: Request) -> Response:
        return Response(_FORM_POST_JS, media_type="text/javascript", headers={"Cache-Control": "max-age=3600"})

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/{tenant}/oauth2/v2.0/authorize", self.authorize, methods=["GET", "POST"]),
            Route("/{tenant}/oauth2/authorize", self.authorize, methods=["GET", "POST"]),
            Route("/{tenant}/oauth2/v2.0/devicecode", self.devicecode, methods=["GET", "POST"]),
            Route("/{tenant}/oauth2/devicecode", self.devicecode, methods=["GET", "POST"]),
            Route("/{tenant}/oauth2/v2.0/revoke", self.revoke, methods=["POST"]),
            Route("/{tenant}/oauth2/v2.0/logout", self.logout, methods=["GET", "POST"]),
            Route("/{tenant}/oauth2/logout", self.logout, methods=["GET", "POST"]),
            Route("/devicelogin", self.device_page, methods=["GET", "POST"]),
            Route("/common/userrealm/{username}", self.user_realm, methods=["GET"]),
            Route("/_lanyard/signin.css", self.stylesheet, methods=["GET"]),
            Route("/_lanyard/form_post.js", self.form_post_script, methods=["GET"]),
        ]


_RESPONSE_MODES = ("query", "fragment", "form_post")


def _mode(params: dict[str, str]) -> str:
    """Where an answer goes back: the request's response_mode when it is one we speak, else the query."""
    mode = params.get("response_mode", "query")
    return mode if mode in _RESPONSE_MODES and mode != "form_post" else "query"
