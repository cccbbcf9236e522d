"""The start-up lock: migrations and first start run by one node at a time.

PostgreSQL: a session-level advisory lock on a dedicated connection. SQLite (several processes on
one file): an exclusive lock on a file beside the database. Either way a node that starts while
another bootstraps waits, then finds the work done and only loads it.
"""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Iterator

from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from lanyard.core.errors import ConfigError

STARTUP_LOCK = 0x4C414E5953545254  # arbitrary, fixed
LOCK_WAIT = 120.0


@contextlib.contextmanager
def startup_lock(engine: Engine, url: str, wait: float = LOCK_WAIT) -> Iterator[None]:
    if engine.dialect.name == "postgresql":
        with _advisory_lock(engine, wait):
            yield
        return
    database = make_url(url).database
    if not database or database == ":memory:":
        yield
        return
    with open(f"{database}.startup-lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _advisory_lock(engine: Engine, wait: float) -> Iterator[None]:
    with engine.connect() as conn:
        deadline = time.monotonic() + wait
        while not conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": STARTUP_LOCK}).scalar():
            conn.rollback()
            if time.monotonic() > deadline:
                raise ConfigError(f"another node held the start-up lock for more than {wait:.0f} s")
            time.sleep(0.1)
        conn.commit()
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": STARTUP_LOCK})
            conn.commit()
