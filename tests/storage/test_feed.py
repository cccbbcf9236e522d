"""The change feed against real databases (SQLite file and the throwaway PostgreSQL cluster).

What is announced (every write appends its (kind, key) rows in its own transaction, nothing on
rollback, bulk statements by the keys they touch), in what order (ids strictly increasing in commit
order, so a follower that saw N saw everything below N), how it is followed (a Follower delivers
every change once, in order, and survives a lost LISTEN connection by replaying), how an
unreachable database surfaces (StoreUnavailable), the start-up lock, and migration drift.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import delete, event, insert, inspect, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import ORMExecuteState

import lanyard.storage.migrations as migrations_package
from lanyard.core.clock import FrozenClock
from lanyard.core.errors import StoreUnavailable
from lanyard.storage import arm_repo, feed, fleet_repo, vault_repo
from lanyard.storage import directory_repo as dirrepo
from lanyard.storage import models as m
from lanyard.storage.db import HEAD_REVISION, Store, make_engine, migrate
from lanyard.storage.feed import Change, Follower
from lanyard.storage.startup import startup_lock
from tests.support.postgres import PostgresServer

TENANT = "11111111-1111-1111-1111-111111111111"
SUB = "22222222-2222-2222-2222-222222222222"
APP = "33333333-3333-3333-3333-333333333333"
APP_OBJECT = "44444444-4444-4444-4444-444444444444"
OTHER_APP = "55555555-5555-5555-5555-555555555555"
OTHER_APP_OBJECT = "66666666-6666-6666-6666-666666666666"
PRINCIPAL_OBJECT = "77777777-7777-7777-7777-777777777777"
PRINCIPAL = "88888888-8888-8888-8888-888888888888"
VAULT = f"/subscriptions/{SUB}/resourcegroups/rg/providers/microsoft.keyvault/vaults/kv"
OTHER_VAULT = f"/subscriptions/{SUB}/resourcegroups/rg/providers/microsoft.keyvault/vaults/kv2"
DEADLINE = 30.0


# -- fixtures and helpers ---------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The database URL of one backend: a file database in tmp_path, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'lanyard.db'}"
    return str(request.getfixturevalue("pg_database"))


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(1_800_000_000.0)


@pytest.fixture
def store(store_url: str, clock: FrozenClock) -> Iterator[Store]:
    """Store(make_engine(url)) on a migrated schema, stamping change rows with the frozen clock."""
    store = Store(make_engine(store_url), clock=clock.now)
    migrate(store.engine)
    yield store
    store.close()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """Deadline-bounded polling: fails the test (with `what`) if the condition never holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.01)


def feed_rows(store: Store, after: int = 0) -> list[tuple[int, str, str, float]]:
    """The change rows with id > after, read on a connection of its own (so: committed rows only)."""
    with store.engine.connect() as conn:
        q = select(m.Change.id, m.Change.kind, m.Change.key, m.Change.at).where(m.Change.id > after)
        return [(int(r[0]), str(r[1]), str(r[2]), float(r[3])) for r in conn.execute(q.order_by(m.Change.id))]


def kinds_and_keys(store: Store, after: int = 0) -> list[tuple[str, str]]:
    return [(kind, key) for _, kind, key, _ in feed_rows(store, after)]


def newest_id(store: Store) -> int:
    return feed.latest_id(store.engine)


def credential(key_id: str, app_id: str, *, platform: bool) -> dirrepo.CredentialRecord:
    return dirrepo.CredentialRecord(
        key_id=key_id,
        app_id=app_id,
        kind="certificate" if platform else "password",
        display_name=None,
        secret_hash=None if platform else "0" * 64,
        hint=None,
        thumbprint_sha1=None,
        thumbprint_sha256=None,
        cert_der=b"der" if platform else None,
        sealed_private_key=b"sealed" if platform else None,
        start_at=0.0,
        end_at=2_000_000_000.0,
    )


def version(name_key: str, version_id: str, now: float) -> vault_repo.VersionRecord:
    return vault_repo.VersionRecord(
        name_key=name_key,
        version=version_id,
        sealed_value=b"sealed",
        content_type=None,
        tags=None,
        enabled=True,
        not_before=None,
        expires=None,
        created=now,
        updated=now,
    )


