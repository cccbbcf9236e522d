"""The one place that reads configuration: command-line values, then the environment, then defaults.

Entry points build a :class:`Settings` once and hand narrow, immutable pieces of it down; nothing
else in Lanyard reads ``os.environ``.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lanyard.core.errors import ConfigError

DEFAULT_HOME = "~/.lanyard"
DEFAULT_ZONE = "lanyard.localhost"
LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}


@dataclass(frozen=True)
class AuditSettings:
    """The audit trail (docs/security.md): on unless LANYARD_AUDIT=off (benchmarks compare both)."""

    enabled: bool = True
    # A grant whose record is not accepted within this many seconds is refused with 503.
    deadline: float = 2.0
    # A JSON-lines copy written in addition to the database; when it fails, grants fail too.
    file: Path | None = None
    # The agent's journal is fsync'd per group commit; off, it is only written before the answer.
    fsync: bool = True


def load_audit_settings(env: Mapping[str, str] | None = None, *, file: str | None = None) -> AuditSettings:
    env = os.environ if env is None else env
    raw = (env.get("LANYARD_AUDIT") or "on").strip().lower()
    if raw not in ("on", "off", "1", "0", "true", "false"):
        raise ConfigError(f"LANYARD_AUDIT must be on or off, got {raw[:20]!r}")
    fsync = (env.get("LANYARD_AUDIT_FSYNC") or "on").strip().lower()
    deadline = _seconds(env, "LANYARD_AUDIT_DEADLINE", 2.0)
    if deadline > 60:
        raise ConfigError("LANYARD_AUDIT_DEADLINE must be at most 60 seconds: a grant must never wait longer")
    path = file or env.get("LANYARD_AUDIT_FILE") or None
    return AuditSettings(
        enabled=raw in ("on", "1", "true"),
        deadline=deadline,
        file=Path(path).expanduser().absolute() if path else None,
        fsync=fsync not in ("off", "0", "false"),
    )


@dataclass(frozen=True)
class LimitSettings:
    """Listener bounds, rate limits and failed-secret backoff (docs/security.md, "Limits"). The
    defaults never trip a legitimate client, the test suite or the benchmarks; a rate of 0 is no limit."""

    max_header_bytes: int = 64 * 1024
    head_timeout: float = 10.0
    body_timeout: float = 30.0
    keep_alive: int = 30
    max_connections: int = 4096
    max_in_flight: int = 1024
    # Token endpoint, per client_id and server process: above one core's RSA signing rate.
    client_rate: float = 5000.0
    client_burst: float = 10000.0
    # Wrong client secrets allowed per (client_id, source address) before 429, and the seconds it
    # takes to earn one more attempt back. Successes never refund (the attacker's bucket stays empty).
    secret_failures: int = 20
    secret_failure_refill: float = 3.0
    # Wrong user passwords allowed per (user, source address), and across users per source address
    # (password spraying), before sign-in answers AADSTS50053; seconds to earn one attempt back.
    password_failures: int = 5
    password_failure_refill: float = 30.0
    password_source_failures: int = 50
    # Host agent, per workload (resource id): above what one agent process serves.
    workload_rate: float = 20000.0
    workload_burst: float = 20000.0
    # Opt-in: IMDS limits as Azure publishes them, 20 requests/s and 5 concurrent per VM.
    azure_imds: bool = False

    def listener(self) -> Any:
        """The ListenerLimits for this process's listeners (imported late: it pulls in uvicorn)."""
        from lanyard.core.listener import ListenerLimits

        return ListenerLimits(
            max_head_bytes=self.max_header_bytes,
            head_timeout=self.head_timeout,
            body_timeout=self.body_timeout,
            keep_alive=self.keep_alive,
            max_connections=self.max_connections,
            max_in_flight=self.max_in_flight,
            tls_handshake_timeout=self.head_timeout,
        )


