"""Limits at the token endpoint (docs/security.md, "Limits").

- Tokens issued per client_id: a bucket that only an authenticated request spends, so nobody without
  the client's credential can drain it and lock the client out; a client over its rate gets 429.
- Wrong client secrets per (client_id, source address): each one spends from a small bucket that
  refills slowly; once it is empty, that source's secret attempts for that client are answered 429
  before the secret is even looked at. A success refunds nothing (an attacker who also holds a right
  secret is no attacker). Other sources, and the client's certificate logins, are unaffected: an
  attacker can only lock out itself (or whoever shares its address: a NAT, a TCP balancer in front).
  IPv6 sources count per /64, the block one host usually owns.

Entra answers throttling with 429 and Retry-After; msal then caches the 429 for that long.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from contextlib import contextmanager

from lanyard.core.clock import Clock
from lanyard.core.errors import InvalidClient, OAuthError
from lanyard.core.ratelimit import Rate, TokenBuckets, retry_after_header
from lanyard.protocol.oauth2 import TokenRequest

WRONG_SECRET = 7000215


class Throttled(OAuthError):
    error = "temporarily_unavailable"
    status = 429

    def __init__(self, aadsts: int, message: str, retry_after: float) -> None:
        super().__init__(aadsts, message)
        self.retry_after = retry_after_header(retry_after)


def source_key(host: str) -> str:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]
    if address.version == 6 and address.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address.ipv4_mapped or address) if address.version == 6 else str(address)


class ClientLimits:
    def __init__(self, issued: Rate, secret_failures: Rate, clock: Clock | None = None) -> None:
        self.issued: TokenBuckets[str] = TokenBuckets(issued, clock)
        self.failures: TokenBuckets[tuple[str, str]] = TokenBuckets(secret_failures, clock)

    @classmethod
    def unlimited(cls) -> ClientLimits:
        return cls(Rate.unlimited(), Rate.unlimited())

    @classmethod
    def of(
        cls, rate: float, burst: float, failures: int, refill_seconds: float, clock: Clock | None = None
    ) -> ClientLimits:
        return cls(Rate.of(rate, burst), Rate.of(1.0 / refill_seconds, failures), clock)

    @contextmanager
    def guard(self, request: TokenRequest, source: str) -> Iterator[None]:
        """Refuse before any work when a limit is reached; count what the attempt turned out to be."""
        client = request.client_id.lower()
        wait = self.issued.wait(client)
        if wait:
            raise Throttled(90055, "There are too many incoming requests for this application. Retry later.", wait)
        failures_key = (client, source_key(source)) if request.client_secret is not None else None
        if failures_key is not None:
            wait = self.failures.wait(failures_key)
            if wait:
                raise Throttled(
                    50053,
                    "Too many wrong client secrets were sent for this application from this address. Retry later.",
                    wait,
                )
        try:
            yield
        except InvalidClient as exc:
            if failures_key is not None and exc.aadsts == WRONG_SECRET:
                self.failures.spend(failures_key)
            raise
        self.issued.spend(client)
