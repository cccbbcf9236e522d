"""Engine set-up and migrations. SQLite (WAL, synchronous=FULL) by default; PostgreSQL by URL."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import ORMExecuteState, Session, sessionmaker

from lanyard.core.errors import ConfigError

_MIGRATIONS = Path(__file__).with_name("migrations")
HEAD_REVISION = "0004"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    # FULL: an acknowledged write survives a power cut, not just a process kill (SECURITY.md F8).
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
        return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
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

    with engine.connect() as conn:
        if inspect(conn).has_table("alembic_version"):
            current = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            if current == HEAD_REVISION:
                return

    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def _mark_write(session: Session, *_: Any) -> None:
    session.info["wrote"] = True


def _mark_dml(state: ORMExecuteState) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        state.session.info["wrote"] = True


class Store:
    """A unit of work per call: ``with store.session() as s: ...`` commits or rolls back as a whole.

    `generation` counts committed write transactions in this process, so in-memory caches of
    stored data can tell in O(1) that they may be stale.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        event.listen(self._sessions, "after_flush", _mark_write)
        event.listen(self._sessions, "do_orm_execute", _mark_dml)
        self.generation = 0
        self._generation_lock = threading.Lock()
        self._on_commit: list[Callable[[int], None]] = []

    def on_commit(self, callback: Callable[[int], None]) -> None:
        """Call `callback(generation)` after every committed write (from the committing thread)."""
        self._on_commit.append(callback)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session
        if session.info.pop("wrote", False):
            with self._generation_lock:  # commits run on many threads; never lose a bump
                self.generation += 1
                generation = self.generation
            for callback in self._on_commit:
                callback(generation)

    def close(self) -> None:
        self.engine.dispose()