def seed_directory(store: Store, now: float) -> None:
    """A tenant, a subscription, two applications (one with a managed-style platform key and a password,
    one with a platform key) and a service principal."""
    with store.session() as s:
        dirrepo.add_tenant(s, TENANT, "tenant", now)
        dirrepo.add_subscription(s, SUB, TENANT, "sub", now)
        dirrepo.add_application(s, APP_OBJECT, APP, TENANT, "app", now)
        dirrepo.add_application(s, OTHER_APP_OBJECT, OTHER_APP, TENANT, "other", now)
        dirrepo.add_principal(
            s,
            object_id=PRINCIPAL_OBJECT,
            app_id=APP,
            tenant_id=TENANT,
            display_name="app",
            kind="Application",
            resource_id=None,
            now=now,
        )
        dirrepo.add_credential(s, credential("c-platform", APP, platform=True), now)
        dirrepo.add_credential(s, credential("c-password", APP, platform=False), now)
        dirrepo.add_credential(s, credential("c-other", OTHER_APP, platform=True), now)


def seed_vault(store: Store, now: float) -> None:
    with store.session() as s:
        for vault_key in (VAULT, OTHER_VAULT):
            for name_key in ("db-password", "api-key"):
                vault_repo.put_name(s, vault_key, name_key, name_key)
                vault_repo.add_version(s, vault_key, version(name_key, "v1", now))
                vault_repo.add_version(s, vault_key, version(name_key, "v2", now))


# -- what a transaction announces --------------------------------------------------------------------


def test_orm_inserts_append_exactly_their_keys_in_the_same_transaction(store: Store, clock: FrozenClock) -> None:
    committed: list[Sequence[Change]] = []
    store.on_commit(committed.append)
    before = newest_id(store)
    now = clock.now()
    with store.session() as s:
        dirrepo.add_tenant(s, TENANT, "tenant", now)
        dirrepo.add_subscription(s, SUB, TENANT, "sub", now)
        dirrepo.put_state(s, "issuer", value="https://example.test")
        fleet_repo.add_host(s, "host-1", "host one", PRINCIPAL, now)
        vault_repo.put_name(s, VAULT, "db-password", "DB-Password")
        vault_repo.add_version(s, VAULT, version("db-password", "v1", now))
        vault_repo.add_version(s, VAULT, version("db-password", "v2", now))  # same key: announced once
        # Nothing is announced before the transaction commits (another connection sees no row).
        assert feed_rows(store, before) == []

    rows = feed_rows(store, before)
    assert sorted((kind, key) for _, kind, key, _ in rows) == sorted(
        [
            ("tenants", TENANT),
            ("subscriptions", SUB),
            ("platform_state", "issuer"),
            ("hosts", "host-1"),
            ("vault_secrets", f"{VAULT}|db-password"),
            ("vault_secret_versions", f"{VAULT}|db-password"),
        ]
    )
    # One row per (kind, key), stamped with the store's clock, ids consecutive after what was there.
    assert [row[0] for row in rows] == list(range(before + 1, before + 1 + len(rows)))
    assert {row[3] for row in rows} == {now}
    # The committing process got exactly those rows, once.
    assert len(committed) == 1
    assert [(c.id, c.kind, c.key) for c in committed[0]] == [(i, kind, key) for i, kind, key, _ in rows]
    assert store.written_through == rows[-1][0]
    # Composite keys split back into their columns.
    vault_change = next(c for c in committed[0] if c.kind == "vault_secrets")
    assert vault_change.keys() == (VAULT, "db-password")


def test_orm_updates_and_deletes_announce_the_rows_they_touch(store: Store, clock: FrozenClock) -> None:
    seed_directory(store, clock.now())
    seed_vault(store, clock.now())

    before = newest_id(store)
    with store.session() as s:
        vault_repo.mark_deleted(s, VAULT, "api-key", clock.now(), clock.now() + 90 * 86400)
    assert kinds_and_keys(store, before) == [("vault_secrets", f"{VAULT}|api-key")]

    before = newest_id(store)
    with store.session() as s:
        assert dirrepo.delete_application(s, APP_OBJECT)  # ORM delete + two bulk deletes by app_id
    assert sorted(kinds_and_keys(store, before)) == [
        ("applications", APP),
        ("credentials", APP),
        ("service_principals", APP),
    ]


