"""The directory's token-signing keys, opened once per key-set change and held in memory.

Keys live sealed in the database, so every node shares them. Each node opens them at start and
again only when the change feed says the key set changed; no key is parsed per request. The JWKS
body is serialized once per key-set change. The first key is made by bootstrap, under the
database's start-up lock, so nodes started together agree on one active key.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import orjson
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from lanyard.core.clock import Clock
from lanyard.core.errors import ConfigError
from lanyard.crypto.barrier import Barrier
from lanyard.crypto.pki import load_private_key, new_rsa_key, private_key_pem, self_signed
from lanyard.protocol.jose import RsaSigner
from lanyard.protocol.jwks import rsa_jwk, x5t
from lanyard.storage import directory_repo as repo
from lanyard.storage.db import Store
from lanyard.storage.feed import RESET, Change

PUBLISHED_STATES = frozenset({"pending", "active", "retired"})


def _context(kid: str) -> str:
    return f"signing_key:{kid}"


@dataclass(frozen=True)
class LoadedKey:
    kid: str
    state: str
    cert: x509.Certificate
    public_key: rsa.RSAPublicKey


class KeyRing:
    """One node's view of the key set: the signer (the active key, whose private key alone is
    opened), the published public keys, the JWKS bytes, and the records (for the lifecycle)."""

    def __init__(self, keys: list[LoadedKey], signer: RsaSigner, records: list[repo.SigningKeyRecord]) -> None:
        self.records = records
        self.active = next(k for k in keys if k.state == "active")
        self.signer = signer
        published = [k for k in keys if k.state in PUBLISHED_STATES]
        self.public_keys: dict[str, rsa.RSAPublicKey] = {k.kid: k.public_key for k in published}
        self.jwks = [rsa_jwk(k.cert) for k in published]
        self.jwks_bytes = orjson.dumps({"keys": self.jwks})

    @property
    def published_kids(self) -> frozenset[str]:
        return frozenset(self.public_keys)

    def jwks_body(self, issuer: str | None = None) -> bytes:
        if not issuer:
            return self.jwks_bytes
        return orjson.dumps({"keys": [{**k, "issuer": issuer} for k in self.jwks]})

    @classmethod
    def load(cls, store: Store, barrier: Barrier) -> KeyRing:
        with store.session() as s:
            records = repo.list_signing_keys(s)
        active = [r for r in records if r.state == "active"]
        if len(active) != 1:
            raise ConfigError(f"the database has {len(active)} active signing keys; exactly one must sign")
        loaded = []
        signer = None
        for r in records:
            if r.state not in PUBLISHED_STATES:
                continue
            cert = x509.load_der_x509_certificate(r.cert_der)
            public = cert.public_key()
            if not isinstance(public, rsa.RSAPublicKey):
                raise ConfigError(f"signing key {r.kid} is not RSA")
            loaded.append(LoadedKey(r.kid, r.state, cert, public))
            if r.state == "active":
                private = load_private_key(barrier.open(r.sealed_private_key, context=_context(r.kid)))
                if not isinstance(private, rsa.RSAPrivateKey):
                    raise ConfigError(f"signing key {r.kid} is not RSA")
                signer = RsaSigner(private, {"x5t": r.kid, "kid": r.kid})
        assert signer is not None
        return cls(loaded, signer, records)


class SigningKeys:
    """The current key ring of this node, following the change feed.

    It is also the key source every resource server's token verifier reads (protocol/verify.py):
    the published keys as stored, so a token minted by any node verifies on every node.
    """

    def __init__(self, store: Store, barrier: Barrier) -> None:
        self.store = store
        self.barrier = barrier
        self.ring = KeyRing.load(store, barrier)
        self._listeners: list[Callable[[KeyRing], None]] = []
        self._reload_lock = threading.Lock()

    def get(self, kid: str) -> rsa.RSAPublicKey | None:
        return self.ring.public_keys.get(kid)

    @property
    def signer(self) -> RsaSigner:
        return self.ring.signer

    def jwks_body(self, issuer: str | None = None) -> bytes:
        return self.ring.jwks_body(issuer)

    def on_change(self, listener: Callable[[KeyRing], None]) -> None:
        self._listeners.append(listener)

    def reload(self) -> None:
        with self._reload_lock:
            self.ring = KeyRing.load(self.store, self.barrier)  # one reference swap: readers never see half
        for listener in self._listeners:
            listener(self.ring)

    def apply(self, changes: Sequence[Change]) -> None:
        if any(c.kind in ("signing_keys", RESET) for c in changes):
            self.reload()


def ensure_signing_key(store: Store, barrier: Barrier, clock: Clock) -> None:
    """First start: one active key (run under the start-up lock, so only one node makes it)."""
    with store.session() as s:
        if not any(r.state == "active" for r in repo.list_signing_keys(s)):
            create_signing_key(s, barrier, clock, state="active")


def new_signing_key(
    barrier: Barrier, now: float, *, state: str, activates_at: float | None = None
) -> repo.SigningKeyRecord:
    """A new key, sealed, not yet stored (made outside any lock: RSA key generation is slow)."""
    key = new_rsa_key(2048)
    cert = self_signed(key, "Lanyard token signing", dt.datetime.fromtimestamp(now, dt.UTC), days=730)
    kid = x5t(cert)
    return repo.SigningKeyRecord(
        kid=kid,
        state=state,
        sealed_private_key=barrier.seal(private_key_pem(key), context=_context(kid)),
        cert_der=cert.public_bytes(serialization.Encoding.DER),
        created_at=now,
        activated_at=now if state == "active" else None,
        activates_at=activates_at,
    )


def create_signing_key(s: repo.Session, barrier: Barrier, clock: Clock, *, state: str) -> repo.SigningKeyRecord:
    record = new_signing_key(barrier, clock.now(), state=state)
    repo.add_signing_key(s, record)
    return record