@dataclass(frozen=True)
class FederationSettings:
    """Workload identity federation (docs/federation.md): which outside issuers' discovery documents
    and keys the platform may fetch, and how. Nothing is allowed unless named."""

    # Host patterns (`host`, `host:port`, `*.example.com`) whose issuers may be fetched; empty: none.
    allowed_issuers: tuple[str, ...] = ()
    # Issuers whose names resolve to loopback, private or link-local addresses are refused unless on.
    allow_private: bool = False
    # Extra CAs (PEM) trusted for these fetches, besides the system's.
    ca_bundle: Path | None = None
    fetch_timeout: float = 5.0
    max_document_bytes: int = 64 * 1024
    cache_seconds: float = 600.0
    # After a fetch (or a failed one), an unknown key id waits this long before the next.
    refetch_cooldown: float = 30.0
    # The projected tokens of the platform's workload issuer (AKS-style runs).
    workload_token_lifetime: int = 3600

    def allows_host(self, host: str, port: int) -> bool:
        host = host.lower().rstrip(".").strip("[]")
        for pattern in self.allowed_issuers:
            match = _ISSUER_HOST.match(pattern)
            if match is None or (match.group("port") and int(match.group("port")) != port):
                continue
            name = match.group("host").strip("[]")
            if name.startswith("*."):
                if host.endswith(name[1:]) and len(host) > len(name) - 1:
                    return True
            elif name == host:
                return True
        return False


_ISSUER_HOST = re.compile(
    r"^(?P<host>(?:\*\.)?[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?|\[[0-9a-f:.]+\])(?::(?P<port>\d{1,5}))?$"
)


def load_federation_settings(env: Mapping[str, str] | None = None) -> FederationSettings:
    env = os.environ if env is None else env
    raw = env.get("LANYARD_FEDERATION_ALLOWED_ISSUERS") or ""
    patterns = tuple(p.strip().lower() for p in raw.split(",") if p.strip())
    for pattern in patterns:
        if not _ISSUER_HOST.match(pattern):
            raise ConfigError(
                "LANYARD_FEDERATION_ALLOWED_ISSUERS entries are host, host:port, [v6]:port or *.domain, "
                f"got {pattern[:60]!r}"
            )
    private = (env.get("LANYARD_FEDERATION_ALLOW_PRIVATE") or "off").strip().lower()
    if private not in ("on", "off", "1", "0", "true", "false"):
        raise ConfigError(f"LANYARD_FEDERATION_ALLOW_PRIVATE must be on or off, got {private[:20]!r}")
    bundle = env.get("LANYARD_FEDERATION_CA_BUNDLE") or None
    bundle_path = Path(bundle).expanduser().absolute() if bundle else None
    if bundle_path is not None and not bundle_path.is_file():
        raise ConfigError(f"LANYARD_FEDERATION_CA_BUNDLE {str(bundle_path)[:200]!r} is not a readable file")
    lifetime = _int(env, "LANYARD_WORKLOAD_TOKEN_LIFETIME", 3600)
    if not 30 <= lifetime <= 86400:
        raise ConfigError("LANYARD_WORKLOAD_TOKEN_LIFETIME must be 30 to 86400 seconds")
    timeout = _seconds(env, "LANYARD_FEDERATION_FETCH_TIMEOUT", 5.0)
    if timeout > 30:
        raise ConfigError("LANYARD_FEDERATION_FETCH_TIMEOUT must be at most 30 seconds: a token request waits for it")
    return FederationSettings(
        allowed_issuers=patterns,
        allow_private=private in ("on", "1", "true"),
        ca_bundle=bundle_path,
        fetch_timeout=timeout,
        workload_token_lifetime=lifetime,
    )


