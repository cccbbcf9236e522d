"""Schema migrations at start: a database migrated by a newer Lanyard is refused in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from lanyard.core.errors import ConfigError
from lanyard.storage.db import HEAD_REVISION, make_engine, migrate


def test_a_database_newer_than_the_code_is_refused_with_the_fix(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'lanyard.db'}")
    migrate(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
    with pytest.raises(ConfigError) as caught:
        migrate(engine)
    message = str(caught.value)
    assert "9999_from_the_future" in message and HEAD_REVISION in message and "upgrade Lanyard" in message
    assert "\n" not in message


def test_migrating_a_current_database_again_changes_nothing(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'lanyard.db'}")
    migrate(engine)
    migrate(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == HEAD_REVISION