def test_a_rolled_back_transaction_appends_nothing(store: Store, clock: FrozenClock) -> None:
    committed: list[Sequence[Change]] = []
    store.on_commit(committed.append)
    before = newest_id(store)

    class Boom(Exception):
        pass

    with pytest.raises(Boom), store.session() as s:
        dirrepo.add_tenant(s, TENANT, "tenant", clock.now())  # flushed: the INSERT ran
        dirrepo.put_state(s, "issuer", value="x")
        raise Boom

    assert feed_rows(store, before) == []
    assert committed == []
    with store.session() as s:
        assert dirrepo.list_tenants(s) == []
        assert dirrepo.get_state(s, "issuer") is None

    # A transaction that fails in the database (a duplicate key at flush) appends nothing either.
    with store.session() as s:
        dirrepo.add_tenant(s, TENANT, "tenant", clock.now())
    after_first = newest_id(store)
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"), store.session() as s:
        dirrepo.put_state(s, "issuer", value="x")
        dirrepo.add_tenant(s, TENANT, "again", clock.now())
    assert feed_rows(store, after_first) == []
    # Nothing recorded by the failed transactions leaks into the next one.
    with store.session() as s:
        dirrepo.put_state(s, "other", value="y")
    assert kinds_and_keys(store, after_first) == [("platform_state", "other")]
    assert [[(c.kind, c.key) for c in changes] for changes in committed] == [
        [("tenants", TENANT)],
        [("platform_state", "other")],
    ]


def test_bulk_deletes_announce_the_affected_keys_not_any(store: Store, clock: FrozenClock) -> None:
    seed_directory(store, clock.now())
    seed_vault(store, clock.now())
    committed: list[Sequence[Change]] = []
    store.on_commit(committed.append)

    # delete_platform_credentials(APP): affects APP's platform key only; OTHER_APP's stays, unannounced.
    before = newest_id(store)
    with store.session() as s:
        dirrepo.delete_platform_credentials(s, APP)
    assert kinds_and_keys(store, before) == [("credentials", APP)]
    with store.session() as s:
        assert [c.key_id for c in dirrepo.list_credentials(s, APP)] == ["c-password"]
        assert [c.key_id for c in dirrepo.list_credentials(s, OTHER_APP)] == ["c-other"]

    # A bulk delete that matches nothing announces nothing (and calls no listener).
    before = newest_id(store)
    committed.clear()
    with store.session() as s:
        dirrepo.delete_platform_credentials(s, APP)
    assert feed_rows(store, before) == []
    assert committed == []

    # vault purge of one secret: both tables, that composite key only.
    before = newest_id(store)
    with store.session() as s:
        vault_repo.purge(s, VAULT, "db-password")
    assert sorted(kinds_and_keys(store, before)) == [
        ("vault_secret_versions", f"{VAULT}|db-password"),
        ("vault_secrets", f"{VAULT}|db-password"),
    ]

    # purge_vault: every secret of that vault, by composite key; the other vault is not announced.
    before = newest_id(store)
    with store.session() as s:
        vault_repo.purge_vault(s, OTHER_VAULT)
    assert sorted(kinds_and_keys(store, before)) == sorted(
        (kind, f"{OTHER_VAULT}|{name}")
        for kind in ("vault_secrets", "vault_secret_versions")
        for name in ("db-password", "api-key")
    )
    assert all(feed.ANY not in key for _, key in kinds_and_keys(store))