@dataclass(frozen=True)
class Settings:
    home: Path
    host: str = "127.0.0.1"
    port: int = 8443
    database_url: str = ""
    kek_b64: str | None = None  # from LANYARD_KEK; otherwise the 0600 file `kek` in the home
    # During a KEK rotation: other keys to open with (LANYARD_KEK_PREVIOUS, or `kek.previous`).
    previous_keks_b64: str | None = None
    token_lifetime: int = 3600
    dns_zone: str = DEFAULT_ZONE
    public_host: str | None = None
    # The URL clients reach the platform by when nodes sit behind a balancer (https://host:port):
    # the authority, issuer, ARM, Graph and vault URLs of every node derive from it.
    public_url: str | None = None
    agent: bool = True
    agent_port: int = 0
    workers: int = 1
    # Signing keys: how long one signs, and how long before signing it is published (README).
    key_rotation_period: float = 30 * 86400.0
    key_publish_lead: float = 2 * 86400.0
    # Managed-identity certificates: lifetime, age at which they are renewed, and how long the old
    # one keeps working after a renewal (README).
    identity_cert_lifetime: float = 90 * 86400.0
    identity_cert_renew_after: float = 46 * 86400.0
    identity_cert_grace: float = 86400.0
    # The level of the `lanyard.*` loggers (LANYARD_LOG_LEVEL); other libraries stay at WARNING.
    log_level: str = "WARNING"
    access_log: bool = True  # LANYARD_ACCESS_LOG=off: no access log (metrics still count)
    limits: LimitSettings = field(default_factory=LimitSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    federation: FederationSettings = field(default_factory=FederationSettings)

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'lanyard.db'}"

    @property
    def listen_hosts(self) -> list[str]:
        """Loopback binds both stacks: `localhost` may resolve to ::1 or 127.0.0.1 first."""
        if self.host in LOOPBACK_HOSTS:
            return ["127.0.0.1", "::1"]
        return [self.host]

    def advertised_host(self) -> str:
        if self.public_url:
            host = urlsplit(self.public_url).hostname
            if host:
                return host
        if self.public_host:
            return self.public_host
        if self.host in LOOPBACK_HOSTS:
            return "localhost"
        try:
            if ipaddress.ip_address(self.host).is_unspecified:
                return "localhost"
        except ValueError:
            pass
        return self.host


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number of seconds, got {raw[:40]!r}") from exc
    if not (value == value and 0 < value < 10 * 365 * 86400):  # NaN, zero, negative, absurd
        raise ConfigError(f"{name} must be a positive number of seconds")
    return value


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def log_level(env: Mapping[str, str] | None = None) -> str:
    """LANYARD_LOG_LEVEL, checked: the agent reads it too, without the rest of the settings."""
    env = os.environ if env is None else env
    raw = (env.get("LANYARD_LOG_LEVEL") or "WARNING").strip().upper()
    if raw not in LOG_LEVELS:
        raise ConfigError(f"LANYARD_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {raw[:20]!r}")
    return raw


def _rate(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number, got {raw[:40]!r}") from exc
    if not (value == value and 0 <= value <= 1e9):
        raise ConfigError(f"{name} must be a number from 0 (no limit) to 1e9")
    return value


def _count(env: Mapping[str, str], name: str, default: int) -> int:
    value = _int(env, name, default)
    if not 1 <= value <= 1 << 30:
        raise ConfigError(f"{name} must be a positive integer")
    return value


def load_limit_settings(env: Mapping[str, str] | None = None, *, azure_imds: bool | None = None) -> LimitSettings:
    """LANYARD_* limits: read by `lanyard up` (and its workers) and by `lanyard agent` alike."""
    env = os.environ if env is None else env
    imds = (env.get("LANYARD_IMDS_AZURE_LIMITS") or "off").strip().lower()
    if imds not in ("on", "off", "1", "0", "true", "false"):
        raise ConfigError(f"LANYARD_IMDS_AZURE_LIMITS must be on or off, got {imds[:20]!r}")
    keep_alive = _count(env, "LANYARD_KEEPALIVE_TIMEOUT", 30)
    if keep_alive > 3600:
        raise ConfigError("LANYARD_KEEPALIVE_TIMEOUT must be at most 3600 seconds")
    return LimitSettings(
        max_header_bytes=_count(env, "LANYARD_MAX_HEADER_BYTES", 64 * 1024),
        head_timeout=_seconds(env, "LANYARD_HEAD_TIMEOUT", 10.0),
        body_timeout=_seconds(env, "LANYARD_BODY_TIMEOUT", 30.0),
        keep_alive=keep_alive,
        max_connections=_count(env, "LANYARD_MAX_CONNECTIONS", 4096),
        max_in_flight=_count(env, "LANYARD_MAX_IN_FLIGHT", 1024),
        client_rate=_rate(env, "LANYARD_CLIENT_RATE", 5000.0),
        client_burst=_rate(env, "LANYARD_CLIENT_BURST", 10000.0),
        secret_failures=_count(env, "LANYARD_SECRET_FAILURES", 20),
        secret_failure_refill=_seconds(env, "LANYARD_SECRET_FAILURE_REFILL", 3.0),
        password_failures=_count(env, "LANYARD_PASSWORD_FAILURES", 5),
        password_failure_refill=_seconds(env, "LANYARD_PASSWORD_FAILURE_REFILL", 30.0),
        password_source_failures=_count(env, "LANYARD_PASSWORD_SOURCE_FAILURES", 50),
        workload_rate=_rate(env, "LANYARD_WORKLOAD_RATE", 20000.0),
        workload_burst=_rate(env, "LANYARD_WORKLOAD_BURST", 20000.0),
        azure_imds=imds in ("on", "1", "true") if azure_imds is None else azure_imds,
    )


def access_log_enabled(env: Mapping[str, str] | None = None) -> bool:
    """LANYARD_ACCESS_LOG: on (the default) or off; the agent reads it too."""
    env = os.environ if env is None else env
    raw = (env.get("LANYARD_ACCESS_LOG") or "on").strip().lower()
    if raw not in ("on", "off", "true", "false", "1", "0"):
        raise ConfigError(f"LANYARD_ACCESS_LOG must be on or off, got {raw[:20]!r}")
    return raw in ("on", "true", "1")


def check_public_url(raw: str | None) -> str | None:
    if not raw:
        return None
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"public URL {raw[:200]!r} is not a valid URL") from exc
    if parts.scheme != "https" or not parts.hostname or parts.path not in ("", "/") or parts.query:
        raise ConfigError(f"public URL must look like https://host[:port], got {raw[:200]!r}")
    netloc = parts.netloc if port else f"{parts.netloc}:443"
    return f"https://{netloc.lower()}"


