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


class Barrier:
    """Seals with the active KEK; opens with any KEK it was given (old ones stay for rotation)."""

    def __init__(self, active: bytes, *older: bytes) -> None:
        for key in (active, *older):
            if len(key) != 32:
                raise ConfigError("a key-encryption key must be 32 bytes")
        self._active_id = _kek_id(active)
        self._aeads = {_kek_id(k): AESGCM(k) for k in (active, *older)}
        # Derived, never stored: peppers secret hashes and passwords TLS key files.
        self._derive_root = hmac.new(active, b"lanyard-derive", hashlib.sha256).digest()

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
