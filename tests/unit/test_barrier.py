from __future__ import annotations

import os
from pathlib import Path

import pytest

from lanyard.core.errors import ConfigError, CryptoError
from lanyard.crypto.barrier import Barrier, load_kek


def test_seal_open_round_trip() -> None:
    barrier = Barrier(os.urandom(32))
    sealed = barrier.seal(b"secret value", context="credentials:1:key")
    assert b"secret value" not in sealed
    assert barrier.open(sealed, context="credentials:1:key") == b"secret value"


def test_ciphertext_is_bound_to_its_row() -> None:
    barrier = Barrier(os.urandom(32))
    sealed = barrier.seal(b"secret value", context="credentials:1:key")
    with pytest.raises(CryptoError):
        barrier.open(sealed, context="credentials:2:key")


def test_tampering_is_detected() -> None:
    barrier = Barrier(os.urandom(32))
    sealed = bytearray(barrier.seal(b"secret value", context="c"))
    sealed[-1] ^= 1
    with pytest.raises(CryptoError):
        barrier.open(bytes(sealed), context="c")
    with pytest.raises(CryptoError):
        barrier.open(b"LK1short", context="c")


def test_old_kek_still_opens_after_rotation() -> None:
    old, new = os.urandom(32), os.urandom(32)
    sealed = Barrier(old).seal(b"v", context="c")
    assert Barrier(new, old).open(sealed, context="c") == b"v"
    with pytest.raises(CryptoError, match="key-encryption key"):
        Barrier(new).open(sealed, context="c")


def test_secret_hash_is_peppered() -> None:
    a, b = Barrier(os.urandom(32)), Barrier(os.urandom(32))
    assert a.secret_hash("s") == a.secret_hash("s") != b.secret_hash("s")


def test_kek_file_created_private_and_refused_when_shared(tmp_path: Path) -> None:
    key = load_kek(tmp_path, None)
    path = tmp_path / "kek"
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_kek(tmp_path, None) == key
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        load_kek(tmp_path, None)


def test_kek_from_environment_must_be_32_bytes(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_kek(tmp_path, "c2hvcnQ=")
    with pytest.raises(ConfigError):
        load_kek(tmp_path, "not base64!")
