"""The signing-key lifecycle on a real store with a frozen clock: every transition exactly when due,
never early, once across racing nodes, resumed after a restart."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from lanyard.core.clock import FrozenClock
from lanyard.core.errors import ArmError, ConfigError
from lanyard.crypto.barrier import Barrier
from lanyard.directory.keys import SigningKeys, ensure_signing_key
from lanyard.directory.rotation import KeyLifecycle, RotationPolicy
from lanyard.storage import directory_repo as repo
from lanyard.storage.db import Store, make_engine, migrate

PERIOD, LEAD, LIFETIME = 100.0, 20.0, 3600.0


def states(store: Store) -> dict[str, str]:
    with store.session() as s:
        return {r.kid: r.state for r in repo.list_signing_keys(s)}


def active_count(store: Store) -> int:
    return sum(1 for state in states(store).values() if state == "active")


@pytest.fixture
def node(tmp_path: Path) -> tuple[Store, KeyLifecycle, FrozenClock]:
    clock = FrozenClock()
    store = Store(make_engine(f"sqlite:///{tmp_path / 'keys.db'}"), clock.now)
    migrate(store.engine)
    barrier = Barrier(os.urandom(32))
    ensure_signing_key(store, barrier, clock)
    keys = SigningKeys(store, barrier)
    store.on_commit(keys.apply)  # this node hears its own commits, as through the change feed
    policy = RotationPolicy.for_tokens(PERIOD, LEAD, LIFETIME)
    return store, KeyLifecycle(store, barrier, keys, clock, policy), clock


def test_a_successor_is_published_a_lead_ahead_then_signs_then_the_old_one_retires(node: tuple) -> None:
    store, life, clock = node
    first = life.keys.ring.active.kid
    assert not life.due(life.keys.ring.records, clock.now())
    clock.advance(PERIOD - LEAD - 1)
    assert life.advance() == []
    clock.advance(1)
    (published,) = life.advance()
    pending = next(k for k, s in states(store).items() if s == "pending")
    assert published.startswith(f"published {pending}")
    # Published: in the JWKS and the verifier's key source, but not signing.
    assert pending in life.keys.ring.public_keys and life.keys.ring.active.kid == first
    clock.advance(LEAD - 0.5)
    assert life.advance() == []
    clock.advance(0.5)
    assert life.advance() == [f"activated {pending}, retired {first}"]
    assert states(store) == {first: "retired", pending: "active"}
    assert life.keys.ring.active.kid == pending and first in life.keys.ring.public_keys
    # The retired key stays published as long as its tokens may live, then goes.
    clock.advance(LIFETIME + 300 - 1)
    assert not any(line.startswith("removed") for line in life.advance())
    clock.advance(1)
    assert any(line == f"removed {first}" for line in life.advance())
    assert first not in states(store) and first not in life.keys.ring.public_keys


def test_a_clock_that_jumps_back_never_makes_a_pending_key_sign_early(node: tuple) -> None:
    store, life, clock = node
    clock.advance(PERIOD - LEAD)
    life.advance()
    clock.advance(LEAD - 1)
    clock.advance(-3 * PERIOD)  # back by hours of "time"
    assert life.advance() == []
    assert "pending" in states(store).values() and active_count(store) == 1


def test_nodes_racing_perform_each_transition_once(node: tuple, tmp_path: Path) -> None:
    store, life, clock = node
    others = []
    for _ in range(3):
        other_store = Store(make_engine(f"sqlite:///{tmp_path / 'keys.db'}"), clock.now)
        other_keys = SigningKeys(other_store, life.barrier)
        other_store.on_commit(other_keys.apply)
        others.append(KeyLifecycle(other_store, life.barrier, other_keys, clock, life.policy))
    clock.advance(PERIOD - LEAD)
    barrier = threading.Barrier(4)

    def race(lc: KeyLifecycle) -> None:
        barrier.wait()
        lc.advance()

    threads = [threading.Thread(target=race, args=(lc,)) for lc in (life, *others)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(states(store).values()) == ["active", "pending"]
    clock.advance(LEAD)
    threads = [threading.Thread(target=race, args=(lc,)) for lc in (life, *others)]
    barrier.reset()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(states(store).values()) == ["active", "retired"]


def test_a_restart_between_publishing_and_signing_resumes(node: tuple, tmp_path: Path) -> None:
    store, life, clock = node
    clock.advance(PERIOD - LEAD)
    life.advance()
    store.close()
    # A new process on the same database, later: it finds the pending key and activates it once.
    clock.advance(LEAD + 5)
    restarted = Store(make_engine(f"sqlite:///{tmp_path / 'keys.db'}"), clock.now)
    keys = SigningKeys(restarted, life.barrier)
    restarted.on_commit(keys.apply)
    again = KeyLifecycle(restarted, life.barrier, keys, clock, life.policy)
    assert again.due(keys.ring.records, clock.now())
    assert any(line.startswith("activated") for line in again.advance())
    assert active_count(restarted) == 1


def test_operator_rotation_and_revocation_rules(node: tuple) -> None:
    store, life, clock = node
    first = life.keys.ring.active.kid
    scheduled = life.rotate(immediate=False)
    assert scheduled.state == "pending" and scheduled.activates_at == clock.now() + LEAD
    with pytest.raises(ArmError) as twice:
        life.rotate(immediate=False)
    assert twice.value.status_value == 409
    now_signing = life.rotate(immediate=True)
    assert now_signing.kid == scheduled.kid and life.keys.ring.active.kid == scheduled.kid
    assert states(store) == {first: "retired", scheduled.kid: "active"}
    with pytest.raises(ArmError) as active:
        life.revoke(scheduled.kid)
    assert active.value.status_value == 409 and "rotate --immediate" in active.value.message
    with pytest.raises(ArmError) as unknown:
        life.revoke("no-such-kid")
    assert unknown.value.status_value == 404
    revoked = life.revoke(first)
    assert revoked.state == "revoked"
    assert first not in life.keys.ring.public_keys  # unpublished at once
    with store.session() as s:
        row = next(r for r in repo.list_signing_keys(s) if r.kid == first)
    assert row.sealed_private_key == b"" and row.revoked_at == clock.now()
    with pytest.raises(ArmError):
        life.revoke(first)


def test_a_rotation_period_not_longer_than_the_publish_lead_is_refused() -> None:
    with pytest.raises(ConfigError, match="longer than its publish lead"):
        RotationPolicy.for_tokens(10, 10, LIFETIME)
    with pytest.raises(ConfigError, match="positive"):
        RotationPolicy.for_tokens(10, 0, LIFETIME)
