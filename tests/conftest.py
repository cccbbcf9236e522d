"""Shared fixtures: a real `lanyard up` process on loopback, and the CLI run as a real command."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import httpx
import jwt
import pytest

from lanyard.testing.platform import start as start_lanyard
from lanyard.testing.platform import workload_uids
from tests.support import clients as client_support
from tests.support import haproxy as haproxy_support
from tests.support import postgres as postgres_support
from tests.support.clients import ClientProgram
from tests.support.haproxy import Haproxy, HaproxyFactory
from tests.support.postgres import PostgresServer

STARTUP_TIMEOUT = 60.0
# The environment the session started with: fixtures point REQUESTS_CA_BUNDLE at the shared platform's
# CA, but a process that talks to the outside world (pip) needs the machine's own trust settings.
SESSION_START_ENV = dict(os.environ)
CA_VARIABLES = ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE", "PIP_CERT", "NODE_EXTRA_CA_CERTS")
ARM_RESOURCE = "https://management.azure.com"
PROBE = str(Path(__file__).parent / "workloads" / "probe.py")


@dataclass
class RunningPlatform:
    home: Path
    process: subprocess.Popen[bytes]
    endpoints: dict[str, Any] = field(default_factory=dict)
    database: str | None = None  # the --database URL; None: SQLite in the home

    @property
    def authority(self) -> str:
        return str(self.endpoints["authority"])

    @property
    def tenant_id(self) -> str:
        return str(self.endpoints["tenant_id"])

    @property
    def ca_cert(self) -> str:
        return str(self.endpoints["ca_cert"])

    @property
    def token_url_v2(self) -> str:
        return f"{self.authority}/{self.tenant_id}/oauth2/v2.0/token"

    @property
    def token_url_v1(self) -> str:
        return f"{self.authority}/{self.tenant_id}/oauth2/token"

    def http(self) -> httpx.Client:
        return httpx.Client(verify=ssl.create_default_context(cafile=self.ca_cert), timeout=30.0)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def machine_trust_env(env: dict[str, str]) -> dict[str, str]:
    """env with the machine's own CA settings (what the session started with), not a test platform's: for
    processes that reach the outside world (pip, npm) while a fixture points REQUESTS_CA_BUNDLE at a CA."""
    out = dict(env)
    for name in CA_VARIABLES:
        out.pop(name, None)
        if name in SESSION_START_ENV:
            out[name] = SESSION_START_ENV[name]
    return out


def platform_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a platform a test starts: under root, a workload uid range of this pytest
    process's own (per xdist worker), so parallel sessions never hand one uid to two apps."""
    env = {**os.environ, **(extra or {})}
    if os.geteuid() == 0 and "LANYARD_WORKLOAD_UIDS" not in env:
        env["LANYARD_WORKLOAD_UIDS"] = workload_uids(env.get("PYTEST_XDIST_WORKER"))
    return env


def start_platform(home: Path, *extra: str, env: dict[str, str] | None = None) -> RunningPlatform:
    """`lanyard up` on HOME (lanyard.testing.platform.start), its output in HOME/server.log."""
    started = start_lanyard(home, *extra, env=platform_env(env), timeout=STARTUP_TIMEOUT, log_name="server.log")
    return RunningPlatform(home, started.process, started.endpoints)


def vault_names_resolve(zone: str = "lanyard.localhost") -> bool:
    import socket

    try:
        socket.getaddrinfo(f"probe.vault.{zone}", 443)
    except OSError:
        return False
    return True


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests using the postgres/haproxy fixtures get those markers (so `-m "not postgres"` leaves them out).
    Vault tests need *.vault.<zone> to resolve (scripts/ensure-dns sets it up); say so when it can't."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & {"postgres", "pg_database"}:
            item.add_marker(pytest.mark.postgres)
        if "haproxy_factory" in fixtures:
            item.add_marker(pytest.mark.haproxy)
    if vault_names_resolve():
        return
    skip = pytest.mark.skip(reason="*.vault.lanyard.localhost does not resolve here: run scripts/ensure-dns as root")
    for item in items:
        if "keyvault" in item.nodeid or "vault_tokens" in item.nodeid:
            item.add_marker(skip)


TEST_BACKENDS = ("sqlite", "postgres")


def platform_backend() -> str:
    """LANYARD_TEST_BACKEND: the database the shared platform runs on, "sqlite" (the default) or "postgres"."""
    backend = os.environ.get("LANYARD_TEST_BACKEND", "").strip().lower() or "sqlite"
    if backend not in TEST_BACKENDS:
        pytest.fail(f"LANYARD_TEST_BACKEND={backend!r}: expected one of {', '.join(TEST_BACKENDS)}", pytrace=False)
    return backend


