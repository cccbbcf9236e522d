"""The sample app's tests: its own, unmodified azure-identity code, run as an app with a managed
identity on a real platform that the lanyard pytest plugin starts for the session."""

from __future__ import annotations

import sys
from pathlib import Path

import app
import pytest

from lanyard.testing import WorkloadError

ROOT = Path(__file__).resolve().parent.parent


def test_app_reads_its_secret(lanyard_app, lanyard_vault):
    value = lanyard_app.call(app.read_secret, lanyard_vault.url, lanyard_vault.secret_name)
    assert value == lanyard_vault.secret_value


def test_token_names_the_apps_identity(lanyard_app):
    claims = lanyard_app.call(app.whoami)
    assert claims["oid"] == lanyard_app.principal_id
    assert claims["xms_mirid"].lower() == lanyard_app.id.lower()


def test_app_as_a_command(lanyard_app, lanyard_vault):
    result = lanyard_app.run([sys.executable, "app.py", lanyard_vault.url, lanyard_vault.secret_name], cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert f"read secret {lanyard_vault.secret_name!r} ({len(lanyard_vault.secret_value)} characters)" in result.stdout
    assert lanyard_vault.secret_value not in result.stdout


def test_an_app_without_access_is_refused(lanyard_platform, lanyard_vault):
    stranger = lanyard_platform.create_app()
    try:
        with pytest.raises(WorkloadError, match="does not have secrets get permission"):
            stranger.call(app.read_secret, lanyard_vault.url, lanyard_vault.secret_name)
    finally:
        lanyard_platform.delete(stranger)
