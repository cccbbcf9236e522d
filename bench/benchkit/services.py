"""A token service under test (Lanyard's directory or the node peer), described the same way for both
so they are checked and benchmarked with identical requests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from benchkit.harness import HttpTarget
from benchkit.tokens import (
    ARM_SCOPE,
    FORM,
    CertCredential,
    assertion_form,
    check_discovery,
    check_jwks,
    check_token,
    client_assertion,
    json_body,
    secret_form,
)


@dataclass(frozen=True)
class TokenService:
    label: str
    token_endpoint: str
    jwks_url: str
    discovery_url: str
    secret_client: tuple[str, str] | None = None  # (client_id, client_secret)
    cert_client: CertCredential | None = None
    scope: str = ARM_SCOPE
    notes: list[str] = field(default_factory=list)

    def secret_target(self) -> HttpTarget:
        assert self.secret_client is not None
        body = secret_form(*self.secret_client, scope=self.scope)
        return HttpTarget(self.token_endpoint, "POST", lambda: body, FORM)

    def assertion_target(self) -> HttpTarget:
        cred = self.cert_client
        assert cred is not None
        # The audience of a client assertion is the exact token endpoint URL. A fresh assertion
        # per measured run keeps it inside its 10-minute life however long --full takes.
        return HttpTarget(
            self.token_endpoint,
            "POST",
            lambda: assertion_form(cred.client_id, client_assertion(cred, self.token_endpoint), scope=self.scope),
            FORM,
        )


def verify_service(service: TokenService, ca: str | bool) -> dict[str, dict[str, Any]]:
    """Ask every endpoint once and check the answers; returns the token claims seen, per grant."""
    with httpx.Client(verify=ca, timeout=10.0) as client:
        discovery = json_body(client.get(service.discovery_url), f"{service.label} discovery")
        check_discovery(discovery, f"{service.label} discovery")
        jwks = json_body(client.get(service.jwks_url), f"{service.label} JWKS")
        check_jwks(jwks, f"{service.label} JWKS")
        claims: dict[str, dict[str, Any]] = {}
        for grant, target in _token_targets(service):
            assert target.body is not None
            response = client.post(target.url, content=target.body(), headers={"Content-Type": FORM})
            what = f"{service.label} token ({grant})"
            claims[grant] = check_token(json_body(response, what), jwks, what)
        return claims


def _token_targets(service: TokenService) -> list[tuple[str, HttpTarget]]:
    targets = []
    if service.cert_client is not None:
        targets.append(("client assertion", service.assertion_target()))
    if service.secret_client is not None:
        targets.append(("client secret", service.secret_target()))
    return targets
