"""Federated identity credentials on two nodes sharing one PostgreSQL: a credential created through
one node is honoured by the other on the next request, and a deleted one refused there at once (the
change feed carries `federated_credentials` keyed by the client id, which the directory's client
cache follows)."""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import RunningPlatform, cli_json, run_cli, start_platform
from tests.support.oidc_issuer import Issuer, make_ca
from tests.support.postgres import PostgresServer, free_port

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(600)]
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SUBJECT = "repo:org/app:ref:refs/heads/main"


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    folder = Path(tempfile.mkdtemp(prefix="lanyard-fednodes-"))
    folder.chmod(0o755)
    ca, _ = make_ca(folder)
    started = Issuer(ca, folder).start()
    try:
        yield started
    finally:
        started.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def nodes(
    postgres: PostgresServer, issuer: Issuer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[RunningPlatform]]:
    database = postgres.create_database("fednodes")
    env = {
        "LANYARD_KEK": base64.b64encode(os.urandom(32)).decode(),
        "LANYARD_FEDERATION_ALLOWED_ISSUERS": "localhost",
        "LANYARD_FEDERATION_ALLOW_PRIVATE": "on",
        "LANYARD_FEDERATION_CA_BUNDLE": str(issuer.folder / "issuer-ca.pem"),
    }
    tmp = tmp_path_factory.mktemp("fednodes")
    first = start_platform(tmp / "a", "--database", database, "--port", str(free_port()), "--no-agent", env=env)
    started = [first]
    try:
        started.append(
            start_platform(tmp / "b", "--database", database, "--port", str(free_port()), "--no-agent", env=env)
        )
        yield started
    finally:
        for node in started:
            node.stop()


def exchange(node: RunningPlatform, client_id: str, assertion: str) -> httpx.Response:
    form = {
        "grant_type": "client_credentials",
        "client_id": client_id,
        "client_assertion_type": JWT_BEARER,
        "client_assertion": assertion,
        "scope": "https://management.azure.com/.default",
    }
    with node.http() as http:
        return http.post(node.token_url_v2, data=form)


def test_a_credential_made_or_deleted_through_one_node_holds_on_the_other_at_once(
    nodes: list[RunningPlatform], issuer: Issuer
) -> None:
    a, b = nodes
    cli_json(a.home, "group", "create", "-n", "fed-nodes", "-l", "westus")
    identity = cli_json(a.home, "identity", "create", "-g", "fed-nodes", "-n", "fed-nodes-id")
    client = identity["clientId"]
    assert exchange(b, client, issuer.token(SUBJECT)).json()["error_codes"] == [700211]  # b caches the client
    fic = ("identity", "federated-credential")
    where = ("-g", "fed-nodes", "--identity-name", "fed-nodes-id", "--name", "main")
    cli_json(a.home, *fic, "create", *where, "--issuer", issuer.url, "--subject", SUBJECT)
    granted = exchange(b, client, issuer.token(SUBJECT))
    assert granted.status_code == 200, granted.text
    run_cli(a.home, *fic, "delete", *where, "--yes")
    refused = exchange(b, client, issuer.token(SUBJECT))
    assert refused.status_code == 401 and refused.json()["error_codes"] == [700211], refused.text