@pytest.fixture(scope="session")
def platform(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    """The shared platform, on SQLite in its home unless LANYARD_TEST_BACKEND=postgres: then on a fresh
    database of the session's throwaway cluster (the `postgres` fixture, requested only then, so it skips or
    fails the way that fixture does). LANYARD_TEST_DATABASE (an empty PostgreSQL database's URL, e.g.
    postgresql+psycopg://user@127.0.0.1:5432/db) overrides both and runs it on that database."""
    backend = platform_backend()
    database = os.environ.get("LANYARD_TEST_DATABASE") or None
    server: PostgresServer | None = None
    if database is None and backend == "postgres":
        server = request.getfixturevalue("postgres")
        database = server.create_database("platform")
    extra = ("--database", database) if database else ()
    # At DEBUG, so the whole suite doubles as the log-hygiene check (SECURITY F18): see the teardown.
    running = start_platform(tmp_path_factory.mktemp("home"), *extra, env={"LANYARD_LOG_LEVEL": "DEBUG"})
    running.database = database
    yield running
    running.stop()
    leaks = secrets_in_output(running)
    assert not leaks, f"secrets in the shared platform's output after the whole suite: {leaks}"
    if server is not None and server.running and database is not None:
        with contextlib.suppress(Exception):
            server.drop_database(database)


JWT_SHAPE = re.compile(rb"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}")


def secrets_in_output(running: RunningPlatform) -> list[str]:
    """What of a token, the admin secret or the KEK appears in the platform's logs (server, access,
    agent), its console output or its audit trail (the SQLite database and its WAL)."""
    needles = {running.endpoints["admin"]["client_secret"].encode(): "the admin client secret"}
    kek = running.home / "kek"
    if kek.is_file():
        needles[kek.read_bytes().strip()] = "the KEK"
    sinks = [p for p in running.home.rglob("*.log*") if p.is_file()]
    sinks += [p for p in running.home.glob("lanyard.db*") if p.is_file()]
    found = []
    for sink in sinks:
        data = sink.read_bytes()
        match = JWT_SHAPE.search(data)
        if match:
            found.append(f"a token in {sink.name}")
        found += [f"{what} in {sink.name}" for needle, what in needles.items() if needle and needle in data]
    return found


def _required(*flags: str) -> bool:
    """CI=true, or any of the given LANYARD_REQUIRE_* variables set to 1, turns a skip into a failure."""
    return os.environ.get("CI", "").lower() in ("true", "1") or any(os.environ.get(f) == "1" for f in flags)


def _unavailable(what: str, reason: str, *flags: str) -> NoReturn:
    message = f"{what} unavailable: {reason}"
    if _required(*flags):
        pytest.fail(f"{message} (required here: CI=true or {' / '.join(f'{f}=1' for f in flags)})", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL cluster for the session (127.0.0.1, a free port, fsync on, max_connections 300,
    superuser `lanyard`, trust auth). Skipped when the server binaries are missing, except under CI=true or
    LANYARD_REQUIRE_POSTGRES=1, where that is a failure. `postgres.create_database()` -> SQLAlchemy URL."""
    ok, reason = postgres_support.available()
    if not ok:
        _unavailable("PostgreSQL", reason, "LANYARD_REQUIRE_POSTGRES")
    server = PostgresServer()
    try:
        server.start()
    except Exception as exc:
        server.cleanup()
        _unavailable("PostgreSQL", f"the throwaway cluster did not start: {exc}", "LANYARD_REQUIRE_POSTGRES")
    yield server
    server.cleanup()


@pytest.fixture
def pg_database(postgres: PostgresServer) -> Iterator[str]:
    """A fresh, empty database's SQLAlchemy URL (postgresql+psycopg://lanyard@127.0.0.1:PORT/NAME),
    dropped after the test (connections still open to it are terminated first)."""
    url = postgres.create_database("t")
    yield url
    if postgres.running:
        with contextlib.suppress(Exception):
            postgres.drop_database(url)


@pytest.fixture(scope="session")
def haproxy_factory() -> Iterator[HaproxyFactory]:
    """`make(backends) -> Haproxy`: a real haproxy (TCP, round robin, health checks every 200 ms) on
    127.0.0.1 in front of [(host, port), ...], started and ready; each one made is stopped at session end.
    Skipped when haproxy is missing, except under CI=true or LANYARD_REQUIRE_HAPROXY=1 (a failure there)."""
    ok, reason = haproxy_support.available()
    if not ok:
        _unavailable("haproxy", reason, "LANYARD_REQUIRE_HAPROXY")
    made: list[Haproxy] = []

    def make(backends: Sequence[tuple[str, int]], *, check_inter_ms: int = 200, redispatch: bool = True) -> Haproxy:
        proxy = Haproxy(backends, check_inter_ms=check_inter_ms, redispatch=redispatch, start=False)
        made.append(proxy)
        return proxy.start()

    yield make
    for proxy in made:
        proxy.stop()


def _client(language: str) -> ClientProgram:
    """A client program of tests/clients, built once per session by scripts/ensure-clients (with the
    machine's own trust settings: it talks to the package registries). A client that cannot be built
    skips its tests, except under CI=true or LANYARD_REQUIRE_CLIENTS=1, where they fail."""
    try:
        return client_support.build(language, SESSION_START_ENV)
    except LookupError as exc:
        _unavailable(f"the {language} client", str(exc), "LANYARD_REQUIRE_CLIENTS")


@pytest.fixture(scope="session")
def node_client() -> ClientProgram:
    """The real @azure/identity (tests/clients/node)."""
    return _client("node")


@pytest.fixture(scope="session")
def spa_client() -> ClientProgram:
    """The real @azure/msal-browser (tests/clients/spa): its bundle, for a test page to load."""
    return _client("spa")


@pytest.fixture(scope="session")
def go_client() -> ClientProgram:
    """The real azidentity (tests/clients/go)."""
    return _client("go")


@pytest.fixture(scope="session")
def java_client() -> ClientProgram:
    """The real azure-identity for Java (tests/clients/java)."""
    return _client("java")


def app_and_vm_with_identities(home: Path, prefix: str) -> dict[str, Any]:
    """A group PREFIX-rg with a user-assigned identity PREFIX-uai, and a web app PREFIX-app and a VM PREFIX-vm
    that each hold a system-assigned identity and that one: what the client-language suites run as."""
    cli_json(home, "group", "create", "-n", f"{prefix}-rg", "-l", "westus")
    uai = cli_json(home, "identity", "create", "-g", f"{prefix}-rg", "-n", f"{prefix}-uai")
    both = ("--assign-identity", "[system]", f"{prefix}-uai")
    site = cli_json(home, "webapp", "create", "-g", f"{prefix}-rg", "-n", f"{prefix}-app", *both)
    vm = cli_json(home, "vm", "create", "-g", f"{prefix}-rg", "-n", f"{prefix}-vm", *both)
    return {"uai": uai, "site_oid": site["identity"]["principalId"], "vm_oid": vm["identity"]["principalId"]}


def client_in_workload(
    home: Path,
    target: list[str],
    client: ClientProgram,
    cases: Sequence[dict[str, Any]],
    env: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """`lanyard … webapp|vm run … -- CLIENT CASES`: a client program run by the agent as the workload; its
    outcomes, one per case ({token, expires_on} or {error, message})."""
    command = [sys.executable, "-m", "lanyard", "--home", str(home), *target, "--", *client.command(cases)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})
    assert result.returncode == 0, f"the {client.language} workload exited {result.returncode}:\n{result.stderr}"
    return client_support.outcomes(result.stdout, result.stderr, len(cases))


def token_oids(platform: RunningPlatform, outcomes: Sequence[dict[str, Any]], audience: str) -> list[str]:
    """Each outcome's token verified against the directory's JWKS (an error fails with its message), and
    its expires_on in the future: the tokens' oids, in order."""
    oids = []
    for outcome in outcomes:
        assert "token" in outcome, f"{outcome.get('error')}: {outcome.get('message')}"
        claims = verify_with_discovery(platform, outcome["token"], audience)
        assert claims["exp"] - 300 <= outcome["expires_on"] <= claims["exp"] + 300, (outcome["expires_on"], claims)
        oids.append(str(claims["oid"]))
    return oids


def run_cli(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "lanyard", "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"lanyard {' '.join(args)} failed ({result.returncode}): {result.stderr}")
    return result


def cli_json(home: Path, *args: str) -> Any:
    return json.loads(run_cli(home, *args).stdout)


@pytest.fixture(scope="session")
def secret_app(platform: RunningPlatform) -> dict[str, Any]:
    """An application with a client secret, made through the CLI as a user would."""
    return dict(cli_json(platform.home, "ad", "sp", "create-for-rbac", "--name", "test-secret-app"))


@pytest.fixture(scope="session")
def cert_app(platform: RunningPlatform) -> dict[str, Any]:
    """An application with a certificate credential; the PEM file holds key and certificate."""
    return dict(cli_json(platform.home, "ad", "sp", "create-for-rbac", "--name", "test-cert-app", "--create-cert"))


@pytest.fixture(scope="session")
def admin_credential(platform: RunningPlatform) -> Any:
    """azure-identity's ClientSecretCredential for the admin application (Owner of the subscription)."""
    os.environ["REQUESTS_CA_BUNDLE"] = platform.endpoints["ca_bundle"]
    from azure.identity import ClientSecretCredential

    admin = platform.endpoints["admin"]
    return ClientSecretCredential(
        platform.tenant_id,
        admin["client_id"],
        admin["client_secret"],
        authority=platform.authority,
        disable_instance_discovery=True,
    )


def credential_for(platform: RunningPlatform, app: dict[str, Any]) -> Any:
    from azure.identity import ClientSecretCredential

    return ClientSecretCredential(
        platform.tenant_id, app["appId"], app["password"], authority=platform.authority, disable_instance_discovery=True
    )


def verify_with_discovery(platform: RunningPlatform, token: str, audience: str) -> dict[str, Any]:
    """Verify the way a resource server would: the discovery document's jwks_uri and nothing else."""
    with platform.http() as http:
        doc = http.get(f"{platform.authority}/{platform.tenant_id}/v2.0/.well-known/openid-configuration").json()
    client = jwt.PyJWKClient(doc["jwks_uri"], ssl_context=ssl.create_default_context(cafile=platform.ca_cert))
    key = client.get_signing_key_from_jwt(token)
    return dict(
        jwt.decode(
            token,
            key.key,
            algorithms=["RS256"],
            audience=audience,
            issuer=f"{platform.authority}/{platform.tenant_id}/",
            options={"require": ["exp", "iat", "nbf", "aud", "iss", "sub"]},
        )
    )


def probe_command(home: Path, target: list[str], actions: list[dict[str, Any]]) -> list[str]:
    """`lanyard … webapp|vm run … -- python probe.py ACTIONS`: the test workload, run by the agent."""
    return [
        sys.executable,
        "-m",
        "lanyard",
        "--home",
        str(home),
        *target,
        "--",
        sys.executable,
        PROBE,
        json.dumps(actions),
    ]


def probe_results(stdout: str, stderr: str = "") -> list[dict[str, Any]]:
    lines = [line for line in stdout.splitlines() if line.startswith("RESULTS ")]
    if not lines:
        raise AssertionError(f"the workload printed no results:\n{stdout}\n{stderr}")
    return list(json.loads(lines[-1][len("RESULTS ") :]))


@contextmanager
def app_setting(home: Path, group: str, app: str, name: str, value: str) -> Iterator[None]:
    """An app setting for the duration of a block (the shared apps outlive each test)."""
    run_cli(home, "webapp", "config", "appsettings", "set", "-g", group, "-n", app, "--settings", f"{name}={value}")
    try:
        yield
    finally:
        run_cli(home, "webapp", "config", "appsettings", "delete", "-g", group, "-n", app, "--setting-names", name)


def secret_token(platform: RunningPlatform, client_id: str, secret: str, resource: str, base: str | None = None) -> str:
    """A client-credentials token for `resource`, minted with a client secret through the platform's
    authority (or `base`, another node's own URL)."""
    form = {
        "grant_type": "client_credentials",
        "client_id": client_id,
        "client_secret": secret,
        "scope": f"{resource}/.default",
    }
    url = f"{base or platform.authority}/{platform.tenant_id}/oauth2/v2.0/token"
    with platform.http() as http:
        response = http.post(url, data=form)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


@pytest.fixture
def workload_folder() -> Iterator[Path]:
    """A folder the test and its workloads share: workloads run under uids of their own, which cannot
    reach pytest's private tmp_path."""
    folder = Path(tempfile.mkdtemp(prefix="lanyard-test-"))
    folder.chmod(0o777)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def app_service_tokens_around(
    home: Path, target: list[str], folder: Path, between: Callable[[], object], resource: str = ARM_RESOURCE
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A workload run under `target` (`webapp run ...`) asks its App Service endpoint for a token, waits
    while `between()` runs, then asks again: the two raw answers (status and body)."""
    ready, go = folder / "probe-ready", folder / "probe-go"
    request = {
        "kind": "raw",
        "path": f"?api-version=2019-08-01&resource={resource}",
        "headers_from_env": {"X-IDENTITY-HEADER": "IDENTITY_HEADER"},
    }
    actions = [{**request, "mark": str(ready)}, {"kind": "wait-file", "path": str(go)}, request]
    process = subprocess.Popen(
        probe_command(home, target, actions), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        assert ready.exists(), "the workload never got its first token"
        between()
        go.write_text("now")
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    results = probe_results(stdout, stderr)
    for result in results:
        assert result["ok"], result["error"]
    first, _, second = (r["value"] for r in results)
    return first, second


CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
def chromium() -> Iterator[Any]:
    """Debian's Chromium driven by Playwright (never a browser download): the portal's and the SPA's
    browser tests. Missing, it skips, or fails under CI=true."""
    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed at /usr/bin/chromium (apt-get install -y chromium)")
        pytest.skip("chromium is not installed at /usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield launched
        launched.close()
