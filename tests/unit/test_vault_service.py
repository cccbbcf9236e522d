"""The vault service with an injected clock: soft delete, scheduled purge, policies, sealing.
Each test runs on SQLite and on PostgreSQL (the throwaway cluster; skipped where it is unavailable)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from lanyard.core.clock import FrozenClock
from lanyard.crypto.barrier import Barrier
from lanyard.protocol.keyvault import VaultError
from lanyard.storage import arm_repo
from lanyard.storage import directory_repo as dirrepo
from lanyard.storage.db import Store, make_engine, migrate
from lanyard.vault.service import Caller, VaultService

TENANT, SUB = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"
READER = "33333333-3333-3333-3333-333333333333"
VAULT_ID = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A migrated, empty store: SQLite in tmp_path, or a fresh database of the throwaway PostgreSQL cluster
    (`pg_database`, requested only for that parameter; the mark keeps `-m "not postgres"` working)."""
    if request.param == "postgres":
        url = request.getfixturevalue("pg_database")
    else:
        url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    store = Store(make_engine(url))
    try:
        migrate(store.engine)
        yield store
    finally:
        store.close()


@pytest.fixture
def service(store: Store) -> tuple[VaultService, FrozenClock]:
    clock = FrozenClock(1_800_000_000.0)
    with store.session() as s:
        dirrepo.add_tenant(s, TENANT, "t", clock.now())
        dirrepo.add_subscription(s, SUB, TENANT, "s", clock.now())
        group_key = f"/subscriptions/{SUB}/resourcegroups/rg"
        arm_repo.put_group(s, group_key, group_key, SUB, "rg", "westus", {}, clock.now())
        policies = [
            {
                "tenantId": TENANT,
                "objectId": READER,
                "permissions": {"secrets": ["get", "set", "delete", "list", "purge"]},
            }
        ]
        arm_repo.save_resource(
            s,
            arm_repo.ResourceRecord(
                VAULT_ID.lower(),
                VAULT_ID,
                SUB,
                group_key,
                "Microsoft.KeyVault/vaults",
                "kv",
                None,
                None,
                "westus",
                {},
                {"tenantId": TENANT, "accessPolicies": policies, "softDeleteRetentionInDays": 7},
                "None",
                None,
                (),
                clock.now(),
                clock.now(),
            ),
        )
    return VaultService(store, Barrier(os.urandom(32)), clock, "vault.test:443"), clock


def test_soft_deleted_secret_is_purged_when_due(service: tuple[VaultService, FrozenClock]) -> None:
    vaults, clock = service
    vault = vaults.vault("kv")
    assert vault is not None and vault.retention_days == 7
    me = Caller(READER, "app", TENANT)
    vaults.set(vault, me, "s1", {"value": "v"})
    deleted = vaults.delete(vault, me, "s1")
    assert deleted["scheduledPurgeDate"] == int(clock.now()) + 7 * 86400
    with pytest.raises(VaultError) as conflict:
        vaults.set(vault, me, "s1", {"value": "again"})
    assert conflict.value.status == 409
    clock.advance(7 * 86400 + 1)
    with pytest.raises(VaultError) as gone:
        vaults.get_deleted(vault, me, "s1")
    assert gone.value.status == 404
    assert vaults.set(vault, me, "s1", {"value": "new"})["value"] == "new"


def test_policy_is_per_principal_and_tenant(service: tuple[VaultService, FrozenClock]) -> None:
    vaults, _ = service
    vault = vaults.vault("kv")
    assert vault is not None
    vaults.set(vault, Caller(READER, "app", TENANT), "s1", {"value": "v"})
    for caller, status in (
        (Caller("44444444-4444-4444-4444-444444444444", "x", TENANT), 403),
        (Caller(READER, "app", "55555555-5555-5555-5555-555555555555"), 401),
    ):
        with pytest.raises(VaultError) as denied:
            vaults.get(vault, caller, "s1", None)
        assert denied.value.status == status
