"""Clients that sign users in without being registered in the tenant: Microsoft's first-party public
clients (the tools people already have) and Lanyard's own CLI.

Entra knows these applications in every tenant; a self-hosted directory has no app registrations for
them, so they are a fixed list here. They are public clients: they hold no secret, so a request from
one is a user's sign-in only (password, code with PKCE, device code, refresh token), never an
app-only token, and its redirect URIs are the loopback and native-client ones these tools use.
"""

from __future__ import annotations

from urllib.parse import urlsplit

AZURE_CLI = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
LANYARD_CLI = "97192263-e80d-4f00-9b19-2728d68e9f05"
# The platform's own web portal: a public client whose only redirect URI is its callback on the
# platform's own origin (see portal_redirect).
LANYARD_PORTAL = "5c0a7d3e-8f4b-4e2a-9d61-3b7f2c1e0a94"
PORTAL_CALLBACK_PATH = "/portal/callback"

FIRST_PARTY_PUBLIC_CLIENTS: dict[str, str] = {
    AZURE_CLI: "Microsoft Azure CLI",  # also azure-identity's default for developer sign-in
    "1950a258-227b-4e31-a9cf-717495945fc2": "Microsoft Azure PowerShell",
    "aebc6443-996d-45c2-90f0-388ff96faa56": "Visual Studio Code",
    "04f0c124-f2bc-4f59-8241-bf6df9866bbd": "Visual Studio",
    "872cd9fa-d31f-45e0-9eab-6e460a02d1f1": "Visual Studio (legacy)",
    LANYARD_CLI: "Lanyard CLI",
    LANYARD_PORTAL: "Lanyard portal",
}

NATIVE_CLIENT_REDIRECTS = frozenset(
    {"https://login.microsoftonline.com/common/oauth2/nativeclient", "urn:ietf:wg:oauth:2.0:oob"}
)


def public_client_name(client_id: str) -> str | None:
    return FIRST_PARTY_PUBLIC_CLIENTS.get(client_id.lower())


def allowed_public_redirect(uri: str) -> bool:
    """Loopback http on any port (RFC 8252 §7.3: native apps listen on an ephemeral port), or the
    native-client URIs. Nothing else: a code must never be sent to someone else's site."""
    if uri in NATIVE_CLIENT_REDIRECTS:
        return True
    if len(uri) > 2048:
        return False
    try:
        parts = urlsplit(uri)
        port = parts.port  # a malformed port raises
    except ValueError:
        return False
    del port
    return (
        parts.scheme == "http"
        and parts.hostname in ("localhost", "127.0.0.1", "::1")
        and not parts.username
        and not parts.password
        and not parts.fragment
    )


def portal_redirect(authority: str) -> str:
    """The portal's one redirect URI: its callback on the platform's public origin."""
    return f"{authority.rstrip('/')}{PORTAL_CALLBACK_PATH}"
