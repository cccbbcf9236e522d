"""OpenID Provider metadata (OpenID Connect Discovery 1.0) in Entra's v1 and v2 shapes.

msal needs only `authorization_endpoint` and `token_endpoint`, and takes the tenant from the first
path segment of the latter (docs/protocols.md §6.2); the rest is for verifiers and humans.
"""

from __future__ import annotations

from typing import Any

from lanyard.protocol.access_token import issuer_v1, issuer_v2

_CLAIMS = [
    "aud", "iss", "iat", "nbf", "exp", "appid", "appidacr", "idtyp", "oid", "sub", "tid", "ver", "xms_mirid",
    "name", "upn", "unique_name", "preferred_username", "scp", "nonce", "amr",
]


def _common(authority: str, tenant: str) -> dict[str, Any]:
    return {
        "response_types_supported": ["code", "id_token", "code id_token", "token id_token", "token"],
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS256", "PS256"],
        "grant_types_supported": [
            "client_credentials",
            "password",
            "authorization_code",
            "refresh_token",
            "urn:ietf:params:oauth:grant-type:device_code",
        ],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": _CLAIMS,
        "tenant_region_scope": None,
        "cloud_instance_name": "lanyard",
        "cloud_graph_host_name": "graph",
        "msgraph_host": "graph",
        "request_uri_parameter_supported": False,
        "http_logout_supported": True,
        "frontchannel_logout_supported": True,
    }


def openid_configuration_v2(authority: str, tenant: str) -> dict[str, Any]:
    base = f"{authority}/{tenant}"
    return {
        "token_endpoint": f"{base}/oauth2/v2.0/token",
        "jwks_uri": f"{base}/discovery/v2.0/keys",
        "issuer": issuer_v2(authority, tenant),
        "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
        "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
        "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        **_common(authority, tenant),
    }


def openid_configuration_v1(authority: str, tenant: str) -> dict[str, Any]:
    base = f"{authority}/{tenant}"
    return {
        "token_endpoint": f"{base}/oauth2/token",
        "jwks_uri": f"{base}/discovery/keys",
        "issuer": issuer_v1(authority, tenant),
        "authorization_endpoint": f"{base}/oauth2/authorize",
        "device_authorization_endpoint": f"{base}/oauth2/devicecode",
        "end_session_endpoint": f"{base}/oauth2/logout",
        "microsoft_multi_refresh_token": True,
        "check_session_iframe": f"{base}/oauth2/checksession",
        **_common(authority, tenant),
    }


def instance_discovery(authority: str, tenant: str, host: str) -> dict[str, Any]:
    """What msal reads from /common/discovery/instance when instance discovery points here."""
    return {
        "tenant_discovery_endpoint": f"{authority}/{tenant}/v2.0/.well-known/openid-configuration",
        "api-version": "1.1",
        "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
    }
