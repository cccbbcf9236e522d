"""Where a registered application's sign-in answers may be sent: Graph's `web`, `publicClient` and
`spa` redirect URIs, kept on the application and matched as Entra matches them.

Matching is exact (scheme, host, port, path and query as registered), with one exception RFC 8252
§7.3 asks for: a public client registered with `http://localhost` (no port) may use any port,
because a native app listens on whatever port it was given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

from lanyard.core.errors import GraphError

WEB, PUBLIC_CLIENT, SPA = "web", "publicClient", "spa"
KINDS = (WEB, PUBLIC_CLIENT, SPA)
MAX_URIS = 256  # Entra's limit per application
MAX_LENGTH = 256  # Entra's limit per redirect URI
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
_OOB = "urn:ietf:wg:oauth:2.0:oob"


def _invalid(kind: str, why: str) -> GraphError:
    return GraphError(
        f"Invalid value specified for property '{kind}.redirectUris' of resource 'Application': {why}",
        code="Request_BadRequest",
    )


def check_uri(kind: str, uri: object) -> str:
    """A redirect URI Entra would register for this kind, or a Graph error saying why not."""
    if not isinstance(uri, str) or not uri or len(uri) > MAX_LENGTH:
        raise _invalid(kind, f"each must be a string of 1 to {MAX_LENGTH} characters.")
    if kind == PUBLIC_CLIENT and uri == _OOB:
        return uri
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - a malformed port raises here
    except ValueError as exc:
        raise _invalid(kind, "not an absolute URI.") from exc
    if not parts.scheme or "*" in uri or parts.fragment or "#" in uri or parts.username or parts.password:
        raise _invalid(kind, "an absolute URI without wildcards, fragment or user information is required.")
    loopback = parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS
    if parts.scheme in ("http", "https") and not parts.hostname:
        raise _invalid(kind, "an absolute URI with a host is required.")
    if parts.scheme == "http" and not loopback:
        raise _invalid(kind, "http is allowed for localhost only; use https.")
    if kind != PUBLIC_CLIENT and parts.scheme not in ("http", "https"):
        raise _invalid(kind, "web and spa redirect URIs must be https (or http://localhost).")
    return uri


def _same_loopback(registered: str, offered: str) -> bool:
    try:
        want, got = urlsplit(registered), urlsplit(offered)
        got_port = got.port
    except ValueError:
        return False
    return (
        want.scheme == got.scheme == "http"
        and want.hostname in LOOPBACK_HOSTS
        and want.port is None
        and want.hostname == got.hostname
        and got_port is not None
        and (want.path or "/") == (got.path or "/")
        and want.query == got.query
        and not got.fragment
        and not got.username
        and not got.password
    )


@dataclass(frozen=True)
class RedirectRegistry:
    web: tuple[str, ...] = ()
    public_client: tuple[str, ...] = ()
    spa: tuple[str, ...] = ()

    @classmethod
    def loads(cls, raw: str | None) -> RedirectRegistry:
        data = orjson.loads(raw or "{}")
        return cls(*(tuple(str(u) for u in data.get(kind, ())) for kind in KINDS))

    def dumps(self) -> str:
        return orjson.dumps({kind: list(self.of(kind)) for kind in KINDS}).decode()

    def of(self, kind: str) -> tuple[str, ...]:
        return {WEB: self.web, PUBLIC_CLIENT: self.public_client, SPA: self.spa}[kind]

    def kind_of(self, uri: str) -> str | None:
        """Which registration `uri` matches (web, publicClient or spa), or None: not to be sent there."""
        for kind in KINDS:
            if uri in self.of(kind):
                return kind
        if any(_same_loopback(r, uri) for r in self.public_client):
            return PUBLIC_CLIENT
        return None

    def updated(self, body: dict[str, Any]) -> RedirectRegistry:
        """This registry with the redirect URIs of a Graph POST or PATCH body applied (a kind's list is
        replaced as a whole, as Graph replaces collections; kinds not in the body stay)."""
        lists = {kind: self.of(kind) for kind in KINDS}
        for kind in KINDS:
            if kind not in body or body[kind] is None:
                continue
            section = body[kind]
            if not isinstance(section, dict):
                raise GraphError(f"Property '{kind}' must be an object.", code="Request_BadRequest")
            if "redirectUris" not in section or section["redirectUris"] is None:
                continue
            uris = section["redirectUris"]
            if not isinstance(uris, list):
                raise _invalid(kind, "an array of strings is required.")
            checked = tuple(dict.fromkeys(check_uri(kind, u) for u in uris))
            lists[kind] = checked
        if sum(len(v) for v in lists.values()) > MAX_URIS:
            raise GraphError(
                f"An application may have at most {MAX_URIS} redirect URIs.", code="Request_BadRequest"
            )
        return RedirectRegistry(lists[WEB], lists[PUBLIC_CLIENT], lists[SPA])

    def graph_json(self) -> dict[str, Any]:
        return {
            "web": {
                "redirectUris": list(self.web),
                "homePageUrl": None,
                "logoutUrl": None,
                "redirectUriSettings": [{"uri": u, "index": None} for u in self.web],
                "implicitGrantSettings": {"enableAccessTokenIssuance": False, "enableIdTokenIssuance": False},
            },
            "publicClient": {"redirectUris": list(self.public_client)},
            "spa": {"redirectUris": list(self.spa)},
        }
