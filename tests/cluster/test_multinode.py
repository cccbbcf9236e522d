"""Several `lanyard up` nodes on one PostgreSQL behind a real HAProxy (TCP mode).

Clients and the agent use the balancer's address (the nodes' --public-url); "through node X" means
a request sent straight to that node's own port, so the test knows which node answered.
"""

from __future__ import annotations

import base64
import json
import os
import re
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import (
    RunningPlatform,
    app_service_tokens_around,
    cli_json,
    run_cli,
    secret_token,
    start_platform,
    verify_with_discovery,
)
from tests.portal.test_portal_platform import PASSWORD as PORTAL_PASSWORD
from tests.portal.test_portal_platform import _sign_in as portal_sign_in
from tests.support.haproxy import Haproxy, HaproxyFactory
from tests.support.postgres import PostgresServer, free_port

pytestmark = [pytest.mark.postgres, pytest.mark.haproxy, pytest.mark.timeout(600)]
ARM = "https://management.azure.com"
ARM_VERSION = "api-version=2022-12-01"
VAULT_VERSION = "api-version=7.4"


@dataclass
class Cluster:
    nodes: list[RunningPlatform]
    ports: list[int]
    proxy: Haproxy
    database: str
    kek: str
    views: list[Path]

    @property
    def first(self) -> RunningPlatform:
        return self.nodes[0]

    @property
    def tenant(self) -> str:
        return self.first.tenant_id

    @property
    def subscription(self) -> str:
        return str(self.first.endpoints["subscription_id"])

    @property
    def vault_audience(self) -> str:
        return str(self.first.endpoints["vault_audience"])

    def direct(self, node: int) -> str:
        return f"https://localhost:{self.ports[node]}"

    def http(self) -> httpx.Client:
        return httpx.Client(verify=ssl.create_default_context(cafile=self.first.ca_cert), timeout=30.0)

    def admin_token(self, resource: str) -> str:
        admin = self.first.endpoints["admin"]
        return self.token_for(admin["client_id"], admin["client_secret"], resource)

    def token_for(self, client_id: str, secret: str, resource: str, node: int | None = None) -> str:
        """A client-credentials token, minted through the balancer or straight through one node."""
        return secret_token(self.first, client_id, secret, resource, None if node is None else self.direct(node))


def _view_home(tmp: Path, node: RunningPlatform, direct: str) -> Path:
    """A CLI home whose control-plane calls go straight to one node (tokens and Graph still go
    through the balancer), so `lanyard --home VIEW ...` is the real CLI talking to that node."""
    view = tmp / f"view-{direct.rsplit(':', 1)[1]}"
    view.mkdir(parents=True, exist_ok=True)
    endpoints = dict(node.endpoints)
    endpoints["arm"] = direct
    (view / "endpoints.json").write_text(json.dumps(endpoints))
    os.chmod(view / "endpoints.json", 0o600)
    return view


