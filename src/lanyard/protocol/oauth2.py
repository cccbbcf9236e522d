"""The OAuth 2.0 token request (RFC 6749 §4.4 client credentials, RFC 7523 client assertions),
as Entra's v1 (`resource`) and v2 (`scope`) endpoints accept it. Pure: form fields in, a
:class:`TokenRequest` or an :class:`~lanyard.core.errors.OAuthError` out.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl, unquote_plus

from lanyard.core.errors import (
    InvalidClient,
    InvalidRequest,
    InvalidResource,
    InvalidScope,
    UnsupportedGrantType,
)

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_FORM_BYTES = 64 * 1024
# msal may add these to any request; they never name a resource.
_RESERVED_SCOPES = frozenset({"openid", "profile", "offline_access"})
_RESOURCE_CHARS = re.compile(r"^[\x21-\x7e]{1,512}$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:.+")

Endpoint = Literal["v1", "v2"]


@dataclass(frozen=True)
class TokenRequest:
    client_id: str
    resource: str
    client_secret: str | None
    client_assertion: str | None
    endpoint: Endpoint

    def __repr__(self) -> str:  # never let a secret or an assertion reach a log through repr()
        return f"TokenRequest(client_id={self.client_id!r}, resource={self.resource!r}, endpoint={self.endpoint})"


def parse_form(body: bytes) -> dict[str, str]:
    """application/x-www-form-urlencoded, strictly: each field at most once."""
    if len(body) > MAX_FORM_BYTES:
        raise InvalidRequest(900144, "The request body is too large.")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(900144, "The request body must be UTF-8 form data.") from exc
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text), max_num_fields=64)
    except ValueError as exc:
        raise InvalidRequest(900144, "The request body is not valid form data.") from exc
    form: dict[str, str] = {}
    for key, value in pairs:
        if key in form:
            raise InvalidRequest(90015, f"Requested query string is too long or has a duplicate field '{key[:40]}'.")
        form[key] = value
    return form


def _required(form: Mapping[str, str], name: str) -> str:
    value = form.get(name, "")
    if not value:
        raise InvalidRequest(900144, f"The request body must contain the following parameter: '{name}'.")
    return value


def is_guid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return len(value) == 36


def validate_resource(resource: str) -> str:
    """A resource is an absolute URI (https://vault.example, api://my-app) or an app id GUID."""
    if not _RESOURCE_CHARS.match(resource) or not (_SCHEME.match(resource) or is_guid(resource)):
        shown = resource[:100].encode("unicode_escape").decode()
        raise InvalidResource(500011, f"The resource principal named {shown} was not found in the tenant.")
    return resource


def resource_from_scope(scope: str) -> str:
    scopes = [s for s in scope.split(" ") if s and s not in _RESERVED_SCOPES]
    if len(scopes) != 1:
        raise InvalidScope(
            70011,
            "The provided value for the input parameter 'scope' is not valid. "
            "Client credential flows must request exactly one resource with /.default.",
        )
    (single,) = scopes
    if not single.endswith("/.default"):
        shown = single[:100].encode("unicode_escape").decode()
        raise InvalidScope(
            1002012,
            f"The provided value for scope {shown} is not valid. Client credential flows must have a scope "
            "value with /.default suffixed to the resource identifier (application ID URI).",
        )
    return validate_resource(single[: -len("/.default")])


def _basic_auth(authorization: str | None) -> tuple[str, str] | None:
    """client_secret_basic (RFC 6749 §2.3.1): both parts form-urlencoded, then base64."""
    if not authorization or authorization[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidClient(7000216, "The Authorization header is not valid Basic credentials.") from exc
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise InvalidClient(7000216, "The Authorization header is not valid Basic credentials.")
    return unquote_plus(client_id), unquote_plus(secret)


def parse_token_request(form: Mapping[str, str], endpoint: Endpoint, authorization: str | None = None) -> TokenRequest:
    grant_type = _required(form, "grant_type")
    if grant_type != "client_credentials":
        raise UnsupportedGrantType(
            70003,
            f"The app requested an unsupported grant type '{grant_type[:40]}'. This endpoint "
            "issues app-only tokens: use client_credentials.",
        )
    basic = _basic_auth(authorization)
    client_id = form.get("client_id", "")
    secret = form.get("client_secret") or None
    if basic is not None:
        if client_id and client_id != basic[0]:
            raise InvalidRequest(9002313, "Invalid request: client_id does not match the Authorization header.")
        client_id, secret = basic[0], secret or basic[1]
        if form.get("client_secret"):
            raise InvalidRequest(9002313, "Invalid request: more than one client authentication method.")
    if not client_id:
        raise InvalidRequest(900144, "The request body must contain the following parameter: 'client_id'.")
    if not is_guid(client_id):
        raise InvalidRequest(700016, f"Application identifier '{client_id[:40]}' is not a valid GUID.")

    assertion = form.get("client_assertion") or None
    if assertion is not None:
        assertion_type = form.get("client_assertion_type", "")
        if assertion_type != JWT_BEARER:
            raise InvalidRequest(7000219, f"'client_assertion_type' must be '{JWT_BEARER}'.")
    if assertion and secret:
        raise InvalidRequest(9002313, "Invalid request: more than one client authentication method.")
    if not assertion and not secret:
        raise InvalidClient(
            7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'."
        )

    if endpoint == "v1" and (form.get("resource") or not form.get("scope")):
        resource = validate_resource(_required(form, "resource"))
    else:
        # v2, or a v2-style client (msal in oidc_authority mode) on the v1 endpoint.
        resource = resource_from_scope(_required(form, "scope"))
    return TokenRequest(client_id.lower(), resource, secret, assertion, endpoint)


# -- delegated (user) grants -------------------------------------------------------------------

PASSWORD = "password"  # noqa: S105 (a grant type's name)
AUTHORIZATION_CODE = "authorization_code"
REFRESH_TOKEN = "refresh_token"  # noqa: S105 (a grant type's name)
DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"
USER_GRANTS = frozenset({PASSWORD, AUTHORIZATION_CODE, REFRESH_TOKEN, DEVICE_CODE, "device_code"})
# The permission a `/.default` request for a resource stands for (Entra's delegated default).
DEFAULT_DELEGATED = "user_impersonation"
# No resource named (only openid, profile, offline_access): Entra answers with a Graph token.
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"


@dataclass(frozen=True)
class DelegatedScope:
    """What a user grant asks for: one resource and the permission names on it."""

    resource: str
    permissions: tuple[str, ...]
    requested: tuple[str, ...]  # the resource's scopes as asked (what the answer's `scope` lists)
    offline: bool  # offline_access: a refresh token is wanted

    @property
    def scp(self) -> str:
        return " ".join(self.permissions)

    def granted(self) -> str:
        """The answer's `scope`: the scopes as requested, plus what `/.default` stood for."""
        names = [f"{self.resource}/{p}" for p in self.permissions]
        return " ".join(dict.fromkeys([*names, *self.requested]))


def delegated_scope(scope: str | None, resource: str | None) -> DelegatedScope:
    """v2 `scope` (`{resource}/.default` or `{resource}/{permission}`, several of one resource), or v1's
    `resource`. Reserved OIDC scopes never name a resource."""
    words = [w for w in (scope or "").split(" ") if w]
    offline = "offline_access" in words
    if resource:
        return DelegatedScope(validate_resource(resource), (DEFAULT_DELEGATED,), (), True)
    named = [w for w in words if w not in _RESERVED_SCOPES and w != "email"]
    if not named:
        return DelegatedScope(GRAPH_APP_ID, ("openid", "profile", "offline_access"), (), offline)
    resources: set[str] = set()
    permissions: list[str] = []
    for word in named:
        base, sep, permission = word.rpartition("/")
        if not sep or not base or not permission:
            shown = word[:100].encode("unicode_escape").decode()
            raise InvalidScope(70011, f"The provided value for the input parameter 'scope' is not valid: {shown}.")
        resources.add(validate_resource(base))
        permissions.append(DEFAULT_DELEGATED if permission == ".default" else permission)
    if len(resources) != 1:
        raise InvalidScope(
            70011,
            "The provided value for the input parameter 'scope' is not valid. Scopes of more than one resource "
            "were requested in one token request.",
        )
    if not all(re.fullmatch(r"[A-Za-z0-9._-]{1,120}", p) for p in permissions):
        raise InvalidScope(70011, "The provided value for the input parameter 'scope' is not valid.")
    return DelegatedScope(resources.pop(), tuple(dict.fromkeys(permissions)), tuple(named), offline)


@dataclass(frozen=True)
class UserGrantRequest:
    grant_type: str
    client_id: str
    client_secret: str | None
    client_assertion: str | None
    scope: DelegatedScope
    endpoint: Endpoint
    username: str = ""
    password: str = ""
    code: str = ""
    redirect_uri: str = ""
    code_verifier: str = ""
    refresh_token: str = ""
    device_code: str = ""
    # False when the request named no scope (msal polling a device code): the grant's own applies.
    scope_given: bool = True
    # The browser's Origin header: present on a cross-origin (single-page app) redemption, else "".
    origin: str = ""

    def __repr__(self) -> str:  # passwords, codes and tokens never reach a log through repr()
        return f"UserGrantRequest(grant_type={self.grant_type!r}, client_id={self.client_id!r})"

    def as_client_request(self) -> TokenRequest:
        """The client-authentication part, for a confidential client signing a user in."""
        return TokenRequest(
            self.client_id, self.scope.resource, self.client_secret, self.client_assertion, self.endpoint
        )


def grant_type_of(form: Mapping[str, str]) -> str:
    return _required(form, "grant_type")


def parse_user_grant(form: Mapping[str, str], endpoint: Endpoint, authorization: str | None = None) -> UserGrantRequest:
    grant_type = grant_type_of(form)
    if grant_type not in USER_GRANTS:
        raise UnsupportedGrantType(70003, f"The app requested an unsupported grant type '{grant_type[:40]}'.")
    if grant_type == "device_code":
        grant_type = DEVICE_CODE
    basic = _basic_auth(authorization)
    client_id = form.get("client_id", "")
    secret = form.get("client_secret") or None
    if basic is not None:
        if client_id and client_id != basic[0]:
            raise InvalidRequest(9002313, "Invalid request: client_id does not match the Authorization header.")
        client_id, secret = basic[0], basic[1]
    if not client_id:
        raise InvalidRequest(900144, "The request body must contain the following parameter: 'client_id'.")
    if not is_guid(client_id):
        raise InvalidRequest(700016, f"Application identifier '{client_id[:40]}' is not a valid GUID.")
    assertion = form.get("client_assertion") or None
    if assertion is not None and form.get("client_assertion_type", "") != JWT_BEARER:
        raise InvalidRequest(7000219, f"'client_assertion_type' must be '{JWT_BEARER}'.")
    if assertion and secret:
        raise InvalidRequest(9002313, "Invalid request: more than one client authentication method.")
    resource = form.get("resource") if endpoint == "v1" and not form.get("scope") else None
    scope = delegated_scope(form.get("scope"), resource)
    fields: dict[str, str] = {}
    needed = {
        PASSWORD: ("username", "password"),
        AUTHORIZATION_CODE: ("code", "redirect_uri"),
        REFRESH_TOKEN: ("refresh_token",),
        DEVICE_CODE: ("device_code",),
    }[grant_type]
    for name in needed:
        fields[name] = _required(form, name)
    if grant_type == AUTHORIZATION_CODE:
        fields["code_verifier"] = form.get("code_verifier", "")
    for name, value in fields.items():
        if len(value) > 4096:
            raise InvalidRequest(900144, f"The parameter '{name}' is too long.")
    given = bool(form.get("scope") or resource)
    return UserGrantRequest(
        grant_type, client_id.lower(), secret, assertion, scope, endpoint, **fields, scope_given=given
    )