def resolve_home(home: str | None, env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(home or env.get("LANYARD_HOME") or DEFAULT_HOME).expanduser().resolve()


def load_settings(
    *,
    home: str | None = None,
    host: str | None = None,
    port: int | None = None,
    database: str | None = None,
    token_lifetime: int | None = None,
    public_host: str | None = None,
    agent: bool = True,
    agent_port: int | None = None,
    public_url: str | None = None,
    workers: int | None = None,
    audit_file: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    env = os.environ if env is None else env
    lifetime = token_lifetime if token_lifetime is not None else _int(env, "LANYARD_TOKEN_LIFETIME", 3600)
    if not 300 < lifetime <= 86400 * 2:
        # Clients never reuse a token that lives 5 minutes or less (docs/protocols.md §1.8).
        raise ConfigError("token lifetime must be more than 300 and at most 172800 seconds")
    resolved_port = port if port is not None else _int(env, "LANYARD_PORT", 8443)
    if not 0 <= resolved_port <= 65535:
        raise ConfigError(f"port {resolved_port} is out of range")
    resolved_workers = workers if workers is not None else _int(env, "LANYARD_WORKERS", 1)
    if not 1 <= resolved_workers <= 64:
        raise ConfigError("workers must be 1 to 64")
    return Settings(
        home=resolve_home(home, env),
        host=host or env.get("LANYARD_HOST") or "127.0.0.1",
        port=resolved_port,
        database_url=database or env.get("LANYARD_DATABASE") or "",
        kek_b64=env.get("LANYARD_KEK") or None,
        previous_keks_b64=env.get("LANYARD_KEK_PREVIOUS") or None,
        token_lifetime=lifetime,
        dns_zone=env.get("LANYARD_DNS_ZONE") or DEFAULT_ZONE,
        public_host=public_host or env.get("LANYARD_PUBLIC_HOST") or None,
        agent=agent,
        agent_port=agent_port if agent_port is not None else _int(env, "LANYARD_AGENT_PORT", 0),
        public_url=check_public_url(public_url or env.get("LANYARD_PUBLIC_URL")),
        workers=resolved_workers,
        key_rotation_period=_seconds(env, "LANYARD_KEY_ROTATION_PERIOD", 30 * 86400.0),
        key_publish_lead=_seconds(env, "LANYARD_KEY_PUBLISH_LEAD", 2 * 86400.0),
        identity_cert_lifetime=_seconds(env, "LANYARD_IDENTITY_CERT_LIFETIME", 90 * 86400.0),
        identity_cert_renew_after=_seconds(env, "LANYARD_IDENTITY_CERT_RENEW_AFTER", 46 * 86400.0),
        identity_cert_grace=_seconds(env, "LANYARD_IDENTITY_CERT_GRACE", 86400.0),
        log_level=log_level(env),
        access_log=access_log_enabled(env),
        limits=load_limit_settings(env),
        audit=load_audit_settings(env, file=audit_file),
        federation=load_federation_settings(env),
    )