def _start_nodes(homes: list[Path], args: list[list[str]], env: dict[str, str]) -> list[RunningPlatform]:
    """Start every node at once (threads): they race for the start-up lock as real nodes would."""
    started: dict[int, RunningPlatform] = {}
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            started[i] = start_platform(homes[i], *args[i], env=env)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(homes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        for node in started.values():
            node.stop()
        raise errors[0]
    return [started[i] for i in range(len(homes))]


def new_kek() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@pytest.fixture(scope="module")
def cluster(
    postgres: PostgresServer, haproxy_factory: HaproxyFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    database = postgres.create_database("cluster")
    kek = new_kek()
    ports = [free_port() for _ in range(3)]
    proxy = haproxy_factory([("127.0.0.1", p) for p in ports])
    public = f"https://localhost:{proxy.port}"
    tmp = tmp_path_factory.mktemp("cluster")
    homes = [tmp / f"node{i}" for i in range(3)]
    common = ["--database", database, "--public-url", public]
    args = [
        [*common, "--port", str(ports[0])],  # node 0 also runs this machine's host agent
        [*common, "--port", str(ports[1]), "--no-agent"],
        [*common, "--port", str(ports[2]), "--no-agent"],
    ]
    nodes = _start_nodes(homes, args, {"LANYARD_KEK": kek})
    views = [_view_home(tmp, nodes[i], f"https://localhost:{ports[i]}") for i in range(3)]
    yield Cluster(nodes, ports, proxy, database, kek, views)
    for node in nodes:
        node.stop()


def test_every_node_serves_one_platform(cluster: Cluster) -> None:
    ids = {(n.endpoints["tenant_id"], n.endpoints["subscription_id"], n.authority) for n in cluster.nodes}
    assert ids == {(cluster.tenant, cluster.subscription, cluster.first.authority)}
    assert cluster.first.authority == f"https://localhost:{cluster.proxy.port}"


def test_a_token_minted_by_any_node_verifies_on_every_node(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    admin = cluster.first.endpoints["admin"]
    for minted_by in range(3):
        token = cluster.token_for(admin["client_id"], admin["client_secret"], ARM, node=minted_by)
        # A resource server that knows only the discovery document (through the balancer).
        claims = verify_with_discovery(cluster.first, token, ARM)
        assert claims["iss"] == f"{cluster.first.authority}/{cluster.tenant}/"
        with cluster.http() as http:
            for verified_by in range(3):
                response = http.get(
                    f"{cluster.direct(verified_by)}/subscriptions?{ARM_VERSION}",
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert response.status_code == 200, (minted_by, verified_by, response.text)
    # The real SDK, through the balancer, gets the same kind of token.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", cluster.first.endpoints["ca_bundle"])
    from azure.identity import ClientSecretCredential

    credential = ClientSecretCredential(
        cluster.tenant,
        admin["client_id"],
        admin["client_secret"],
        authority=cluster.first.authority,
        disable_instance_discovery=True,
    )
    sdk_token = credential.get_token(f"{ARM}/.default").token
    for node in range(3):
        with cluster.http() as http:
            got = http.get(f"{cluster.direct(node)}/subscriptions?{ARM_VERSION}", headers=_bearer(sdk_token))
        assert got.status_code == 200


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _secret_url(cluster: Cluster, vault: str, node: int, name: str) -> str:
    return f"https://{vault}.vault.lanyard.localhost:{cluster.ports[node]}/secrets/{name}?{VAULT_VERSION}"


def test_vault_changes_made_through_one_node_hold_on_the_next_request_to_another(cluster: Cluster) -> None:
    home = cluster.first.home
    cli_json(home, "group", "create", "-n", "cluster-rg", "-l", "westus")
    cli_json(home, "keyvault", "create", "-g", "cluster-rg", "-n", "clusterkv")
    token = cluster.admin_token(cluster.vault_audience)
    a, b = 1, 2
    with cluster.http() as http:
        put = http.put(_secret_url(cluster, "clusterkv", a, "s1"), json={"value": "v1"}, headers=_bearer(token))
        assert put.status_code == 200, put.text
        for _ in range(5):  # B has it cached now
            got = http.get(_secret_url(cluster, "clusterkv", b, "s1"), headers=_bearer(token))
            assert got.status_code == 200 and got.json()["value"] == "v1"
        put = http.put(_secret_url(cluster, "clusterkv", a, "s1"), json={"value": "v2"}, headers=_bearer(token))
        assert put.status_code == 200
        got = http.get(_secret_url(cluster, "clusterkv", b, "s1"), headers=_bearer(token))
        assert got.json()["value"] == "v2", "B served the old value after A's write returned"

        # The access policy is removed through A's control plane: B's very next read is refused.
        admin_oid = cluster.first.endpoints["admin"]["object_id"]
        run_cli(cluster.views[a], "keyvault", "delete-policy", "-n", "clusterkv", "--object-id", admin_oid)
        denied = http.get(_secret_url(cluster, "clusterkv", b, "s1"), headers=_bearer(token))
        assert denied.status_code == 403, denied.text
        assert denied.json()["error"]["code"] == "Forbidden"
        run_cli(
            cluster.views[a],
            "keyvault",
            "set-policy",
            "-n",
            "clusterkv",
            "--object-id",
            admin_oid,
            "--secret-permissions",
            "get",
        )
        allowed = http.get(_secret_url(cluster, "clusterkv", b, "s1"), headers=_bearer(token))
        assert allowed.status_code == 200 and allowed.json()["value"] == "v2"


def test_a_role_assignment_removed_through_b_is_denied_by_a_on_the_next_request(cluster: Cluster) -> None:
    home = cluster.first.home
    app = cli_json(home, "ad", "sp", "create-for-rbac", "--name", "cluster-reader")
    scope = f"/subscriptions/{cluster.subscription}"
    cli_json(home, "role", "assignment", "create", "--assignee", app["appId"], "--role", "Reader", "--scope", scope)
    token = cluster.token_for(app["appId"], app["password"], ARM)
    a, b = 0, 1
    url = f"{cluster.direct(a)}{scope}/resourcegroups?{ARM_VERSION}"
    with cluster.http() as http:
        for _ in range(3):
            assert http.get(url, headers=_bearer(token)).status_code == 200
        run_cli(
            cluster.views[b],
            "role",
            "assignment",
            "delete",
            "--assignee",
            app["appId"],
            "--role",
            "Reader",
            "--scope",
            scope,
        )
        denied = http.get(url, headers=_bearer(token))
    assert denied.status_code == 403, denied.text
    assert denied.json()["error"]["code"] == "AuthorizationFailed"


def test_an_identity_removed_through_b_stops_the_agent_before_the_call_returns(
    cluster: Cluster, workload_folder: Path
) -> None:
    home = cluster.first.home
    cli_json(home, "group", "create", "-n", "cluster-mi", "-l", "westus")
    cli_json(home, "webapp", "create", "-g", "cluster-mi", "-n", "cluster-app", "--assign-identity", "[system]")
    first, second = app_service_tokens_around(
        home,
        ["webapp", "run", "-g", "cluster-mi", "-n", "cluster-app"],
        workload_folder,
        lambda: run_cli(cluster.views[1], "webapp", "identity", "remove", "-g", "cluster-mi", "-n", "cluster-app"),
    )
    assert first["status"] == 200
    assert second["status"] == 400 and "Unable to load" in second["body"]["message"]


def test_nodes_started_together_on_an_empty_database_make_one_platform(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    database = postgres.create_database("together")
    homes = [tmp_path / f"n{i}" for i in range(3)]
    nodes = _start_nodes(homes, [["--database", database, "--no-agent"]] * 3, {"LANYARD_KEK": new_kek()})
    try:
        assert len({n.tenant_id for n in nodes}) == 1
        engine = sa.create_engine(database)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM tenants")).scalar() == 1
            assert conn.execute(sa.text("SELECT count(*) FROM subscriptions")).scalar() == 1
            assert conn.execute(sa.text("SELECT count(*) FROM applications")).scalar() == 1
            active = conn.execute(sa.text("SELECT count(*) FROM signing_keys WHERE state = 'active'")).scalar()
            assert active == 1
            assert conn.execute(sa.text("SELECT count(*) FROM nodes")).scalar() == 3
        engine.dispose()
        ca = {Path(n.ca_cert).read_bytes() for n in nodes}
        assert len(ca) == 1, "the nodes made different CAs"
    finally:
        for node in nodes:
            node.stop()


def _lanyard_up(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lanyard", "up", "--home", str(home), "--port", "0", "--no-agent", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_a_node_with_another_kek_refuses_to_start(cluster: Cluster, tmp_path: Path) -> None:
    result = _lanyard_up(tmp_path / "intruder", "--database", cluster.database, env={"LANYARD_KEK": new_kek()})
    assert result.returncode != 0
    assert "key-encryption key does not open" in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1, result.stderr


def test_an_unreachable_database_fails_fast_with_a_clear_error(tmp_path: Path) -> None:
    started = time.monotonic()
    result = _lanyard_up(tmp_path / "h", "--database", f"postgresql+psycopg://lanyard@127.0.0.1:{free_port()}/none")
    assert result.returncode != 0
    assert "cannot reach the database" in result.stderr and "password" not in result.stderr.lower()
    assert time.monotonic() - started < 60


def test_a_database_that_goes_away_gives_503_then_recovers(tmp_path: Path) -> None:
    with PostgresServer(max_connections=60) as own:
        database = own.create_database("flaky")
        node = start_platform(tmp_path / "h", "--database", database, "--no-agent", env={"LANYARD_KEK": new_kek()})
        try:
            admin = node.endpoints["admin"]
            form = {
                "grant_type": "client_credentials",
                "client_id": admin["client_id"],
                "client_secret": admin["client_secret"],
                "scope": f"{ARM}/.default",
            }
            with node.http() as http:
                token = http.post(node.token_url_v2, data=form).json()["access_token"]
                own.stop("immediate")
                # A client the directory has never seen needs the database: 503, in OAuth's format.
                unknown = {**form, "client_id": "00000000-0000-0000-0000-00000000abcd"}
                started = time.monotonic()
                oauth = http.post(node.token_url_v2, data=unknown)
                arm = http.put(
                    f"{node.authority}/subscriptions/{node.endpoints['subscription_id']}/resourcegroups/x?{ARM_VERSION}",
                    json={"location": "westus"},
                    headers=_bearer(token),
                )
                assert time.monotonic() - started < 30
                assert oauth.status_code == 503 and oauth.json()["error"] == "temporarily_unavailable", oauth.text
                assert arm.status_code == 503 and arm.json()["error"]["code"] == "ServiceUnavailable", arm.text
                own.start()
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    again = http.put(
                        f"{node.authority}/subscriptions/{node.endpoints['subscription_id']}/resourcegroups/x?{ARM_VERSION}",
                        json={"location": "westus"},
                        headers=_bearer(token),
                    )
                    if again.status_code in (200, 201):
                        break
                    time.sleep(0.2)
                assert again.status_code in (200, 201), again.text
        finally:
            node.stop()


def test_a_member_removed_from_a_group_through_b_loses_its_rights_at_a_on_the_next_request(cluster: Cluster) -> None:
    """The vault caches decisions per caller; a membership change (the feed's `group_members`) must
    reach them on every node before the Graph call returns."""
    home = cluster.first.home
    cli_json(home, "group", "create", "-n", "people-cluster-rg", "-l", "westus")
    vault = cli_json(
        home, "keyvault", "create", "-g", "people-cluster-rg", "-n", "peoplekv", "--enable-rbac-authorization", "true"
    )
    admin = cluster.first.endpoints["admin"]["client_id"]
    cli_json(home, "role", "assignment", "create", "--assignee", admin, "--role", "Key Vault Secrets Officer",
             "--scope", vault["id"])
    cli_json(home, "keyvault", "secret", "set", "--vault-name", "peoplekv", "-n", "s1", "--value", "grouped")
    upn = "cluster-member@people.example"
    password = "Cluster-Pa55word"
    user = cli_json(home, "ad", "user", "create", "--display-name", "Member", "--user-principal-name", upn,
                    "--password", password)
    group = cli_json(home, "ad", "group", "create", "--display-name", "cluster-readers", "--mail-nickname", "cr")
    cli_json(home, "role", "assignment", "create", "--assignee", group["id"], "--role", "Key Vault Secrets User",
             "--scope", vault["id"])
    run_cli(cluster.views[1], "ad", "group", "member", "add", "--group", group["id"], "--member-id", user["id"])
    a, b = 2, 1
    with cluster.http() as http:
        token = http.post(
            f"{cluster.direct(a)}/{cluster.tenant}/oauth2/v2.0/token",
            data={"grant_type": "password", "client_id": "04b07795-8ddb-461a-bbee-02f9e1bf7b46", "username": upn,
                  "password": password, "scope": f"{cluster.vault_audience}/.default"},
        ).json()["access_token"]
        for _ in range(3):  # decided, and cached, on A
            got = http.get(_secret_url(cluster, "peoplekv", a, "s1"), headers=_bearer(token))
            assert got.status_code == 200 and got.json()["value"] == "grouped"
        run_cli(cluster.views[b], "ad", "group", "member", "remove", "--group", group["id"], "--member-id", user["id"])
        denied = http.get(_secret_url(cluster, "peoplekv", a, "s1"), headers=_bearer(token))
    assert denied.status_code == 403, denied.text


def test_an_sso_session_started_on_one_node_holds_on_another_and_ends_everywhere(cluster: Cluster) -> None:
    """The browser's SSO session lives in the database: signed in through A, B answers without the
    password; signed out through C, A refuses the kept cookie."""
    upn = f"sso-{os.urandom(4).hex()}@cluster.example"
    password = "Cluster-Sso-Pa55"
    cli_json(cluster.first.home, "ad", "user", "create", "--display-name", "Sso", "--user-principal-name", upn,
             "--password", password)
    query = urlencode({
        "client_id": "04b07795-8ddb-461a-bbee-02f9e1bf7b46", "response_type": "code",
        "redirect_uri": "http://localhost:8400/", "scope": f"{ARM}/.default openid", "state": "s",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "code_challenge_method": "S256",
    })
    path = f"/{cluster.tenant}/oauth2/v2.0/authorize?{query}"
    with cluster.http() as browser:
        page = browser.get(cluster.direct(0) + path)
        fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.text))
        action = re.search(r'<form method="post" action="([^"]+)"', page.text)
        assert page.status_code == 200 and action is not None
        signed_in = browser.post(cluster.direct(0) + unescape(action.group(1)),
                                 data={**{k: unescape(v) for k, v in fields.items()}, "username": upn,
                                       "password": password})
        assert signed_in.status_code == 302 and "code=" in signed_in.headers["location"]
        kept = browser.cookies.get("__Host-lanyard-sso")
        assert kept
        silent = browser.get(cluster.direct(1) + path + "&prompt=none")
        assert silent.status_code == 302 and "code=" in silent.headers["location"]
        out = browser.get(f"{cluster.direct(2)}/{cluster.tenant}/oauth2/v2.0/logout")
        assert out.status_code == 200
    with cluster.http() as replay:
        replay.cookies.set("__Host-lanyard-sso", kept)
        refused = replay.get(cluster.direct(0) + path + "&prompt=none")
    assert refused.status_code == 302 and "error=login_required" in refused.headers["location"]


def test_a_portal_session_is_served_by_every_node_and_signing_out_on_one_ends_it_on_all(cluster: Cluster) -> None:
    """Portal sessions live in the database: signed in through the balancer, each node shows the
    person's groups (redeeming the session's refresh token for its own access token); a CSRF token
    from one node's page is good on another; signed out through C, A no longer knows the cookie."""
    upn = f"portal-{os.urandom(4).hex()}@cluster.example"
    person = cli_json(cluster.first.home, "ad", "user", "create", "--display-name", "Pia Portal",
                      "--user-principal-name", upn, "--password", PORTAL_PASSWORD)
    rg = f"portal-cluster-{os.urandom(3).hex()}"
    group = cli_json(cluster.first.home, "group", "create", "-n", rg, "-l", "westus")
    cli_json(cluster.first.home, "role", "assignment", "create", "--assignee", person["id"], "--role", "Reader",
             "--scope", group["id"])
    with cluster.http() as http:
        home = portal_sign_in(cluster.first, http, upn)
        assert home.status_code == 200 and rg in home.text, home.text
        pages = [http.get(f"{cluster.direct(i)}/portal/") for i in range(3)]
        assert all(p.status_code == 200 and rg in p.text and "Pia Portal" in p.text for p in pages), pages
        token = re.search(r'name="csrf_token" value="([^"]+)"', pages[0].text)
        assert token is not None
        kept = http.cookies.get("__Host-lanyard-portal")
        assert kept
        out = http.post(f"{cluster.direct(2)}/portal/signout", data={"csrf_token": token.group(1)})
        assert out.status_code == 303
    with cluster.http() as replay:
        replay.cookies.set("__Host-lanyard-portal", kept)
        after = replay.get(f"{cluster.direct(0)}/portal/")
    assert after.status_code == 200 and "Sign out" not in after.text and rg not in after.text
