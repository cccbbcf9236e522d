"""The barrier between Lanyard and its storage: envelope encryption under a key-encryption key.

Storage is untrusted. Every private key and secret goes into the database sealed with AES-256-GCM
under a KEK that lives outside it (a 0600 file in the home, or ``LANYARD_KEK``). The associated data
binds each ciphertext to the row and purpose it was sealed for, so a database writer cannot move a
ciphertext from one row to another and have it open there.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lanyard.core.errors import ConfigError, CryptoError

_MAGIC = b"LK1"
_KEK_ID_LEN = 8
_NONCE_LEN = 12


def _kek_id(kek: bytes) -> bytes:
    return hashlib.sha256(b"lanyard-kek-id" + kek).digest()[:_KEK_ID_LEN]


def legacy_derive_root(kek: bytes) -> bytes:
    """The derivation root a store made before it was kept in the database: computed from its KEK."""
    return hmac.new(kek, b"lanyard-derive", hashlib.sha256).digest()


class Barrier:
    """Seals with the active KEK; opens with any KEK it was given (others stay for rotation).

    The derivation root (it peppers client-secret hashes and passwords the TLS key file) must
    outlive any one KEK, or rotating the KEK would invalidate every client secret: it is kept in the
    database, sealed, and handed over with `use_derive_root` at start."""

    def __init__(self, active: bytes, *older: bytes) -> None:
        for key in (active, *older):
            if len(key) != 32:
                raise ConfigError("a key-encryption key must be 32 bytes")
        self._active_id = _kek_id(active)
        self._keys = {_kek_id(k): k for k in (active, *older)}
        self._aeads = {kek_id: AESGCM(k) for kek_id, k in self._keys.items()}
        self._derive_root = legacy_derive_root(active)

    def key_for(self, kek_id: bytes) -> bytes | None:
        """The KEK with this id, if this node has it (to recover a store's legacy derivation root)."""
        return self._keys.get(kek_id)

    @property
    def active_id(self) -> bytes:
        return self._active_id

    def use_derive_root(self, root: bytes) -> None:
        if len(root) != 32:
            raise ConfigError("the stored derivation root must be 32 bytes")
        self._derive_root = root

    @staticmethod
    def kek_id_of(blob: bytes) -> bytes:
        return blob[len(_MAGIC) : len(_MAGIC) + _KEK_ID_LEN]

    def reseal(self, blob: bytes, *, context: str) -> bytes | None:
        """The value sealed under the active KEK, or None if it already is."""
        if self.kek_id_of(blob) == self._active_id:
            return None
        return self.seal(self.open(blob, context=context), context=context)

    def seal(self, plaintext: bytes, *, context: str) -> bytes:
        nonce = secrets.token_bytes(_NONCE_LEN)
        sealed = self._aeads[self._active_id].encrypt(nonce, plaintext, context.encode())
        return _MAGIC + self._active_id + nonce + sealed

    def open(self, blob: bytes, *, context: str) -> bytes:
        if len(blob) < len(_MAGIC) + _KEK_ID_LEN + _NONCE_LEN + 16 or not blob.startswith(_MAGIC):
            raise CryptoError("sealed value is malformed")
        kek_id = blob[len(_MAGIC) : len(_MAGIC) + _KEK_ID_LEN]
        aead = self._aeads.get(kek_id)
        if aead is None:
            raise CryptoError("sealed value was made with a key-encryption key this server does not have")
        start = len(_MAGIC) + _KEK_ID_LEN
        nonce, body = blob[start : start + _NONCE_LEN], blob[start + _NONCE_LEN :]
        try:
            return aead.decrypt(nonce, body, context.encode())
        except InvalidTag as exc:
            raise CryptoError(f"sealed value does not open for {context.split(':', 1)[0]}") from exc

    def derive(self, purpose: str) -> bytes:
        return hmac.new(self._derive_root, purpose.encode(), hashlib.sha256).digest()

    def secret_hash(self, secret: str) -> str:
        """Peppered HMAC-SHA-256: fast enough for every request, useless without the KEK."""
        return hmac.new(self.derive("client-secret"), secret.encode(), hashlib.sha256).hexdigest()


def load_other_keks(home: Path, others_b64: str | None) -> list[bytes]:
    """Keys this node can open with besides the active one, during a KEK rotation: from
    ``LANYARD_KEK_PREVIOUS`` (comma-separated base64) or the 0600 file ``home/kek.previous``."""
    raws: list[bytes] = []
    if others_b64:
        raws = [part.strip().encode() for part in others_b64.split(",") if part.strip()]
        source = "LANYARD_KEK_PREVIOUS"
    else:
        path = home / "kek.previous"
        if not path.exists():
            return []
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            raise ConfigError(f"{path} is readable by others; chmod 600 it")
        raws = [line.strip() for line in path.read_bytes().splitlines() if line.strip()]
        source = str(path)
    keys = []
    for raw in raws:
        try:
            key = base64.b64decode(raw, validate=True)
        except ValueError as exc:
            raise ConfigError(f"{source} holds a key that is not valid base64") from exc
        if len(key) != 32:
            raise ConfigError(f"{source} holds a key that is not 32 bytes")
        keys.append(key)
    return keys


def load_kek(home: Path, kek_b64: str | None) -> bytes:
    """The KEK from the environment if given, else from ``home/kek`` (created 0600 on first start)."""
    if kek_b64:
        try:
            key = base64.b64decode(kek_b64, validate=True)
        except ValueError as exc:
            raise ConfigError("LANYARD_KEK is not valid base64") from exc
        if len(key) != 32:
            raise ConfigError("LANYARD_KEK must encode exactly 32 bytes")
        return key
    path = home / "kek"
    if not path.exists():
        key = secrets.token_bytes(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(base64.b64encode(key) + b"\n")
        return key
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
    try:
        key = base64.b64decode(path.read_bytes().strip(), validate=True)
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid base64") from exc
    if len(key) != 32:
        raise ConfigError(f"{path} must hold exactly 32 bytes")
    return key
