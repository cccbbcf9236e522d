"""Engine set-up and migrations. SQLite (WAL, synchronous=FULL) by default; PostgreSQL by URL."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from lanyard.core.errors import ConfigError, StoreUnavailable
from lanyard.storage import feed

_MIGRATIONS = Path(__file__).with_name("migrations")
HEAD_REVISION = "0012"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    # FULL: an acknowledged write survives a power cut, not just a process kill (docs/security.md T10, F8).
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def make_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise ConfigError(f"database URL is not valid: {parsed_name(url)}") from exc
    if parsed.get_backend_name() == "sqlite":
        # As many pooled connections as worker threads, so busy moments do not open and close connections.
        engine = create_engine(url, connect_args={"check_same_thread": False}, pool_size=16, max_overflow=32)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.get_backend_name() == "postgresql":
        # Bounded waits everywhere: a database that went away must turn into a 503 within seconds,
        # never a hung request (connect, pool checkout and each statement have a deadline).
        return create_engine(
            url,
            pool_size=10,
            max_overflow=20,
            pool_pre_ping=True,
            pool_timeout=5,
            connect_args={**feed.POSTGRES_TIMEOUTS, "options": "-c statement_timeout=10000"},
        )
    raise ConfigError(f"unsupported database backend {parsed.get_backend_name()!r}")


def parsed_name(url: str) -> str:
    """The URL without its password, safe for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable>"


def migrate(engine: Engine) -> None:
    """Bring the schema to head. Cheap when it is already there: one SELECT, no Alembic import."""
    from sqlalchemy import inspect, text

    current = None
    with engine.connect() as conn:
        if inspect(conn).has_table("alembic_version"):
            current = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            if current == HEAD_REVISION:
                return

    from alembic import command
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    known = {script.revision for script in ScriptDirectory.from_config(cfg).walk_revisions()}
    if current is not None and current not in known:
        # A newer Lanyard migrated this database; running older code on it would be guesswork.
        raise ConfigError(
            f"the database is at schema revision {current}, newer than this Lanyard knows (up to {HEAD_REVISION}): "
            "upgrade Lanyard on this node, or restore a backup taken before the upgrade"
        )
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


class Store:
    """A unit of work per call: ``with store.session() as s: ...`` commits or rolls back as a whole.

    Every transaction that changes something cached appends its change rows before it commits
    (storage/feed.py), and the committing process hands them to `on_commit` listeners right after.
    A database that cannot be reached surfaces as StoreUnavailable (503 in every API's format).
    """

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        event.listen(self._sessions, "after_flush", feed.record_flush)
        event.listen(self._sessions, "do_orm_execute", feed.record_statement)
        self._clock = clock
        self._on_commit: list[Callable[[Sequence[feed.Change]], None]] = []
        self._written_lock = threading.Lock()
        self.written_through = 0  # the newest change id this process committed

    def on_commit(self, callback: Callable[[Sequence[feed.Change]], None]) -> None:
        """Call `callback(changes)` after every committed write, from the committing thread."""
        self._on_commit.append(callback)

    @contextmanager
    def session(self) -> Iterator[Session]:
        changes: list[feed.Change] = []
        try:
            with self._sessions.begin() as session:
                yield session
                session.flush()
                touched = session.info.pop("feed", None)
                if touched:
                    changes = feed.append(session, touched, self._clock())
        except (OperationalError, InterfaceError) as exc:
            if exc.connection_invalidated or _unreachable(exc):
                raise StoreUnavailable("the database is unavailable") from exc
            raise
        if changes:
            with self._written_lock:
                self.written_through = max(self.written_through, changes[-1].id)
            for callback in self._on_commit:
                callback(changes)

    def close(self) -> None:
        self.engine.dispose()


def _unreachable(exc: DBAPIError) -> bool:
    """Errors that mean the database is gone or refusing us, not that the statement was wrong."""
    if isinstance(exc, InterfaceError):
        return True
    text = str(exc.orig).lower() if exc.orig is not None else ""
    markers = ("connection", "server closed", "terminating", "could not connect", "timeout", "shutting down")
    return any(marker in text for marker in markers)
