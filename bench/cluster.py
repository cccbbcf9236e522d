#!/usr/bin/env python3
"""Cluster benchmark: goals G8, G11, G12, G13 and G15 of docs/performance.md.

    python bench/cluster.py --smoke [--out DIR]   # ~3 minutes: every check, 200 trials, 2k identities (CI)
    python bench/cluster.py --full  [--out DIR]   # ~9.5 minutes: 1,000 trials, 100k identities, longer rounds

Measured in one run:
  G8   idle `lanyard up` (SQLite, host agent): resident memory of the server and of its children
  G12  two nodes on one PostgreSQL database, then two on one SQLite file, behind haproxy: an access
       policy removed through node A's ARM, and the time until node B refuses the read it had
       cached; B must refuse on its first request after A's write returned
  G11  two nodes on PostgreSQL, one store with 100 identities and one with many: token minting
       p50 at one connection, for a client the node has cached and for one it has not
  G15  `lanyard up --workers 2` against `--workers 1`: client-secret token minting at c32
  G13  client-secret token minting at c32 on a node whose signing key rotates every 3 s (published
       1 s before it signs) against a node that does not rotate, alternating; every token checked
       against the node's JWKS fetched afterwards, and the kids that signed counted

Exit status: 1 on a correctness failure (a stale read after a revoking write returned, a wrong
answer, errors under load, a token that does not verify, fewer signing keys than rotations due); 3
in --smoke when a figure is worse than half its floor; 2 in --full when a goal is below its floor. A
missing PostgreSQL, haproxy or wrk is noted, not failed.
"""

from __future__ import annotations

import sys

from benchkit.venv import use_repo_venv

use_repo_venv()

import base64  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import orjson  # noqa: E402

from benchkit import msi, report, script  # noqa: E402
from benchkit.harness import (  # noqa: E402
    LOAD_CORE,
    REPO_DIR,
    SERVER_CORE,
    HttpTarget,
    Sample,
    Target,
    all_cores,
    can_pin,
    ensure_wrk,
    free_port,
    log,
    pinned,
    run_queue_wait_s,
    run_rounds,
    run_wrk,
)
from benchkit.lanyard import cli, unavailable_reason  # noqa: E402
from benchkit.nodes import Node, command_name, cpu_seconds, descendants, start_node, status_kib  # noqa: E402
from benchkit.rawhttp import timed_get  # noqa: E402
from benchkit.rotation import (  # noqa: E402
    Audit,
    Freezer,
    activated_within,
    list_keys,
    run_wrk_capturing,
    signed_after_retirement,
    signed_before_activation,
    tokens_in,
)
from benchkit.seed import seed_identities  # noqa: E402
from benchkit.tlsclient import Https, Reply  # noqa: E402
from benchkit.tokens import ARM_SCOPE, FORM, CheckFailed, b64url_decode, check_token, secret_form  # noqa: E402
from benchkit.workloads import shared_scratch, start_workload  # noqa: E402

sys.path.insert(0, str(REPO_DIR))  # the tests' throwaway PostgreSQL cluster and haproxy
from tests.support import haproxy as haproxy_support  # noqa: E402
from tests.support import postgres as postgres_support  # noqa: E402


@dataclass(frozen=True)
class Mode(script.Mode):
    connections: int  # G15's wrk connections
    trials: int  # G12, per database
    identities: int  # G11's large store
    cold_requests: int  # G11: distinct uncached clients per measurement (at most SMALL_STORE - 2)
    idle_s: float  # G8: how long the platform sits idle before and while it is measured
    assign_trials: int  # G11: identities assigned to a running web app, one by one
    rotation_rounds: int  # G13: alternating rounds, each one measurement per node
    rotation_s: float  # G13: seconds per measurement, whole rotation periods


MODES = {
    "smoke": Mode(
        "smoke",
        warm_up_s=1,
        rounds=3,
        seconds=2,
        connections=32,
        trials=200,
        identities=2_000,
        cold_requests=90,
        idle_s=2,
        assign_trials=20,
        rotation_rounds=4,
        rotation_s=3,
    ),
    "full": Mode(
        "full",
        warm_up_s=2,
        rounds=5,
        seconds=6,
        connections=32,
        trials=1_000,
        identities=100_000,
        cold_requests=90,
        idle_s=5,
        assign_trials=100,
        rotation_rounds=6,
        rotation_s=6,
    ),
}

OPENBAO_IDLE_MB = 86.0  # docs/performance.md §2: OpenBao 2.7's dev server, idle
SMALL_STORE = 100  # G11's reference store: identities present, the admin included
VAULT, SECRET, VALUE = "g12kv", "s1", "propagation-check"
VAULT_API, SECRETS_API = "2023-07-01", "7.4"
CLIENT_CACHE_TTL_S = 5.5  # the directory's client cache (CLIENT_CACHE_SECONDS = 5) plus a margin
POLL_PAUSE_S = 0.002  # between B's reads while a revocation is in flight: ~3 ms resolution, light load
ENFORCE_TIMEOUT_S = 5.0

# Target names.
HOT_SMALL, HOT_LARGE = "mint cached client, 100 ids", "mint cached client, N ids"
COLD_SMALL, COLD_LARGE = "mint uncached client, 100 ids", "mint uncached client, N ids"
W1, W2 = "mint, --workers 1", "mint, --workers 2"
W2_PER_CEILING = "mint, --workers 2 / machine ceiling"
CROWDED_CEILING = 1.5  # two signers below this multiple of one: the machine did not have 2 cores free
RSA1, RSA2 = "rsa sign, 1 process", "rsa sign, 2 processes"
ROTATION_PERIOD_S, ROTATION_LEAD_S = 3, 1  # G13: LANYARD_KEY_ROTATION_PERIOD / LANYARD_KEY_PUBLISH_LEAD
# The rotation job's tick (server/app.py: min(1 s, lead / 10)): a transition comes up to one tick late,
# so a key signs for between one period and a period plus a tick.
ROTATION_TICK_S = min(1.0, ROTATION_LEAD_S / 10)
STILL, ROTATING = "mint, keys not rotating", f"mint, key rotating every {ROTATION_PERIOD_S} s"

# Figure names.
G8_SERVER, G8_TOTAL, G8_AGENT = "g8 server rss", "g8 server+children rss", "g8 children rss"
G11_HOT, G11_COLD = "g11 cached p50 ratio", "g11 uncached p50 ratio"
G11_HOT_ABS, G11_COLD_ABS = "g11 cached p50 N", "g11 uncached p50 N"
G11_ASSIGN = "g11 assigned to first token p50"
G13_P99, G13_ROTATIONS = "g13 p99 ratio", "g13 rotations"


