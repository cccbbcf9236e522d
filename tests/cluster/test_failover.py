"""kill -9 of one node under load, behind a real HAProxy on PostgreSQL.

Writers PUT user-assigned identities and VMs with system-assigned identities, others mint tokens,
all through the balancer, each request on a new connection (so a failure is a request that was in
flight on the killed node, not a stale pooled socket). Then the docs/security.md F8 checker: every
acknowledged (2xx) write is in the final state with its principal, no resource has two principals,
and no principal is left without its resource.
"""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.cluster.test_multinode import ARM, _start_nodes, new_kek
from tests.conftest import RunningPlatform, cli_json, probe_command, probe_results
from tests.support.haproxy import HaproxyFactory
from tests.support.postgres import PostgresServer, free_port

pytestmark = [pytest.mark.postgres, pytest.mark.haproxy, pytest.mark.timeout(600)]
WRITERS = 4
MINTERS = 2
MSI_VERSION = "api-version=2023-01-31"
VM_VERSION = "api-version=2024-03-01"


class Load:
    def __init__(self, node: RunningPlatform) -> None:
        self.node = node
        self.context = ssl.create_default_context(cafile=node.ca_cert)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acked: dict[str, str] = {}  # resource id (lower) -> principalId
        self.attempted: set[str] = set()
        self.failures: list[str] = []
        self.minted = 0
        admin = node.endpoints["admin"]
        self.form = {
            "grant_type": "client_credentials",
            "client_id": admin["client_id"],
            "client_secret": admin["client_secret"],
            "scope": f"{ARM}/.default",
        }
        self.token = self._request(lambda c: c.post(node.token_url_v2, data=self.form)).json()["access_token"]

    def _request(self, send: Callable[[httpx.Client], httpx.Response]) -> httpx.Response:
        with httpx.Client(verify=self.context, timeout=30.0, headers={"Connection": "close"}) as client:
            return send(client)

    def writer(self, index: int) -> None:
        sub = self.node.endpoints["subscription_id"]
        group = f"/subscriptions/{sub}/resourceGroups/f8-rg"
        n = 0
        while not self.stop.is_set():
            n += 1
            if n % 2:
                rid = f"{group}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/w{index}-{n}"
                url, body = f"{self.node.authority}{rid}?{MSI_VERSION}", {"location": "westus"}
            else:
                rid = f"{group}/providers/Microsoft.Compute/virtualMachines/w{index}-{n}"
                url = f"{self.node.authority}{rid}?{VM_VERSION}"
                body = {"location": "westus", "identity": {"type": "SystemAssigned"}}
            with self.lock:
                self.attempted.add(rid.lower())
            try:
                response = self._request(
                    lambda c, u=url, b=body: c.put(u, json=b, headers={"Authorization": f"Bearer {self.token}"})
                )
            except httpx.HTTPError as exc:
                with self.lock:
                    self.failures.append(f"write {type(exc).__name__}")
                continue
            if response.status_code in (200, 201):
                props = response.json().get("properties", {})
                principal = props.get("principalId") or response.json().get("identity", {}).get("principalId")
                with self.lock:
                    self.acked[rid.lower()] = str(principal)
            else:
                with self.lock:
                    self.failures.append(f"write {response.status_code}")

    def minter(self) -> None:
        while not self.stop.is_set():
            try:
                response = self._request(lambda c: c.post(self.node.token_url_v2, data=self.form))
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            with self.lock:
                if ok:
                    self.minted += 1
                else:
                    self.failures.append("mint")