def test_other_bulk_statements_announce_the_affected_keys(store: Store, clock: FrozenClock) -> None:
    seed_directory(store, clock.now())
    group_key = f"/subscriptions/{SUB}/resourcegroups/rg"
    with store.session() as s:
        arm_repo.put_group(s, group_key, group_key, SUB, "rg", "westus", {}, clock.now())
        for principal in (PRINCIPAL, TENANT):
            arm_repo.add_assignment(
                s,
                arm_repo.AssignmentRecord(
                    name=f"a-{principal[:8]}",
                    scope=group_key,
                    role_definition_id="acdd72a7-3385-48ef-bd42-f606fba81ae7",
                    principal_id=principal,
                    principal_type="ServicePrincipal",
                    description=None,
                    created_by=None,
                    created_at=clock.now(),
                    updated_at=clock.now(),
                ),
            )
    before = newest_id(store)
    with store.session() as s:
        arm_repo.delete_assignments_for_principal(s, PRINCIPAL)
    assert kinds_and_keys(store, before) == [("role_assignments", PRINCIPAL)]

    # A Core-style bulk UPDATE through the session is read first, too.
    before = newest_id(store)
    with store.session() as s:
        s.execute(update(m.Credential).where(m.Credential.app_id == OTHER_APP).values(display_name="renamed"))
    assert kinds_and_keys(store, before) == [("credentials", OTHER_APP)]


def test_untellable_or_too_many_keys_announce_the_whole_kind(store: Store) -> None:
    # A bulk INSERT statement's keys are not read: the kind is announced as a whole.
    before = newest_id(store)
    with store.session() as s:
        s.execute(insert(m.PlatformState), [{"name": f"bulk-{i}", "value": "v"} for i in range(3)])
    assert kinds_and_keys(store, before) == [("platform_state", feed.ANY)]

    # More than MANY keys of one kind in one transaction: one ANY row, not MANY+1 rows.
    before = newest_id(store)
    with store.session() as s:
        for i in range(feed.MANY + 1):
            dirrepo.put_state(s, f"many-{i}", value="v")
    assert kinds_and_keys(store, before) == [("platform_state", feed.ANY)]

    # A bulk DELETE without a WHERE clause: every key of the kind.
    before = newest_id(store)
    with store.session() as s:
        s.execute(delete(m.PlatformState))
    assert kinds_and_keys(store, before) == [("platform_state", feed.ANY)]


def test_on_commit_listeners_get_the_committed_changes_synchronously(store: Store, clock: FrozenClock) -> None:
    calls: list[tuple[str, int, list[tuple[int, str, str]], list[tuple[int, str, str]], bool]] = []
    committing_thread = threading.get_ident()

    def first(changes: Sequence[Change]) -> None:
        # Called after commit: another connection already sees the rows (and the tenant).
        visible = [(i, kind, key) for i, kind, key, _ in feed_rows(store, changes[0].id - 1)]
        with store.engine.connect() as conn:
            tenant_visible = conn.execute(select(m.Tenant.id).where(m.Tenant.id == TENANT)).first() is not None
        calls.append(
            ("first", threading.get_ident(), [(c.id, c.kind, c.key) for c in changes], visible, tenant_visible)
        )

    def second(changes: Sequence[Change]) -> None:
        calls.append(("second", threading.get_ident(), [(c.id, c.kind, c.key) for c in changes], [], True))

    store.on_commit(first)
    store.on_commit(second)
    before = newest_id(store)
    with store.session() as s:
        dirrepo.add_tenant(s, TENANT, "tenant", clock.now())
        dirrepo.put_state(s, "issuer", value="x")
        assert calls == []  # not before commit
    # Synchronously: both have run by the time the block has exited, in the committing thread, in order.
    assert [c[0] for c in calls] == ["first", "second"]
    assert {c[1] for c in calls} == {committing_thread}
    expected = [(i, kind, key) for i, kind, key, _ in feed_rows(store, before)]
    assert sorted(key for _, _, key in expected) == sorted([TENANT, "issuer"])
    assert calls[0][2] == expected and calls[1][2] == expected
    assert calls[0][3] == expected  # committed when the listener ran
    assert calls[0][4] is True
    assert store.written_through == expected[-1][0]

    # A read-only transaction announces nothing and calls no listener.
    calls.clear()
    with store.session() as s:
        dirrepo.list_tenants(s)
    assert calls == []