def goals(identities: int, rotations_due: int) -> list[report.GoalSpec]:
    n = f"{identities:,}"
    return [
        report.GoalSpec(
            "G8",
            "memory: idle `lanyard up` below OpenBao's dev server (86 MB)",
            limits=[
                report.LimitSpec(
                    "server process RSS, idle (warm start)", G8_SERVER, "MB", OPENBAO_IDLE_MB, 2 * OPENBAO_IDLE_MB
                ),
                report.LimitSpec("its children (the host agent) RSS", G8_AGENT, "MB"),
                report.LimitSpec("server + children RSS", G8_TOTAL, "MB"),
            ],
        ),
        report.GoalSpec(
            "G11",
            f"scale: minting with {n} identities in a PostgreSQL store vs 100",
            limits=[
                report.LimitSpec(f"mint p50, cached client: {n} / 100 ids", G11_HOT, "x", 1.2, 2.0),
                report.LimitSpec(f"mint p50, uncached client: {n} / 100 ids", G11_COLD, "x", 1.2, 2.0),
                report.LimitSpec(f"mint p50, cached client, {n} ids", G11_HOT_ABS, "ms"),
                report.LimitSpec(f"mint p50, uncached client, {n} ids", G11_COLD_ABS, "ms"),
                report.LimitSpec(
                    f"identity assigned -> first token from the agent, p50, {n} ids", G11_ASSIGN, "ms", 100, 1000
                ),
            ],
        ),
        report.GoalSpec(
            "G12",
            "cross-node propagation: a revocation through node A enforced by node B",
            limits=[
                report.LimitSpec("PostgreSQL: B enforces, p99", "g12 postgresql enforce p99", "ms", 50, 1000),
                report.LimitSpec("SQLite: B enforces, p99", "g12 sqlite enforce p99", "ms", 100, 1000),
                report.LimitSpec("PostgreSQL: B enforces, p50", "g12 postgresql enforce p50", "ms"),
                report.LimitSpec("SQLite: B enforces, p50", "g12 sqlite enforce p50", "ms"),
                report.LimitSpec("PostgreSQL: A's write returns, p99", "g12 postgresql write p99", "ms"),
                report.LimitSpec("SQLite: A's write returns, p99", "g12 sqlite write p99", "ms"),
            ],
        ),
        report.GoalSpec(
            "G13",
            "minting while the signing keys rotate vs minting outside a rotation, same run",
            ratios=[
                report.RatioSpec(
                    f"mint/s, key rotating every {ROTATION_PERIOD_S} s / not rotating", ROTATING, STILL, 0.9, 0.7
                )
            ],
            limits=[
                report.LimitSpec("mint p99, rotating / not rotating", G13_P99, "x"),
                report.LimitSpec(
                    f"key rotations while the rotating node was measured (>= {rotations_due} due)",
                    G13_ROTATIONS,
                    "rotations",
                ),
            ],
        ),
        report.GoalSpec(
            "G15",
            "`lanyard up --workers 2` vs `--workers 1`, token minting (client secret), 2 cores shared with wrk",
            ratios=[
                report.RatioSpec(
                    "(--workers 2 / --workers 1) / this machine's 2-process ceiling", W2_PER_CEILING, W1, 0.9, 0.7
                ),
                report.RatioSpec("--workers 2 / --workers 1 (1.8 / 1.4 where 2 cores are free)", W2, W1),
                report.RatioSpec("this machine's 2-process ceiling: 2 RSA signers / 1, no wrk", RSA2, RSA1),
            ],
        ),
    ]


@dataclass
class Run(script.BenchRun[Mode]):
    figures: dict[str, list[float]] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    closers: list[Callable[[], None]] = field(default_factory=list)
    postgres: Any = None  # a started tests.support.postgres.PostgresServer, or None
    kek: str = field(default_factory=lambda: base64.b64encode(os.urandom(32)).decode())

    def node(
        self,
        name: str,
        options: list[str],
        *,
        port: int | None = None,
        core: int | str | None = None,
        env: dict[str, str] | None = None,
    ) -> Node:
        env = {"LANYARD_KEK": self.kek, **(env or {})}
        node = start_node(name, self.workdir / name, self.logdir, options, env, core, port)
        self.servers.append(node.server)
        return node

    def stop(self, *nodes: Node) -> None:
        for node in nodes:
            node.server.stop()
            if node.server in self.servers:
                self.servers.remove(node.server)