def test_kill_9_of_one_node_loses_no_acknowledged_identity(
    postgres: PostgresServer, haproxy_factory: HaproxyFactory, tmp_path: Path
) -> None:
    database = postgres.create_database("failover")
    ports = [free_port() for _ in range(3)]
    proxy = haproxy_factory([("127.0.0.1", p) for p in ports])
    common = ["--database", database, "--public-url", f"https://localhost:{proxy.port}"]
    args = [
        [*common, "--port", str(ports[0])],
        [*common, "--port", str(ports[1]), "--no-agent"],
        [*common, "--port", str(ports[2]), "--no-agent"],
    ]
    nodes = _start_nodes([tmp_path / f"n{i}" for i in range(3)], args, {"LANYARD_KEK": new_kek()})
    try:
        home = nodes[0].home
        cli_json(home, "group", "create", "-n", "f8-rg", "-l", "westus")
        load = Load(nodes[0])
        threads = [threading.Thread(target=load.writer, args=(i,)) for i in range(WRITERS)]
        threads += [threading.Thread(target=load.minter) for _ in range(MINTERS)]
        for t in threads:
            t.start()
        time.sleep(3)
        before_kill = len(load.acked)
        nodes[2].process.send_signal(signal.SIGKILL)
        nodes[2].process.wait()
        time.sleep(6)  # past the balancer's health check and the nodes' liveness window
        load.stop.set()
        for t in threads:
            t.join(timeout=60)

        print(
            f"F8: {len(load.acked)} writes acknowledged ({before_kill} before the kill), {len(load.attempted)} "
            f"attempted, {load.minted} tokens minted, {len(load.failures)} failed: {load.failures}"
        )
        assert before_kill > 0 and len(load.acked) > before_kill, "the load made no progress around the kill"
        assert load.minted > 0
        # Only requests in flight on the killed node may fail: at most one per loader thread.
        assert len(load.failures) <= WRITERS + MINTERS, load.failures

        engine = sa.create_engine(database)
        with engine.connect() as conn:
            resources = {
                key: (system or "")
                for key, system in conn.execute(
                    sa.text("SELECT key, system_principal_id FROM resources WHERE key LIKE '%/f8-rg/%'")
                )
            }
            uai_principals = {
                key: props
                for key, props in conn.execute(
                    sa.text(
                        "SELECT key, properties FROM resources WHERE type = 'Microsoft.ManagedIdentity/userAssignedIdentities'"
                    )
                )
            }
            principals = list(
                conn.execute(
                    sa.text("SELECT object_id, resource_id FROM service_principals WHERE kind = 'ManagedIdentity'")
                )
            )
        engine.dispose()
        lost = [rid for rid in load.acked if rid not in resources]
        by_resource: dict[str, list[str]] = {}
        for object_id, resource_id in principals:
            by_resource.setdefault(str(resource_id).lower(), []).append(str(object_id))
        duplicates = {rid: ids for rid, ids in by_resource.items() if len(ids) > 1}
        orphans = [rid for rid in by_resource if rid not in resources]
        mismatched = [
            rid
            for rid, principal in load.acked.items()
            if rid in resources and principal not in (resources[rid], *_uai_principal(uai_principals.get(rid)))
        ]
        assert (lost, duplicates, orphans, mismatched) == ([], {}, [], []), "F8 checker"

        # The agent reconnected (its poll may have been on the killed node) and still serves.
        cli_json(home, "webapp", "create", "-g", "f8-rg", "-n", "f8-app", "--assign-identity", "[system]")
        request = {
            "kind": "raw",
            "path": f"?api-version=2019-08-01&resource={ARM}",
            "headers_from_env": {"X-IDENTITY-HEADER": "IDENTITY_HEADER"},
        }
        run = subprocess.run(
            probe_command(home, ["webapp", "run", "-g", "f8-rg", "-n", "f8-app"], [request]),
            capture_output=True,
            text=True,
            timeout=120,
        )
        (result,) = probe_results(run.stdout, run.stderr)
        assert result["ok"] and result["value"]["status"] == 200, result
    finally:
        for node in nodes:
            node.stop()


def _uai_principal(properties: str | None) -> tuple[str, ...]:
    if not properties:
        return ()
    return (str(json.loads(properties).get("principalId")),)
