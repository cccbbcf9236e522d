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


def test_0010_keeps_existing_applications_and_users_and_goes_back(tmp_path: Path) -> None:
    """Rows made before 0010 get no redirect URIs and no forced change; 0010 also downgrades cleanly."""
    from alembic import command
    from alembic.config import Config

    from lanyard.storage.db import _MIGRATIONS

    engine = make_engine(f"sqlite:///{tmp_path / 'lanyard.db'}")
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0009")
        conn.execute(text("INSERT INTO tenants VALUES ('t', 'T', 0)"))
        conn.execute(text("INSERT INTO applications VALUES ('o', 'a', 't', 'app', 0)"))
        conn.execute(text("INSERT INTO users VALUES ('u', 't', 'u@x.example', 'u@x.example', 'U', 'u', 1, 'h', 0, 0)"))
    migrate(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT redirect_uris, fallback_public_client FROM applications")).one() == (
            "{}",
            None,
        )
        assert conn.execute(text("SELECT force_change_password FROM users")).scalar() in (0, False)
        assert conn.execute(text("SELECT count(*) FROM sso_sessions")).scalar() == 0
        assert conn.execute(text("SELECT count(*) FROM portal_sessions")).scalar() == 0
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0009")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0009"
        assert conn.execute(text("SELECT app_id FROM applications")).scalar() == "a"
    migrate(engine)
