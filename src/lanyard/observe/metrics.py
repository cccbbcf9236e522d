"""Every metric Lanyard exports, in two registries: the platform's server processes and the host
agent's. Names follow Prometheus conventions (`_total` counters, `_seconds` histograms).

Other modules increment these directly (`metrics.TOKENS_ISSUED.labels(...).inc()`); label values
come from small fixed sets, never from request data, so no series explodes and no secret becomes a
label. `AUDIT_FAILURES` is for the audit log: a record that could not be written.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from lanyard.observe import multiproc

PLATFORM = CollectorRegistry(auto_describe=True)
AGENT = CollectorRegistry(auto_describe=True)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Token endpoints answer in about a millisecond; bindings long polls hold for up to 25 s.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# -- platform --------------------------------------------------------------------------------

TOKENS_ISSUED = Counter(
    "lanyard_tokens_issued_total",
    "Access tokens issued by the directory, by grant type, client credential and principal kind.",
    ["grant", "credential", "principal"],
    registry=PLATFORM,
)
TOKEN_ERRORS = Counter(
    "lanyard_token_errors_total",
    "Token requests refused, by OAuth error code.",
    ["error"],
    registry=PLATFORM,
)
CACHE_REQUESTS = Counter(
    "lanyard_cache_requests_total",
    "Look-ups in the validated caches (clients, vault decisions, validated tokens), hit or miss.",
    ["cache", "result"],
    registry=PLATFORM,
)
HTTP_RESPONSES = Counter(
    "lanyard_http_responses_total",
    "Responses of the platform's HTTPS port, by route family and status code.",
    ["family", "status"],
    registry=PLATFORM,
)
HTTP_LATENCY = Histogram(
    "lanyard_http_request_duration_seconds",
    "Time from request to the end of the response, by route family.",
    ["family"],
    buckets=LATENCY_BUCKETS,
    registry=PLATFORM,
)
DENIALS = Counter(
    "lanyard_denials_total",
    "Requests refused: unauthenticated (401), authz (403 by role assignments), vault (403 by a vault).",
    ["kind", "family"],
    registry=PLATFORM,
)
KEY_ROTATIONS = Counter(
    "lanyard_signing_key_rotations_total",
    "Signing-key transitions: a new key signing (scheduled or immediate) or a key revoked.",
    ["kind"],
    registry=PLATFORM,
)
AUDIT_FAILURES = Counter(
    "lanyard_audit_failures_total",
    "Audit records that could not be written (the request they belong to was refused).",
    registry=PLATFORM,
)
FEED_LAG = Histogram(
    "lanyard_change_feed_lag_seconds",
    "Time from a change's commit to this process applying it (other nodes' changes, and its own).",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 30.0),
    registry=PLATFORM,
)
ACCESS_LOG_DROPPED = Counter(
    "lanyard_access_log_dropped_total",
    "Access-log lines dropped because the writer fell behind (the disk stalled).",
    registry=PLATFORM,
)

# -- host agent ------------------------------------------------------------------------------

AGENT_RESPONSES = Counter(
    "lanyard_agent_responses_total",
    "Responses of the agent's local token endpoints, by protocol and status code.",
    ["protocol", "status"],
    registry=AGENT,
)
AGENT_LATENCY = Histogram(
    "lanyard_agent_request_duration_seconds",
    "Time from request to the end of the response on the local token endpoints, by protocol.",
    ["protocol"],
    buckets=LATENCY_BUCKETS,
    registry=AGENT,
)
AGENT_ACCESS_LOG_DROPPED = Counter(
    "lanyard_agent_access_log_dropped_total",
    "Access-log lines dropped because the writer fell behind (the disk stalled).",
    registry=AGENT,
)


class TokenCacheCollector(Collector):
    """The agent's TokenCache counts its own hits and upstream calls; read at scrape time, so the
    hot path pays nothing for them."""

    def __init__(self, cache: Any) -> None:
        self.cache = cache

    def collect(self) -> Iterator[Any]:
        cache = self.cache
        yield CounterMetricFamily(
            "lanyard_agent_token_cache_hits", "Token requests served from the agent's cache.", value=cache.hits
        )
        yield CounterMetricFamily(
            "lanyard_agent_token_cache_misses",
            "Token requests that had to wait for a token from the directory.",
            value=cache.misses,
        )
        yield CounterMetricFamily(
            "lanyard_agent_token_cache_upstream_calls",
            "Calls to the directory for a token (misses and refreshes ahead of expiry).",
            value=cache.upstream_calls,
        )
        yield GaugeMetricFamily("lanyard_agent_token_cache_entries", "Tokens held in the cache.", value=len(cache))


_issued: dict[tuple[str, str], Any] = {}
_refused: dict[str, Any] = {}


def token_issued(credential: str, principal: str) -> None:
    # Children looked up once: .labels() takes a lock and builds a key on every call.
    child = _issued.get((credential, principal))
    if child is None:
        child = _issued[(credential, principal)] = TOKENS_ISSUED.labels("client_credentials", credential, principal)
    child.inc()


def user_token_issued(grant: str, confidential: bool) -> None:
    """A delegated token: `credential` says how the client authenticated (none for public clients)."""
    TOKENS_ISSUED.labels(grant, "secret" if confidential else "none", "user").inc()


def token_refused(error: str) -> None:
    child = _refused.get(error)
    if child is None:
        child = _refused[error] = TOKEN_ERRORS.labels(error)
    child.inc()


def cache_stats(cache: str) -> tuple[Any, Any]:
    """(hit, miss) counters for one named cache, for core.cache.FeedCache."""
    return CACHE_REQUESTS.labels(cache, "hit"), CACHE_REQUESTS.labels(cache, "miss")


def watch_token_cache(cache: Any) -> None:
    AGENT.register(TokenCacheCollector(cache))


def platform_exposition() -> bytes:
    """The platform's metrics: with --workers N, summed over every worker (multiproc)."""
    path = multiproc.directory()
    if path is None:
        return generate_latest(PLATFORM)
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def agent_exposition() -> bytes:
    return generate_latest(AGENT)
