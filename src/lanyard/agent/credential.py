"""The agent's own credential, renewed by the agent before it expires.

The host key is made on this machine and never leaves it. Past half its certificate's life, the
agent makes a new key and certificate and registers the certificate with the platform, signed in
with its current credential; only once the platform accepted it are the files replaced (atomically)
and the new key used. The platform keeps the old certificate valid for a short grace, for calls
already in flight, then refuses it.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
import ssl
from dataclasses import replace
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from lanyard.agent.upstream import HostIdentity, Upstream, UpstreamError
from lanyard.client.assertion import CertificateKey
from lanyard.core.files import write_atomically
from lanyard.crypto.pki import cert_pem, new_rsa_key, private_key_pem, self_signed

log = logging.getLogger("lanyard.agent")
DEFAULT_LIFETIME = 365 * 86400.0


def new_host_certificate(name: str, now: float, lifetime: float) -> tuple[bytes, bytes]:
    """(certificate PEM, private key PEM) for this host, valid `lifetime` seconds from now."""
    private = new_rsa_key(2048)
    cert = self_signed(private, f"lanyard host {name}", dt.datetime.fromtimestamp(now, dt.UTC), days=lifetime / 86400)
    return cert_pem(cert), private_key_pem(private)


def renewal_due(cert_file: Path, now: float, lifetime: float) -> bool:
    """Half the configured lifetime or less left (not_before is backdated for clock skew, so the
    certificate's own span would overstate its age)."""
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    return cert.not_valid_after_utc.timestamp() - now <= lifetime / 2


class HostCredentialRenewal:
    def __init__(self, home: Path, name: str, upstream: Upstream, ca_file: str, lifetime: float) -> None:
        self.home = home
        self.name = name
        self.upstream = upstream
        self.ca_file = ca_file
        self.lifetime = lifetime
        self.renewals = 0

    @property
    def cert_file(self) -> Path:
        return self.home / "host.pem"

    async def renew_if_due(self) -> bool:
        if not renewal_due(self.cert_file, self.upstream.clock.now(), self.lifetime):
            return False
        await self.renew()
        return True

    async def renew(self) -> None:
        cert, key = await asyncio.to_thread(new_host_certificate, self.name, self.upstream.clock.now(), self.lifetime)
        der = x509.load_pem_x509_certificate(cert).public_bytes(serialization.Encoding.DER)
        token = await self.upstream.host_token()
        host = self.upstream.host
        try:
            async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=self.ca_file), timeout=30) as http:
                response = await http.post(
                    f"{host.authority}/lanyard/v1/agent/credential",
                    json={"certificate": base64.b64encode(der).decode()},
                    headers={"Authorization": f"Bearer {token}"},
                )
        except httpx.HTTPError as exc:
            raise UpstreamError(f"the platform is unreachable ({type(exc).__name__})") from exc
        if response.status_code != 200:
            raise UpstreamError(f"the platform refused the new host certificate ({response.status_code})")
        # Key first, then certificate: a crash in between leaves a pair that fails loudly at start
        # (mismatch), never a certificate the old key would be used with.
        write_atomically(self.home / "host-key.pem", key)
        write_atomically(self.cert_file, cert)
        self.upstream.use_host(replace(host, key=CertificateKey.from_pem(cert, key)))
        self.renewals += 1
        log.warning("renewed this host's credential")

    async def run(self, tick: float) -> None:
        while True:
            await asyncio.sleep(tick)
            try:
                await self.renew_if_due()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # next tick; the current credential is still valid
                log.warning("host credential renewal failed: %s", exc)


__all__ = ["DEFAULT_LIFETIME", "HostCredentialRenewal", "HostIdentity", "new_host_certificate"]
