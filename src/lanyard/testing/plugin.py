"""The pytest plugin (entry point `lanyard` in the pytest11 group): fixtures for testing code that
uses managed identities against a real Lanyard platform.

    lanyard_platform  session: `lanyard up` in a temporary home, stopped when the session ends
    lanyard_app       a web app with a system-assigned identity; `.run([...])` and `.call(func)` as it
    lanyard_vault     a vault with a secret (`.url`, `.secret_name`, `.secret_value`) the app may get

Nothing starts until a test asks for one of these: the plugin imports only pytest at load time.
Under pytest-xdist each worker starts a platform of its own (own home, port, agent and uid range).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from lanyard.testing.platform import App, LanyardPlatform, LanyardVault


@pytest.fixture(scope="session")
def lanyard_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LanyardPlatform]:
    """A platform of this session (or of this xdist worker): authority, tenant, CA bundle, `.cli(...)`."""
    import shutil
    import tempfile
    from pathlib import Path

    from lanyard.testing.platform import MAX_HOME_LENGTH, start

    home = tmp_path_factory.mktemp("lanyard-home")
    short: Path | None = None
    if len(str(home)) > MAX_HOME_LENGTH:  # the agent's unix sockets live under it (108 bytes at most)
        short = home = Path(tempfile.mkdtemp(prefix="lanyard-"))
    platform = start(home)
    try:
        yield platform
    finally:
        platform.stop()
        if short is not None:
            shutil.rmtree(short, ignore_errors=True)


@pytest.fixture
def lanyard_app(lanyard_platform: LanyardPlatform) -> Iterator[App]:
    """A fresh web app with a system-assigned identity, in a resource group of its own (deleted after)."""
    app = lanyard_platform.create_app()
    try:
        yield app
    finally:
        lanyard_platform.delete(app)


@pytest.fixture
def lanyard_vault(lanyard_platform: LanyardPlatform, lanyard_app: App) -> Iterator[LanyardVault]:
    """A fresh vault holding one random secret (`db-password`), which `lanyard_app` may get."""
    vault = lanyard_platform.create_vault(readers=[lanyard_app])
    try:
        yield vault
    finally:
        lanyard_platform.delete(vault)
