"""The derivation root (client-secret pepper, TLS key password) outlives the KEK: new stores get a
random one kept sealed in the database; a store from before keeps the root its hashes were made
with, even when first opened by a node whose active KEK is already a new one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lanyard.core.errors import CryptoError
from lanyard.crypto.barrier import Barrier, legacy_derive_root
from lanyard.server.bootstrap import _derive_root
from lanyard.storage import directory_repo as repo
from lanyard.storage.db import Store, make_engine, migrate


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(make_engine(f"sqlite:///{tmp_path / 'd.db'}"))
    migrate(s.engine)
    return s


def test_a_new_store_keeps_one_random_root(store: Store) -> None:
    kek = os.urandom(32)
    with store.session() as s:
        root = _derive_root(s, Barrier(kek))
    assert root != legacy_derive_root(kek)
    with store.session() as s:
        assert _derive_root(s, Barrier(os.urandom(32), kek)) == root  # opened under another active KEK


def test_a_store_from_before_keeps_the_root_of_the_kek_that_sealed_it(store: Store) -> None:
    old, new = os.urandom(32), os.urandom(32)
    with store.session() as s:
        repo.put_state(s, "ca", value="pem", sealed=Barrier(old).seal(b"ca key", context="state:ca"))
    with store.session() as s:
        assert _derive_root(s, Barrier(new, old)) == legacy_derive_root(old)
    with store.session() as s:  # now kept: the same from then on
        assert _derive_root(s, Barrier(new, old)) == legacy_derive_root(old)


def test_a_node_without_the_sealing_kek_cannot_recover_the_root(store: Store) -> None:
    with store.session() as s:
        repo.put_state(s, "ca", value="pem", sealed=Barrier(os.urandom(32)).seal(b"k", context="state:ca"))
    with pytest.raises(CryptoError), store.session() as s:
        _derive_root(s, Barrier(os.urandom(32)))
