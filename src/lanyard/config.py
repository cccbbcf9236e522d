"""The one place that reads configuration: command-line values, then the environment, then defaults.

Entry points build a :class:`Settings` once and hand narrow, immutable pieces of it down; nothing
else in Lanyard reads ``os.environ``.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from lanyard.core.errors import ConfigError

DEFAULT_HOME = "~/.lanyard"
DEFAULT_ZONE = "lanyard.localhost"
LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}


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
    )