# -- order and following ------------------------------------------------------------------------------


def test_concurrent_writers_get_increasing_ids_and_a_follower_sees_each_once_in_order(store: Store) -> None:
    threads_n, per_thread = 8, 50
    seen: list[Change] = []
    follower = Follower(store.engine, poll_interval=0.005)
    follower.subscribe(seen.extend)  # only ever called from the follower's thread
    per_writer_ids: dict[int, list[int]] = {n: [] for n in range(threads_n)}
    errors: list[BaseException] = []
    start_gate = threading.Barrier(threads_n)
    local = threading.local()

    def mine(changes: Sequence[Change]) -> None:
        per_writer_ids[local.n].extend(c.id for c in changes)

    store.on_commit(mine)

    def writer(n: int) -> None:
        local.n = n
        try:
            start_gate.wait(timeout=DEADLINE)
            for j in range(per_thread):
                with store.session() as s:
                    dirrepo.put_state(s, f"w{n}-{j}", value=str(j))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    follower.start()
    try:
        start = follower.position
        workers = [threading.Thread(target=writer, args=(n,), name=f"writer-{n}") for n in range(threads_n)]
        for t in workers:
            t.start()
        for t in workers:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in workers), "writers did not finish"
        assert errors == []

        max_id = newest_id(store)
        assert follower.wait_for(max_id, timeout=DEADLINE), f"follower stuck at {follower.position} < {max_id}"
        assert follower.position == max_id

        total = threads_n * per_thread
        stored = [row[0] for row in feed_rows(store, start)]
        # Gap-free: no id was handed out to a transaction that did not commit, none reused.
        assert stored == list(range(start + 1, start + 1 + total))
        assert max_id == start + total
        # Every change exactly once, in increasing order: a change committed "behind" one the follower had
        # already read would have been skipped and show up missing here.
        ids = [c.id for c in seen]
        assert ids == stored
        assert sorted(c.key for c in seen) == sorted(f"w{n}-{j}" for n in range(threads_n) for j in range(per_thread))
        assert {c.kind for c in seen} == {"platform_state"}
        # Each writer's own commits got increasing ids, one per transaction.
        for n, own in per_writer_ids.items():
            assert len(own) == per_thread, n
            assert own == sorted(own), n
        assert sorted(i for own in per_writer_ids.values() for i in own) == stored
        assert follower.healthy
    finally:
        follower.stop()


def test_follower_replays_what_was_committed_after_it_started(store: Store) -> None:
    """Start after some history: the follower delivers only what comes after its start, then keeps up."""
    with store.session() as s:
        dirrepo.put_state(s, "history", value="old")
    seen: list[Change] = []
    follower = Follower(store.engine, poll_interval=0.005)
    follower.subscribe(seen.extend)
    follower.start()
    try:
        start = follower.position
        assert start == newest_id(store)
        for i in range(5):
            with store.session() as s:
                dirrepo.put_state(s, f"k{i}", value="v")
        assert follower.wait_for(newest_id(store), timeout=DEADLINE)
        assert [(c.kind, c.key) for c in seen] == [("platform_state", f"k{i}") for i in range(5)]
        assert all(c.id > start for c in seen)
    finally:
        follower.stop()


