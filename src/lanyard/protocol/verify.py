"""The one access-token verifier every resource server uses (vault, ARM, Graph, fleet).

It knows only what any resource server knows: the published signing keys (a KeySource) and the
issuers it trusts. It never reaches into the directory that minted the token, so a token minted by
any node verifies on every node that sees the same published keys.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lanyard.core.clock import Clock
from lanyard.protocol.bearer import KeySource, validate_bearer


class TokenVerifier:
    def __init__(self, keys: KeySource, issuers: Callable[[], frozenset[str]], clock: Clock) -> None:
        self.keys = keys
        self.issuers = issuers
        self.clock = clock

    def verify(self, token: str, audiences: frozenset[str]) -> dict[str, Any]:
        """The token's claims, or InvalidToken naming the rule it broke (never the token)."""
        return validate_bearer(token, keys=self.keys, issuers=self.issuers(), audiences=audiences, now=self.clock.now())
