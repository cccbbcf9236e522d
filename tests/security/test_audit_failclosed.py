"""F11: no grant without its audit record, and no hang, whatever the sinks do (docs/security.md).

A platform with a JSON-lines file sink and a 1 s deadline. Each fault is real: the database refuses
the insert (a trigger that aborts it), the database hangs (another connection holds SQLite's write
lock), the file sink is deleted, turned into a full disk (/dev/full), or becomes a pipe whose reader
is SIGSTOPped. Under each, a burst of token requests gets either a token or OAuth's 503
`temporarily_unavailable` within the deadline; afterwards every token handed out is in the audit
table (set difference of issued and audited token ids is empty), the chain verifies, and a row
altered behind the platform's back makes `lanyard audit verify` fail. The agent's journal is
broken the same way under a real App Service workload.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.conftest import ARM_RESOURCE, RunningPlatform, app_service_tokens_around, cli_json, run_cli, start_platform

DEADLINE = 1.0
SLACK = 2.5  # scheduling on a loaded 2-core machine; a hang would be the 10 s busy timeout or forever
BURST = 20
pytestmark = pytest.mark.timeout(400)


def ref(token: str) -> str:
    claims = jwt.decode(token, options={"verify_signature": False})
    return hashlib.sha256(str(claims["uti"]).encode()).hexdigest()[:16]


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    home = tmp_path_factory.mktemp("audited")
    running = start_platform(
        home, "--audit-file", str(home / "audit.jsonl"), env={"LANYARD_AUDIT_DEADLINE": str(DEADLINE)}
    )
    yield running
    running.stop()


class Burst:
    """Concurrent token requests; every answer and its time is kept."""

    def __init__(self, platform: RunningPlatform) -> None:
        self.platform = platform
        admin = platform.endpoints["admin"]
        self.form = {
            "grant_type": "client_credentials",
            "client_id": admin["client_id"],
            "client_secret": admin["client_secret"],
            "scope": f"{ARM_RESOURCE}/.default",
        }
        self.issued: set[str] = set()
        self.secret = admin["client_secret"]

    def one(self, http: httpx.Client) -> tuple[int, float, dict[str, Any]]:
        started = time.monotonic()
        response = http.post(self.platform.token_url_v2, data=self.form)
        elapsed = time.monotonic() - started
        body = response.json()
        if response.status_code == 200:
            self.issued.add(ref(body["access_token"]))
        return response.status_code, elapsed, body

    def run(self, n: int = BURST) -> list[tuple[int, float, dict[str, Any]]]:
        with self.platform.http() as http, concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: self.one(http), range(n)))
        for status, elapsed, body in results:
            assert status in (200, 503), body
            assert elapsed < DEADLINE + SLACK, f"answered after {elapsed:.1f} s"
            if status == 503:
                assert body["error"] == "temporarily_unavailable", body
        return results


@pytest.fixture(scope="module")
def burst(audited: RunningPlatform) -> Burst:
    return Burst(audited)


def statuses(results: list[tuple[int, float, dict[str, Any]]]) -> list[int]:
    return [status for status, _, _ in results]


def db(platform: RunningPlatform) -> sqlite3.Connection:
    return sqlite3.connect(platform.home / "lanyard.db", timeout=30, isolation_level=None)


def audited_refs(platform: RunningPlatform) -> set[str]:
    with contextlib.closing(db(platform)) as conn:
        rows = conn.execute("SELECT detail FROM audit WHERE action = 'token.issue'").fetchall()
    return {json.loads(detail).get("token_ref") for (detail,) in rows}


def test_healthy_baseline(audited: RunningPlatform, burst: Burst) -> None:
    assert set(statuses(burst.run())) == {200}


def test_database_refusing_the_insert(audited: RunningPlatform, burst: Burst) -> None:
    with contextlib.closing(db(audited)) as conn:
        conn.execute("CREATE TRIGGER audit_refuse BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'no'); END")
        try:
            assert set(statuses(burst.run())) == {503}
        finally:
            conn.execute("DROP TRIGGER audit_refuse")
    assert set(statuses(burst.run())) == {200}


def test_database_hanging(audited: RunningPlatform, burst: Burst) -> None:
    with contextlib.closing(db(audited)) as conn:
        conn.execute("BEGIN IMMEDIATE")  # SQLite's one write lock, held: every insert waits
        try:
            assert set(statuses(burst.run())) == {503}
        finally:
            conn.execute("ROLLBACK")
    deadline = time.monotonic() + 15  # the stuck batch first finishes its wait
    while set(statuses(burst.run(4))) != {200}:
        assert time.monotonic() < deadline, "the audit trail never recovered"


def test_file_sink_deleted(audited: RunningPlatform, burst: Burst) -> None:
    path = audited.home / "audit.jsonl"
    path.unlink()
    first = statuses(burst.run(1))
    assert first == [503], "a grant was recorded into a deleted file"
    assert set(statuses(burst.run())) == {200}  # a new file at the path
    assert path.exists()


def test_file_sink_disk_full(audited: RunningPlatform, burst: Burst) -> None:
    path = audited.home / "audit.jsonl"
    saved = path.with_suffix(".saved")
    path.rename(saved)
    path.symlink_to("/dev/full")  # every write: ENOSPC
    try:
        assert set(statuses(burst.run())) == {503}
    finally:
        path.unlink()
        saved.rename(path)
    deadline = time.monotonic() + 10
    while set(statuses(burst.run(4))) != {200}:
        assert time.monotonic() < deadline


def test_file_sink_hanging(audited: RunningPlatform, burst: Burst) -> None:
    path = audited.home / "audit.jsonl"
    saved = path.with_suffix(".saved")
    path.rename(saved)
    os.mkfifo(path)
    reader = subprocess.Popen(["cat", str(path)], stdout=subprocess.DEVNULL)
    try:
        # Fill the pipe, then stop its reader: the next write blocks. A non-blocking open for writing
        # fails (ENXIO) until `cat` has opened its end.
        opened = time.monotonic() + 10
        while True:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError as exc:
                if exc.errno != errno.ENXIO or time.monotonic() > opened:
                    raise
                time.sleep(0.01)
        os.kill(reader.pid, signal.SIGSTOP)
        with contextlib.suppress(BlockingIOError):
            while True:
                os.write(fd, b"x" * 4096)
        os.close(fd)
        assert set(statuses(burst.run())) == {503}
    finally:
        os.kill(reader.pid, signal.SIGCONT)
        path.unlink()
        saved.rename(path)
        time.sleep(0.5)
        reader.kill()
        reader.wait()
    deadline = time.monotonic() + 10
    while set(statuses(burst.run(4))) != {200}:
        assert time.monotonic() < deadline


def test_agent_journal_failure_refuses_the_token(audited: RunningPlatform, workload_folder: Path) -> None:
    home = audited.home
    cli_json(home, "group", "create", "-n", "fc-rg", "-l", "westus")
    cli_json(home, "webapp", "create", "-g", "fc-rg", "-n", "fc-app", "--assign-identity", "[system]")
    journal = home / "agent" / "audit" / "journal.jsonl"
    saved = journal.with_suffix(".saved")

    def break_journal() -> None:
        journal.rename(saved)
        journal.symlink_to("/dev/full")

    try:
        first, second = app_service_tokens_around(
            home, ["webapp", "run", "-g", "fc-rg", "-n", "fc-app"], workload_folder, break_journal
        )
    finally:
        if journal.is_symlink():
            journal.unlink()
            saved.rename(journal)
    assert first["status"] == 200
    assert second["status"] == 503 and "audit" in second["body"]["message"], second
    assert second["ms"] < (DEADLINE + SLACK) * 1000
    # The token that was served is on the platform, shipped from the journal.
    wanted = ref(first["body"]["access_token"])
    deadline = time.monotonic() + 20
    while True:
        with contextlib.closing(db(audited)) as conn:
            rows = conn.execute("SELECT detail FROM audit WHERE action = 'agent.token'").fetchall()
        if any(json.loads(d).get("token_ref") == wanted for (d,) in rows) or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert any(json.loads(d).get("token_ref") == wanted for (d,) in rows)


def test_no_grant_without_a_record_and_the_chain_verifies(audited: RunningPlatform, burst: Burst) -> None:
    assert burst.issued, "the scenarios above issued tokens"
    missing = burst.issued - audited_refs(audited)
    assert not missing, f"{len(missing)} tokens were issued without an audit record"
    # The file copy holds every token granted since it was last recreated (the hanging-pipe test).
    file_refs = {
        r["detail"].get("token_ref")
        for r in map(json.loads, (audited.home / "audit.jsonl").read_text().splitlines())
        if r["action"] == "token.issue"
    }
    assert file_refs, "the file sink received records"
    verified = cli_json(audited.home, "audit", "verify")
    assert verified["verified"] is True
    with contextlib.closing(db(audited)) as conn:
        rows = conn.execute("SELECT detail FROM audit").fetchall()
        changes_before = conn.execute("SELECT count(*) FROM changes").fetchone()[0]
    text = "".join(d for (d,) in rows)
    assert burst.secret not in text and "eyJ" not in text  # no secret, no JWT
    burst.run(10)
    with contextlib.closing(db(audited)) as conn:
        assert conn.execute("SELECT count(*) FROM changes").fetchone()[0] == changes_before  # feed not flooded


def test_tampering_breaks_verify(audited: RunningPlatform) -> None:
    with contextlib.closing(db(audited)) as conn:
        row = conn.execute("SELECT id, chain, seq FROM audit WHERE action = 'token.issue' LIMIT 1 OFFSET 3").fetchone()
        conn.execute("UPDATE audit SET principal = 'someone-else' WHERE id = ?", (row[0],))
    result = run_cli(audited.home, "audit", "verify", check=False)
    assert result.returncode != 0
    assert f"broken at record {row[2]}" in result.stderr and row[1] in result.stderr
