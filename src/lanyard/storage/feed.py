"""The change feed: how every node learns of every other node's writes.

Every transaction that changes a row some node may cache appends one `changes` row per (kind, key)
it touched, in the same transaction, so a change and its announcement commit or vanish together.
Kinds are table names; keys are the column(s) caches are keyed by (FEED_KEYS). Nothing has to
remember to announce: the session hooks below see ORM flushes and bulk UPDATE/DELETE statements
(whose affected keys are read first, in the same transaction).

Order: on PostgreSQL, appends take one transaction-scoped advisory lock, so ids are handed out and
committed in the same order and a follower that has seen id N has seen everything below N (no
gap replay needed, unlike sequence ids committed out of order). SQLite has one writer at a time.

Following: PostgreSQL NOTIFYs on commit and each node LISTENs, and on every (re)connect and every
heartbeat reads everything after the last id it applied, so a lost NOTIFY costs at most one
heartbeat. SQLite (several processes on one file) is followed with one indexed query every few
milliseconds. The committing process also hands its own changes to its listeners at once, so a
node always reads its own writes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, delete, func, insert, select, text, update
from sqlalchemy.orm import ORMExecuteState, Session

from lanyard.observe import metrics
from lanyard.storage import models as m

log = logging.getLogger("lanyard.feed")

# Table -> the columns its change key is made of. Tables absent here are never cached by anyone.
FEED_KEYS: dict[str, tuple[str, ...]] = {
    "tenants": ("id",),
    "subscriptions": ("id",),
    "platform_state": ("name",),
    "applications": ("app_id",),
    "service_principals": ("app_id",),
    "credentials": ("app_id",),
    "federated_credentials": ("app_id",),
    "users": ("object_id",),
    "groups": ("object_id",),
    "group_members": ("member_id",),
    "signing_keys": ("kid",),
    "resource_groups": ("key",),
    "resources": ("key",),
    "resource_identities": ("resource_key",),
    "role_assignments": ("principal_id",),
    "hosts": ("id",),
    "placements": ("host_id",),
    "vault_secrets": ("vault_key", "name_key"),
    "vault_secret_versions": ("vault_key", "name_key"),
}
SEPARATOR = "|"
ANY = "*"  # the key of a change whose keys could not be told: every key of the kind
RESET = "*"  # the kind of a change that means "forget everything" (a gap in the feed)
CHANNEL = "lanyard_changes"
# One transaction-scoped advisory lock orders every append (an arbitrary, fixed 64-bit id).
APPEND_LOCK = 0x4C414E5946454544
MANY = 500  # more keys of one kind in one transaction than this: announce the kind as a whole
RETAIN_ROWS = 200_000
RETAIN_SECONDS = 86_400.0
# A peer that vanishes without closing the connection (a dropped network) is noticed in seconds,
# not after TCP's ~15 minutes: keepalives and a user timeout on every PostgreSQL connection.
POSTGRES_TIMEOUTS: dict[str, Any] = {
    "connect_timeout": 3,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}
NODE_HEARTBEAT = 1.0  # a node rewrites its position at least this often
NODE_WINDOW = 3.0  # a node silent this long is gone (killed): writes stop waiting for it
SETTLE_RECHECK = 0.003


@dataclass(frozen=True)
class Change:
    id: int
    kind: str
    key: str

    def keys(self) -> tuple[str, ...]:
        return tuple(self.key.split(SEPARATOR))


Listener = Callable[[Sequence[Change]], None]


def _touched(session: Session) -> set[tuple[str, str]]:
    touched: set[tuple[str, str]] = session.info.setdefault("feed", set())
    return touched


def _key_of(columns: tuple[str, ...], values: Iterable[Any]) -> str:
    return SEPARATOR.join("" if v is None else str(v) for v in values)


def record_flush(session: Session, *_: Any) -> None:
    touched = _touched(session)
    for obj in (*session.new, *session.dirty, *session.deleted):
        table = getattr(obj, "__tablename__", None)
        columns = FEED_KEYS.get(table or "")
        if columns:
            touched.add((str(table), _key_of(columns, (getattr(obj, c) for c in columns))))


def record_statement(state: ORMExecuteState) -> Any:
    """A bulk UPDATE or DELETE: read which keys it affects, then run it here and compare counts.

    The keys are read by a SELECT just before the statement; a row another transaction commits in
    between (READ COMMITTED takes a snapshot per statement) would be changed without being named,
    so when the statement touches more rows than were read, the whole kind is announced."""
    if not (state.is_update or state.is_delete or state.is_insert):
        return None
    table = getattr(state.statement, "table", None)
    name = getattr(table, "name", None)
    columns = FEED_KEYS.get(name or "")
    if table is None or not columns:
        return None
    touched = _touched(state.session)
    where = getattr(state.statement, "whereclause", None)
    if state.is_insert or where is None:
        touched.add((str(name), ANY))
        return None
    rows = state.session.execute(select(*(table.c[c] for c in columns)).where(where)).all()
    for row in rows:
        touched.add((str(name), _key_of(columns, row)))
    result = state.invoke_statement()
    if getattr(result, "rowcount", -1) != len(rows):
        touched.add((str(name), ANY))
    return result


def append(session: Session, touched: set[tuple[str, str]], now: float) -> list[Change]:
    """Write the transaction's change rows (called just before commit)."""
    by_kind: dict[str, set[str]] = {}
    for kind, key in touched:
        by_kind.setdefault(kind, set()).add(key)
    rows: list[dict[str, Any]] = []
    for kind, keys in sorted(by_kind.items()):
        if ANY in keys or len(keys) > MANY:
            keys = {ANY}
        rows.extend({"kind": kind, "key": key[:1200], "at": now} for key in sorted(keys))
    postgres = session.get_bind().dialect.name == "postgresql"
    if postgres:
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": APPEND_LOCK})
    changes = []
    for row in rows:
        new_id = session.execute(insert(m.Change).returning(m.Change.id), row).scalar_one()
        changes.append(Change(int(new_id), row["kind"], row["key"]))
    if postgres:
        session.execute(text("SELECT pg_notify(:c, :p)"), {"c": CHANNEL, "p": str(changes[-1].id)})
    return changes


