"""`lanyard up`: first start, files and modes, clean shutdown, and a restart that keeps everything."""

from __future__ import annotations

import json
import signal
import sqlite3
import ssl
import stat
from pathlib import Path

import httpx
import jwt
import pytest
from azure.identity import ClientSecretCredential

from tests.conftest import cli_json, start_platform


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def verify(endpoints: dict[str, str], token: str, audience: str) -> dict[str, object]:
    jwks_uri = f"{endpoints['authority']}/{endpoints['tenant_id']}/discovery/v2.0/keys"
    client = jwt.PyJWKClient(jwks_uri, ssl_context=ssl.create_default_context(cafile=endpoints["ca_cert"]))
    key = client.get_signing_key_from_jwt(token)
    return dict(
        jwt.decode(
            token,
            key.key,
            algorithms=["RS256"],
            audience=audience,
            issuer=f"{endpoints['authority']}/{endpoints['tenant_id']}/",
        )
    )


def test_first_start_writes_a_private_endpoints_file(tmp_path: Path) -> None:
    running = start_platform(tmp_path / "home")
    try:
        ep = running.endpoints
        for field in ("tenant_id", "subscription_id", "authority", "arm", "ca_cert", "ca_bundle", "admin"):
            assert ep[field], field
        assert ep["authority"].startswith("https://") and ep["arm"].startswith("https://")
        assert set(ep["admin"]) >= {"client_id", "client_secret"}
        assert mode(running.home / "endpoints.json") == 0o600
        assert mode(running.home / "kek") == 0o600
        assert mode(running.home / "tls" / "server-key.pem") == 0o600
        bundle = Path(ep["ca_bundle"]).read_text()
        assert Path(ep["ca_cert"]).read_text().strip() in bundle
        assert bundle.count("BEGIN CERTIFICATE") > 10  # public roots too, so real Azure still works
        # The server answers on both loopback stacks under the names its certificate covers.
        port = ep["authority"].rsplit(":", 1)[1]
        ctx = ssl.create_default_context(cafile=ep["ca_cert"])
        for base in (f"https://127.0.0.1:{port}", f"https://[::1]:{port}", f"https://localhost:{port}"):
            response = httpx.get(f"{base}/{ep['tenant_id']}/discovery/v2.0/keys", verify=ctx)
            assert response.status_code == 200 and response.json()["keys"]
    finally:
        assert running.stop(signal.SIGINT) == 0
    assert not (running.home / "endpoints.json").exists()


def test_database_alone_yields_no_secret(tmp_path: Path) -> None:
    running = start_platform(tmp_path / "home")
    try:
        app = cli_json(running.home, "ad", "sp", "create-for-rbac", "--name", "dump-check")
        admin_secret = running.endpoints["admin"]["client_secret"]
    finally:
        running.stop()
    db = running.home / "lanyard.db"
    con = sqlite3.connect(db)
    dump = "\n".join(con.iterdump()).encode()
    con.close()
    for needle in (admin_secret.encode(), app["password"].encode(), b"PRIVATE KEY"):
        assert needle not in dump
    assert b"PRIVATE KEY" not in (running.home / "tls" / "server-key.pem").read_bytes().replace(
        b"ENCRYPTED PRIVATE KEY", b""
    )


def test_restart_keeps_tenant_keys_and_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    first = start_platform(home)
    try:
        app = cli_json(home, "ad", "sp", "create-for-rbac", "--name", "survivor")
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", first.endpoints["ca_bundle"])
        token = (
            ClientSecretCredential(
                first.tenant_id,
                app["appId"],
                app["password"],
                authority=first.authority,
                disable_instance_discovery=True,
            )
            .get_token("api://before/.default")
            .token
        )
    finally:
        assert first.stop() == 0

    second = start_platform(home)
    try:
        same = ("tenant_id", "subscription_id", "admin", "ca_cert")
        assert {k: second.endpoints[k] for k in same} == {k: first.endpoints[k] for k in same}
        # The port (and so the authority) may differ; the old token's key must still be published.
        jwks = httpx.get(
            f"{second.authority}/common/discovery/keys", verify=ssl.create_default_context(cafile=second.ca_cert)
        ).json()
        header = jwt.get_unverified_header(token)
        published = {k["kid"]: k for k in jwks["keys"]}
        assert header["kid"] in published
        key = jwt.PyJWK(published[header["kid"]]).key
        claims = jwt.decode(
            token, key, algorithms=["RS256"], audience="api://before", issuer=f"{first.authority}/{first.tenant_id}/"
        )
        assert claims["appid"] == app["appId"]
        shown = cli_json(home, "ad", "sp", "show", "--id", app["appId"])
        assert shown["appId"] == app["appId"] and shown["displayName"] == "survivor"
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", second.endpoints["ca_bundle"])
        again = (
            ClientSecretCredential(
                second.tenant_id,
                app["appId"],
                app["password"],
                authority=second.authority,
                disable_instance_discovery=True,
            )
            .get_token("api://after/.default")
            .token
        )
        assert verify(second.endpoints, again, "api://after")["oid"] == shown["id"]
    finally:
        assert second.stop() == 0


def test_same_port_restart_keeps_issuer(tmp_path: Path) -> None:
    """With a fixed port the authority, and so the issuer, is stable across restarts."""
    home = tmp_path / "home"
    first = start_platform(home)
    port = first.authority.rsplit(":", 1)[1]
    first.stop()
    second = start_platform(home, "--port", port)
    try:
        assert second.authority == first.authority
    finally:
        second.stop()


def test_kek_from_environment(tmp_path: Path) -> None:
    import base64
    import os

    kek = base64.b64encode(os.urandom(32)).decode()
    running = start_platform(tmp_path / "home", env={"LANYARD_KEK": kek})
    running.stop()
    assert not (tmp_path / "home" / "kek").exists()
    # The wrong KEK cannot open the sealed keys: start-up fails with a message, not a traceback.
    wrong = base64.b64encode(os.urandom(32)).decode()
    with pytest.raises(RuntimeError, match="key-encryption key") as failure:
        start_platform(tmp_path / "home", env={"LANYARD_KEK": wrong})
    assert "Traceback" not in str(failure.value)


def test_endpoints_json_is_valid_json_with_pid(tmp_path: Path) -> None:
    running = start_platform(tmp_path / "home")
    try:
        assert json.loads((running.home / "endpoints.json").read_text())["pid"] == running.process.pid
    finally:
        running.stop()