def percentile(values: list[float], share: float) -> float:
    """Nearest rank: the smallest value with at least `share` of all values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _mb(kib: int) -> float:
    return round(kib / 1024, 1)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _claims(token: str) -> dict[str, Any]:
    claims = orjson.loads(b64url_decode(token.split(".")[1]))
    assert isinstance(claims, dict)
    return claims


def mint(conn: Https, tenant: str, client_id: str, secret: str, scope: str) -> str:
    body = secret_form(client_id, secret, scope).encode()
    reply = conn.request("POST", f"/{tenant}/oauth2/v2.0/token", headers={"Content-Type": FORM}, body=body)
    if reply.status != 200:
        raise CheckFailed(f"token for {client_id}: HTTP {reply.status}: {reply.body[:300]!r}")
    token = reply.json()
    assert isinstance(token, dict)
    return str(token["access_token"])


# ------------------------------------------------------------------------------------- G8 memory


def measure_memory(run: Run) -> None:
    """`lanyard up` as a user starts it (SQLite in its home, the host agent as its child): a first
    start, then the warm start that is measured, idle for `idle_s`."""
    first = run.node("g8-lanyard", [])
    _wait_for_agent(first)
    run.details["G8 first start: server RSS (MB)"] = _mb(status_kib(first.pid))
    run.stop(first)
    node = run.node("g8-lanyard", [])
    _wait_for_agent(node)
    time.sleep(run.mode.idle_s)
    kids = descendants(node.pid)
    cpu_before = {pid: cpu_seconds(pid) for pid in (node.pid, *kids)}
    time.sleep(run.mode.idle_s)
    server_kib, kid_kib = status_kib(node.pid), {pid: status_kib(pid) for pid in kids}
    cpu = {pid: (cpu_seconds(pid) - before) / run.mode.idle_s for pid, before in cpu_before.items()}
    run.figures[G8_SERVER] = [_mb(server_kib)]
    run.figures[G8_AGENT] = [_mb(sum(kid_kib.values()))]
    run.figures[G8_TOTAL] = [_mb(server_kib + sum(kid_kib.values()))]
    run.details["G8 server peak RSS, VmHWM (MB)"] = _mb(status_kib(node.pid, "VmHWM"))
    agent_pid = int(node.endpoints.get("agent", {}).get("pid", 0))

    def name(pid: int) -> str:
        return "server" if pid == node.pid else "agent" if pid == agent_pid else command_name(pid)

    run.details["G8 children"] = ", ".join(f"{name(p)} {_mb(k)} MB" for p, k in kid_kib.items()) or "none"
    run.details["G8 idle CPU, share of one core"] = ", ".join(f"{name(p)} {share:.1%}" for p, share in cpu.items())
    log(f"G8: idle server {_mb(server_kib)} MB, children {_mb(sum(kid_kib.values()))} MB")
    run.stop(node)


def _wait_for_agent(node: Node) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            endpoints = orjson.loads((node.home / "endpoints.json").read_bytes())
        except (OSError, ValueError):
            endpoints = {}
        if endpoints.get("pid") == node.pid and "agent" in endpoints:
            node.endpoints = endpoints
            return
        time.sleep(0.01)
    raise CheckFailed(f"{node.server.name}: the host agent never announced itself:\n{node.server.log_tail()}")


# --------------------------------------------------------------------------------- G12 propagation


@dataclass
class Pair:
    """Two nodes of one platform and what a trial needs to talk to each straight at its own port."""

    a: Node
    b: Node
    tenant: str
    zone: str
    vault_id: str
    reader_token: str  # the test app's token for the vault audience
    admin_arm_token: str
    granted: bytes  # the vault PUT body with the reader's access policy
    revoked: bytes  # ... and without it

    def vault_host(self, node: Node) -> str:
        return f"{VAULT}.vault.{self.zone}:{node.port}"


@dataclass
class TrialLog:
    write_s: list[float] = field(default_factory=list)  # t0 until A's PUT returned
    enforce_s: list[float] = field(default_factory=list)  # t0 until B first answered 403
    stale_after_return: int = 0  # B still served the secret on its first request after the PUT returned
    grant_stale_after_return: int = 0  # ... refused it after the restoring PUT returned
    poll_gaps_s: list[float] = field(default_factory=list)
    run_queue: list[float] = field(default_factory=list)  # A's and B's run-queue wait, share of the trials' time


def propagation(run: Run, backend: str) -> None:
    """G12 on one database type: two nodes, `trials` revocations through A enforced by B."""
    if backend == "postgresql":
        database = run.postgres.create_database("g12")
    else:
        database = f"sqlite:///{run.workdir / 'g12-shared.db'}"
    ports = [free_port(), free_port()]
    public, proxy = _balancer(run, ports, backend)
    options = ["--database", database, "--public-url", public, "--no-agent"]
    log(f"G12 {backend}: starting nodes A and B")
    a = run.node(f"g12-{backend}-a", options, port=ports[0])
    b = run.node(f"g12-{backend}-b", options, port=ports[1])
    try:
        pair = _prepare_pair(a, b)
        trials = _run_trials(run, pair, backend)
    finally:
        run.stop(b, a)
        if proxy is not None:
            proxy.stop()
    _record_trials(run, backend, trials)


def _balancer(run: Run, ports: list[int], backend: str) -> tuple[str, Any]:
    """haproxy over both nodes (the nodes' public URL, where the CLI goes); without it, node A's URL."""
    ok, why = haproxy_support.available()
    if not ok:
        run.notes.append(f"G12 {backend}: no haproxy ({why}); the public URL is node A's own")
        return f"https://localhost:{ports[0]}", None
    proxy = haproxy_support.Haproxy([("127.0.0.1", p) for p in ports])
    run.closers.append(proxy.stop)  # also stopped right after the trials; stop() may run twice
    return f"https://localhost:{proxy.port}", proxy


def _prepare_pair(a: Node, b: Node) -> Pair:
    """The vault, its secret, a reader app with a `get` policy; tokens; both PUT bodies. Control-plane
    set-up through the CLI (which goes through the balancer), the rest straight to A."""
    home, ep = a.home, a.endpoints
    tenant, zone, audience = ep["tenant_id"], ep["dns_zone"], ep["vault_audience"]
    if {n.endpoints["tenant_id"] for n in (a, b)} != {tenant}:
        raise CheckFailed("nodes A and B on one database serve different tenants")
    cli(home, "group", "create", "-n", "g12", "-l", "westus")
    vault = cli(home, "keyvault", "create", "-n", VAULT, "-g", "g12")
    reader = cli(home, "ad", "sp", "create-for-rbac", "--name", "g12-reader")
    admin = ep["admin"]
    with Https(a.port, a.ca) as conn:
        reader_token = mint(conn, tenant, reader["appId"], reader["password"], f"{audience}/.default")
        admin_vault = mint(conn, tenant, admin["client_id"], admin["client_secret"], f"{audience}/.default")
        admin_arm = mint(conn, tenant, admin["client_id"], admin["client_secret"], ARM_SCOPE)
        reader_oid = str(_claims(reader_token)["oid"])
        cli(home, "keyvault", "set-policy", "-n", VAULT, "--object-id", reader_oid, "--secret-permissions", "get")
        put = conn.request(
            "PUT",
            f"/secrets/{SECRET}?api-version={SECRETS_API}",
            host=f"{VAULT}.vault.{zone}:{a.port}",
            headers={**_bearer(admin_vault), "Content-Type": "application/json"},
            body=orjson.dumps({"value": VALUE}),
        )
        if put.status != 200:
            raise CheckFailed(f"setting the secret through A: HTTP {put.status}: {put.body[:300]!r}")
        got = conn.request("GET", f"{vault['id']}?api-version={VAULT_API}", headers=_bearer(admin_arm))
    doc = got.json()
    assert isinstance(doc, dict)
    props = dict(doc["properties"])
    policies = list(props.get("accessPolicies", []))
    if not any(str(p.get("objectId", "")).lower() == reader_oid for p in policies):
        raise CheckFailed(f"the vault's access policies lack the reader {reader_oid}: {policies}")

    def body(keep_reader: bool) -> bytes:
        kept = [p for p in policies if keep_reader or str(p.get("objectId", "")).lower() != reader_oid]
        # As `keyvault delete-policy` / `set-policy` build it.
        return orjson.dumps(
            {"location": doc["location"], "tags": doc.get("tags", {}), "properties": {**props, "accessPolicies": kept}}
        )

    return Pair(a, b, tenant, zone, vault["id"], reader_token, admin_arm, body(True), body(False))


def _read(conn: Https, pair: Pair, node: Node) -> Reply:
    return conn.request(
        "GET",
        f"/secrets/{SECRET}?api-version={SECRETS_API}",
        host=pair.vault_host(node),
        headers=_bearer(pair.reader_token),
    )


def _wait_status(conn: Https, pair: Pair, want: int, timeout: float) -> float | None:
    """Poll B until it answers `want`; the time it did, or None."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if _read(conn, pair, pair.b).status == want:
            return time.perf_counter()
        time.sleep(POLL_PAUSE_S)
    return None


class Poller(threading.Thread):
    """Reads the secret from B in a loop (a pause of POLL_PAUSE_S between reads) until B refuses it or
    it is told to stop; records when the first 403 arrived."""

    def __init__(self, conn: Https, pair: Pair) -> None:
        super().__init__(daemon=True)
        self.conn, self.pair = conn, pair
        self.stop_event = threading.Event()
        self.first_403: float | None = None
        self.unexpected: list[int] = []
        self.gaps: list[float] = []

    def run(self) -> None:
        last = time.perf_counter()
        while not self.stop_event.is_set():
            status = _read(self.conn, self.pair, self.pair.b).status
            now = time.perf_counter()
            self.gaps.append(now - last)
            last = now
            if status == 403:
                self.first_403 = now
                return
            if status != 200:
                self.unexpected.append(status)
                return
            time.sleep(POLL_PAUSE_S)


def _run_trials(run: Run, pair: Pair, backend: str) -> TrialLog:
    trials = TrialLog()
    arm_headers = {**_bearer(pair.admin_arm_token), "Content-Type": "application/json"}
    path = f"{pair.vault_id}?api-version={VAULT_API}"
    with (
        Https(pair.a.port, pair.a.ca) as arm,
        Https(pair.b.port, pair.b.ca) as check,
        Https(pair.b.port, pair.b.ca) as polled,
    ):
        first = _read(check, pair, pair.b)
        if first.status != 200 or first.object().get("value") != VALUE:
            raise CheckFailed(f"G12 {backend}: B's first read: HTTP {first.status}: {first.body[:300]!r}")
        log(f"G12 {backend}: {run.mode.trials} trials")
        waited = [run_queue_wait_s(n.pid) for n in (pair.a, pair.b)]
        started = time.perf_counter()
        for index in range(run.mode.trials):
            for _ in range(2):  # B holds the read (and the reader's validated token) in its caches
                warm = _read(check, pair, pair.b)
                if warm.status != 200:
                    raise CheckFailed(f"G12 {backend} trial {index}: B refused before the revocation: {warm.status}")
            poller = Poller(polled, pair)
            poller.start()
            t0 = time.perf_counter()
            revoke = arm.request("PUT", path, headers=arm_headers, body=pair.revoked)
            returned = time.perf_counter()
            if revoke.status != 200:
                poller.stop_event.set()
                poller.join(10)
                raise CheckFailed(
                    f"G12 {backend}: the revoking PUT through A: HTTP {revoke.status}: {revoke.body[:300]!r}"
                )
            after = _read(check, pair, pair.b)
            seen = time.perf_counter() if after.status == 403 else None
            if after.status == 403:
                body = after.json()
                if not isinstance(body, dict) or body.get("error", {}).get("code") != "Forbidden":
                    raise CheckFailed(f"G12 {backend}: B's 403 is not Key Vault's Forbidden: {after.body[:300]!r}")
            else:
                trials.stale_after_return += 1
                seen = _wait_status(check, pair, 403, ENFORCE_TIMEOUT_S)
            poller.stop_event.set()
            poller.join(10)
            if poller.unexpected:
                raise CheckFailed(f"G12 {backend}: B answered {poller.unexpected} while the revocation was in flight")
            candidates = [t for t in (seen, poller.first_403) if t is not None]
            if not candidates:
                raise CheckFailed(
                    f"G12 {backend}: B still served the secret {ENFORCE_TIMEOUT_S:.0f}s after the revocation"
                )
            trials.write_s.append(returned - t0)
            trials.enforce_s.append(min(candidates) - t0)
            trials.poll_gaps_s.extend(poller.gaps[1:])
            restore = arm.request("PUT", path, headers=arm_headers, body=pair.granted)
            if restore.status != 200:
                raise CheckFailed(f"G12 {backend}: the restoring PUT through A: HTTP {restore.status}")
            if _read(check, pair, pair.b).status != 200:
                trials.grant_stale_after_return += 1
                if _wait_status(check, pair, 200, ENFORCE_TIMEOUT_S) is None:
                    raise CheckFailed(f"G12 {backend}: B kept refusing after the policy was restored")
        elapsed = time.perf_counter() - started
        trials.run_queue = [
            (run_queue_wait_s(n.pid) - w) / elapsed for n, w in zip((pair.a, pair.b), waited, strict=True)
        ]
    return trials


def _record_trials(run: Run, backend: str, trials: TrialLog) -> None:
    label = "PostgreSQL" if backend == "postgresql" else "SQLite"
    enforce, write = trials.enforce_s, trials.write_s
    for name, values in (("enforce", enforce), ("write", write)):
        run.figures[f"g12 {backend} {name} p50"] = [_ms(percentile(values, 0.5))]
        run.figures[f"g12 {backend} {name} p99"] = [_ms(percentile(values, 0.99))]
    p99, target = percentile(enforce, 0.99), (0.05 if backend == "postgresql" else 0.1)
    run.details[f"G12 {label}"] = (
        f"{len(enforce)} trials; B enforces p50 {_ms(percentile(enforce, 0.5))} / p99 {_ms(p99)} / max "
        f"{_ms(max(enforce))} ms (p99 = {p99 / 1.0:.3f}x the 1 s floor, {p99 / target:.2f}x the "
        f"{target * 1000:.0f} ms target); A's write returns p50 {_ms(percentile(write, 0.5))} / p99 "
        f"{_ms(percentile(write, 0.99))} / max {_ms(max(write))} ms; B's read interval while polling p50 "
        f"{_ms(statistics.median(trials.poll_gaps_s)) if trials.poll_gaps_s else '-'} ms; stale after return: "
        f"{trials.stale_after_return} (revocations), {trials.grant_stale_after_return} (restorations); "
        f"run-queue wait of A / B: {' / '.join(f'{w:.1%}' for w in trials.run_queue)} of the time"
    )
    log(f"G12 {backend}: {run.details[f'G12 {label}']}")
    if trials.stale_after_return:
        run.failures.append(
            f"G12 {label}: in {trials.stale_after_return} of {len(enforce)} trials node B still served the secret "
            "on its first request after A's revoking write had returned"
        )
    if trials.grant_stale_after_return:
        run.notes.append(
            f"G12 {label}: in {trials.grant_stale_after_return} trials B still refused on its first request after "
            "the restoring write had returned (a grant arriving late: not a security failure, but the same promise)"
        )


# ----------------------------------------------------------------------------------------- G11 scale


@dataclass
class ScaleNode:
    """One G11 node and the clients seeded into its store."""

    node: Node
    tenant: str
    hot: tuple[str, str]
    cold: list[tuple[str, str]]
    identities: int
    database: str

    @property
    def token_url(self) -> str:
        return f"https://127.0.0.1:{self.node.port}/{self.tenant}/oauth2/v2.0/token"


def scale(run: Run) -> None:
    """G11: a node on a store of 100 identities and one on a store of `identities`, both seeded the
    same way, measured in rotation (server core 0, wrk and the uncached client on core 1)."""
    small = _seeded_store(run, "g11-small", SMALL_STORE)
    large = _seeded_store(run, "g11-large", run.mode.identities)
    try:
        for store in (small, large):
            _check_store(store)
        cold_small, cold_large = _ColdMints(small, run.mode.cold_requests), _ColdMints(large, run.mode.cold_requests)
        waits: dict[str, list[float]] = {}
        run.targets = [
            Target(COLD_SMALL, _waited(cold_small.measure, small.node, waits, COLD_SMALL), warm_up=False),
            Target(COLD_LARGE, _waited(cold_large.measure, large.node, waits, COLD_LARGE), warm_up=False),
        ]
        if run.wrk is not None:
            for name, store in ((HOT_SMALL, small), (HOT_LARGE, large)):
                measure = _waited(_wrk_at(run.wrk, _hot_target(store), 1, run.workdir), store.node, waits, name)
                run.targets.append(Target(name, measure))
        samples = script.rotate(run)
        run.details["G11 node run-queue wait, share of each measurement (max)"] = {
            name: round(max(values), 3) for name, values in waits.items()
        }
    finally:
        run.stop(small.node, large.node)
    run.samples.update(samples)
    assignment(run, large)
    for ratio, absolute, top, bottom in (
        (G11_HOT, G11_HOT_ABS, HOT_LARGE, HOT_SMALL),
        (G11_COLD, G11_COLD_ABS, COLD_LARGE, COLD_SMALL),
    ):
        pairs = list(zip(samples.get(top, []), samples.get(bottom, []), strict=False))
        values = [a.p50_ms / b.p50_ms for a, b in pairs if a.p50_ms and b.p50_ms]
        if values:
            run.figures[ratio] = [round(v, 3) for v in values]
            run.figures[absolute] = [round(a.p50_ms or 0, 3) for a, _ in pairs]
            run.details[f"G11 {ratio} 100-identity p50 (ms)"] = [round(b.p50_ms or 0, 3) for _, b in pairs]


def _waited(
    measure: Callable[[float], Sample], node: Node, waits: dict[str, list[float]], name: str
) -> Callable[[float], Sample]:
    """A measurement that also records how long the node under test waited for a CPU meanwhile: on a
    shared machine, the usual reason one round's latency is twice another's."""

    def waited(seconds: float) -> Sample:
        before, started = run_queue_wait_s(node.pid), time.perf_counter()
        sample = measure(seconds)
        waits.setdefault(name, []).append((run_queue_wait_s(node.pid) - before) / (time.perf_counter() - started))
        return sample

    return waited


def _seeded_store(run: Run, name: str, identities: int) -> ScaleNode:
    """A node on a fresh database, `identities - 1` identities added beside the admin, then a restart
    (timed: start-up with the store full)."""
    database = run.postgres.create_database(name.replace("-", "_"))
    options = ["--database", database, "--no-agent"]
    node = run.node(name, options, core=SERVER_CORE)
    tenant = node.endpoints["tenant_id"]
    log(f"G11: seeding {identities - 1:,} identities into {name}")
    seeded = seed_identities(database, run.kek, tenant, identities - 1, run.mode.cold_requests + 1, name)
    run.details[f"G11 seeding {identities:,} identities (s)"] = round(seeded.seconds, 2)
    run.stop(node)
    node = run.node(name, options, core=SERVER_CORE)
    run.details[f"G11 warm start with {identities:,} identities (s)"] = round(node.ready_s, 3)
    run.details[f"G11 idle server RSS with {identities:,} identities (MB)"] = _mb(status_kib(node.pid))
    return ScaleNode(node, tenant, seeded.known[0], seeded.known[1:], identities, database)


def assignment(run: Run, large: ScaleNode) -> None:
    """G11's second half on the large store: the node restarted with its host agent, a web app running
    under it; each trial assigns one more (pre-made) user-assigned identity to the app through ARM,
    straight to the node, and asks the agent for a token for it until one comes: t0 is just before
    the PATCH is sent. The write waits for agents, so the first request after it returned must work."""
    node = run.node("g11-large-agent", ["--database", large.database])
    _wait_for_agent(node)
    workload = None
    try:
        ep, home = node.endpoints, node.home
        cli(home, "group", "create", "-n", "g11mi", "-l", "westus")
        # Header-only: the bench process asks with the workload's header (it is not the workload itself).
        site = cli(
            home,
            "webapp",
            "create",
            "-g",
            "g11mi",
            "-n",
            "g11app",
            "--assign-identity",
            "[system]",
            "--tags",
            "lanyard.callerAttestation=header",
        )
        scratch = shared_scratch(run.workdir)  # writable by the workload's own uid
        workload = start_workload(home, "webapp", "g11mi", "g11app", scratch, run.logdir / "g11-workload.log")
        admin = ep["admin"]
        group = f"/subscriptions/{ep['subscription_id']}/resourceGroups/g11mi"
        with Https(node.port, node.ca) as conn:
            arm_token = mint(conn, ep["tenant_id"], admin["client_id"], admin["client_secret"], ARM_SCOPE)
            jwks = conn.request("GET", f"/{ep['tenant_id']}/discovery/v2.0/keys").json()
            headers = {**_bearer(arm_token), "Content-Type": "application/json"}
            made = []
            log(f"G11: {run.mode.assign_trials} user-assigned identities for the assignment trials")
            for i in range(run.mode.assign_trials):
                path = f"{group}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/uai{i}"
                reply = conn.request(
                    "PUT", f"{path}?api-version=2023-01-31", headers=headers, body=b'{"location":"westus"}'
                )
                if reply.status not in (200, 201):
                    raise CheckFailed(f"G11: creating identity uai{i}: HTTP {reply.status}: {reply.body[:200]!r}")
                made.append((path, str(reply.json()["properties"]["clientId"])))
            first_s, returned_s, late, still_served = [], [], 0, 0
            site_path = f"{site['id']}?api-version=2024-04-01"
            # As `webapp identity assign` / `remove` build them; ARM merges userAssignedIdentities in a PATCH.
            detach = orjson.dumps({"identity": {"type": "SystemAssigned"}})
            for path, client_id in made:
                shape = msi.app_service_shape(workload.env, "", client_id)
                request = shape.raw_request(msi.ARM)
                identity = {"type": "SystemAssigned, UserAssigned", "userAssignedIdentities": {path: {}}}
                t0 = time.perf_counter()
                reply = conn.request("PATCH", site_path, headers=headers, body=orjson.dumps({"identity": identity}))
                returned = time.perf_counter()
                if reply.status != 200:
                    raise CheckFailed(f"G11: assigning {path}: HTTP {reply.status}: {reply.body[:200]!r}")
                status, _ = timed_get(shape.url, request)
                served = time.perf_counter() if status == 200 else None
                if served is None:
                    late += 1
                    deadline = returned + ENFORCE_TIMEOUT_S
                    while served is None and time.perf_counter() < deadline:
                        time.sleep(POLL_PAUSE_S)
                        if timed_get(shape.url, request)[0] == 200:
                            served = time.perf_counter()
                if served is None:
                    raise CheckFailed(f"G11: the agent served no token for {client_id} {ENFORCE_TIMEOUT_S:.0f}s after")
                msi.fetch(shape, msi.ARM, jwks)
                first_s.append(served - t0)
                returned_s.append(returned - t0)
                # Back to the system identity alone, so every trial assigns to a host with one identity.
                reply = conn.request("PATCH", site_path, headers=headers, body=detach)
                if reply.status != 200:
                    raise CheckFailed(f"G11: detaching {path}: HTTP {reply.status}: {reply.body[:200]!r}")
                still_served += timed_get(shape.url, request)[0] == 200
    finally:
        if workload is not None:
            workload.stop()
        run.stop(node)
    if still_served:
        run.failures.append(
            f"G11: in {still_served} of {len(first_s)} trials the agent still served a token for an identity after "
            "the PATCH detaching it had returned"
        )
    run.figures[G11_ASSIGN] = [_ms(percentile(first_s, 0.5))]
    run.details["G11 identity assigned -> first token from the agent"] = (
        f"{len(first_s)} trials with {large.identities:,} identities in the store: p50 "
        f"{_ms(percentile(first_s, 0.5))} / p99 {_ms(percentile(first_s, 0.99))} / max {_ms(max(first_s))} ms; "
        f"the PATCH returned p50 {_ms(percentile(returned_s, 0.5))} ms; not served on the first request after "
        f"the PATCH returned: {late}"
    )
    log(run.details["G11 identity assigned -> first token from the agent"])
    if late:
        run.notes.append(
            f"G11: in {late} of {len(first_s)} assignments the agent did not serve the new identity on the first "
            "request after the PATCH returned (writes are meant to wait for every agent)"
        )


def _check_store(store: ScaleNode) -> None:
    """A seeded identity gets a real token; a wrong secret for it is refused with invalid_client."""
    client_id, secret = store.hot
    with Https(store.node.port, store.node.ca) as conn:
        jwks = conn.request("GET", f"/{store.tenant}/discovery/v2.0/keys").json()
        body = secret_form(client_id, secret).encode()
        reply = conn.request("POST", f"/{store.tenant}/oauth2/v2.0/token", headers={"Content-Type": FORM}, body=body)
        token = reply.json() if reply.status == 200 else {}
        assert isinstance(token, dict) and isinstance(jwks, dict)
        claims = check_token(token, jwks, f"G11 {store.node.server.name}")
        if claims.get("appid") != client_id:
            raise CheckFailed(f"G11: token for {client_id} names appid {claims.get('appid')}")
        wrong = secret_form(client_id, secret[::-1]).encode()
        refused = conn.request("POST", f"/{store.tenant}/oauth2/v2.0/token", headers={"Content-Type": FORM}, body=wrong)
        if refused.status != 401 or refused.object().get("error") != "invalid_client":
            raise CheckFailed(f"G11: a wrong secret got HTTP {refused.status}: {refused.body[:200]!r}")


def _hot_target(store: ScaleNode) -> HttpTarget:
    return HttpTarget(store.token_url, "POST", _constant(secret_form(*store.hot)), FORM)


def _constant(body: str) -> Callable[[], str]:
    return lambda: body


def _wrk_at(wrk: str, target: HttpTarget, connections: int, workdir: Path) -> Callable[[float], Sample]:
    return lambda seconds: run_wrk(wrk, target, seconds, connections, workdir)


class _ColdMints:
    """`cold_requests` token requests one after another on one connection, each for a different client
    the node has not cached (each is used again only after the cache's TTL), from core 1."""

    def __init__(self, store: ScaleNode, count: int) -> None:
        self.store, self.count = store, count
        self.last_used = 0.0

    def measure(self, _seconds: float) -> Sample:
        wait = self.last_used + CLIENT_CACHE_TTL_S - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        _pin_self(LOAD_CORE)
        latencies, bad = [], 0
        try:
            with Https(self.store.node.port, self.store.node.ca) as conn:
                conn.request("GET", f"/{self.store.tenant}/v2.0/.well-known/openid-configuration")  # connect first
                for client_id, secret in self.store.cold[: self.count]:
                    body = secret_form(client_id, secret).encode()
                    start = time.perf_counter()
                    reply = conn.request(
                        "POST", f"/{self.store.tenant}/oauth2/v2.0/token", headers={"Content-Type": FORM}, body=body
                    )
                    latencies.append(time.perf_counter() - start)
                    bad += reply.status != 200
        finally:
            _pin_self(all_cores())
        self.last_used = time.monotonic()
        return Sample(
            rate=len(latencies) / sum(latencies),
            p50_ms=percentile(latencies, 0.5) * 1000,
            p99_ms=percentile(latencies, 0.99) * 1000,
            requests=len(latencies),
            bad_status=bad,
        )


def _pin_self(cores: int | str) -> None:
    if can_pin():
        subprocess.run(["taskset", "-p", "-c", str(cores), str(os.getpid())], capture_output=True, check=False)


# ------------------------------------------------------------------------------------- G15 workers


def workers(run: Run) -> None:
    """G15: one platform with --workers 1 and one with --workers 2, both on all cores (a user would
    not pin them), wrk on core 1; plus this machine's own parallel ceiling (two RSA signers vs one),
    by which the workers' ratio is divided: what a second worker gives per core the machine has free."""
    one = run.node("g15-workers-1", ["--no-agent", "--workers", "1"])
    two = run.node("g15-workers-2", ["--no-agent", "--workers", "2"])
    cpu: dict[str, list[list[float]]] = {W1: [], W2: []}
    try:
        if two.endpoints.get("workers") != 2 or len(descendants(two.pid)) != 1:
            raise CheckFailed(
                f"--workers 2: endpoints say {two.endpoints.get('workers')}, children {descendants(two.pid)}"
            )
        run.targets = [
            Target(RSA1, lambda s: _parallel_signers(1, s), warm_up=False),
            Target(RSA2, lambda s: _parallel_signers(2, s), warm_up=False),
        ]
        for name, node in ((W1, one), (W2, two)):
            app = cli(node.home, "ad", "sp", "create-for-rbac", "--name", "g15")
            with Https(node.port, node.ca) as conn:
                jwks = conn.request("GET", f"/{node.endpoints['tenant_id']}/discovery/v2.0/keys").json()
                token = mint(conn, node.endpoints["tenant_id"], app["appId"], app["password"], ARM_SCOPE)
            assert isinstance(jwks, dict)
            check_token({"access_token": token, "token_type": "Bearer"}, jwks, f"G15 {name}")
            url = f"https://127.0.0.1:{node.port}/{node.endpoints['tenant_id']}/oauth2/v2.0/token"
            body = secret_form(app["appId"], app["password"])
            if run.wrk is not None:
                target = HttpTarget(url, "POST", _constant(body), FORM)
                run.targets.append(Target(name, _with_cpu(run.wrk, target, run, node, cpu[name])))
        samples = script.rotate(run)
        run.details["G15 RSS after the load (MB): --workers 1 / --workers 2 (server + worker)"] = (
            f"{_mb(status_kib(one.pid))} / {_mb(status_kib(two.pid))} + "
            f"{', '.join(str(_mb(status_kib(p))) for p in descendants(two.pid))}"
        )
    finally:
        run.stop(two, one)
    per_ceiling = [
        Sample(rate=w2.rate * r1.rate / r2.rate)
        for w2, r1, r2 in zip(samples.get(W2, []), samples.get(RSA1, []), samples.get(RSA2, []), strict=False)
        if r2.rate > 0
    ]
    if per_ceiling:
        samples[W2_PER_CEILING] = per_ceiling
    ceilings = [b.rate / a.rate for a, b in zip(samples.get(RSA1, []), samples.get(RSA2, []), strict=False) if a.rate]
    crowded = sum(c < CROWDED_CEILING for c in ceilings)
    if crowded:
        run.notes.append(
            f"G15: in {crowded} of {len(ceilings)} rounds two RSA signers got less than {CROWDED_CEILING}x one "
            f"({', '.join(f'{c:.2f}' for c in ceilings)}): other load held a core, so those rounds cannot show what a "
            "second worker gives; the ratio over the ceiling is the figure to read"
        )
    run.samples.update(samples)
    for name, log_ in cpu.items():
        if log_:
            # Each entry: the wrk process, then each server process; in cores (CPU seconds per second).
            run.details[f"G15 {name}: cores used by wrk / server process(es), median over measurements"] = (
                f"{statistics.median(e[0] for e in log_):.2f} / "
                + " + ".join(f"{statistics.median(e[i] for e in log_):.2f}" for i in range(1, len(log_[0])))
            )
    split = [e[1:] for e in cpu[W2] if sum(e[1:]) > 0]
    if split and min(min(e) / sum(e) for e in split) < 0.2:
        run.notes.append("G15: one of the two workers did under 20% of the work in a measurement")


def _with_cpu(wrk: str, target: HttpTarget, run: Run, node: Node, log_: list[list[float]]) -> Callable[[float], Sample]:
    """wrk against a platform, recording the cores wrk and each server process used meanwhile (with
    --workers 2 both processes must do the work)."""

    def measure(seconds: float) -> Sample:
        pids = [node.pid, *descendants(node.pid)]
        before = [cpu_seconds(p) for p in pids]
        wrk_before = _children_cpu()
        started = time.perf_counter()
        sample = run_wrk(wrk, target, seconds, run.mode.connections, run.workdir)
        elapsed = time.perf_counter() - started
        servers = [(cpu_seconds(p) - b) / elapsed for p, b in zip(pids, before, strict=True)]
        log_.append([(_children_cpu() - wrk_before) / elapsed, *servers])
        return sample

    return measure


def _children_cpu() -> float:
    """CPU seconds of every child this process has waited for (wrk runs as one)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _parallel_signers(processes: int, seconds: float) -> Sample:
    """RSA-2048 signatures per second from `processes` signers at once, on all cores."""
    cmd = pinned([sys.executable, "-m", "benchkit.rsa_ceiling", str(seconds)], all_cores())
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=REPO_DIR / "bench") for _ in range(processes)]
    rates = []
    for proc in procs:
        out, _ = proc.communicate(timeout=seconds + 60)
        rates.append(float(orjson.loads(out.strip().splitlines()[-1])["rate"]))
    return Sample(rate=sum(rates))


# ---------------------------------------------------------------------------------- G13 key rotation


def rotations_due(mode: Mode) -> int:
    """Rotations that must fall in the rotating node's measured time, at one per period plus a tick
    (the node is frozen between its windows, so only its own running time counts)."""
    return math.floor(mode.rotation_rounds * mode.rotation_s / (ROTATION_PERIOD_S + ROTATION_TICK_S))


@dataclass
class _Window:
    """One measurement (or warm-up) of one G13 node: its captured answers and when it ran."""

    capture: Path
    started: float  # epoch seconds, as the tokens' iat and `keys list` count
    ended: float
    measured: bool
    cores: float  # the node's CPU seconds per second meanwhile
    kids: list[str] = field(default_factory=list)  # the kids that signed, in order (after the audit)


@dataclass
class _Minting:
    """Client-secret minting at c`connections` against one G13 node on core 0 (wrk on core 1), the
    other node frozen meanwhile, every answer kept for the audit after the run."""

    run: Run
    name: str
    node: Node
    client_id: str
    target: HttpTarget
    freezer: Freezer | None = None
    audit: Audit | None = None  # after the run
    windows: list[_Window] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)  # run-queue wait, share of each measurement

    def measure(self, seconds: float, measured: bool = True) -> Sample:
        assert self.run.wrk is not None and self.freezer is not None
        self.freezer.only(self.name)
        pid = self.node.pid
        capture = self.run.workdir / f"g13-{pid}-{len(self.windows)}.jsonl"
        cpu, waited = cpu_seconds(pid), run_queue_wait_s(pid)
        started, wall = time.time(), time.perf_counter()
        sample = run_wrk_capturing(
            self.run.wrk, self.target, seconds, self.run.mode.connections, self.run.workdir, capture
        )
        elapsed = time.perf_counter() - wall
        self.windows.append(_Window(capture, started, time.time(), measured, (cpu_seconds(pid) - cpu) / elapsed))
        if measured:
            self.waits.append((run_queue_wait_s(pid) - waited) / elapsed)
        return sample


def key_rotation(run: Run) -> None:
    """G13: two SQLite nodes on core 0, one with the default key rotation (30 days: none in the run)
    and one rotating every ROTATION_PERIOD_S (each key published ROTATION_LEAD_S before it signs);
    client-secret minting at c32 from wrk on core 1, measured in alternating rounds of whole rotation
    periods. The node not measured is stopped (SIGSTOP) meanwhile, so neither the rotating node's
    key generation nor the other's idle jobs land on the other's measurement. Afterwards every token
    is verified against its node's JWKS fetched then, and the rotating node's kids are counted."""
    if run.wrk is None:
        run.notes.append("G13: wrk unavailable, not measured")
        return
    mode = run.mode
    env = {"LANYARD_KEY_ROTATION_PERIOD": str(ROTATION_PERIOD_S), "LANYARD_KEY_PUBLISH_LEAD": str(ROTATION_LEAD_S)}
    load_before = Path("/proc/loadavg").read_text().split()[0]
    still = run.node("g13-keys-still", ["--no-agent"], core=SERVER_CORE)
    rotating = run.node("g13-keys-rotating", ["--no-agent"], core=SERVER_CORE, env=env)
    sides: dict[str, _Minting] = {}
    try:
        for name, node in ((STILL, still), (ROTATING, rotating)):
            app = cli(node.home, "ad", "sp", "create-for-rbac", "--name", "g13")
            tenant = node.endpoints["tenant_id"]
            with Https(node.port, node.ca) as conn:
                jwks = conn.request("GET", f"/{tenant}/discovery/v2.0/keys").json()
                token = mint(conn, tenant, app["appId"], app["password"], ARM_SCOPE)
            assert isinstance(jwks, dict)
            check_token({"access_token": token, "token_type": "Bearer"}, jwks, f"G13 {name}")
            url = f"https://127.0.0.1:{node.port}/{tenant}/oauth2/v2.0/token"
            target = HttpTarget(url, "POST", _constant(secret_form(app["appId"], app["password"])), FORM)
            sides[name] = _Minting(run, name, node, app["appId"], target)
        freezer = Freezer({name: [side.node.pid, *descendants(side.node.pid)] for name, side in sides.items()})
        with freezer.running():
            for side in sides.values():
                side.freezer = freezer
                log(f"warm-up  {side.name}")
                side.measure(mode.warm_up_s, measured=False)
            targets = [Target(name, side.measure, warm_up=False) for name, side in sides.items()]
            samples = run_rounds(targets, 0, mode.rotation_rounds, mode.rotation_s)
        for server in (still.server, rotating.server):
            if not server.alive():
                raise CheckFailed(f"{server.name} died during the run:\n{server.log_tail()}")
        for name, side in sides.items():  # every token, warm-ups included, against the JWKS fetched now
            tenant = side.node.endpoints["tenant_id"]
            with Https(side.node.port, side.node.ca) as conn:
                jwks = conn.request("GET", f"/{tenant}/discovery/v2.0/keys").json()
            assert isinstance(jwks, dict)
            audit = Audit(jwks, side.client_id)
            for window in side.windows:
                window.kids = audit.check(tokens_in(window.capture), f"G13 {name}")
                window.capture.unlink()
            side.audit = audit
        keys = list_keys(rotating.home)
    finally:
        run.stop(rotating, still)
    run.samples.update(samples)
    _record_rotation(run, sides, keys, load_before)


def _record_rotation(run: Run, sides: dict[str, _Minting], keys: list[dict[str, Any]], load_before: str) -> None:
    still, rotating = sides[STILL], sides[ROTATING]
    still_audit, audit = still.audit, rotating.audit
    assert still_audit is not None and audit is not None
    due = rotations_due(run.mode)
    measured = [w for w in rotating.windows if w.measured]
    kids = {kid for w in measured for kid in w.kids}
    activated = len(activated_within(keys, [(w.started, w.ended) for w in measured]))
    run.figures[G13_ROTATIONS] = [float(activated)]
    pairs = zip(run.samples.get(ROTATING, []), run.samples.get(STILL, []), strict=False)
    p99 = [b.p99_ms / a.p99_ms for b, a in pairs if b.p99_ms and a.p99_ms]
    if p99:
        run.figures[G13_P99] = [round(v, 3) for v in p99]
    if len(still_audit.by_kid) != 1:
        run.failures.append(
            f"G13: the node with the default rotation period signed with {len(still_audit.by_kid)} keys during "
            "the run (no rotation is due for 28 days)"
        )
    if len(kids) < due:
        run.failures.append(
            f"G13: rotation did not happen: {len(kids)} signing keys signed the tokens of the rotating node's "
            f"{len(measured)} windows ({run.mode.rotation_rounds * run.mode.rotation_s:g} s at one rotation per "
            f"{ROTATION_PERIOD_S} s + a {ROTATION_TICK_S:g} s tick: at least {due} due)"
        )
    early = signed_before_activation(audit, keys)
    if early:
        run.failures.append(f"G13: keys signed tokens before they were activated: {', '.join(early)}")
    run.details["G13 rotations"] = (
        f"{activated} key activations on the rotating node during its {len(measured)} measured windows "
        f"(from `lanyard keys list`; {due} due); {len(kids)} keys signed its tokens there (per window "
        f"{[len(w.kids) for w in measured]}); "
        f"{len(keys)} keys in `lanyard keys list` after the run, {len(audit.jwks.get('keys', []))} in its JWKS; "
        f"a retired key's last token at most {signed_after_retirement(audit, keys):.0f} s after its retirement "
        "(whole seconds)"
    )
    run.details["G13 tokens verified against the JWKS fetched after minting"] = (
        f"not rotating {still_audit.checked:,} ({len(still_audit.by_kid)} key), rotating {audit.checked:,} "
        f"({len(audit.by_kid)} keys)"
    )
    for side in (still, rotating):
        cores = [w.cores for w in side.windows if w.measured]
        run.details[f"G13 {side.name}: server cores used, run-queue wait (share of time), per measurement"] = (
            f"cores {', '.join(f'{c:.2f}' for c in cores)}; wait {', '.join(f'{w:.1%}' for w in side.waits)}"
        )
    run.details["G13 load average before / after the part"] = (
        f"{load_before} / {Path('/proc/loadavg').read_text().split()[0]}"
    )
    log(f"G13: {run.details['G13 rotations']}")


# ------------------------------------------------------------------------------------------- main


def describe(run: Run) -> dict[str, Any]:
    mode = run.mode
    return {
        "mode": mode.name,
        "started": script.started(),
        "machine": script.machine(),
        "pinning": (
            "G11 nodes core 0, wrk and the uncached client core 1; G15 platforms all cores, wrk core 1; "
            "G13 nodes core 0 (the one not measured SIGSTOPped), wrk core 1; G12 and G8 unpinned"
            if can_pin()
            else "NOT pinned (no taskset or < 2 cores)"
        ),
        "load": f"G12 {mode.trials} trials per database; G11 {mode.identities:,} vs {SMALL_STORE} identities, "
        f"wrk -c1 and {mode.cold_requests} uncached clients per round; G15 wrk -t1 -c{mode.connections}; "
        f"warm-up {mode.warm_up_s:g}s, {mode.rounds} rotating rounds of {mode.seconds:g}s; G13 wrk -t1 "
        f"-c{mode.connections}, {mode.rotation_rounds} alternating rounds of {mode.rotation_s:g}s per node",
        "wrk": script.first_line([run.wrk, "--version"]) if run.wrk else "absent",
        "python": platform.python_version(),
        "lanyard build": _build(),
        "packages": script.versions(("starlette", "uvicorn", "uvloop", "sqlalchemy", "psycopg", "cryptography")),
    }


def _build() -> str:
    """The commit benchmarked, and whether src/ differed from it (read-only git commands)."""
    if os.environ.get("LANYARD_BIN"):
        return f"LANYARD_BIN={os.environ['LANYARD_BIN']}"
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO_DIR), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "-C", str(REPO_DIR), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    if head.returncode != 0:
        return "unknown (not a git checkout)"
    return head.stdout.strip() + (" + uncommitted changes in src/" if dirty.stdout.strip() else "")


def measure(run: Run) -> None:
    """Every part in turn; a failed part is recorded and the others still run."""
    parts: list[tuple[str, Callable[[], None]]] = [("G8", lambda: measure_memory(run))]
    ok, why = postgres_support.available()
    if ok:
        try:
            run.postgres = postgres_support.PostgresServer().start()
            run.closers.append(run.postgres.cleanup)
            run.meta["postgresql"] = script.first_line([run.postgres.binaries.postgres, "--version"])
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            ok, why = False, f"could not start: {exc}"
    if ok:
        parts.append(("G12 PostgreSQL", lambda: propagation(run, "postgresql")))
    else:
        run.notes.append(f"PostgreSQL unavailable ({why}): G12 on PostgreSQL and G11 not measured")
    parts.append(("G12 SQLite", lambda: propagation(run, "sqlite")))
    if ok:
        parts.append(("G11", lambda: scale(run)))
        parts.append(("stopping PostgreSQL", lambda: run.postgres.cleanup()))  # idle, but not in G15's way
    parts.append(("G15", lambda: workers(run)))
    parts.append(("G13", lambda: key_rotation(run)))
    if run.wrk is None:
        run.notes.append("wrk unavailable: G13, G15 and G11's cached-client figure not measured")
    took: dict[str, float] = {}
    run.details["seconds per part"] = took
    for name, part in parts:
        started = time.perf_counter()
        try:
            part()
        except Exception as exc:  # a part that breaks is a failure of its own; the others still run
            run.failures.append(f"{name}: {type(exc).__name__}: {exc}")
            log(f"{name} failed: {exc}")
        took[name] = round(time.perf_counter() - started, 1)


def _cpu_ticks() -> list[int]:
    """The host's CPU time by kind (/proc/stat: user nice system idle iowait irq softirq steal ...)."""
    return [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]


def host_load(before: list[int], load_before: str) -> str:
    """How busy the machine was besides us: the load average before and after, and the share of CPU
    time the hypervisor gave to other guests (steal) during the run."""
    after = [a - b for a, b in zip(_cpu_ticks(), before, strict=True)]
    steal = after[7] / sum(after) if sum(after) else 0.0
    load_after = Path("/proc/loadavg").read_text().split()[0]
    return f"load average {load_before} before, {load_after} after; CPU steal {steal:.0%} of the run"


def stop_everything(run: Run) -> None:
    for server in reversed(run.servers):
        server.stop()
    for close in reversed(run.closers):
        close()


def main(argv: list[str]) -> int:
    args = script.parse_args(argv, __doc__)
    mode = script.chosen_mode(MODES, args)
    out_dir: Path = args.out.resolve()
    workdir = Path(tempfile.mkdtemp(prefix="lanyard-bench-cluster-"))
    run = Run(mode, ensure_wrk(), workdir, out_dir / "logs")
    run.meta.update(describe(run))
    ticks, load = _cpu_ticks(), Path("/proc/loadavg").read_text().split()[0]
    reason = unavailable_reason()
    if reason:
        run.notes.append(f"lanyard skipped: {reason}")
        workdir.rmdir()
    else:

        def measured() -> dict[str, list[Sample]]:
            measure(run)
            return run.samples

        script.measure_and_clean_up(run, measured, lambda: stop_everything(run))
    samples = run.samples
    run.meta["host"] = host_load(ticks, load)

    results = report.evaluate(goals(mode.identities, rotations_due(mode)), samples, run.figures)
    script.sort_invalid(run, samples)
    status = script.exit_status(run, results, lambda: any(g.under_half_strength for g in results))
    script.print_summary(run, samples, results)
    for key, value in run.details.items():
        print(f"detail: {key}: {value}")
    payload = report.to_json(run.meta, samples, results, run.notes, run.failures, run.figures, run.details)
    markdown = report.to_markdown(
        run.meta, samples, results, run.notes, run.failures, title="Lanyard cluster benchmark", details=run.details
    )
    return script.write_results(out_dir, f"cluster-{mode.name}", payload, markdown, status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
