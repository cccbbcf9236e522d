"""Per-workload limits at the host agent (docs/security.md, "Limits"): a token bucket per workload,
keyed by its resource id and spent by every request, cache hits included; and, opt-in, IMDS as
Azure publishes it: 20 requests/s and 5 concurrent requests per VM.

A refusal is a 429 with Retry-After in the protocol that was called. azure-identity retries a 429
(IMDS: up to 5 times; App Service: 3) and waits the Retry-After it is given instead of its own
backoff, and msal then caches the final 429 for Retry-After seconds: the header is what keeps a
throttled client from multiplying its load.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from lanyard.agent.bindings import Workload
from lanyard.core.clock import Clock
from lanyard.core.ratelimit import InFlight, Rate, TokenBuckets, retry_after_header
from lanyard.protocol.msi import MsiError

AZURE_IMDS_RATE = Rate(20.0, 20.0)
AZURE_IMDS_CONCURRENT = 5
THROTTLED = "Temporarily throttled, too many requests"  # IMDS's own words
VM_TYPE = "microsoft.compute/virtualmachines"


def throttled(wait: float) -> MsiError:
    return MsiError(429, THROTTLED, "invalid_request", [(b"retry-after", retry_after_header(wait).encode())])


class WorkloadLimits:
    def __init__(self, rate: Rate, *, azure_imds: bool = False, clock: Clock | None = None) -> None:
        self.buckets: TokenBuckets[str] = TokenBuckets(rate, clock)
        self.azure_imds = azure_imds
        self.vm_buckets: TokenBuckets[str] = TokenBuckets(AZURE_IMDS_RATE if azure_imds else Rate.unlimited(), clock)
        self.vm_in_flight: InFlight[str] = InFlight(AZURE_IMDS_CONCURRENT if azure_imds else 0)

    @classmethod
    def unlimited(cls) -> WorkloadLimits:
        return cls(Rate.unlimited())

    @contextmanager
    def admit(self, workload: Workload) -> Iterator[None]:
        """Hold a place for one token request of `workload`, or raise its 429."""
        key = workload.resource_id.lower()
        wait = self.buckets.take(key)
        if wait:
            raise throttled(wait)
        if not (self.azure_imds and workload.type.lower() == VM_TYPE):
            yield
            return
        wait = self.vm_buckets.take(key)
        if wait:
            raise throttled(wait)
        with self.vm_in_flight.hold(key) as admitted:
            if not admitted:
                raise throttled(1.0)
            yield