def test_a_follower_that_missed_pruned_changes_is_told_to_forget_everything(store: Store) -> None:
    """Rows it never saw were pruned meanwhile: it delivers a RESET before the rest, once; a mere gap in the
    ids (a transaction that took an id and rolled back) is no reason for one."""
    seen: list[Change] = []
    release, paused = threading.Event(), threading.Event()

    def slow_listener(changes: Sequence[Change]) -> None:
        seen.extend(changes)
        if any(c.key == "pause" for c in changes) and not release.is_set():
            paused.set()
            release.wait(DEADLINE)  # holds the follower, as a stalled node would be

    follower = Follower(store.engine, poll_interval=0.005)
    follower.subscribe(slow_listener)
    follower.start()
    try:
        with store.session() as s:
            dirrepo.put_state(s, "pause", value="1")
        wait_until(paused.is_set, "the follower to deliver the first change")
        for key in ("lost-1", "lost-2", "kept"):
            with store.session() as s:
                dirrepo.put_state(s, key, value="1")
        kept = store.written_through
        with store.engine.begin() as conn:  # what Follower._prune does to old rows
            conn.execute(delete(m.Change).where(m.Change.id < kept))
        release.set()
        assert follower.wait_for(kept, timeout=DEADLINE)
        assert [(c.kind, c.key) for c in seen] == [
            ("platform_state", "pause"),
            (feed.RESET, feed.ANY),
            ("platform_state", "kept"),
        ]

        # An id taken by a transaction that rolled back (a gap on PostgreSQL; reused on SQLite): no RESET.
        with store.engine.connect() as conn:
            conn.execute(insert(m.Change).values(kind="platform_state", key="rolled-back", at=0.0))
            conn.rollback()
        with store.session() as s:
            dirrepo.put_state(s, "after-gap", value="1")
        assert follower.wait_for(store.written_through, timeout=DEADLINE)
        assert [(c.kind, c.key) for c in seen[3:]] == [("platform_state", "after-gap")]
    finally:
        release.set()
        follower.stop()


# -- PostgreSQL: a lost LISTEN connection, a database that goes away ----------------------------------

FOLLOWER_APP_NAME = "lanyard_test_feed_follower"


def test_follower_survives_a_dropped_listen_connection(postgres: PostgresServer, pg_database: str) -> None:
    from psycopg import sql

    database = str(make_url(pg_database).database)
    allow_connections = sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}")
    store = Store(make_engine(pg_database))
    migrate(store.engine)
    # The follower gets an engine of its own whose connections carry an application_name, so its LISTEN
    # backend can be told apart from every other connection to the database.
    follower_engine = make_engine(f"{pg_database}?application_name={FOLLOWER_APP_NAME}")
    follower = Follower(follower_engine, poll_interval=0.005, heartbeat=0.2)
    seen: list[Change] = []
    follower.subscribe(seen.extend)
    admin = postgres.connect()
    follower.start()
    try:
        wait_until(lambda: follower.healthy, "the follower to connect")
        with store.session() as s:
            dirrepo.put_state(s, "before", value="1")
        assert follower.wait_for(store.written_through, timeout=DEADLINE)
        assert [c.key for c in seen] == ["before"]

        # Only the follower's LISTEN connection is left with that name once its pool is disposed.
        follower_engine.dispose()
        listen_pids: list[int] = []

        def one_listener() -> bool:
            rows = admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = %s"
                " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
                " AND (query ILIKE 'LISTEN%%' OR query ILIKE 'SELECT id, kind, key, at FROM changes%%'"
                "      OR query ILIKE 'SELECT min(id) FROM changes%%')",
                (database, FOLLOWER_APP_NAME),
            ).fetchall()
            listen_pids[:] = [int(r[0]) for r in rows]
            return len(listen_pids) == 1

        wait_until(one_listener, "exactly one LISTEN backend of the follower")

        # Keep it from reconnecting (the store's pooled connection stays), then kill its connection.
        with store.session() as s:  # make sure the store holds a pooled connection already
            dirrepo.get_state(s, "before")
        admin.execute(allow_connections.format(sql.Identifier(database), sql.SQL("false")))
        try:
            assert admin.execute("SELECT pg_terminate_backend(%s)", (listen_pids[0],)).fetchone() == (True,)
            wait_until(lambda: not follower.healthy, "the follower to notice its connection is gone")

            # Commits while it is down: their NOTIFYs reach nobody.
            for i in range(3):
                with store.session() as s:
                    dirrepo.put_state(s, f"while-down-{i}", value=str(i))
            missed = [row[0] for row in feed_rows(store) if row[0] > seen[-1].id]
            assert len(missed) == 3
            assert follower.position < missed[0]  # it really was not delivered yet
        finally:
            admin.execute(allow_connections.format(sql.Identifier(database), sql.SQL("true")))

        # It reconnects, replays what it missed, and is healthy again.
        assert follower.wait_for(missed[-1], timeout=DEADLINE), f"follower stuck at {follower.position}"
        wait_until(lambda: follower.healthy, "the follower to report healthy again")
        assert [c.key for c in seen] == ["before", "while-down-0", "while-down-1", "while-down-2"]
        assert [c.id for c in seen] == sorted({c.id for c in seen})

        # And it keeps following: a new commit arrives too.
        with store.session() as s:
            dirrepo.put_state(s, "after", value="1")
        assert follower.wait_for(store.written_through, timeout=DEADLINE)
        assert seen[-1].key == "after"
        assert len(seen) == 5
    finally:
        follower.stop()
        follower_engine.dispose()
        store.close()
        admin.close()


