"""Portal sessions kept in the database: any node serves them, a sign-out ends them everywhere, and
the database holds neither the cookie nor the refresh token in the clear."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import select, text

from lanyard.core.clock import FrozenClock
from lanyard.crypto.barrier import Barrier
from lanyard.portal import sessions as portal_sessions
from lanyard.portal.sessions import PENDING_SECONDS, SessionKeys, SessionStore
from lanyard.storage import models as m
from lanyard.storage.db import Store, make_engine, migrate


@pytest.fixture
def db(tmp_path: Path) -> Store:
    store = Store(make_engine(f"sqlite:///{tmp_path / 'portal.db'}"))
    migrate(store.engine)
    return store


def _nodes(db: Store, clock: FrozenClock) -> tuple[SessionStore, SessionStore]:
    """Two nodes of one platform: one database, one KEK, separate memories."""
    barrier = Barrier(b"k" * 32)
    return (
        SessionStore(clock, db, SessionKeys.of(barrier), idle=600, absolute=3600),
        SessionStore(clock, Store(db.engine), SessionKeys.of(barrier), idle=600, absolute=3600),
    )


def _signed_in(node: SessionStore, refresh: str = "rt-one") -> str:
    session = node.create()
    session.user, session.subscription, session.refresh_token = "Pat", "sub-1", refresh
    node.save(session)
    return session.id


def test_a_session_made_on_one_node_is_served_and_ended_by_another(db: Store) -> None:
    clock = FrozenClock()
    a, b = _nodes(db, clock)
    sid = _signed_in(a)
    seen = b.get(sid)
    assert seen is not None and (seen.user, seen.subscription, seen.refresh_token) == ("Pat", "sub-1", "rt-one")
    assert seen.csrf == a.get(sid).csrf  # type: ignore[union-attr]  # derived, so the same on every node
    seen.refresh_token = "rt-two"  # node b redeemed it; node a must use the new one
    b.save(seen)
    assert a.get(sid).refresh_token == "rt-two"  # type: ignore[union-attr]
    b.end(sid)
    assert a.get(sid) is None and b.get(sid) is None


def test_a_save_after_sign_out_elsewhere_does_not_bring_the_session_back(db: Store) -> None:
    clock = FrozenClock()
    a, b = _nodes(db, clock)
    sid = _signed_in(a)
    held = a.get(sid)
    assert held is not None
    b.end(sid)
    held.refresh_token = "late"
    a.save(held)
    assert a.get(sid) is None and a.count() == 0


def test_the_database_holds_no_cookie_and_no_refresh_token(db: Store) -> None:
    clock = FrozenClock()
    a, _ = _nodes(db, clock)
    sid = _signed_in(a, refresh="rt-secret-value")
    with db.engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(text("SELECT * FROM portal_sessions"))]
    dumped = repr(rows).encode() + b"".join(v for r in rows for v in r if isinstance(v, bytes))
    assert len(rows) == 1 and sid.encode() not in dumped and b"rt-secret-value" not in dumped


def test_a_sealed_value_moved_to_another_row_does_not_open(db: Store) -> None:
    clock = FrozenClock()
    a, _ = _nodes(db, clock)
    victim, attacker = _signed_in(a, "victim-rt"), _signed_in(a, "attacker-rt")
    with db.session() as s:
        stored = {row.id_hash: row for row in s.scalars(select(m.PortalSession))}
        victim_row = next(r for r in stored.values() if r.id_hash == a._hash(victim))
        attacker_row = next(r for r in stored.values() if r.id_hash == a._hash(attacker))
        attacker_row.sealed = victim_row.sealed
    assert a.get(attacker) is None  # its seal is bound to the victim's row: the session is over
    assert a.get(victim).refresh_token == "victim-rt"  # type: ignore[union-attr]


def test_expiry_pending_idle_and_absolute(db: Store) -> None:
    clock = FrozenClock()
    a, b = _nodes(db, clock)
    pending = a.create().id
    clock.advance(PENDING_SECONDS + 1)
    assert b.get(pending) is None  # a sign-in started and never finished
    idle = _signed_in(a)
    clock.advance(601)
    assert b.get(idle) is None
    busy = _signed_in(a)
    for _ in range(7):  # seen every 500 s: never idle for 600 s
        clock.advance(500)
        assert b.get(busy) is not None
    clock.advance(200)  # but now past the absolute hour
    assert b.get(busy) is None


def test_a_flood_of_sessions_is_bounded(db: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(portal_sessions, "MAX_SESSIONS", 3)
    clock = FrozenClock()
    a, _ = _nodes(db, clock)
    first = a.create().id
    for _ in range(5):
        clock.advance(1)
        a.create()
    assert a.count() == 3 and a.get(first) is None


def test_a_malformed_cookie_is_no_session(db: Store) -> None:
    a, _ = _nodes(db, FrozenClock())
    assert a.get("") is None and a.get("x" * 43) is None and a.get("x" * 5000) is None


def test_a_node_with_another_kek_knows_no_session(db: Store) -> None:
    clock = FrozenClock()
    a, _ = _nodes(db, clock)
    sid = _signed_in(a)
    stranger = SessionStore(clock, db, SessionKeys.of(Barrier(os.urandom(32))))
    assert stranger.get(sid) is None
