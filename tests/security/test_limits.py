"""Rate limits (docs/security.md, "Limits"; figure F13): per-workload buckets at the agent, the opt-in
Azure IMDS limit, per-client buckets and wrong-secret backoff at the token endpoint, and what the real
azure-identity does against a 429-ing agent. Exact arithmetic runs in-process on a frozen clock; the
wire shapes are checked against real listeners and a real `lanyard up`."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lanyard.agent.bindings import BindingsState, Workload
from lanyard.agent.cache import TokenCache
from lanyard.agent.credential import new_host_certificate
from lanyard.agent.endpoints import TokenService
from lanyard.agent.limits import AZURE_IMDS_CONCURRENT, THROTTLED, WorkloadLimits
from lanyard.core.clock import FrozenClock
from lanyard.core.errors import InvalidClient
from lanyard.core.ratelimit import InFlight, Rate, TokenBuckets, retry_after_header
from lanyard.directory.limits import ClientLimits, Throttled, source_key
from lanyard.protocol.msi import IssuedToken, MsiError, parse_imds
from lanyard.protocol.oauth2 import TokenRequest as OAuthRequest
from tests.conftest import RunningPlatform, cli_json, probe_command, probe_results, start_platform

VM = "Microsoft.Compute/virtualMachines"
WRONG = "Zq8~not-the-secret-but-close-enough-0123456"
SITE = "Microsoft.Web/sites"


def workload(name: str, kind: str = SITE) -> Workload:
    return Workload(f"/subscriptions/s/resourceGroups/g/providers/{kind}/{name}", kind, None, name, ())


# -- token buckets: the arithmetic -----------------------------------------------------------


def test_one_workload_at_ten_times_its_limit_does_not_starve_another() -> None:
    """F13 in-process: over 60 simulated seconds, a greedy workload offering 10x its rate is admitted
    at its rate (within 10%, burst included); a neighbour at half its rate gets every request."""
    clock = FrozenClock()
    limits = WorkloadLimits(Rate(10.0, 10.0), clock=clock)
    greedy, polite = workload("greedy"), workload("polite")
    admitted = {"greedy": 0, "polite": 0}
    offered = {"greedy": 0, "polite": 0}
    seconds, step = 60, 0.01
    for tick in range(int(seconds / step)):
        clock.advance(step)
        for w, every in ((greedy, 1), (polite, 20)):  # 100/s (10x) and 5/s
            if tick % every:
                continue
            offered[w.name] += 1
            try:
                with limits.admit(w):
                    admitted[w.name] += 1
            except MsiError as exc:
                assert exc.status == 429
    expected = 10.0 * seconds + 10.0  # rate x time + the burst
    assert abs(admitted["greedy"] - expected) <= 0.1 * expected, admitted
    assert offered["greedy"] >= 10 * admitted["greedy"] * 0.9
    assert admitted["polite"] == offered["polite"], admitted  # 100% >= 99%


def test_buckets_refill_cap_and_ignore_a_clock_stepping_back() -> None:
    clock = FrozenClock()
    buckets: TokenBuckets[str] = TokenBuckets(Rate(2.0, 4.0), clock)
    assert [buckets.take("a") for _ in range(4)] == [0.0] * 4
    assert buckets.take("a") == pytest.approx(0.5)  # one token at 2/s
    clock.advance(100)  # refill stops at the burst
    assert [buckets.take("a") for _ in range(4)] == [0.0] * 4
    assert buckets.take("a") > 0
    clock.advance(-50)  # a wall clock stepped back refills nothing and drains nothing
    assert buckets.take("a") > 0
    assert buckets.take("b") == 0.0  # keys are independent


def test_bucket_memory_is_bounded() -> None:
    buckets: TokenBuckets[int] = TokenBuckets(Rate(1.0, 1.0), FrozenClock(), max_keys=100)
    for key in range(10_000):
        buckets.take(key)
    assert len(buckets) == 100


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    assert [retry_after_header(s) for s in (0.0, 0.01, 1.0, 1.2, 59.9)] == ["1", "1", "1", "2", "60"]


def test_rates_validate() -> None:
    with pytest.raises(ValueError):
        Rate(-1, 1)
    with pytest.raises(ValueError):
        Rate(1, 0)
    assert not Rate.of(0, 0).limited
    assert Rate.of(5, 0).burst == 1.0


# -- the opt-in Azure IMDS limit ---------------------------------------------------------------


def test_azure_imds_limit_is_20_per_second_and_5_concurrent_per_vm() -> None:
    clock = FrozenClock()
    limits = WorkloadLimits(Rate.unlimited(), azure_imds=True, clock=clock)
    vm, other_vm, site = workload("vm1", VM), workload("vm2", VM), workload("site1")
    with contextlib.ExitStack() as stack:
        for _ in range(AZURE_IMDS_CONCURRENT):
            stack.enter_context(limits.admit(vm))
        with pytest.raises(MsiError) as refused:
            stack.enter_context(limits.admit(vm))
        assert refused.value.status == 429
        stack.enter_context(limits.admit(other_vm))  # per VM, not per host
        for _ in range(50):
            stack.enter_context(limits.admit(site))  # App Service is not IMDS
    assert limits.vm_in_flight.running(vm.resource_id.lower()) == 0  # all released
    clock.advance(10)
    admitted = 0
    for _ in range(100):  # 100 sequential requests within one (frozen) second
        try:
            with limits.admit(vm):
                admitted += 1
        except MsiError:
            pass
    assert admitted == 20


def test_in_flight_releases_on_error() -> None:
    flights: InFlight[str] = InFlight(1)
    with pytest.raises(RuntimeError), flights.hold("k") as ok:
        assert ok
        raise RuntimeError
    with flights.hold("k") as ok:
        assert ok


def test_throttled_bodies_in_each_agent_protocol() -> None:
    limits = WorkloadLimits(Rate(1.0, 1.0), clock=FrozenClock())
    w = workload("w")
    with limits.admit(w):
        pass
    with pytest.raises(MsiError) as caught, limits.admit(w):
        pass
    exc = caught.value
    assert exc.status == 429 and exc.headers == [(b"retry-after", b"1")]
    assert exc.imds_body() == {
        "error": "invalid_request",
        "error_description": "Temporarily throttled, too many requests",
    }
    body = exc.app_service_body()
    assert body["statusCode"] == 429 and body["message"] == THROTTLED and body["correlationId"]


# -- the token endpoint: per client, and wrong secrets ------------------------------------------


def oauth(client_id: str, secret: str | None = "s") -> OAuthRequest:  # noqa: S107 - a test value
    return OAuthRequest(client_id, "https://management.azure.com", secret, None if secret else "jwt", "v2")


def attempt(limits: ClientLimits, request: OAuthRequest, source: str, outcome: str) -> str:
    """Run one token request through the guard; `outcome` is what authentication would have said."""
    try:
        with limits.guard(request, source):
            if outcome == "wrong":
                raise InvalidClient(7000215, "Invalid client secret provided.")
    except Throttled as exc:
        assert exc.status == 429 and exc.retry_after
        return f"429:{exc.aadsts}"
    except InvalidClient:
        return "401"
    return "200"


def test_wrong_secrets_back_off_per_client_and_source() -> None:
    clock = FrozenClock()
    limits = ClientLimits.of(1000, 1000, failures=5, refill_seconds=10, clock=clock)
    victim, attacker, elsewhere = "10.0.0.1", "10.0.0.66", "10.0.0.2"
    app = oauth("app-1")
    answers = [attempt(limits, app, attacker, "wrong") for _ in range(300)]
    assert answers[:5] == ["401"] * 5
    assert set(answers[5:]) == {"429:50053"}  # refused before the secret is even compared
    # The legitimate client is not locked out: another address, or a certificate from the same one.
    assert attempt(limits, app, victim, "ok") == "200"
    assert attempt(limits, oauth("app-1", secret=None), attacker, "ok") == "200"
    assert attempt(limits, oauth("app-2"), attacker, "ok") == "200"  # other clients neither
    assert attempt(limits, app, elsewhere, "wrong") == "401"
    # A right secret from the attacker's address refunds nothing; time does, one attempt per 10 s.
    assert attempt(limits, app, attacker, "ok") == "429:50053"
    clock.advance(10)
    assert attempt(limits, app, attacker, "wrong") == "401"
    assert attempt(limits, app, attacker, "wrong") == "429:50053"


def test_only_issued_tokens_spend_a_clients_rate() -> None:
    clock = FrozenClock()
    limits = ClientLimits.of(2, 4, failures=1000, refill_seconds=1, clock=clock)
    app = oauth("app-1", secret=None)
    # Failed assertions from anyone do not drain the client's bucket...
    for _ in range(50):
        with pytest.raises(InvalidClient), limits.guard(app, "10.9.9.9"):
            raise InvalidClient(700027, "bad assertion")
    # ...tokens issued do: the burst, then 429 with AADSTS90055 until it refills.
    assert [attempt(limits, app, "10.0.0.1", "ok") for _ in range(5)] == ["200"] * 4 + ["429:90055"]
    clock.advance(0.5)
    assert attempt(limits, app, "10.0.0.1", "ok") == "200"


def test_source_keys() -> None:
    assert source_key("10.1.2.3") == "10.1.2.3"
    assert source_key("2001:db8::1") == source_key("2001:db8::ffff") == "2001:db8::/64"
    assert source_key("::ffff:10.1.2.3") == "10.1.2.3"
    assert source_key("not-an-ip") == "not-an-ip"


# -- azure-identity against a 429-ing agent (real listener, real SDK) ---------------------------


class _Upstream:
    def __init__(self) -> None:
        self.calls = 0

    async def identity_token(self, key: Any, client_id: str, resource: str) -> IssuedToken:
        self.calls += 1
        now = int(time.time())
        return IssuedToken(f"token-{uuid.uuid4()}", now + 3600, now, client_id)


@pytest.fixture
def throttling_imds() -> Iterator[tuple[str, list[int]]]:
    """A real bounded listener answering IMDS token requests through TokenService, whose workload's
    bucket is empty and (on a frozen clock) never refills: every request gets 429 + Retry-After: 1."""
    from lanyard.core.listener import BoundedServer, bounded_config
    from lanyard.core.loop import event_loop_runner

    cert, key = new_host_certificate("vm", time.time(), 86400)
    resource_id = f"/subscriptions/s/resourceGroups/g/providers/{VM}/vm1"
    state = BindingsState()
    identity = {"kind": "system", "objectId": str(uuid.uuid4()), "clientId": str(uuid.uuid4()), "resourceId": ""}
    identity |= {"certificate": cert.decode(), "privateKey": key.decode()}
    state.apply({"workloads": [{"resourceId": resource_id, "type": VM, "name": "vm1", "identities": [identity]}]})
    limits = WorkloadLimits(Rate(1.0, 1.0), clock=FrozenClock())
    limits.buckets.take(resource_id.lower())
    service = TokenService(state, TokenCache(), _Upstream(), limits)  # type: ignore[arg-type]
    statuses: list[int] = []

    async def imds(scope: Any, receive: Any, send: Any) -> None:
        # The IMDS shape as ImdsEndpoint renders it, minus the attestation this test is not about.
        try:
            await service.issue(resource_id, parse_imds(dict(_query(scope))))
            status, body, headers = 200, {}, []
        except MsiError as exc:
            status, body, headers = exc.status, exc.imds_body(), exc.headers
        statuses.append(status)
        payload = json.dumps(body).encode()
        head = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()), *headers]
        await send({"type": "http.response.start", "status": status, "headers": head})
        await send({"type": "http.response.body", "body": payload})

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    server = BoundedServer(bounded_config(imds))
    thread = threading.Thread(target=lambda: event_loop_runner().run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", statuses
    server.should_exit = True
    thread.join(10)


def _query(scope: Any) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    return parse_qsl(scope["query_string"].decode())


def test_azure_identity_makes_no_more_calls_than_its_retry_policy(
    throttling_imds: tuple[str, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.core.exceptions import ClientAuthenticationError
    from azure.identity import CredentialUnavailableError, ManagedIdentityCredential
    from azure.identity._credentials.imds import PIPELINE_SETTINGS

    url, statuses = throttling_imds
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", url)
    for name in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER", "MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    credential = ManagedIdentityCredential()
    with pytest.raises((ClientAuthenticationError, CredentialUnavailableError)):
        credential.get_token("https://management.azure.com/.default")
    allowed = 1 + int(PIPELINE_SETTINGS["retry_total"])  # the first try and its retries, no more
    assert statuses and set(statuses) == {429}
    assert len(statuses) <= allowed, statuses
    # Asked again at once, msal answers from its throttle cache (Retry-After): no new request.
    before = len(statuses)
    with pytest.raises((ClientAuthenticationError, CredentialUnavailableError)):
        credential.get_token("https://management.azure.com/.default")
    assert len(statuses) - before <= allowed


# -- a real platform: one workload throttled, its neighbour served; secrets backed off -----------


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    env = {"LANYARD_WORKLOAD_RATE": "5", "LANYARD_WORKLOAD_BURST": "10", "LANYARD_SECRET_FAILURES": "3"}
    env["LANYARD_SECRET_FAILURE_REFILL"] = "600"
    running = start_platform(tmp_path_factory.mktemp("limited"), env=env)
    yield running
    running.stop()


def test_process_level_one_workload_throttled_another_served(limited: RunningPlatform, tmp_path: Path) -> None:
    home = limited.home
    cli_json(home, "group", "create", "-n", "lim-rg", "-l", "westus")
    for name in ("greedy-app", "polite-app"):
        cli_json(home, "webapp", "create", "-g", "lim-rg", "-n", name, "--assign-identity", "[system]")
    request = {
        "path": "?api-version=2019-08-01&resource=https://management.azure.com",
        "headers_from_env": {"X-IDENTITY-HEADER": "IDENTITY_HEADER"},
    }
    greedy_actions = [{"kind": "raw-loop", "count": 200, **request}]
    started = time.monotonic()
    greedy = subprocess.Popen(
        probe_command(home, ["webapp", "run", "-g", "lim-rg", "-n", "greedy-app"], greedy_actions),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    polite = subprocess.run(
        probe_command(
            home, ["webapp", "run", "-g", "lim-rg", "-n", "polite-app"], [{"kind": "raw-loop", "count": 8, **request}]
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    out, err = greedy.communicate(timeout=120)
    elapsed = time.monotonic() - started
    (loop,) = probe_results(out, err)
    statuses = loop["value"]["statuses"]
    assert statuses.get("429", 0) > 0, statuses
    assert set(statuses) <= {"200", "429"}, statuses  # throttled, never failed
    assert statuses.get("200", 0) <= 10 + 5 * elapsed + 1, (statuses, elapsed)
    throttled = loop["value"]["bodies"]["429"]  # in App Service's shape
    assert throttled["statusCode"] == 429 and throttled["message"] == THROTTLED
    (polite_loop,) = probe_results(polite.stdout, polite.stderr)
    assert polite_loop["value"]["statuses"] == {"200": 8}


def test_process_level_wrong_secret_backoff(limited: RunningPlatform) -> None:
    app = cli_json(limited.home, "ad", "sp", "create-for-rbac", "--name", "lim-secret-app")
    form = {
        "grant_type": "client_credentials",
        "client_id": app["appId"],
        "scope": "https://management.azure.com/.default",
    }
    with httpx.Client(verify=ssl.create_default_context(cafile=limited.ca_cert), timeout=30) as http:
        answers = [http.post(limited.token_url_v2, data={**form, "client_secret": WRONG}) for _ in range(6)]
        assert [a.status_code for a in answers] == [401, 401, 401, 429, 429, 429]
        throttled = answers[-1]
        assert throttled.headers["retry-after"].isdigit() and int(throttled.headers["retry-after"]) >= 1
        body = throttled.json()
        assert body["error"] == "temporarily_unavailable" and body["error_codes"] == [50053]
        assert WRONG not in throttled.text  # never echo a secret
        # The right secret from this address stays refused (successes refund nothing); another client
        # from the same address is unaffected.
        right = http.post(limited.token_url_v2, data={**form, "client_secret": app["password"]})
        assert right.status_code == 429
        other = cli_json(limited.home, "ad", "sp", "create-for-rbac", "--name", "lim-other-app")
        ok = http.post(
            limited.token_url_v2, data={**form, "client_id": other["appId"], "client_secret": other["password"]}
        )
        assert ok.status_code == 200, ok.text