@pytest.mark.timeout(60)
def test_a_database_that_goes_away_raises_store_unavailable(postgres: PostgresServer) -> None:
    # `postgres` is shared by the whole session and must not be stopped: this test stops its own cluster
    # (requesting `postgres` only applies the skip-or-fail rule when PostgreSQL is not installed).
    del postgres
    with PostgresServer(max_connections=20) as server:
        url = server.create_database("away")
        store = Store(make_engine(url))
        try:
            migrate(store.engine)
            with store.session() as s:
                dirrepo.put_state(s, "kept", value="1")

            server.stop("immediate")
            with pytest.raises(StoreUnavailable), store.session() as s:
                dirrepo.put_state(s, "lost", value="1")
            with pytest.raises(StoreUnavailable), store.session() as s:
                dirrepo.get_state(s, "kept")

            server.start()
            with store.session() as s:
                assert dirrepo.get_state(s, "kept") == ("1", None)
                dirrepo.put_state(s, "after", value="1")
            with store.session() as s:
                assert dirrepo.get_state(s, "after") == ("1", None)
                assert dirrepo.get_state(s, "lost") is None
        finally:
            store.close()


# -- the start-up lock --------------------------------------------------------------------------------


def test_startup_lock_admits_one_thread_at_a_time(store: Store, store_url: str) -> None:
    engine = store.engine
    errors: list[BaseException] = []

    # 1. While A holds it, B (already trying) does not get in; it does once A leaves.
    a_inside, b_trying, b_entered = threading.Event(), threading.Event(), threading.Event()
    b_entered_while_a_inside: list[bool] = []
    order: list[str] = []

    def a() -> None:
        try:
            with startup_lock(engine, store_url):
                order.append("A enter")
                a_inside.set()
                assert b_trying.wait(DEADLINE)
                # Bounded wait on a condition: if the lock let B in, this returns True at once.
                b_entered_while_a_inside.append(b_entered.wait(0.5))
                order.append("A exit")
        except BaseException as exc:
            errors.append(exc)

    def b() -> None:
        try:
            assert a_inside.wait(DEADLINE)
            b_trying.set()
            with startup_lock(engine, store_url):
                order.append("B enter")
                b_entered.set()
                order.append("B exit")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=DEADLINE)
    assert errors == []
    assert b_entered_while_a_inside == [False]
    assert order == ["A enter", "A exit", "B enter", "B exit"]

    # 2. Several threads, several rounds each: enter/exit events never interleave.
    events: list[tuple[str, int]] = []
    events_lock = threading.Lock()
    gate = threading.Barrier(3)

    def contender(n: int) -> None:
        try:
            gate.wait(timeout=DEADLINE)
            for _ in range(4):
                with startup_lock(engine, store_url):
                    with events_lock:
                        events.append(("enter", n))
                    with store.session() as s:  # some real work inside
                        dirrepo.put_state(s, f"lock-{n}", value=str(len(events)))
                    with events_lock:
                        events.append(("exit", n))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=contender, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert len(events) == 3 * 4 * 2
    for i in range(0, len(events), 2):
        assert events[i][0] == "enter" and events[i + 1] == ("exit", events[i][1]), events


# -- migrations ---------------------------------------------------------------------------------------


