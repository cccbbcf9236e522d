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
        self.jwks_bytes = orjson.dumps({"keys": self.jwks})

    def jwks_body(self, issuer: str | None = None) -> bytes:
        if not issuer:
            return self.jwks_bytes
        return orjson.dumps({"keys": [{**k, "issuer": issuer} for k in self.jwks]})

    @classmethod
    def load(cls, store: Store, barrier: Barrier) -> KeyRing:
        with store.session() as s:
            records = repo.list_signing_keys(s)
        if not any(r.state == "active" for r in records):
            raise ConfigError("the database has no active signing key")
        loaded = []
        for r in records:
            if r.state not in PUBLISHED_STATES:
                continue
            key = load_private_key(barrier.open(r.sealed_private_key, context=_context(r.kid)))
            if not isinstance(key, rsa.RSAPrivateKey):
                raise ValueError(f"signing key {r.kid} is not RSA")
            loaded.append(LoadedKey(r.kid, r.state, x509.load_der_x509_certificate(r.cert_der), key))
        return cls(loaded)


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
