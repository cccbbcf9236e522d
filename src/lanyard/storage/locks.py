"""Transaction-scoped locks that serialize one kind of job across every node sharing a database.

PostgreSQL: `pg_advisory_xact_lock`, held until the transaction ends. SQLite: a write to a table no
cache follows (so it announces nothing on the change feed), which takes the database's one write
lock: reads before a transaction's first write would not be inside it. Take the lock first, then
read what the job decides on.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import text
from sqlalchemy.orm import Session


def lock_id(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF


def transaction_lock(s: Session, name: str) -> None:
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_id(name)})
    else:
        s.execute(text("UPDATE alembic_version SET version_num = version_num"))