def test_head_revision_is_the_newest_migration() -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations_package.__file__).parent))
    script = ScriptDirectory.from_config(cfg)
    assert script.get_heads() == [HEAD_REVISION], "one head, and db.HEAD_REVISION names it"
    assert script.get_current_head() == HEAD_REVISION
    revisions = list(script.walk_revisions())
    assert revisions[0].revision == HEAD_REVISION
    files = sorted(
        p for p in (Path(migrations_package.__file__).parent / "versions").glob("*.py") if p.stem[0].isdigit()
    )
    assert len(revisions) == len(files)


def test_migrated_schema_matches_the_models(store: Store) -> None:
    inspector = inspect(store.engine)
    tables = set(inspector.get_table_names()) - {"alembic_version"}
    assert tables == set(m.Base.metadata.tables)
    for name, table in m.Base.metadata.tables.items():
        columns = {c["name"] for c in inspector.get_columns(name)}
        assert columns == {c.name for c in table.columns}, name
        primary = set(inspector.get_pk_constraint(name)["constrained_columns"])
        assert primary == {c.name for c in table.primary_key.columns}, name
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == HEAD_REVISION
    migrate(store.engine)  # at head already: a no-op


def test_bulk_delete_announces_a_row_committed_between_its_pre_read_and_the_delete(
    store: Store, store_url: str, clock: FrozenClock
) -> None:
    """Another node commits a row the bulk DELETE then deletes, after the DELETE's keys were read."""
    now = clock.now()
    seed_directory(store, now)
    with store.session() as s:
        dirrepo.delete_platform_credentials(s, APP)  # APP now has no platform key: the pre-read finds nothing
    other_node = Store(make_engine(store_url), clock=clock.now)
    announced_by_other: list[int] = []

    def other_node_commits_in_between(state: ORMExecuteState) -> None:
        # Runs after feed.record_statement (registered after it), just before the DELETE itself executes.
        table = getattr(state.statement, "table", None)
        if state.is_delete and getattr(table, "name", None) == "credentials" and not announced_by_other:
            with other_node.session() as s2:
                dirrepo.add_credential(s2, credential("c-new", APP, platform=True), now)
            announced_by_other.append(other_node.written_through)

    event.listen(store._sessions, "do_orm_execute", other_node_commits_in_between)
    try:
        with store.session() as s:
            dirrepo.delete_platform_credentials(s, APP)
        assert announced_by_other, "the concurrent insert did not run"
        with store.session() as s:
            # This transaction's DELETE removed the other node's new key ...
            assert [c.key_id for c in dirrepo.list_credentials(s, APP)] == ["c-password"]
        # ... so it must announce APP (or every credential) after the other node's insert was announced;
        # otherwise a node that re-read APP's credentials in between keeps serving the deleted key.
        announced = kinds_and_keys(store, announced_by_other[0])
        assert ("credentials", APP) in announced or ("credentials", feed.ANY) in announced
    finally:
        event.remove(store._sessions, "do_orm_execute", other_node_commits_in_between)
        other_node.close()


def test_a_join_token_is_used_once_when_two_nodes_race(store: Store, store_url: str, clock: FrozenClock) -> None:
    """Another node uses the token just before this session's claim executes: exactly one wins."""
    now = clock.now()
    with store.session() as s:
        fleet_repo.add_join_token(s, "token-hash", "host", now + 600, None)
    other_node = Store(make_engine(store_url), clock=clock.now)
    used: dict[str, bool] = {}

    def other_node_uses_it_first(state: ORMExecuteState) -> None:
        table = getattr(state.statement, "table", None)
        if state.is_update and getattr(table, "name", None) == "join_tokens" and "other" not in used:
            used["other"] = False
            with other_node.session() as s2:
                used["other"] = fleet_repo.use_join_token(s2, "token-hash", now) is not None

    event.listen(store._sessions, "do_orm_execute", other_node_uses_it_first)
    try:
        with store.session() as s:
            used["mine"] = fleet_repo.use_join_token(s, "token-hash", now) is not None
        assert "other" in used, "the concurrent use did not run"
        assert sorted(used.values()) == [False, True], f"a one-time join token was used {sum(used.values())} times"
    finally:
        event.remove(store._sessions, "do_orm_execute", other_node_uses_it_first)
        other_node.close()