def newest(s: Session) -> int:
    """The newest change id, read in the caller's transaction: what it reads next reflects at least
    every change up to this id."""
    return int(s.execute(select(func.coalesce(func.max(m.Change.id), 0))).scalar_one())


def list_nodes(s: Session, now: float) -> list[dict[str, Any]]:
    """The server processes of this platform, newest first, with whether each is live."""
    rows = s.scalars(select(m.Node).order_by(m.Node.started_at.desc()))
    return [
        {
            "id": r.id,
            "url": r.url,
            "pid": r.pid,
            "position": r.position,
            "startedAt": r.started_at,
            "seenAt": r.seen_at,
            "live": r.seen_at >= now - NODE_WINDOW,
        }
        for r in rows
    ]


def latest_id(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.coalesce(func.max(m.Change.id), 0))).scalar_one())


class Follower:
    """Follows the feed in a background thread and hands every new change to the listeners.

    `position` is the highest id applied: every change at or below it has reached the listeners.
    A registered node (a server process) also writes its position to `nodes`, so that a write can
    wait (`settle`) until every live node has applied it: then the next request, on any node, sees
    it; no node serves a revoked permission after the call that revoked it returned.
    """

    def __init__(self, engine: Engine, *, poll_interval: float = 0.01, heartbeat: float = 0.5) -> None:
        self.engine = engine
        self.poll_interval = poll_interval
        self.heartbeat = heartbeat
        self.position = 0
        self.healthy = False
        self.node_id: str | None = None
        self._reported = (-1, 0.0)  # (position, when) last written to `nodes`
        self._settled = 0
        self._listeners: list[Listener] = []
        self._applied = threading.Condition()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_prune = 0.0

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def dispatch(self, changes: Sequence[Change]) -> None:
        for listener in self._listeners:
            try:
                listener(changes)
            except Exception:  # one broken listener must not stop the others from invalidating
                log.exception("a change-feed listener failed")

    def start(self, node_url: str | None = None) -> None:
        # Caches start empty, so there is nothing to replay from before this process began.
        self.position = latest_id(self.engine)
        if node_url is not None:
            self._register(node_url)
        postgres = self.engine.dialect.name == "postgresql"
        self._thread = threading.Thread(
            target=self._listen if postgres else self._poll, name="change-feed", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.node_id is not None:
            try:
                with self.engine.begin() as conn:
                    conn.execute(delete(m.Node).where(m.Node.id == self.node_id))
            except Exception as exc:  # the database is gone: the row ages out of NODE_WINDOW
                log.warning("could not deregister this node (%s)", type(exc).__name__)

    # -- nodes ----------------------------------------------------------------------------------

    def _register(self, url: str) -> None:
        self.node_id = str(uuid.uuid4())
        now = time.time()
        with self.engine.begin() as conn:
            conn.execute(
                delete(m.Node).where(m.Node.seen_at < now - RETAIN_SECONDS)  # long-dead nodes
            )
            conn.execute(
                insert(m.Node).values(
                    id=self.node_id, url=url[:300], pid=os.getpid(), position=self.position, started_at=now, seen_at=now
                )
            )
        self._reported = (self.position, now)

    def _report(self) -> None:
        if self.node_id is None:
            return
        now = time.time()
        if self._reported[0] == self.position and now - self._reported[1] < NODE_HEARTBEAT:
            return
        with self.engine.begin() as conn:
            conn.execute(update(m.Node).where(m.Node.id == self.node_id).values(position=self.position, seen_at=now))
        self._reported = (self.position, now)

    def _nodes_behind(self, change_id: int) -> int:
        q = select(func.count()).select_from(m.Node)
        q = q.where(m.Node.seen_at >= time.time() - NODE_WINDOW, m.Node.position < change_id)
        if self.node_id is not None:
            # This node applied its own commits synchronously (Store.on_commit), before the write
            # returned from its transaction: only the others are waited for.
            q = q.where(m.Node.id != self.node_id)
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar_one())

    async def settle(self, change_id: int, timeout: float = 2.0) -> bool:
        """Wait until every other live node has applied `change_id` (bounded by `timeout`)."""
        if change_id <= self._settled:
            return True
        deadline = time.monotonic() + timeout
        while True:
            try:
                behind = await asyncio.to_thread(self._nodes_behind, change_id)
            except Exception as exc:
                log.warning("cannot see the other nodes (%s)", type(exc).__name__)
                return False
            if behind == 0:
                self._settled = max(self._settled, change_id)
                return True
            if time.monotonic() >= deadline:
                log.warning("%d node(s) did not apply change %d in %.1f s", behind, change_id, timeout)
                return False
            await asyncio.sleep(SETTLE_RECHECK)

    def wake(self) -> None:
        """A local commit: look now rather than at the next tick."""
        self._wake.set()

    def wait_for(self, change_id: int, timeout: float) -> bool:
        with self._applied:
            return self._applied.wait_for(lambda: self.position >= change_id, timeout)

    # -- reading --------------------------------------------------------------------------------

    def _fetch(self, execute: Callable[[str, dict[str, Any]], list[tuple[Any, ...]]]) -> None:
        while True:
            rows = execute(
                "SELECT id, kind, key, at FROM changes WHERE id > :p ORDER BY id LIMIT 2000", {"p": self.position}
            )
            if not rows:
                return
            if self.position and int(rows[0][0]) > self.position + 1:
                oldest = execute("SELECT min(id) FROM changes", {})[0][0]
                if oldest is not None and int(oldest) > self.position + 1:
                    # Rows we never saw were pruned while we were away: forget everything.
                    log.warning("change feed: changes after %d were pruned; clearing every cache", self.position)
                    self.dispatch([Change(int(rows[0][0]), RESET, ANY)])
            changes = [Change(int(r[0]), str(r[1]), str(r[2])) for r in rows]
            self.dispatch(changes)
            metrics.FEED_LAG.observe(max(0.0, time.time() - float(rows[-1][3] or 0.0)))
            with self._applied:
                self.position = changes[-1].id
                self._applied.notify_all()
            if len(rows) < 2000:
                return

    def _prune(self) -> None:
        now = time.time()
        if now - self._last_prune < 600:
            return
        self._last_prune = now
        try:
            with self.engine.begin() as conn:
                newest = conn.execute(select(func.coalesce(func.max(m.Change.id), 0))).scalar_one()
                conn.execute(
                    delete(m.Change).where((m.Change.id < newest - RETAIN_ROWS) | (m.Change.at < now - RETAIN_SECONDS))
                )
        except Exception as exc:
            log.warning("change feed: pruning failed (%s); will try again later", type(exc).__name__)

    def _poll(self) -> None:
        # A private connection asks SQLite whether anyone else committed (PRAGMA data_version, a few
        # microseconds) on every tick, and reads the feed only then or when woken by a local commit:
        # a full query every 5 ms was 10 % of a core on an idle platform.
        import sqlite3

        database = self.engine.url.database or ""
        conn = sqlite3.connect(database, timeout=10, check_same_thread=False, isolation_level=None)

        def execute(sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
            return [tuple(r) for r in conn.execute(sql, params).fetchall()]

        seen = None
        try:
            while not self._stop.is_set():
                try:
                    version = conn.execute("PRAGMA data_version").fetchone()[0]
                    if version != seen or self._wake.is_set():
                        self._wake.clear()
                        seen = version
                        self._fetch(execute)
                    self.healthy = True
                    self._report()
                    self._prune()
                except Exception as exc:
                    self.healthy = False
                    log.warning("change feed: cannot read the database (%s); retrying", type(exc).__name__)
                    self._stop.wait(0.5)
                self._wake.wait(self.poll_interval)
        finally:
            conn.close()

    def _listen(self) -> None:
        import psycopg

        url = self.engine.url.set(drivername="postgresql")
        conninfo = url.render_as_string(hide_password=False)
        delay = 0.1
        while not self._stop.is_set():
            try:
                with psycopg.connect(conninfo, autocommit=True, **POSTGRES_TIMEOUTS) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")

                    def execute(sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
                        # psycopg placeholders; the SQL above uses :p.
                        return [tuple(r) for r in conn.execute(sql.replace(":p", "%(p)s"), params).fetchall()]

                    self._fetch(execute)  # replay whatever happened while we were not listening
                    self.healthy = True
                    delay = 0.1
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=self.heartbeat, stop_after=1):
                            pass
                        # On a NOTIFY or a quiet heartbeat alike: the heartbeat both bounds a lost
                        # NOTIFY and finds out that the connection died.
                        self._fetch(execute)
                        self._report()
                        self._prune()
            except Exception as exc:
                if self._stop.is_set():
                    return
                self.healthy = False
                log.warning("change feed: LISTEN connection lost (%s); reconnecting", type(exc).__name__)
                self._stop.wait(delay)
                delay = min(delay * 2, 2.0)
