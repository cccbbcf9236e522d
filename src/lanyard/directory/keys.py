"""The directory's token-signing keys, loaded once and held in memory.

Keys live sealed in the database (so several servers share them); each process opens them once at
start and never parses a key per request. The JWKS body is serialized once per key-set change.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import orjson
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from lanyard.core.clock import Clock
from lanyard.crypto.barrier import Barrier
from lanyard.crypto.pki import load_private_key, new_rsa_key, private_key_pem, self_signed
from lanyard.protocol.jose import RsaSigner
from lanyard.protocol.jwks import rsa_jwk, x5t
from lanyard.storage import directory_repo as repo
from lanyard.storage.db import Store

PUBLISHED_STATES = frozenset({"pending", "active", "retired"})


def _context(kid: str) -> str:
    return f"signing_key:{kid}"


@dataclass(frozen=True)
class LoadedKey:
    kid: str
    state: str
    cert: x509.Certificate
    private_key: rsa.RSAPrivateKey

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        return self.private_key.public_key()


class KeyRing:
    def __init__(self, keys: list[LoadedKey]) -> None:
        active = [k for k in keys if k.state == "active"]
        if not active:
            raise ValueError("no active signing key")
        self.active = active[-1]
        self.signer = RsaSigner(self.active.private_key, {"x5t": self.active.kid, "kid": self.active.kid})
        published = [k for k in keys if k.state in PUBLISHED_STATES]
        self.public_keys: dict[str, rsa.RSAPublicKey] = {k.kid: k.public_key for k in published}
        self.jwks = [rsa_jwk(k.cert) for k in published]

    def jwks_body(self, issuer: str | None = None) -> bytes:
        keys = [{**k, "issuer": issuer} for k in self.jwks] if issuer else self.jwks
        return orjson.dumps({"keys": keys})

    @classmethod
    def load(cls, store: Store, barrier: Barrier, clock: Clock) -> KeyRing:
        with store.session() as s:
            records = repo.list_signing_keys(s)
            if not any(r.state == "active" for r in records):
                records.append(create_signing_key(s, barrier, clock, state="active"))
        loaded = []
        for r in records:
            if r.state not in PUBLISHED_STATES:
                continue
            key = load_private_key(barrier.open(r.sealed_private_key, context=_context(r.kid)))
            if not isinstance(key, rsa.RSAPrivateKey):
                raise ValueError(f"signing key {r.kid} is not RSA")
            loaded.append(LoadedKey(r.kid, r.state, x509.load_der_x509_certificate(r.cert_der), key))
        return cls(loaded)


def create_signing_key(s: repo.Session, barrier: Barrier, clock: Clock, *, state: str) -> repo.SigningKeyRecord:
    now = clock.now()
    key = new_rsa_key(2048)
    cert = self_signed(key, "Lanyard token signing", dt.datetime.fromtimestamp(now, dt.UTC), days=730)
    kid = x5t(cert)
    record = repo.SigningKeyRecord(
        kid=kid,
        state=state,
        sealed_private_key=barrier.seal(private_key_pem(key), context=_context(kid)),
        cert_der=cert.public_bytes(serialization.Encoding.DER),
        created_at=now,
        activated_at=now if state == "active" else None,
    )
    repo.add_signing_key(s, record)
    return record
