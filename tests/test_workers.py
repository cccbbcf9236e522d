"""`lanyard up --workers N`: N server processes on one port and one SQLite file, kept coherent by the
change feed, exactly as separate nodes are."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import RunningPlatform, cli_json, run_cli, secret_token, start_platform

ARM_VERSION = "api-version=2022-12-01"


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    running = start_platform(tmp_path_factory.mktemp("workers"), "--workers", "2", "--no-agent")
    yield running
    running.stop()


def test_two_processes_serve_the_port(two_workers: RunningPlatform) -> None:
    assert two_workers.endpoints["workers"] == 2
    with sqlite3.connect(Path(two_workers.home) / "lanyard.db") as db:
        pids = {row[0] for row in db.execute("SELECT pid FROM nodes")}
    assert len(pids) == 2 and two_workers.process.pid in pids


def test_a_change_made_through_one_worker_holds_on_every_worker(two_workers: RunningPlatform) -> None:
    home = two_workers.home
    cli_json(home, "group", "create", "-n", "w-rg", "-l", "westus")
    cli_json(home, "keyvault", "create", "-g", "w-rg", "-n", "workerskv")
    admin = two_workers.endpoints["admin"]
    url = f"https://workerskv.{two_workers.endpoints['vault_suffix']}/secrets/s?api-version=7.4"
    # A new connection per request: the kernel spreads connections, not requests, over the workers.
    token = secret_token(
        two_workers, admin["client_id"], admin["client_secret"], two_workers.endpoints["vault_audience"]
    )
    auth = {"Authorization": f"Bearer {token}"}
    for value in ("one", "two", "three"):
        with two_workers.http() as http:
            assert http.put(url, json={"value": value}, headers=auth).status_code == 200
        for _ in range(6):
            with two_workers.http() as http:
                got = http.get(url, headers=auth)
            assert got.status_code == 200 and got.json()["value"] == value
    run_cli(home, "keyvault", "delete-policy", "-n", "workerskv", "--object-id", admin["object_id"])
    for _ in range(6):
        with two_workers.http() as http:
            assert http.get(url, headers=auth).status_code == 403
